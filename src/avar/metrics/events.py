"""Anomaly events from a stream of per-step scores (hysteresis, minimum duration, gap bridging),
the event threshold a run stores, and event-level figures.

Semantics (all times in seconds on the source's own timeline, as in ``StepRecord``):

* A step's *top anomaly class* is its most probable class other than the normal one.
* **Open**: with no event open, a step opens one when its opening score reaches the opening
  threshold: ``probabilities[top] >= class_thresholds[top]`` when the top class has its own
  threshold, else ``anomaly_score >= threshold``.
* **Stay open**: a step with ``anomaly_score >= release`` extends the event to its ``end``.
  Below-release steps are tolerated while the below-release span since the event's current end
  (up to that step's ``end``) is at most ``max_gap`` seconds; a hole in the stream itself
  (the next step's ``time`` after the event's end) counts the same way.
* **Close**: when the span exceeds ``max_gap`` (or at ``flush``), the event spans from the
  opening step's ``time`` to the last above-release step's ``end``. Tolerated below-release
  steps after that end are not part of it. Events shorter than ``min_duration`` are dropped.
* ``label``: the anomaly class with the highest probability summed over the event's steps
  (bridged below-release steps included); ``peak_score``/``peak_time``: the highest
  ``anomaly_score`` and the ``time`` of the first step that reached it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Protocol

# Step times are rounded to milliseconds upstream; compare durations with this slack so that
# 0.1 + 0.2 style sums do not flip a boundary decision.
_EPS = 1e-6


class Step(Protocol):
    """What the detector reads from a step record (``avar.serve.predict.StepRecord`` fits)."""

    time: float
    end: float
    probabilities: dict[str, float]
    anomaly_score: float


@dataclass
class EventConfig:
    """How scores become events. Scores and thresholds are in [0, 1]; durations in seconds."""

    threshold: float = 0.5
    """Anomaly score (``1 - P(normal)``) at which a step opens an event."""
    release: float = 0.4
    """Hysteresis: the event stays open while the score is at or above this."""
    min_duration: float = 1.0
    """Seconds; closed events shorter than this are dropped."""
    class_thresholds: dict[str, float] = field(default_factory=dict)
    """Per-class opening threshold on that class's probability, used instead of ``threshold``
    for steps whose top anomaly class is that class."""
    max_gap: float = 0.0
    """Seconds of below-release scores (or missing steps) tolerated inside an event."""

    def __post_init__(self) -> None:
        # release <= every opening threshold guarantees an opening step also counts as above
        # release (a class probability never exceeds the anomaly score that sums it).
        if not 0.0 <= self.release <= self.threshold <= 1.0:
            raise ValueError(f"EventConfig needs 0 <= release <= threshold <= 1, got release={self.release}, "
                             f"threshold={self.threshold}")
        for name, t in self.class_thresholds.items():
            if not self.release <= t <= 1.0:
                raise ValueError(f"class threshold for {name!r} is {t}; it must lie in [release={self.release}, 1]")
        if self.min_duration < 0 or self.max_gap < 0:
            raise ValueError(f"min_duration and max_gap are seconds >= 0, got {self.min_duration} and {self.max_gap}")


@dataclass
class Event:
    """One closed anomaly event of a source; ``start``/``end``/``peak_time`` in seconds."""

    source: str
    start: float
    end: float
    label: str
    peak_score: float
    peak_time: float
    thumbnail: str | None = None
    """Path of a JPEG of the frame at ``peak_time``, set by callers that have frames."""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class _Open:
    """The event being built: its steps so far, and the tolerated below-release steps after its end."""

    start: float
    end: float
    sums: dict[str, float]
    peak_score: float
    peak_time: float
    pending: list[Step] = field(default_factory=list)


class EventDetector:
    """Streaming: feed step records one at a time, get closed events back as soon as they close."""

    def __init__(self, config: EventConfig, source: str, normal_class: str = "normal"):
        self.config = config
        self.source = source
        self.normal_class = normal_class
        self._open: _Open | None = None
        self._last_time: float | None = None

    def push(self, step: Step) -> list[Event]:
        """Take the next step (in time order); return the events it closed (zero or one)."""
        if self._last_time is not None and step.time < self._last_time:
            raise ValueError(f"{self.source}: step at {step.time}s came after one at {self._last_time}s; "
                             "push steps in time order")
        self._last_time = step.time
        top = self._top_class(step)
        closed: list[Event] = []
        ev = self._open
        if ev is not None and step.time - ev.end > self.config.max_gap + _EPS:
            closed += self._close()
            ev = None
        above = step.anomaly_score >= self.config.release
        if ev is None:
            if self._opens(step, top):
                self._open = _Open(step.time, step.end, {}, step.anomaly_score, step.time)
                self._add(self._open, step)
        elif above:
            for s in ev.pending:
                self._add(ev, s)
            ev.pending.clear()
            ev.end = step.end
            self._add(ev, step)
        elif step.end - ev.end <= self.config.max_gap + _EPS:
            ev.pending.append(step)
        else:
            closed += self._close()
        return closed

    def flush(self) -> list[Event]:
        """End of stream: close the open event, if any (``min_duration`` still applies)."""
        return self._close()

    def _top_class(self, step: Step) -> str:
        if self.normal_class not in step.probabilities:
            raise ValueError(f"{self.source}: step at {step.time}s has no class {self.normal_class!r} among "
                             f"{sorted(step.probabilities)}; pass normal_class= the run's normal class")
        anomalies = {c: p for c, p in step.probabilities.items() if c != self.normal_class}
        if not anomalies:
            raise ValueError(f"{self.source}: step at {step.time}s has only the normal class; nothing to detect")
        return max(anomalies, key=anomalies.__getitem__)

    def _opens(self, step: Step, top: str) -> bool:
        if top in self.config.class_thresholds:
            return step.probabilities[top] >= self.config.class_thresholds[top]
        return step.anomaly_score >= self.config.threshold

    def _add(self, ev: _Open, step: Step) -> None:
        for c, p in step.probabilities.items():
            if c != self.normal_class:
                ev.sums[c] = ev.sums.get(c, 0.0) + p
        if step.anomaly_score > ev.peak_score:
            ev.peak_score, ev.peak_time = step.anomaly_score, step.time

    def _close(self) -> list[Event]:
        ev, self._open = self._open, None
        if ev is None or ev.end - ev.start < self.config.min_duration - _EPS:
            return []
        label = max(ev.sums, key=ev.sums.__getitem__)
        return [Event(self.source, ev.start, ev.end, label, ev.peak_score, ev.peak_time)]


def detect_events(steps: Iterable[Step], config: EventConfig, source: str, normal_class: str = "normal") -> list[Event]:
    """All events of a finished sequence of steps: ``push`` each, then ``flush``."""
    detector = EventDetector(config, source, normal_class)
    events = [e for step in steps for e in detector.push(step)]
    return events + detector.flush()


FALSE_EVENTS_PER_HOUR = 1.0
"""Default target of a run's event threshold: at most this many false events per hour of normal
footage on its validation clips."""


@dataclass
class StepScore:
    """One step as the detector reads it (what ``avar.serve.predict.StepRecord`` also fits)."""

    time: float
    end: float
    probabilities: dict[str, float]
    anomaly_score: float


@dataclass
class ScoredClip:
    """A clip's scored steps for event figures: ``steps`` in time order, whether it is
    anomalous, its known anomalous intervals in seconds (None: unknown, the whole clip counts)
    and its duration in seconds."""

    steps: list[StepScore]
    anomalous: bool
    intervals: list[tuple[float, float]] | None
    duration: float

    def truth(self) -> list[tuple[float, float]]:
        """The anomalous intervals: the known ones, or the whole clip when anomalous and unknown."""
        if not self.anomalous:
            return []
        return list(self.intervals) if self.intervals else [(0.0, self.duration)]

    def normal_seconds(self) -> float:
        """Seconds of normal footage in the clip (a clip outside its known intervals, or none)."""
        inside = sum(max(0.0, min(e, self.duration) - max(s, 0.0)) for s, e in self.truth())
        return max(0.0, self.duration - inside)


def scored_steps(times, ends, probabilities, classes: list[str], anomaly) -> list[StepScore]:
    """``StepScore`` records from arrays: step start / end times (s), ``probabilities [T, C]``
    in ``classes`` order, ``anomaly [T]`` (the run's anomaly score)."""
    return [StepScore(float(t), float(e), {c: float(x) for c, x in zip(classes, p)}, float(a))
            for t, e, p, a in zip(times, ends, probabilities, anomaly)]


def _overlaps(event: Event, intervals: list[tuple[float, float]]) -> bool:
    return any(event.start < e and event.end > s for s, e in intervals)


def event_figures(clips: list[ScoredClip], config: EventConfig, normal_class: str = "normal") -> dict:
    """Event-level figures of ``config`` on ``clips``: ``recall`` (share of anomalous clips with
    an event overlapping a true interval), ``false_events`` (events overlapping no true
    interval: every event of a normal clip), ``normal_hours`` (normal footage: normal clips and
    the outside of known intervals), ``false_events_per_hour``, ``mean_delay_s`` (first
    overlapping event's start minus the true start, over detected anomalies; negative when the
    centred window sees it coming) and the counts behind them."""
    detected, delays, false_events, anomalous = 0, [], 0, 0
    normal_seconds = 0.0
    for i, clip in enumerate(clips):
        events = detect_events(clip.steps, config, f"clip{i}", normal_class)
        truth = clip.truth()
        normal_seconds += clip.normal_seconds()
        false_events += sum(not _overlaps(e, truth) for e in events)
        if clip.anomalous:
            anomalous += 1
            hits = [e for e in events if _overlaps(e, truth)]
            if hits:
                detected += 1
                delays.append(min(e.start for e in hits) - min(s for s, _ in truth))
    hours = normal_seconds / 3600.0
    return {
        "threshold": config.threshold,
        "release": config.release,
        "recall": detected / anomalous if anomalous else None,
        "anomalous_clips": anomalous,
        "detected": detected,
        "false_events": false_events,
        "normal_hours": round(hours, 6),
        "false_events_per_hour": false_events / hours if hours > 0 else None,
        "mean_delay_s": float(sum(delays) / len(delays)) if delays else None,
    }


def calibrate_threshold(clips: list[ScoredClip], rate: float = FALSE_EVENTS_PER_HOUR,
                        base: EventConfig | None = None, normal_class: str = "normal") -> tuple[EventConfig, dict]:
    """The lowest opening threshold at which ``clips`` (a run's validation clips) raise at most
    ``rate`` false events per hour of their normal footage, with ``base``'s other settings (its
    release lowered to the threshold where it would exceed it), and a record of the choice.

    Few minutes of normal footage cannot resolve a rate of one an hour: the allowed count is
    ``floor(rate * hours)``, zero on less than an hour, so the threshold is then the lowest at
    which the normal footage raises no event; the record says so (``resolved``: False). Where even
    a threshold of 1 raises events (scores saturated on normal clips), 1 is kept and
    ``met`` is False. Without normal footage ``base`` is returned unchanged."""
    base = base or EventConfig()
    if not rate >= 0:
        raise ValueError(f"the false-event rate must be a number of events per hour >= 0, got {rate!r}")
    hours = sum(c.normal_seconds() for c in clips) / 3600.0
    record = {"target_false_events_per_hour": rate, "normal_hours": round(hours, 6), "validation_clips": len(clips)}
    if hours <= 0:
        return base, {**record, "threshold": base.threshold, "met": None, "resolved": False,
                      "note": "no normal footage among the validation clips: the default threshold is kept"}
    allowed = math.floor(rate * hours + 1e-9)

    def config_at(t: float) -> EventConfig:
        return EventConfig(threshold=t, release=min(base.release, t), min_duration=base.min_duration,
                           class_thresholds={}, max_gap=base.max_gap)

    def false_at(t: float) -> int:
        return event_figures(clips, config_at(t), normal_class)["false_events"]

    scores = sorted({s.anomaly_score for c in clips for s in c.steps})
    # Thresholds between consecutive scores (and just above the top one); false events fall as it rises.
    candidates = [(a + b) / 2 for a, b in zip(scores, scores[1:])] + [min(1.0, scores[-1] + 1e-6)] if scores else [1.0]
    lo, hi = 0, len(candidates) - 1
    if false_at(candidates[hi]) > allowed:
        chosen, met = candidates[hi], False
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if false_at(candidates[mid]) <= allowed else (mid + 1, hi)
        chosen, met = candidates[lo], True
    config = config_at(chosen)
    figures = event_figures(clips, config, normal_class)
    resolved = allowed >= 1
    note = (f"{figures['false_events']} false events in {hours * 60:.1f} min of normal validation footage "
            f"(at most {allowed} allowed)")
    if not resolved:
        note += (f"; {hours * 60:.1f} min cannot resolve {rate:g} per hour, so the threshold is the lowest at which "
                 "the normal validation clips raise no event")
    if not met:
        note += "; even a threshold of 1 raises events on normal footage (scores saturated): not met"
    return config, {**record, "threshold": config.threshold, "release": config.release, "met": met,
                    "resolved": resolved, "validation_recall": figures["recall"], "note": note}


def event_rows(figures: dict) -> list[tuple[str, str]]:
    """``(metric, value)`` rows of :func:`event_figures` for a report's summary table."""

    def fmt(x, digits=3):
        return "n/a" if x is None else f"{x:.{digits}f}"

    return [
        ("event threshold (release)", f"{figures['threshold']:.3f} ({figures['release']:.3f})"),
        ("event recall (anomalous clips with an event on the anomaly)",
         f"{fmt(figures['recall'])} ({figures['detected']} of {figures['anomalous_clips']})"),
        ("false events per hour of normal footage",
         f"{fmt(figures['false_events_per_hour'], 1)} ({figures['false_events']} in {figures['normal_hours'] * 60:.1f} min)"),
        ("mean delay, true start to first event (s)", fmt(figures["mean_delay_s"], 2)),
    ]
