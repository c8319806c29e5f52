"""Scoring a stream: each source's sliding :class:`Window` of step features and the head run
once over the windows of every source (:func:`score_windows`), and where the time went
(:class:`WatchStats`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from avar.media.decode import StepMedia
from avar.serve.predict import StepRecord, step_record
from avar.training.run import FeatureRun
from avar.training.sequences import pad_windows, step_windows


@dataclass
class WatchStats:
    """Where a watcher's time went, summed over every step so far (seconds).

    Stages overlap (decoding runs in its own thread), so their sum may exceed the wall time.
    ``latencies`` holds, per record, the seconds from its step's media being complete (the
    decoder handing it over) to the record being emitted.
    """

    steps: int = 0
    decode_s: float = 0.0
    video_s: float = 0.0
    motion_s: float = 0.0
    audio_s: float = 0.0
    head_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    skipped: int = 0
    """Steps of live sources skipped to keep up (stored as gaps of kind ``skipped``)."""
    stalls: int = 0
    """Times a live source delivered nothing for ``stall_after`` seconds and came back."""
    lagging: int = 0
    """Times a live source fell more than ``lag_after`` seconds behind."""


class Window:
    """The features of one connection's steps so far, and the records not yet emitted: the
    run's windows (causal or centred, as :mod:`avar.training.sequences` places them) over a
    stream that arrives a batch at a time. ``stats`` are the source's, ``totals`` the watch's."""

    def __init__(self, run: FeatureRun, causal: bool, stats: WatchStats, totals: WatchStats):
        self.run, self.causal, self.stats, self.totals = run, causal, stats, totals
        self.video: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.spans: list[tuple[float, float]] = []
        self.ready: list[float] = []  # perf_counter() when each step's media was complete
        self.first = 0  # global index of self.video[0]; older features are dropped
        self.next = 0  # next step to emit
        self.context: tuple[np.ndarray, np.ndarray] | None = None  # the last raw steps, for the next batch

    def push(self, group: list[tuple[StepMedia, float]], video: np.ndarray,
             audio: np.ndarray) -> list[tuple[int, int, int]]:
        """Add a batch of steps (media, time complete) with their backbone features; return the
        windows ``(step, start, stop)`` of the records now decidable
        (:func:`~avar.training.sequences.step_windows`)."""
        context = self.run.context_steps  # raw steps before a step that its input reads (a run reading motion)
        seen = 0 if self.context is None else len(self.context[0])
        if seen:
            video, audio = np.concatenate([self.context[0], video]), np.concatenate([self.context[1], audio])
        v, a = self.run.normalise(video, audio)
        v, a = v[seen:], a[seen:]
        if context:
            self.context = (video[-context:], audio[-context:])
        self.video.extend(v)
        self.audio.extend(a)
        self.spans.extend((m.time, m.end) for m, _ in group)
        self.ready.extend(ready for _, ready in group)
        n = self.first + len(self.video)
        windows = step_windows(range(self.next, n), n, self.run.seq_len, causal=self.causal, final=False)
        self.next += len(windows)
        return windows

    def finish(self) -> list[tuple[int, int, int]]:
        """The windows of every step not yet decided, the connection having ended."""
        n = self.first + len(self.video)
        windows = step_windows(range(self.next, n), n, self.run.seq_len, causal=self.causal)
        self.next = n
        return windows

    def inputs(self, windows: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The head's padded inputs ``video [N, L, dv]``, ``audio [N, L, da]``, ``mask [N, L]``."""
        (video, audio), mask = pad_windows([self.video, self.audio], [(start, stop) for _, start, stop in windows],
                                           self.run.seq_len, offset=self.first)
        return video, audio, mask

    def records(self, windows: list[tuple[int, int, int]], probs: np.ndarray, now: float) -> list[StepRecord]:
        """One record per window from the head's ``probs [N, L, C]``; then forget what no
        pending window needs."""
        probs = probs[np.arange(len(windows)), [t - start for t, start, _ in windows]]
        records = []
        for (t, _, _), p in zip(windows, probs):
            time_, end = self.spans[t - self.first]
            records.append(step_record(self.run, time_, end, p))
            for stats in (self.totals, self.stats):
                stats.latencies.append(now - self.ready[t - self.first])
        for stats in (self.totals, self.stats):
            stats.steps += len(records)
        self._trim()
        return records

    def _trim(self) -> None:
        # Keep what the pending records' windows may still need.
        keep_from = max(0, self.next - self.run.seq_len)
        drop = keep_from - self.first
        if drop > 0:
            del self.video[:drop], self.audio[:drop], self.spans[:drop], self.ready[:drop]
            self.first = keep_from


def score_windows(run: FeatureRun, work: list[tuple[Window, list[tuple[int, int, int]]]], totals: WatchStats
                  ) -> list[list[StepRecord]]:
    """The records of windows of any sources' :class:`Window` objects, the head run once over all of
    them (a call per source cost most of the head's time with a dozen streams)."""
    if not any(windows for _, windows in work):
        return [[] for _ in work]
    t0 = time.perf_counter()
    parts = [window.inputs(windows) for window, windows in work if windows]
    probs = run.window_probabilities(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
    now = time.perf_counter()
    totals.head_s += now - t0
    out, at = [], 0
    for window, windows in work:
        out.append(window.records(windows, probs[at : at + len(windows)], now) if windows else [])
        window.stats.head_s += (now - t0) * len(windows) / len(probs)
        at += len(windows)
    return out
