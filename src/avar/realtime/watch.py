"""Watch a file, a folder of files or a live stream and turn it into step records and events.

``iter_steps`` decodes in one demux pass and hands over each time step as soon as its media is
complete, with the same timestamps as ``avar.media.decode.decode_steps`` (whose helpers it
reuses): for a regular file, its steps equal ``decode_steps``'s. ``Watcher`` runs a trained
run's extractors on each step (batch of 1), keeps a sliding window of the last ``seq_len``
step features for the head, and feeds the records to an ``EventDetector``.

Two ways to place the head's window around step ``t`` (``L = seq_len``):

* **causal**: the window ``[t - L + 1, t]`` (fewer steps at the start), real steps first and
  right padding as in training; the record is ready as soon as step ``t`` is, and never depends
  on later media.
* **centred** (default): the window of ``L`` steps starting at ``t - (L - 1) // 2`` (shifted to
  stay inside the stream), so the record waits for step ``t + L // 2`` (for the first steps:
  step ``L - 1``) or the end of the stream. A stream of at most ``L`` steps is thus seen in one
  window, exactly as ``Predictor.predict`` sees it; longer ones differ from ``predict``, which
  averages half-overlapping windows.
"""

from __future__ import annotations

import collections
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import torch

from avar.features import build_extractor
from avar.media.decode import MEDIA_EXTENSIONS, MediaError, Opener, StepMedia, iter_steps
from avar.predict import StepRecord
from avar.realtime.events import Event, EventConfig, EventDetector, save_thumbnail
from avar.realtime.store import EventStore, write_jsonl
from avar.training.run import Run

BACKOFF_START = 0.5
"""Seconds before the first reconnection attempt; doubled after each failed one."""
BACKOFF_MAX = 8.0
"""Seconds; the back-off stops doubling here."""

class Watcher:
    """A trained run applied to live media: step records as they become known, events as they close.

    ``events`` turns records into events (default ``EventConfig()``); closed events are added to
    ``store`` and/or appended to ``jsonl``, with a JPEG of the peak step's frame in
    ``thumbnails`` when given (the frame must still be among the last ``ring`` steps).
    A dropped stream is reopened with ``opener`` after 0.5, 1, 2, 4, 8, 8... seconds, at most
    ``max_retries`` times in a row; the hole is recorded as a gap of the source.
    """

    def __init__(
        self,
        run_dir: Path | str,
        *,
        causal: bool = False,
        events: EventConfig | None = None,
        store: EventStore | None = None,
        jsonl: Path | None = None,
        thumbnails: Path | None = None,
        max_retries: int = 5,
        opener: Opener = av.open,
        ring: int = 64,
        device: str = "cpu",
    ):
        self.run = Run.load(run_dir)
        ex = self.run.extractors
        self.video = build_extractor(ex["video"]["name"], ex["video"].get("weights"), device)
        self.audio = build_extractor(ex["audio"]["name"], ex["audio"].get("weights"), device)
        self.causal = causal
        self.events_config = events or EventConfig()
        self.store, self.jsonl, self.thumbnails = store, jsonl, thumbnails
        self.max_retries, self.opener, self.ring = max_retries, opener, ring
        self.events: list[Event] = []
        """Every event closed so far, across sources."""
        self.failures: list[dict] = []
        """``{"source", "reason"}`` for each source that failed to decode."""

    def watch(self, source: str | Path, *, realtime: bool = False, reconnect: bool | None = None) -> Iterator[StepRecord]:
        """Step records of ``source`` in time order (a folder: each media file in name order).

        ``realtime`` paces the source at its own speed (for files; live sources pace
        themselves). ``reconnect`` (default: for anything that is not a local file) reopens
        a dropped stream. A folder's file that fails is warned about, listed in ``failures``
        and the store's sources (kind ``"error"``), and the next file goes on.
        """
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"{path}: no media files (extensions: {', '.join(sorted(MEDIA_EXTENSIONS))})")
            for f in files:
                try:
                    yield from self._watch_one(str(f), realtime, bool(reconnect))
                except MediaError as exc:
                    self._fail(str(f), exc.reason)
            return
        is_file = path.is_file()
        try:
            yield from self._watch_one(str(source), realtime, (not is_file) if reconnect is None else reconnect)
        except MediaError as exc:
            self._fail(str(source), exc.reason)
            raise

    def _fail(self, uri: str, reason: str) -> None:
        warnings.warn(f"{uri}: {reason}; skipped", stacklevel=3)
        self.failures.append({"source": uri, "reason": reason})
        if self.store is not None:
            self.store.add_source(uri, "error")

    def _watch_one(self, uri: str, realtime: bool, reconnect: bool) -> Iterator[StepRecord]:
        detector = EventDetector(self.events_config, uri, self.run.classes[self.run.normal_index or 0])
        frames: collections.deque = collections.deque(maxlen=self.ring)
        registered = False
        offset = 0.0  # seconds added to the current connection's times (after reconnections)
        last_end: float | None = None
        dropped_at: float | None = None  # wall clock of the last drop
        retries = 0
        t0 = time.monotonic()
        while True:
            window = _Window(self)
            try:
                for media in iter_steps(uri, self.run.step, getattr(self.video, "input_size", None), opener=self.opener):
                    if dropped_at is not None:
                        # The hole lasts as long as the outage in wall-clock seconds (to the ms,
                        # like record times).
                        offset = round(last_end + (time.monotonic() - dropped_at) - media.time, 3)
                        if self.store is not None:
                            self.store.record_gap(uri, last_end, round(media.time + offset, 6))
                        dropped_at, retries = None, 0
                    if offset:
                        media = replace(media, time=round(media.time + offset, 6), end=round(media.end + offset, 6))
                    if not registered and self.store is not None:
                        self.store.add_source(uri, "file" if Path(uri).is_file() else "stream")
                    registered = True
                    if realtime:
                        time.sleep(max(0.0, media.end - (time.monotonic() - t0)))
                    last_end = media.end
                    frames.append((media.time, media.frame))
                    for record in window.push(media):
                        yield self._emit(record, detector, frames)
                for record in window.finish():
                    yield self._emit(record, detector, frames)
                break
            except MediaError as exc:
                for record in window.finish():
                    yield self._emit(record, detector, frames)
                if not reconnect or retries >= self.max_retries:
                    self._close(detector.flush(), frames)
                    raise
                delay = min(BACKOFF_START * 2**retries, BACKOFF_MAX)
                retries += 1
                warnings.warn(f"{uri}: {exc.reason}; reconnecting in {delay:g}s (attempt {retries}/{self.max_retries})",
                              stacklevel=2)
                if dropped_at is None:
                    dropped_at = time.monotonic()
                if last_end is None:
                    last_end = offset
                time.sleep(delay)
        self._close(detector.flush(), frames)

    def _emit(self, record: StepRecord, detector: EventDetector, frames) -> StepRecord:
        self._close(detector.push(record), frames)
        return record

    def _close(self, events: list[Event], frames) -> None:
        if not events:
            return
        if self.thumbnails is not None:
            shown = dict(frames)
            for e in events:
                if e.peak_time in shown:
                    name = f"{Path(e.source).stem}_{e.start:09.3f}_{e.label}.jpg"
                    e.thumbnail = str(save_thumbnail(shown[e.peak_time], Path(self.thumbnails) / name))
        if self.store is not None:
            self.store.add_events(events)
        if self.jsonl is not None:
            write_jsonl(events, self.jsonl)
        self.events.extend(events)


class _Window:
    """The features of one connection's steps so far, and the records not yet emitted."""

    def __init__(self, watcher: Watcher):
        self.w = watcher
        self.run = watcher.run
        self.video: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.spans: list[tuple[float, float]] = []
        self.first = 0  # global index of self.video[0]; older features are dropped
        self.next = 0  # next step to emit

    def push(self, media: StepMedia) -> list[StepRecord]:
        v, a = self.run.norm.apply(self.w.video(media.frame[None]), self.w.audio(media.audio[None]))
        self.video.append(v[0])
        self.audio.append(a[0])
        self.spans.append((media.time, media.end))
        n, L = self.first + len(self.video), self.run.seq_len
        out = []
        while self.next < n:
            t = self.next
            if self.w.causal:
                start, stop = max(0, t - L + 1), t + 1
            else:
                start = max(0, t - (L - 1) // 2)
                stop = start + L
                if stop > n:
                    break
            out.append(self._record(t, start, stop))
            self.next += 1
        self._trim()
        return out

    def finish(self) -> list[StepRecord]:
        n, L = self.first + len(self.video), self.run.seq_len
        out = []
        for t in range(self.next, n):
            start = max(0, min(t - (L - 1) // 2, n - L))
            out.append(self._record(t, start, min(n, start + L)))
        self.next = n
        return out

    def _trim(self) -> None:
        # Keep what the pending records' windows may still need.
        keep_from = max(0, self.next - self.run.seq_len)
        drop = keep_from - self.first
        if drop > 0:
            del self.video[:drop], self.audio[:drop], self.spans[:drop]
            self.first = keep_from

    @torch.inference_mode()
    def _record(self, t: int, start: int, stop: int) -> StepRecord:
        run, L = self.run, self.run.seq_len
        lo, hi = start - self.first, stop - self.first
        k = hi - lo
        video = np.zeros((1, L, self.video[0].shape[0]), np.float32)
        audio = np.zeros((1, L, self.audio[0].shape[0]), np.float32)
        mask = np.zeros((1, L), bool)
        video[0, :k], audio[0, :k], mask[0, :k] = self.video[lo:hi], self.audio[lo:hi], True
        run.head.eval()
        out = run.head(torch.from_numpy(video), torch.from_numpy(audio), torch.from_numpy(mask))
        p = torch.softmax(out.step_logits[0, t - start], -1).numpy().astype(np.float64)
        score = float(run.anomaly_score(p[None])[0])
        time_, end = self.spans[t - self.first]
        return StepRecord(
            time=round(float(time_), 3),
            end=round(float(end), 3),
            predicted=run.classes[int(p.argmax())],
            probabilities={c: round(float(x), 5) for c, x in zip(run.classes, p)},
            anomaly_score=round(score, 5),
        )
