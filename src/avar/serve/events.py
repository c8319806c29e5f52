"""Anomaly events from a stream of per-step scores: hysteresis, minimum duration, gap bridging.

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

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol
from urllib.parse import urlsplit

import numpy as np

from avar.features.cache import safe_file_name, write_atomic

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


def thumbnail_path(folder: Path | str, source: str, start: float, label: str) -> Path:
    """Where the thumbnail of ``source``'s event starting at ``start`` s with ``label`` goes:
    ``<stem>-<hash>_<start>_<label>.jpg``, always directly inside ``folder``.

    Source names and labels come from URLs, file names and run files, so anything but letters,
    digits, ``.``, ``-`` and ``_`` becomes ``_`` (no ``/``, no leading dot, no URL query with its
    tokens); the hash of the whole source keeps apart cameras whose streams share a name
    (``rtsp://a/live``, ``rtsp://b/live``). Raises ValueError when the name would still resolve
    outside ``folder`` (a symbolic link of that name pointing elsewhere).
    """
    folder = Path(folder)
    stem = Path(urlsplit(source).path if "://" in source else source).stem
    digest = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    path = folder / f"{safe_file_name(stem)}-{digest}_{start:09.3f}_{safe_file_name(label)}.jpg"
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"thumbnail {path} would be written outside {folder}; remove what is at that name")
    return path


def save_thumbnail(frame_rgb: np.ndarray, path: Path | str, quality: int = 90) -> Path:
    """Write an RGB ``uint8 [H, W, 3]`` frame as a JPEG at ``path``, atomically (temp file + rename)
    so a reader polling the folder never sees half a file."""
    import cv2

    frame = np.asarray(frame_rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"thumbnail {path}: need an RGB uint8 [H, W, 3] frame, got {frame.dtype} {frame.shape}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"thumbnail {path}: OpenCV could not encode the frame as JPEG")
    path = Path(path)
    write_atomic(path, buf.tobytes())
    return path
