"""Watch a file, a folder of files or a live stream and turn it into step records and events.

``iter_steps`` decodes in one demux pass and hands over each time step as soon as its media is
complete, with the same timestamps as ``avar.media.decode.decode_steps`` (whose helpers it
reuses): for a regular file, its steps equal ``decode_steps``'s. ``Watcher`` decodes in a
thread, runs a trained run's extractors on the steps ready so far (a batch of up to ``batch``;
one at a time on a live source), keeps a sliding window of the last ``seq_len`` step features
for the head, and feeds the records to an ``EventDetector``.

Two ways to place the head's window around step ``t`` (``L = seq_len``), both from
:mod:`avar.training.sequences`, the windows and padding training and ``avar predict`` use:

* **causal**: the window ``[t - L + 1, t]`` (fewer steps at the start), real steps first and
  right padding as in training; the record is ready as soon as step ``t`` is, and never depends
  on later media.
* **centred** (default): the window of ``L`` steps starting at ``t - (L - 1) // 2`` (shifted to
  stay inside the stream), so the record waits for step ``t + L // 2`` (for the first steps:
  step ``L - 1``) or the end of the stream. This is the window ``Predictor.predict`` scores
  step ``t`` in, so for a file the records equal ``avar predict``'s whatever its length.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from avar.features import Extractor
from avar.media.decode import MEDIA_EXTENSIONS, MediaError, Opener, StepMedia, iter_steps, resize_rgb
from avar.serve.predict import StepRecord, step_record
from avar.serve.events import Event, EventConfig, EventDetector, save_thumbnail, thumbnail_path
from avar.serve.store import EventStore, write_jsonl
from avar.runs import load_run
from avar.training.run import FeatureRun
from avar.training.sequences import causal_start, centred_start, pad_windows

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
"""Seconds before the first reconnection attempt; doubled after each failed one."""
BACKOFF_MAX = 8.0
"""Seconds; the back-off stops doubling here."""
FOLLOW_POLL = 0.1
REPLAY_LIMIT = 3
"""Connections that deliver media and then fail at the same point of the source (within a
step) before it is taken for a broken file rather than a dropped stream: a live stream's
reconnections fail wherever the network does, a damaged file or response always at its damage,
and reconnecting to it would replay it forever."""
"""Seconds between looks at a followed file's size while waiting at its end."""

class Watcher:
    """A trained run applied to live media: step records as they become known, events as they close.

    ``events`` turns records into events (default: the run's own thresholds, ``thresholds`` in
    its config, else ``EventConfig()``'s); closed events are added to
    ``store`` and/or appended to ``jsonl``, with a JPEG of the peak step's frame in
    ``thumbnails`` when given (the frame must still be among the last ``ring`` steps).
    A dropped stream is reopened with ``opener`` after 0.5, 1, 2, 4, 8, 8... seconds, at most
    ``max_retries`` times in a row; the hole is recorded as a gap of the source.

    ``run`` is a run directory or a loaded ``Run``; its extractors are built under ``runtime``
    (see ``avar.features.runtime``) unless ``extractors`` (video, audio) are given. Decoding
    runs in its own thread; the backbones take whatever steps are ready, up to ``batch``.
    """

    def __init__(
        self,
        run: FeatureRun | Path | str,
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
        runtime: str = "auto",
        batch: int = 8,
        extractors: tuple[Extractor, Extractor] | None = None,
        anonymize=None,
    ):
        self.run = run if isinstance(run, FeatureRun) else load_run(run)
        self.video, self.audio = extractors or self.run.build_extractors(device, runtime)
        self.batch = batch
        self.stats = WatchStats()
        """Time per stage and per-step latency, accumulated over everything watched."""
        self.causal = causal
        self.events_config = events or EventConfig(**self.run.extra.get("thresholds", {}))
        self.store, self.jsonl, self.thumbnails = store, jsonl, thumbnails
        self.max_retries, self.opener, self.ring = max_retries, opener, ring
        self.anonymizer = anonymize.build() if anonymize is not None else None
        """With an ``avar.anonymize.cover.AnonymizeConfig``: faces and plates covered in every frame."""
        self.events: list[Event] = []
        """Every event closed so far, across sources."""
        self.failures: list[dict] = []
        """``{"source", "reason"}`` for each source that could not be opened or decoded to its end."""

    def watch(self, source: str | Path, *, realtime: bool = False, reconnect: bool | None = None,
              follow: bool = False, idle_timeout: float = 10.0) -> Iterator[StepRecord]:
        """Step records of ``source`` in time order (a folder: each media file in name order).

        ``realtime`` paces the source at its own speed (for files; live sources pace
        themselves). ``reconnect`` (default: for anything that is not a local file) reopens
        a dropped stream. A file that fails, even part-way, is warned about, listed in
        ``failures`` and marked in the store's sources with its ``error`` (the records and
        events of what decoded are kept); a folder then goes on with its next file. Failures
        and reconnections are logged (``logging``, logger ``avar.serve.watch``).

        ``follow`` reads a file that is still being written (a recorder's current segment; in a
        folder, its last file) as it grows: at its end the watch waits for more bytes and goes
        on from there, each step once, until the file has not grown for ``idle_timeout``
        seconds. The container must be readable while written (MPEG-TS, Matroska, fragmented
        MP4; not a plain MP4, whose index comes last). Without ``follow``, a file that changes
        while it is read gets a warning: the watch ended at what was there then.
        """
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive seconds, got {idle_timeout}")
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"{path}: no media files (extensions: {', '.join(sorted(MEDIA_EXTENSIONS))})")
            for f in files:
                try:
                    yield from self._watch_one(str(f), realtime, bool(reconnect),
                                               idle_timeout if follow and f == files[-1] else None)
                except MediaError as exc:
                    self._fail(str(f), exc.reason)
            return
        is_file = path.is_file()
        if follow and not is_file:
            log.info("%s: not a local file; --follow only applies to files, a stream is read live anyway", source)
        try:
            yield from self._watch_one(str(source), realtime, (not is_file) if reconnect is None else reconnect,
                                       idle_timeout if follow and is_file else None)
        except MediaError as exc:
            self._fail(str(source), exc.reason)
            raise

    def _fail(self, uri: str, reason: str) -> None:
        log.warning("%s: %s", uri, reason)
        self.failures.append({"source": uri, "reason": reason})
        if self.store is not None:
            self.store.mark_error(uri, reason)

    def _steps(self, uri: str, opener) -> Iterator[StepMedia]:
        """The source's steps; with ``anonymize``, each frame covered at full size, then resized
        (in the decoder thread, before features or thumbnails see it)."""
        size = getattr(self.video, "input_size", None)
        if self.anonymizer is None:
            return iter_steps(uri, self.run.step, size, opener=opener)
        return (replace(m, frame=resize_rgb(self.anonymizer.frame(m.frame), size))
                for m in iter_steps(uri, self.run.step, None, opener=opener))

    def _watch_one(self, uri: str, realtime: bool, reconnect: bool,
                   follow: float | None = None) -> Iterator[StepRecord]:
        """One file or stream; ``follow`` is the idle timeout (seconds) of a local file read as it grows."""
        log.info("%s: watching with a %s run (%s), %s windows of %d steps", uri, self.run.method, self.run.learning,
                 "causal" if self.causal else "centred", self.run.seq_len)
        stop = threading.Event()  # ends a followed file's wait for more bytes when the watch is closed early
        if follow is not None:
            # No reconnection: reopening would start the file over and repeat its steps.
            opener, reconnect = (lambda u: av.open(_GrowingFile(u, follow, stop))), False
        elif uri.lower().startswith(("http://", "https://")):
            opener = lambda u: _HttpResponse(self.opener(u), u)
        else:
            opener = self.opener
        before = os.stat(uri) if follow is None and Path(uri).is_file() else None
        try:
            yield from self._steps_of(uri, realtime, reconnect, opener, before)
        finally:
            stop.set()

    def _steps_of(self, uri: str, realtime: bool, reconnect: bool, opener: Opener,
                  before: os.stat_result | None) -> Iterator[StepRecord]:
        detector = EventDetector(self.events_config, uri, self.run.classes[self.run.normal_index or 0])
        frames: collections.deque = collections.deque(maxlen=self.ring)
        registered = False
        offset = 0.0  # seconds added to the current connection's times (after reconnections)
        last_end: float | None = None
        dropped_at: float | None = None  # wall clock of the last drop
        retries = 0
        failed_at: list[float] = []  # where each connection that delivered media failed, in its own time
        while True:
            connection_end: float | None = None
            window = _Window(self)
            try:
                steps = self._steps(uri, opener)
                for group in _Prefetch(steps, realtime, self.stats, depth=2 * self.batch).batches(self.batch):
                    for media, _ in group:
                        if dropped_at is not None:
                            # The hole lasts as long as the outage in wall-clock seconds (to the
                            # ms, like record times).
                            offset = round(last_end + (time.monotonic() - dropped_at) - media.time, 3)
                            if self.store is not None:
                                self.store.record_gap(uri, last_end, round(media.time + offset, 6))
                            dropped_at, retries = None, 0
                        if not registered and self.store is not None:
                            self.store.add_source(uri, "file" if Path(uri).is_file() else "stream")
                        registered = True
                        last_end = media.end + offset
                        connection_end = media.end
                    if offset:
                        group = [(replace(m, time=round(m.time + offset, 6), end=round(m.end + offset, 6)), ready)
                                 for m, ready in group]
                    frames.extend((m.time, m.frame) for m, _ in group)
                    yield from self._emit(uri, window.push(group), detector, frames)
                yield from self._emit(uri, window.finish(), detector, frames)
                break
            except MediaError as exc:
                yield from self._emit(uri, window.finish(), detector, frames)
                if connection_end is not None:
                    same = failed_at and abs(failed_at[-1] - connection_end) <= self.run.step
                    failed_at = [*failed_at, connection_end] if same else [connection_end]
                if len(failed_at) >= REPLAY_LIMIT:
                    exc = MediaError(uri, f"{exc.reason}; {len(failed_at)} connections in a row failed at the same "
                                          f"point ({connection_end:g} s into the source): a damaged file or "
                                          "response, not a dropped stream")
                if not reconnect or retries >= self.max_retries or len(failed_at) >= REPLAY_LIMIT:
                    self._close(detector.flush(), frames)
                    _warn_if_changed(uri, before, last_end)
                    if not registered:
                        raise
                    raise MediaError(uri, f"{exc.reason}; it stopped at {last_end:g} s, and the records and "
                                          "events before that are kept") from exc
                delay = min(BACKOFF_START * 2**retries, BACKOFF_MAX)
                retries += 1
                log.warning("%s: %s; reconnecting in %gs (attempt %d/%d)", uri, exc.reason, delay, retries,
                            self.max_retries)
                if dropped_at is None:
                    dropped_at = time.monotonic()
                if last_end is None:
                    last_end = offset
                time.sleep(delay)
        self._close(detector.flush(), frames)
        _warn_if_changed(uri, before, last_end)

    def features(self, frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both backbones on a batch of steps, timed into ``stats``.

        One after the other, each with all intra-op threads: running them at the same time on
        one thread each was no faster on 2 cores (``benchmarks/realtime.py``).
        """
        t0 = time.perf_counter()
        video = self.video(frames)
        t1 = time.perf_counter()
        sound = self.audio(audio)
        self.stats.video_s += t1 - t0
        self.stats.audio_s += time.perf_counter() - t1
        return video, sound

    def _emit(self, uri: str, records: list[StepRecord], detector: EventDetector, frames) -> Iterator[StepRecord]:
        """Store a batch of records (one transaction), then hand each to the event detector and the caller."""
        if self.store is not None and records:
            self.store.add_steps(uri, records)
        for record in records:
            self._close(detector.push(record), frames)
            yield record

    def _close(self, events: list[Event], frames) -> None:
        if not events:
            return
        if self.thumbnails is not None:
            shown = dict(frames)
            for e in events:
                if e.peak_time in shown:
                    try:
                        path = thumbnail_path(self.thumbnails, e.source, e.start, e.label)
                    except ValueError as exc:
                        log.warning("%s: no thumbnail for the event at %g s: %s", e.source, e.start, exc)
                        continue
                    # absolute, so a dashboard started elsewhere finds it
                    e.thumbnail = str(Path(save_thumbnail(shown[e.peak_time], path)).resolve())
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
        self.ready: list[float] = []  # perf_counter() when each step's media was complete
        self.first = 0  # global index of self.video[0]; older features are dropped
        self.next = 0  # next step to emit

    def push(self, group: list[tuple[StepMedia, float]]) -> list[StepRecord]:
        """Add a batch of steps (media, time complete); return the records now decidable."""
        video, audio = self.w.features(np.stack([m.frame for m, _ in group]), np.stack([m.audio for m, _ in group]))
        v, a = self.run.normalise(video, audio)
        self.video.extend(v)
        self.audio.extend(a)
        self.spans.extend((m.time, m.end) for m, _ in group)
        self.ready.extend(ready for _, ready in group)
        n, L = self.first + len(self.video), self.run.seq_len
        windows = []
        while self.next < n:
            t = self.next
            if self.w.causal:
                start, stop = causal_start(t, L), t + 1
            else:
                # the window centred on t once it is complete; it never moves again
                start = centred_start(t, t + L, L)
                stop = start + L
                if stop > n:
                    break
            windows.append((t, start, stop))
            self.next += 1
        out = self._records(windows)
        self._trim()
        return out

    def finish(self) -> list[StepRecord]:
        n, L = self.first + len(self.video), self.run.seq_len
        windows = []
        for t in range(self.next, n):
            start = centred_start(t, n, L)
            windows.append((t, start, min(n, start + L)))
        self.next = n
        return self._records(windows)

    def _trim(self) -> None:
        # Keep what the pending records' windows may still need.
        keep_from = max(0, self.next - self.run.seq_len)
        drop = keep_from - self.first
        if drop > 0:
            del self.video[:drop], self.audio[:drop], self.spans[:drop], self.ready[:drop]
            self.first = keep_from

    def _records(self, windows: list[tuple[int, int, int]]) -> list[StepRecord]:
        """One record per ``(step, window start, window stop)``, the windows in one head batch."""
        if not windows:
            return []
        t0 = time.perf_counter()
        (video, audio), mask = pad_windows([self.video, self.audio], [(start, stop) for _, start, stop in windows],
                                           self.run.seq_len, offset=self.first)
        probs = self.run.window_probabilities(video, audio, mask)
        probs = probs[np.arange(len(windows)), [t - start for t, start, _ in windows]]
        now = time.perf_counter()
        stats = self.w.stats
        stats.head_s += now - t0
        records = []
        for (t, _, _), p in zip(windows, probs):
            time_, end = self.spans[t - self.first]
            stats.latencies.append(now - self.ready[t - self.first])
            records.append(step_record(self.run, time_, end, p))
        stats.steps += len(records)
        return records


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
    audio_s: float = 0.0
    head_s: float = 0.0
    latencies: list[float] = field(default_factory=list)


_END = object()


class _Prefetch:
    """Decodes ``steps`` in a thread, ``depth`` steps ahead, so decoding and inference overlap.

    Items are ``(media, ready)`` with ``ready`` the ``perf_counter()`` at which the step's media
    was complete. ``realtime`` holds each step back until its end on the source's clock, as a
    live source would deliver it. PyAV and the backbones release the GIL, so the thread runs
    in parallel with them.
    """

    def __init__(self, steps: Iterator[StepMedia], realtime: bool, stats: WatchStats, depth: int = 32):
        self.steps, self.realtime, self.stats = steps, realtime, stats
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="avar-decode", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        t0 = time.monotonic()
        try:
            while not self.stop.is_set():
                began = time.perf_counter()
                media = next(self.steps, None)
                if media is None:
                    break
                self.stats.decode_s += time.perf_counter() - began
                if self.realtime:
                    time.sleep(max(0.0, media.end - (time.monotonic() - t0)))
                if not self._put((media, time.perf_counter())):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it in order
            self._put(exc)
        finally:
            close = getattr(self.steps, "close", None)  # a generator: close its media now
            if close is not None:
                close()

    def batches(self, size: int) -> Iterator[list[tuple[StepMedia, float]]]:
        """Groups of what the decoder has ready, up to ``size`` steps, never waiting for more.

        A live source delivers a step at a time, so its batches stay at one step and its
        latency low; a file decoded faster than the backbones run fills whole batches. A
        decoding error is raised after the steps decoded before it.
        """
        try:
            while True:
                item, group = self.q.get(), []
                while item is not _END and not isinstance(item, BaseException):
                    group.append(item)
                    if len(group) >= size:
                        break
                    try:
                        item = self.q.get_nowait()
                    except queue.Empty:
                        break
                if group:
                    yield group
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
        finally:
            self.stop.set()
            # A live source may block inside the decoder; the thread is a daemon and ends with it.
            self.thread.join(timeout=1.0)


def _warn_if_changed(uri: str, before: os.stat_result | None, watched: float | None) -> None:
    """Warn when a local file changed while it was read: something is still writing it, and the
    watch ended at what was there then."""
    if before is None:
        return
    try:
        after = os.stat(uri)
    except OSError:
        return  # deleted or renamed away (a recorder rotating segments): nothing more to read from it
    if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
        return
    log.warning("%s: the file changed while it was read (%d -> %d bytes), so it is probably still being written; "
                "the watch ended early, at %s; pass --follow (watch(follow=True)) to read it as it grows",
                uri, before.st_size, after.st_size, "its start" if watched is None else f"{watched:g} s")


class _GrowingFile:
    """A file another program is still appending to, read like a pipe.

    At the file's current end ``read`` waits for more bytes, and reports the end only once the
    file has not grown for ``idle_timeout`` seconds (or ``stop`` is set). A recorder may stop
    in the middle of a packet; waiting, rather than reopening, hands FFmpeg the rest of it. No
    ``seek``: FFmpeg then never probes the end of a file that is not written yet.
    """

    def __init__(self, path: str, idle_timeout: float, stop: threading.Event):
        self.path, self.idle_timeout, self.stop = path, idle_timeout, stop
        self.file = open(path, "rb")
        self.followed = False  # whether the end was reached and more bytes came after it

    def read(self, size: int) -> bytes:
        idle_since: float | None = None
        while True:
            data = self.file.read(size)
            if data:
                if idle_since is not None and not self.followed:
                    self.followed = True
                    log.info("%s: reached the end while it is still being written; following it until it stops "
                             "growing for %gs", self.path, self.idle_timeout)
                return data
            now = time.monotonic()
            if idle_since is None:
                idle_since = now
                if not self.followed:
                    log.debug("%s: at the end of what is written so far; waiting for more", self.path)
            elif now - idle_since >= self.idle_timeout:
                log.info("%s: no new bytes for %gs; the end of the file", self.path, self.idle_timeout)
                return b""
            if self.stop.wait(FOLLOW_POLL):
                return b""

    def close(self) -> None:
        self.file.close()


class _HttpResponse:
    """An HTTP(S) container that tells a finished response from a dropped one.

    A response without Content-Length (nor chunked encoding) ends when the server closes the
    connection (RFC 9112, section 6.3), which FFmpeg reports as an I/O error ("Stream ends
    prematurely"), the same as a drop. When the media came faster than real time or reached the
    container's own duration, it was a finished file: the demuxer ends as at the end of a file
    (decoders drained, every step handed over, no reconnection). A live stream closed by its
    server, or a response shorter than its Content-Length, still raises: a drop.
    """

    def __init__(self, container, uri: str):
        self.container, self.uri = container, uri
        self.streams = container.streams
        self.opened = time.monotonic()

    def __enter__(self) -> _HttpResponse:
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def demux(self, *streams):
        first = last = None  # packet times (s) seen so far
        try:
            for packet in self.container.demux(*streams):
                if packet.pts is not None and packet.time_base is not None:
                    t = float(packet.pts * packet.time_base)
                    first = t if first is None else min(first, t)
                    last = t if last is None else max(last, t)
                yield packet
        except av.error.OSError as exc:
            if exc.errno != errno.EIO or first is None or not self._finished(last - first):
                raise
            for stream in streams:  # empty packets drain the decoders, as PyAV does at the end of a file
                packet = av.Packet()
                packet.stream = stream
                yield packet

    def _finished(self, media: float) -> bool:
        # A wrapped opener may not say: then the length counts as known, and the end as a drop.
        if getattr(self.container, "size", 0) >= 0:  # a known length that was not reached: cut short
            return False
        wall = time.monotonic() - self.opened
        duration = getattr(self.container, "duration", None)
        # A live source cannot deliver media faster than it happens, except a short burst on connecting.
        if media < 2 * wall and (duration is None or media < duration / av.time_base - 1.0):
            return False
        log.info("%s: the server closed a response without Content-Length after %.1f s of media in %.1f s: "
                 "the end of a finished file, not a drop", self.uri, media, wall)
        return True
