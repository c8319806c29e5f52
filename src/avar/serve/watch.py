"""Watch a file, a folder of files or a live stream and turn it into step records and events.

``iter_steps`` decodes in one demux pass and hands over each time step as soon as its media is
complete, with the same timestamps as ``avar.media.decode.decode_steps`` (whose helpers it
reuses): for a regular file, its steps equal ``decode_steps``'s. ``Watcher`` follows one
source (``watch``) or many at once (``watch_many``) the same way: each source is a ``_Feed``,
a thread that decodes, paces and reconnects it; one engine (the caller's thread) takes the
steps ready so far from every feed (a batch of up to ``batch``, never waiting for more), runs
the run's extractors on them in one call, puts each step's features in its source's sliding
window of the last ``seq_len`` steps for the head, and feeds each source's records to its own
``EventDetector``. A source that stalls or drops only stops its own feed.

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
import math
import os
import shlex
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from avar.features import Extractor
from avar.features.cache import motion_sampling
from avar.media.decode import (AUDIO_RATE, MEDIA_EXTENSIONS, MediaError, MotionPairs, Opener, StepMedia, iter_steps,
                               resize_rgb)
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

@dataclass
class Source:
    """One thing to watch: ``uri`` (a file, a folder of files, a URL or a device) and an optional
    display ``name`` (stored with the source). A path on this machine is made absolute, so the
    store names it the same wherever the watch ran (links are kept: two links to one file are
    two sources)."""

    uri: str
    name: str | None = None

    def __post_init__(self) -> None:
        if is_local(self.uri):
            self.uri = os.path.abspath(self.uri)


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a path on this machine (a file, folder or device), not a URL."""
    return "://" not in uri


def source_kind(uri: str) -> str:
    """How the store lists a source: ``file`` (a local path that is, or should be, a file) or
    ``stream`` (a URL or a device)."""
    path = Path(uri)
    return "file" if path.is_file() or is_local(uri) and not path.exists() else "stream"


def read_sources(path: Path | str) -> list[Source]:
    """The sources listed in ``path``: one a line, ``URI`` or ``URI NAME`` (shell quoting for
    spaces), blank lines and ``#`` comments ignored. Raises ValueError naming the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--sources {path}: cannot read it ({exc}); pass a text file with one URI a line") from exc
    sources = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}; quote a URI with spaces as \"my clip.mp4\"") from exc
        if len(fields) > 2:
            raise ValueError(f"{path}:{number}: expected URI or URI NAME, got {len(fields)} fields; "
                             "quote a URI or name with spaces")
        if fields:
            sources.append(Source(*fields))
    if not sources:
        raise ValueError(f"{path}: no sources; write one URI a line, e.g. rtsp://10.0.0.5/stream gate")
    repeated = _repeated(sources)
    if repeated:
        raise ValueError(f"{path}: {', '.join(repeated)} listed more than once; each source once")
    return sources


def _repeated(sources: list[Source]) -> list[str]:
    """The uris given more than once, sorted."""
    uris = [s.uri for s in sources]
    return sorted({u for u in uris if uris.count(u) > 1})


class Watcher:
    """A trained run applied to live media: step records as they become known, events as they close.

    ``events`` turns records into events (default: the run's own thresholds, ``thresholds`` in
    its config, else ``EventConfig()``'s); closed events are added to
    ``store`` and/or appended to ``jsonl``, with a JPEG of the peak step's frame in
    ``thumbnails`` when given (the frame must still be among the last ``ring`` steps).
    A dropped stream is reopened with ``opener`` after 0.5, 1, 2, 4, 8, 8... seconds, at most
    ``max_retries`` times in a row; the hole is recorded as a gap of the source.

    ``run`` is a run directory or a loaded ``Run``; its extractors are built under ``runtime``
    (see ``avar.features.runtime``) unless ``extractors`` (video, audio) are given. Each source
    is decoded in its own thread; the backbones take whatever steps are ready, of every source,
    up to ``batch`` at a time.

    Live sources (streams, devices, files paced with ``realtime``): one that falls more than
    ``lag_after`` seconds behind is ``lagging`` (its state in the store, and a counter); past
    ``skip_after`` seconds its oldest waiting steps are skipped, so memory stays bounded, and
    each skipped step is stored as a gap of kind ``skipped``. One that delivers nothing for
    ``stall_after`` seconds is ``stalled``; when it comes back, the hole is stored as a gap of
    kind ``stall`` and its later steps are placed after it, as after a drop (kind ``drop``).
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
        extractors: tuple[Extractor, ...] | None = None,
        anonymize=None,
        lag_after: float = 2.0,
        skip_after: float = 10.0,
        stall_after: float = 5.0,
    ):
        for name, value in (("lag_after", lag_after), ("skip_after", skip_after), ("stall_after", stall_after)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if skip_after < lag_after:
            raise ValueError(f"skip_after ({skip_after} s) must be at least lag_after ({lag_after} s)")
        self.run = run if isinstance(run, FeatureRun) else load_run(run)
        built = extractors or self.run.build_extractors(device, runtime)
        self.video, self.audio = built[:2]
        self.motion = built[2] if len(built) > 2 else self.run.build_motion()
        """The motion extractor where the run reads a motion stream (its frame pairs come from the
        same decoding pass as the frames), else None."""
        self.batch = batch
        self.stats = WatchStats()
        """Time per stage and per-step latency, accumulated over everything watched."""
        self.source_stats: dict[str, WatchStats] = {}
        """The same per source uri (decode time, steps, latencies, skipped steps, stalls, lags)."""
        self.causal = causal
        self.events_config = events or EventConfig(**self.run.extra.get("thresholds", {}))
        self.store, self.jsonl, self.thumbnails = store, jsonl, thumbnails
        self.max_retries, self.opener, self.ring = max_retries, opener, ring
        self.lag_after, self.skip_after, self.stall_after = lag_after, skip_after, stall_after
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
        events of what decoded are kept); a folder then goes on with its next file, a single
        source raises its ``MediaError`` after its last record. Failures and reconnections are
        logged (``logging``, logger ``avar.serve.watch``).

        ``follow`` reads a file that is still being written (a recorder's current segment; in a
        folder, its last file) as it grows: at its end the watch waits for more bytes and goes
        on from there, each step once, until the file has not grown for ``idle_timeout``
        seconds. The container must be readable while written (MPEG-TS, Matroska, fragmented
        MP4; not a plain MP4, whose index comes last). Without ``follow``, a file that changes
        while it is read gets a warning: the watch ended at what was there then.
        """
        feeds = self._feeds([Source(str(source))], realtime, reconnect, follow, idle_timeout)
        for _, record in self._run(feeds):
            yield record
        if feeds[0].fatal is not None:
            raise feeds[0].fatal

    def watch_many(self, sources: list[Source | str], *, realtime: bool = False, reconnect: bool | None = None,
                   follow: bool = False, idle_timeout: float = 10.0) -> Iterator[tuple[str, StepRecord]]:
        """``(uri, record)`` of every source at once, each source's records in time order.

        The options are :meth:`watch`'s, for every source. Each source decodes, paces itself and
        reconnects in its own thread, so one that stalls, drops or fails never delays the others;
        a failure is listed in ``failures`` (never raised) and the others go on.
        """
        sources = [s if isinstance(s, Source) else Source(str(s)) for s in sources]
        if not sources:
            raise ValueError("no sources to watch; pass at least one file, folder, URL or device")
        repeated = _repeated(sources)
        if repeated:
            raise ValueError(f"{', '.join(repeated)} given more than once; watch each source once")
        yield from self._run(self._feeds(sources, realtime, reconnect, follow, idle_timeout))

    def _feeds(self, sources: list[Source], realtime, reconnect, follow, idle_timeout) -> list[_Feed]:
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive seconds, got {idle_timeout}")
        lock = threading.Condition()
        return [_Feed(self, s, lock, realtime=realtime, reconnect=reconnect, follow=follow,
                      idle_timeout=idle_timeout) for s in sources]

    def _run(self, feeds: list[_Feed]) -> Iterator[tuple[str, StepRecord]]:
        """The engine: the feeds' steps, batched across sources through the backbones, into each
        source's window, detector and the store, in each source's order."""
        lock = feeds[0].lock
        states: dict[str, _SourceState] = {}
        for feed in feeds:
            feed.start()
        try:
            while True:
                with lock:
                    while not any(f.items for f in feeds) and not all(f.finished for f in feeds):
                        lock.wait(WATCHDOG_INTERVAL)
                        self._watchdog(feeds, states)
                    if not any(f.items for f in feeds):
                        break
                    controls, batch = _take(feeds, self.batch)
                    lock.notify_all()  # room again for a file's decoder waiting on a full queue
                for item in controls:
                    yield from self._control(item, states)
                if batch:
                    yield from self._push(batch, states)
                with lock:
                    self._watchdog(feeds, states)
        finally:
            for feed in feeds:
                feed.stop.set()
            with lock:
                lock.notify_all()
            for feed in feeds:
                # A live source may block inside the decoder; the thread is a daemon and ends with it.
                feed.thread.join(timeout=1.0)

    def _state(self, uri: str, states: dict[str, _SourceState]) -> _SourceState:
        if uri not in states:
            states[uri] = _SourceState(self, uri)
        return states[uri]

    def _control(self, item: tuple, states: dict[str, _SourceState]) -> Iterator[tuple[str, StepRecord]]:
        """One message of a feed other than a step (see ``_Feed``), in the feed's order."""
        kind, uri = item[0], item[1]
        if kind == "crash":
            raise item[2]
        state = self._state(uri, states)
        if kind == "open":
            if self.store is not None:
                self.store.add_source(uri, item[2], name=item[3])
            state.set(item[4])
        elif kind == "gap":
            start, end, gap = item[2:]
            if self.store is not None:
                self.store.record_gap(uri, start, end, gap)
            if gap == "stall":
                log.warning("%s: stalled: nothing came for %.1f s; the hole is stored as a gap", uri, end - start)
                state.stats_add("stalls", 1)
            state.set("live")  # it delivers again
        elif kind == "skip":
            state.skip(item[2], item[3])
        elif kind == "state":
            state.set(item[2])
        elif kind in ("break", "end"):
            yield from state.emit(_score(self, [(state.window, state.window.finish())])[0])
            state.window = _Window(self, state.stats)
            if kind == "end":
                state.close(state.detector.flush())
                state.detector = EventDetector(self.events_config, uri, self.run.normal_class)
                state.set("done")
        elif kind == "fail":
            self._fail(uri, item[2].reason)
            state.set("error", store=False)

    def _push(self, batch: list[tuple[str, StepMedia, float]], states) -> Iterator[tuple[str, StepRecord]]:
        """One backbone call over a batch of steps of any sources, then each source's records."""
        pairs = MotionPairs.stack([m.motion for _, m, _ in batch]) if self.motion is not None else None
        video, audio = self.features(np.stack([m.frame for _, m, _ in batch]), np.stack([m.audio for _, m, _ in batch]),
                                     pairs)
        order: dict[str, list[int]] = {}
        for i, (uri, _, _) in enumerate(batch):
            order.setdefault(uri, []).append(i)
        work = []
        for uri, rows in order.items():
            state = self._state(uri, states)
            group = [batch[i][1:] for i in rows]
            state.frames.extend((m.time, m.frame) for m, _ in group)
            work.append((state, state.window.push(group, video[rows], audio[rows])))
        for (state, _), records in zip(work, _score(self, [(s.window, windows) for s, windows in work])):
            yield from state.emit(records)

    def _watchdog(self, feeds: list[_Feed], states: dict[str, _SourceState]) -> None:
        """Live sources' states from the clock (called with the feeds' lock held): ``stalled``
        when nothing came for ``stall_after`` s, ``lagging`` when the oldest waiting step is
        more than ``lag_after`` s old, back to ``live`` when neither holds."""
        now, clock = time.monotonic(), time.perf_counter()
        for feed in feeds:
            if not feed.live or feed.finished or feed.reconnecting or feed.current not in states:
                continue
            state = states[feed.current]
            if state.state in ("done", "error"):
                continue
            if feed.last_arrival is not None and now - feed.last_arrival > self.stall_after and not feed.items:
                state.set("stalled")
            elif feed.oldest_ready is not None and clock - feed.oldest_ready > self.lag_after:
                if state.state != "lagging":
                    state.stats_add("lagging", 1)
                    log.warning("%s: lagging: its oldest waiting step is %.1f s old", feed.current,
                                clock - feed.oldest_ready)
                state.set("lagging", lagging=state.state != "lagging")
            elif state.state in ("lagging", "stalled"):
                state.set("live")

    def _fail(self, uri: str, reason: str) -> None:
        log.warning("%s: %s", uri, reason)
        self.failures.append({"source": uri, "reason": reason})
        if self.store is not None:
            self.store.mark_error(uri, reason, source_kind(uri))

    def _steps(self, uri: str, opener) -> Iterator[StepMedia]:
        """The source's steps; with ``anonymize``, each frame covered at full size, then resized
        (in the decoder thread, before features or thumbnails see it)."""
        size, motion = getattr(self.video, "input_size", None), motion_sampling(self.motion)
        if self.anonymizer is None:
            return iter_steps(uri, self.run.step, size, opener=opener, motion=motion)
        return (replace(m, frame=resize_rgb(self.anonymizer.frame(m.frame), size))
                for m in iter_steps(uri, self.run.step, None, opener=opener, motion=motion))

    def warm_up(self) -> None:
        """Run the backbones once on a blank step, so that the first real step does not pay for
        their lazy set-up (ONNX Runtime's first run takes about a second)."""
        width, height = getattr(self.video, "input_size", None) or (64, 64)
        self.video(np.zeros((1, height, width, 3), np.uint8))
        self.audio(np.zeros((1, int(round(self.run.step * AUDIO_RATE))), np.float32))

    def features(self, frames: np.ndarray, audio: np.ndarray, pairs: MotionPairs | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """The backbones on a batch of steps, timed into ``stats``: the run's video input (the
        visual side: appearance, then motion from ``pairs`` where the run reads it) and audio.

        One after the other, each with all intra-op threads: running them at the same time on
        one thread each was no faster on 2 cores (``benchmarks/realtime.py``).
        """
        t0 = time.perf_counter()
        video = self.video(frames)
        t1 = time.perf_counter()
        motion = self.motion(pairs) if self.motion is not None else None
        t2 = time.perf_counter()
        sound = self.audio(audio)
        self.stats.video_s += t1 - t0
        self.stats.motion_s += t2 - t1
        self.stats.audio_s += time.perf_counter() - t2
        return self.run.visual(video, motion), sound


WATCHDOG_INTERVAL = 0.25
"""Seconds between looks at the live sources' clocks while no step is ready."""


def _take(feeds: list[_Feed], size: int) -> tuple[list[tuple], list[tuple[str, StepMedia, float]]]:
    """What the feeds have ready (called with their lock held): every message in front of a
    feed's first waiting step, then up to ``size`` steps taken in turn from each feed, each
    feed's only up to its next message, so every message is handled in its feed's order.
    Never waits for more: a live source's batches stay small and its latency low."""
    controls: list[tuple] = []
    for feed in feeds:
        while feed.items and feed.items[0][0] != "step":
            controls.append(feed.items.popleft())
    batch: list[tuple[str, StepMedia, float]] = []
    taking = [f for f in feeds if f.items]
    while taking and len(batch) < size:
        for feed in list(taking):
            if len(batch) >= size:
                break
            if feed.items and feed.items[0][0] == "step":
                _, uri, media, ready = feed.items.popleft()
                feed.pending -= 1
                batch.append((uri, media, ready))
            else:
                taking.remove(feed)
    return controls, batch


class _SourceState:
    """What the engine keeps per source uri: its window, event detector, recent frames (for
    thumbnails), stats and state."""

    def __init__(self, watcher: Watcher, uri: str):
        self.w, self.uri = watcher, uri
        self.stats = watcher.source_stats.setdefault(uri, WatchStats())
        self.window = _Window(watcher, self.stats)
        run = watcher.run
        self.detector = EventDetector(watcher.events_config, uri, run.normal_class)
        self.frames: collections.deque = collections.deque(maxlen=watcher.ring)
        self.state: str | None = None

    def set(self, state: str, *, lagging: bool = False, store: bool = True) -> None:
        """Change the source's state, stored on a change (``lagging``: count one more lag)."""
        if state == self.state and not lagging:
            return
        self.state = state
        if store and self.w.store is not None:
            self.w.store.set_state(self.uri, state, lagging=lagging)

    def stats_add(self, name: str, n: int) -> None:
        setattr(self.stats, name, getattr(self.stats, name) + n)
        setattr(self.w.stats, name, getattr(self.w.stats, name) + n)

    def skip(self, time_: float, end: float) -> None:
        self.stats_add("skipped", 1)
        if self.stats.skipped == 1 or self.stats.skipped % 100 == 0:
            log.warning("%s: %d step(s) skipped so far to keep up (latest %g-%g s); lower the load or --batch",
                        self.uri, self.stats.skipped, time_, end)
        if self.w.store is not None:
            self.w.store.record_gap(self.uri, time_, end, "skipped")

    def emit(self, records: list[StepRecord]) -> Iterator[tuple[str, StepRecord]]:
        """Store a batch of records (one transaction), then hand each to the event detector and the caller."""
        if self.w.store is not None and records:
            self.w.store.add_steps(self.uri, records)
        for record in records:
            self.close(self.detector.push(record))
            yield self.uri, record

    def close(self, events: list[Event]) -> None:
        if not events:
            return
        w = self.w
        if w.thumbnails is not None:
            shown = dict(self.frames)
            for e in events:
                if e.peak_time in shown:
                    try:
                        path = thumbnail_path(w.thumbnails, e.source, e.start, e.label)
                    except ValueError as exc:
                        log.warning("%s: no thumbnail for the event at %g s: %s", e.source, e.start, exc)
                        continue
                    # absolute, so a dashboard started elsewhere finds it
                    e.thumbnail = str(Path(save_thumbnail(shown[e.peak_time], path)).resolve())
        if w.store is not None:
            w.store.add_events(events)
        if w.jsonl is not None:
            write_jsonl(events, w.jsonl)
        w.events.extend(events)


class _Feed:
    """One source read in its own thread: decoding, pacing, reconnection, stalls.

    It hands the engine, through ``items`` (guarded by ``lock``, shared by every feed of a
    watch), messages in order: ``("open", uri, kind, name, state)`` before a uri's first step,
    ``("step", uri, media, ready)``, ``("gap", uri, start, end, kind)``, ``("skip", uri, time,
    end)`` in place of a step skipped to keep up, ``("state", uri, state)``, ``("break", uri)``
    when a connection ended, ``("end", uri)`` when a uri ended, ``("fail", uri, MediaError)``,
    and ``("crash", uri, exception)`` for an internal error. A file read as fast as it decodes
    waits while ``2 x batch`` steps are waiting; a live source never waits (it skips instead).
    """

    def __init__(self, watcher: Watcher, source: Source, lock: threading.Condition, *, realtime: bool,
                 reconnect: bool | None, follow: bool, idle_timeout: float):
        self.w, self.source, self.lock = watcher, source, lock
        self.uri = source.uri
        self.current = source.uri
        """The uri being read: the source's, or in a folder the current file's."""
        self.realtime, self.reconnect, self.follow, self.idle_timeout = realtime, reconnect, follow, idle_timeout
        path = Path(source.uri)
        self.files: list[Path] | None = None
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
            if not self.files:
                raise FileNotFoundError(f"{path}: no media files (extensions: {', '.join(sorted(MEDIA_EXTENSIONS))})")
        elif follow and not path.is_file():
            log.info("%s: not a local file; --follow only applies to files, a stream is read live anyway", source.uri)
        self.live = realtime or (self.files is None and not path.is_file())
        """Paced by its own clock: it skips steps rather than wait when the engine falls behind."""
        step = watcher.run.step
        self.limit = max(1, math.ceil(watcher.skip_after / step)) if self.live else 2 * watcher.batch
        self.items: collections.deque = collections.deque()
        self.pending = 0  # "step" items in self.items
        self.last_arrival: float | None = None  # monotonic() of the latest step handed over
        self.reconnecting = False
        self.finished = False
        self.fatal: MediaError | None = None
        """The error that ended a single source (not a folder's file), raised by ``Watcher.watch``."""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"avar-source-{source.uri[-40:]}", daemon=True)

    @property
    def oldest_ready(self) -> float | None:
        """``perf_counter()`` when the oldest waiting step was complete (lock held)."""
        for item in self.items:
            if item[0] == "step":
                return item[3]
        return None

    def start(self) -> None:
        self.thread.start()

    def put(self, *item) -> None:
        with self.lock:
            self.items.append(item)
            self.lock.notify_all()

    def put_step(self, uri: str, media: StepMedia, ready: float) -> None:
        with self.lock:
            if self.live:
                while self.pending >= self.limit:
                    i = next(i for i, item in enumerate(self.items) if item[0] == "step")
                    old = self.items[i][2]
                    self.items[i] = ("skip", uri, old.time, old.end)
                    self.pending -= 1
            else:
                while self.pending >= self.limit and not self.stop.is_set():
                    self.lock.wait(0.1)
            self.items.append(("step", uri, media, ready))
            self.pending += 1
            self.last_arrival = time.monotonic()
            self.lock.notify_all()

    def _main(self) -> None:
        try:
            if self.files is not None:
                for f in self.files:
                    if self.stop.is_set():
                        break
                    try:
                        self._one(str(f), self.realtime, bool(self.reconnect),
                                  self.idle_timeout if self.follow and f == self.files[-1] else None)
                    except MediaError as exc:
                        self.put("fail", str(f), exc)
            else:
                is_file = Path(self.uri).is_file()
                try:
                    if is_local(self.uri) and not Path(self.uri).exists():
                        # Only URLs and devices come back: a path that is not there is a mistake.
                        raise MediaError(self.uri, "no such file or folder; check the path")
                    self._one(self.uri, self.realtime, (not is_file) if self.reconnect is None else self.reconnect,
                              self.idle_timeout if self.follow and is_file else None)
                except MediaError as exc:
                    self.fatal = exc
                    self.put("fail", self.uri, exc)
        except BaseException as exc:  # an internal error: raised by the engine, in order
            self.put("crash", self.uri, exc)
        finally:
            with self.lock:
                self.finished = True
                self.lock.notify_all()

    def _one(self, uri: str, realtime: bool, reconnect: bool, follow: float | None) -> None:
        """One file or stream; ``follow`` is the idle timeout (seconds) of a local file read as it grows."""
        run = self.w.run
        self.current = uri
        log.info("%s: watching with a %s run (%s), %s windows of %d steps", uri, run.method, run.learning,
                 "causal" if self.w.causal else "centred", run.seq_len)
        if follow is not None:
            # No reconnection: reopening would start the file over and repeat its steps.
            opener, reconnect = (lambda u: av.open(_GrowingFile(u, follow, self.stop))), False
        elif uri.lower().startswith(("http://", "https://")):
            opener = lambda u: _HttpResponse(self.w.opener(u), u)
        else:
            opener = self.w.opener
        before = os.stat(uri) if follow is None and Path(uri).is_file() else None
        stats = (self.w.stats, self.w.source_stats.setdefault(uri, WatchStats()))
        live = realtime or not Path(uri).is_file()
        registered = False
        offset = 0.0  # seconds added to the current connection's times (after reconnections and stalls)
        last_end: float | None = None
        dropped_at: float | None = None  # wall clock of the last drop
        retries = 0
        failed_at: list[float] = []  # where each connection that delivered media failed, in its own time
        while True:
            connection_end: float | None = None
            steps = self.w._steps(uri, opener)
            t0 = time.monotonic()
            try:
                while not self.stop.is_set():
                    began = time.perf_counter()
                    media = next(steps, None)
                    if media is None:
                        break
                    for s in stats:
                        s.decode_s += time.perf_counter() - began
                    if realtime:
                        time.sleep(max(0.0, media.end - (time.monotonic() - t0)))
                    now = time.monotonic()
                    if dropped_at is not None:
                        # The hole lasts as long as the outage in wall-clock seconds (to the ms, like record times).
                        offset = round(last_end + (now - dropped_at) - media.time, 3)
                        self.put("gap", uri, last_end, round(media.time + offset, 6), "drop")
                        dropped_at, retries = None, 0
                        self.reconnecting = False
                    elif live and self.last_arrival is not None and connection_end is not None:
                        late = (now - self.last_arrival) - (media.end - connection_end)
                        if late > self.w.stall_after:
                            offset = round(offset + late, 3)
                            self.put("gap", uri, last_end, round(media.time + offset, 6), "stall")
                    if not registered:
                        self.put("open", uri, source_kind(uri), self.source.name,
                                 "live" if live else "reading")
                        registered = True
                    last_end = media.end + offset
                    connection_end = media.end
                    if offset:
                        media = replace(media, time=round(media.time + offset, 6), end=round(media.end + offset, 6))
                    self.put_step(uri, media, time.perf_counter())
                self.put("end", uri)
                break
            except MediaError as exc:
                self.put("break", uri)
                if connection_end is not None:
                    same = failed_at and abs(failed_at[-1] - connection_end) <= run.step
                    failed_at = [*failed_at, connection_end] if same else [connection_end]
                if len(failed_at) >= REPLAY_LIMIT:
                    exc = MediaError(uri, f"{exc.reason}; {len(failed_at)} connections in a row failed at the same "
                                          f"point ({connection_end:g} s into the source): a damaged file or "
                                          "response, not a dropped stream")
                if not reconnect or retries >= self.w.max_retries or len(failed_at) >= REPLAY_LIMIT:
                    self.put("end", uri)
                    _warn_if_changed(uri, before, last_end)
                    if not registered:
                        raise
                    raise MediaError(uri, f"{exc.reason}; it stopped at {last_end:g} s, and the records and "
                                          "events before that are kept") from exc
                delay = min(BACKOFF_START * 2**retries, BACKOFF_MAX)
                retries += 1
                log.warning("%s: %s; reconnecting in %gs (attempt %d/%d)", uri, exc.reason, delay, retries,
                            self.w.max_retries)
                if dropped_at is None:
                    dropped_at = time.monotonic()
                if last_end is None:
                    last_end = offset
                if registered:
                    self.reconnecting = True
                    self.put("state", uri, "reconnecting")
                if self.stop.wait(delay):
                    break
            finally:
                close = getattr(steps, "close", None)  # a generator: close its media now
                if close is not None:
                    close()
        _warn_if_changed(uri, before, last_end)


class _Window:
    """The features of one connection's steps so far, and the records not yet emitted."""

    def __init__(self, watcher: Watcher, stats: WatchStats):
        self.w, self.stats = watcher, stats
        self.run = watcher.run
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
        windows ``(step, start, stop)`` of the records now decidable (see ``score``)."""
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
        return windows

    def finish(self) -> list[tuple[int, int, int]]:
        """The windows of every step not yet decided, the connection having ended."""
        n, L = self.first + len(self.video), self.run.seq_len
        windows = []
        for t in range(self.next, n):
            start = centred_start(t, n, L)
            windows.append((t, start, min(n, start + L)))
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
            for stats in (self.w.stats, self.stats):
                stats.latencies.append(now - self.ready[t - self.first])
        for stats in (self.w.stats, self.stats):
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


def _score(watcher: Watcher, work: list[tuple[_Window, list[tuple[int, int, int]]]]) -> list[list[StepRecord]]:
    """The records of windows of any sources' ``_Window``s, the head run once over all of them
    (a call per source cost most of the head's time with a dozen streams)."""
    if not any(windows for _, windows in work):
        return [[] for _ in work]
    t0 = time.perf_counter()
    parts = [window.inputs(windows) for window, windows in work if windows]
    probs = watcher.run.window_probabilities(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
    now = time.perf_counter()
    watcher.stats.head_s += now - t0
    out, at = [], 0
    for window, windows in work:
        out.append(window.records(windows, probs[at : at + len(windows)], now) if windows else [])
        window.stats.head_s += (now - t0) * len(windows) / len(probs)
        at += len(windows)
    return out


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
