"""Watch a file, a folder of files or a live stream and turn it into step records and events.

``iter_steps`` decodes in one demux pass and hands over each time step as soon as its media is
complete, with the same timestamps as ``avar.media.decode.decode_steps`` (whose helpers it
reuses): for a regular file, its steps equal ``decode_steps``'s. ``Watcher`` follows one
source (``watch``) or many at once (``watch_many``) the same way: each source is a
:class:`~avar.serve.sources.Feed`, a thread that decodes, paces and reconnects it; one engine (the caller's thread) takes the
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
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from avar.features import Extractor
from avar.features.cache import motion_sampling
from avar.media.decode import AUDIO_RATE, MotionPairs, Opener, StepMedia, iter_steps, resize_rgb
from avar.serve.events import Event, EventConfig, EventDetector
from avar.training.events import run_event_config
from avar.serve.predict import StepRecord
from avar.serve.scoring import WatchStats, Window, score_windows
from avar.serve.sources import (REPLAY_LIMIT, ConnectionEnded, Crashed, Failed, Feed, FeedSettings, Gap, Opened,
                                Skipped, Source, SourceEnded, StateChange, StepReady, read_sources, repeated_uris)
from avar.serve.sinks import Sinks
from avar.serve.store import EventStore
from avar.runs import load_run
from avar.training.run import FeatureRun

__all__ = ["REPLAY_LIMIT", "Source", "WatchStats", "Watcher", "read_sources"]

log = logging.getLogger(__name__)

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
        self.events_config = events or run_event_config(self.run)
        self.sinks = Sinks(store, jsonl, thumbnails)
        """Where records, events, gaps and states go (the store, JSON lines, thumbnails)."""
        self.max_retries, self.opener, self.ring = max_retries, opener, ring
        self.lag_after, self.skip_after, self.stall_after = lag_after, skip_after, stall_after
        self.anonymizer = anonymize.build() if anonymize is not None else None
        """With an ``avar.anonymize.cover.AnonymizeConfig``: faces and plates covered in every frame."""
        self.failures: list[dict] = []
        """``{"source", "reason"}`` for each source that could not be opened or decoded to its end."""

    @property
    def events(self) -> list[Event]:
        """Every event closed so far, across sources."""
        return self.sinks.events

    def watch(self, source: str | Path, *, realtime: bool = False, reconnect: bool | None = None,
              follow: bool = False, idle_timeout: float = 10.0) -> Iterator[StepRecord]:
        """Step records of ``source`` in time order (a folder: each media file in name order).

        ``realtime`` paces the source at its own speed (for files; live sources pace
        themselves). ``reconnect`` (default: for anything that is not a local file) reopens
        a dropped stream. A file that fails, even part-way, is warned about, listed in
        ``failures`` and marked in the store's sources with its ``error`` (the records and
        events of what decoded are kept); a folder then goes on with its next file, a single
        source raises its ``MediaError`` after its last record. Failures and reconnections are
        logged (``logging``, loggers under ``avar.serve``).

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
        repeated = repeated_uris(sources)
        if repeated:
            raise ValueError(f"{', '.join(repeated)} given more than once; watch each source once")
        yield from self._run(self._feeds(sources, realtime, reconnect, follow, idle_timeout))

    def _feeds(self, sources: list[Source], realtime, reconnect, follow, idle_timeout) -> list[Feed]:
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive seconds, got {idle_timeout}")
        run = self.run
        settings = FeedSettings(
            step=run.step, steps=self._steps, opener=self.opener, batch=self.batch, skip_after=self.skip_after,
            stall_after=self.stall_after, max_retries=self.max_retries,
            describe=f"a {run.method} run ({run.learning}), {'causal' if self.causal else 'centred'} windows of "
                     f"{run.seq_len} steps")
        lock = threading.Condition()
        return [Feed(settings, s, lock, realtime=realtime, reconnect=reconnect, follow=follow,
                     idle_timeout=idle_timeout) for s in sources]

    def _run(self, feeds: list[Feed]) -> Iterator[tuple[str, StepRecord]]:
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
            states[uri] = _SourceState(uri, self.run, self.causal, self.events_config, self.ring, self.sinks,
                                       self.source_stats.setdefault(uri, WatchStats()), self.stats)
        return states[uri]

    def _control(self, item, states: dict[str, _SourceState]) -> Iterator[tuple[str, StepRecord]]:
        """One message of a feed other than a step (see ``Feed``), in the feed's order."""
        uri = item.uri
        if isinstance(item, Crashed):
            raise item.error
        state = self._state(uri, states)
        if isinstance(item, Opened):
            self.sinks.source(uri, item.kind, item.name)
            state.set(item.state)
        elif isinstance(item, Gap):
            self.sinks.gap(uri, item.start, item.end, item.kind)
            if item.kind == "stall":
                log.warning("%s: stalled: nothing came for %.1f s; the hole is stored as a gap", uri,
                            item.end - item.start)
                state.stats_add("stalls", 1)
            state.set("live")  # it delivers again
        elif isinstance(item, Skipped):
            state.stats_add("decode_s", item.decode_s)
            state.skip(item.time, item.end)
        elif isinstance(item, StateChange):
            state.set(item.state)
        elif isinstance(item, (ConnectionEnded, SourceEnded)):
            yield from state.emit(score_windows(self.run, [(state.window, state.window.finish())], self.stats)[0])
            state.window = state.new_window()
            if isinstance(item, SourceEnded):
                state.close(state.detector.flush())
                state.detector = state.new_detector()
                state.set("done")
        elif isinstance(item, Failed):
            self._fail(uri, item.error.reason)
            state.set("error", store=False)

    def _push(self, batch: list[StepReady], states) -> Iterator[tuple[str, StepRecord]]:
        """One backbone call over a batch of steps of any sources, then each source's records."""
        pairs = MotionPairs.stack([b.media.motion for b in batch]) if self.motion is not None else None
        video, audio = self.features(np.stack([b.media.frame for b in batch]), np.stack([b.media.audio for b in batch]),
                                     pairs)
        order: dict[str, list[int]] = {}
        for i, step in enumerate(batch):
            order.setdefault(step.uri, []).append(i)
        work = []
        for uri, rows in order.items():
            state = self._state(uri, states)
            group = [(batch[i].media, batch[i].ready) for i in rows]
            state.stats_add("decode_s", sum(batch[i].decode_s for i in rows))
            state.frames.extend((m.time, m.frame) for m, _ in group)
            work.append((state, state.window.push(group, video[rows], audio[rows])))
        for (state, _), records in zip(work, score_windows(self.run, [(s.window, w) for s, w in work], self.stats)):
            yield from state.emit(records)

    def _watchdog(self, feeds: list[Feed], states: dict[str, _SourceState]) -> None:
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
        self.sinks.failed(uri, reason)

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


def _take(feeds: list[Feed], size: int) -> tuple[list, list[StepReady]]:
    """What the feeds have ready (called with their lock held): every message in front of a
    feed's first waiting step, then up to ``size`` steps taken in turn from each feed, each
    feed's only up to its next message, so every message is handled in its feed's order.
    Never waits for more: a live source's batches stay small and its latency low."""
    controls = []
    for feed in feeds:
        while feed.items and not isinstance(feed.items[0], StepReady):
            controls.append(feed.items.popleft())
    batch: list[StepReady] = []
    taking = [f for f in feeds if f.items]
    while taking and len(batch) < size:
        for feed in list(taking):
            if len(batch) >= size:
                break
            if feed.items and isinstance(feed.items[0], StepReady):
                batch.append(feed.items.popleft())
                feed.pending -= 1
            else:
                taking.remove(feed)
    return controls, batch


class _SourceState:
    """What the engine keeps per source uri: its window, event detector, recent frames (for
    thumbnails), stats and state."""

    def __init__(self, uri: str, run: FeatureRun, causal: bool, events: EventConfig, ring: int, sinks: Sinks,
                 stats: WatchStats, totals: WatchStats):
        self.uri, self.run, self.causal, self.events, self.sinks = uri, run, causal, events, sinks
        self.stats, self.totals = stats, totals
        self.window = self.new_window()
        self.detector = self.new_detector()
        self.frames: collections.deque = collections.deque(maxlen=ring)
        self.state: str | None = None

    def new_window(self) -> Window:
        return Window(self.run, self.causal, self.stats, self.totals)

    def new_detector(self) -> EventDetector:
        return EventDetector(self.events, self.uri, self.run.normal_class)

    def set(self, state: str, *, lagging: bool = False, store: bool = True) -> None:
        """Change the source's state, stored on a change (``lagging``: count one more lag)."""
        if state == self.state and not lagging:
            return
        self.state = state
        if store:
            self.sinks.state(self.uri, state, lagging=lagging)

    def stats_add(self, name: str, n: float) -> None:
        for stats in (self.stats, self.totals):
            setattr(stats, name, getattr(stats, name) + n)

    def skip(self, time_: float, end: float) -> None:
        self.stats_add("skipped", 1)
        if self.stats.skipped == 1 or self.stats.skipped % 100 == 0:
            log.warning("%s: %d step(s) skipped so far to keep up (latest %g-%g s); lower the load or --batch",
                        self.uri, self.stats.skipped, time_, end)
        self.sinks.gap(self.uri, time_, end, "skipped")

    def emit(self, records: list[StepRecord]) -> Iterator[tuple[str, StepRecord]]:
        """Store a batch of records (one transaction), then hand each to the event detector and the caller."""
        self.sinks.steps(self.uri, records)
        for record in records:
            self.close(self.detector.push(record))
            yield self.uri, record

    def close(self, events: list[Event]) -> None:
        self.sinks.closed(events, dict(self.frames))
