"""Sources of a watch: what to watch (:class:`Source`, ``--sources`` files) and the feeds that
read them, each in its own thread: decoding, pacing, reconnection with back-off, stalls, files
that grow while read, HTTP responses that end. A feed hands the engine small messages (the
dataclasses below) and knows nothing of the watcher, its model or its sinks.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import shlex
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import av

from avar.media.decode import MEDIA_EXTENSIONS, MediaError, Opener, StepMedia
from avar.serve.openers import GrowingFile, HttpResponse, warn_if_changed

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
"""Seconds before the first reconnection attempt; doubled after each failed one."""
BACKOFF_MAX = 8.0
"""Seconds; the back-off stops doubling here."""
REPLAY_LIMIT = 3
"""Connections that deliver media and then fail at the same point of the source (within a
step) before it is taken for a broken file rather than a dropped stream: a live stream's
reconnections fail wherever the network does, a damaged file or response always at its damage,
and reconnecting to it would replay it forever."""


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
    repeated = repeated_uris(sources)
    if repeated:
        raise ValueError(f"{path}: {', '.join(repeated)} listed more than once; each source once")
    return sources


def repeated_uris(sources: list[Source]) -> list[str]:
    """The uris given more than once, sorted."""
    uris = [s.uri for s in sources]
    return sorted({u for u in uris if uris.count(u) > 1})


# Messages a feed hands the engine, in order (see :class:`Feed`).

@dataclass(frozen=True)
class Opened:
    """A uri's first step is coming: register it (``kind``: file or stream) in ``state``."""

    uri: str
    kind: str
    name: str | None
    state: str


@dataclass(frozen=True)
class StepReady:
    """A step's media, complete at ``perf_counter()`` ``ready`` after ``decode_s`` s of decoding."""

    uri: str
    media: StepMedia
    ready: float
    decode_s: float


@dataclass(frozen=True)
class Skipped:
    """A live source's step dropped, unscored, to keep up (stored as a gap of kind ``skipped``)."""

    uri: str
    time: float
    end: float
    decode_s: float


@dataclass(frozen=True)
class Gap:
    """No media from ``start`` to ``end`` s: a ``drop`` (reconnected) or a ``stall``."""

    uri: str
    start: float
    end: float
    kind: str


@dataclass(frozen=True)
class StateChange:
    uri: str
    state: str


@dataclass(frozen=True)
class ConnectionEnded:
    """The connection ended (the uri may come back): the pending windows are closed."""

    uri: str


@dataclass(frozen=True)
class SourceEnded:
    """The uri ended for good: its open events are closed too."""

    uri: str


@dataclass(frozen=True)
class Failed:
    uri: str
    error: MediaError


@dataclass(frozen=True)
class Crashed:
    """An internal error in the feed's thread, raised again by the engine in the feed's order."""

    uri: str
    error: BaseException


@dataclass(frozen=True)
class FeedSettings:
    """What a feed needs of the watch: the step length, its limits, how to open and decode a uri."""

    step: float
    """Seconds per step."""
    steps: Callable[[str, Opener], Iterator[StepMedia]]
    """A uri's steps, opened with the given opener."""
    opener: Opener
    batch: int
    skip_after: float
    stall_after: float
    max_retries: int
    describe: str
    """How the watch is logged when a uri opens (the run, its windows)."""


class Feed:
    """One source read in its own thread: decoding, pacing, reconnection, stalls.

    It hands the engine, through ``items`` (guarded by ``lock``, shared by every feed of a
    watch), the messages of this module in order: :class:`Opened` before a uri's first step,
    :class:`StepReady`, :class:`Gap`, :class:`Skipped` in place of a step skipped to keep up,
    :class:`StateChange`, :class:`ConnectionEnded` when a connection ended and
    :class:`SourceEnded` when a uri ended, :class:`Failed`, and :class:`Crashed` for an internal
    error. A file read as fast as it decodes waits while ``2 x batch`` steps are waiting; a live
    source never waits (it skips instead). It knows the watch only through ``settings``.
    """

    def __init__(self, settings: FeedSettings, source: Source, lock: threading.Condition, *, realtime: bool,
                 reconnect: bool | None, follow: bool, idle_timeout: float):
        self.settings, self.source, self.lock = settings, source, lock
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
        self.limit = max(1, math.ceil(settings.skip_after / settings.step)) if self.live else 2 * settings.batch
        self.items: collections.deque = collections.deque()
        self.pending = 0  # StepReady items in self.items
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
            if isinstance(item, StepReady):
                return item.ready
        return None

    def start(self) -> None:
        self.thread.start()

    def put(self, message) -> None:
        with self.lock:
            self.items.append(message)
            self.lock.notify_all()

    def put_step(self, step: StepReady) -> None:
        with self.lock:
            if self.live:
                while self.pending >= self.limit:
                    i = next(i for i, item in enumerate(self.items) if isinstance(item, StepReady))
                    old = self.items[i]
                    self.items[i] = Skipped(old.uri, old.media.time, old.media.end, old.decode_s)
                    self.pending -= 1
            else:
                while self.pending >= self.limit and not self.stop.is_set():
                    self.lock.wait(0.1)
            self.items.append(step)
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
                        self.put(Failed(str(f), exc))
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
                    self.put(Failed(self.uri, exc))
        except BaseException as exc:  # an internal error: raised by the engine, in order
            self.put(Crashed(self.uri, exc))
        finally:
            with self.lock:
                self.finished = True
                self.lock.notify_all()

    def _one(self, uri: str, realtime: bool, reconnect: bool, follow: float | None) -> None:
        """One file or stream; ``follow`` is the idle timeout (seconds) of a local file read as it grows."""
        settings = self.settings
        self.current = uri
        log.info("%s: watching with %s", uri, settings.describe)
        if follow is not None:
            # No reconnection: reopening would start the file over and repeat its steps.
            opener, reconnect = (lambda u: av.open(GrowingFile(u, follow, self.stop))), False
        elif uri.lower().startswith(("http://", "https://")):
            opener = lambda u: HttpResponse(settings.opener(u), u)
        else:
            opener = settings.opener
        before = os.stat(uri) if follow is None and Path(uri).is_file() else None
        live = realtime or not Path(uri).is_file()
        registered = False
        offset = 0.0  # seconds added to the current connection's times (after reconnections and stalls)
        last_end: float | None = None
        dropped_at: float | None = None  # wall clock of the last drop
        retries = 0
        failed_at: list[float] = []  # where each connection that delivered media failed, in its own time
        while True:
            connection_end: float | None = None
            steps = settings.steps(uri, opener)
            t0 = time.monotonic()
            try:
                while not self.stop.is_set():
                    began = time.perf_counter()
                    media = next(steps, None)
                    if media is None:
                        break
                    decode_s = time.perf_counter() - began
                    if realtime:
                        time.sleep(max(0.0, media.end - (time.monotonic() - t0)))
                    now = time.monotonic()
                    if dropped_at is not None:
                        # The hole lasts as long as the outage in wall-clock seconds (to the ms, like record times).
                        offset = round(last_end + (now - dropped_at) - media.time, 3)
                        self.put(Gap(uri, last_end, round(media.time + offset, 6), "drop"))
                        dropped_at, retries = None, 0
                        self.reconnecting = False
                    elif live and self.last_arrival is not None and connection_end is not None:
                        late = (now - self.last_arrival) - (media.end - connection_end)
                        if late > settings.stall_after:
                            offset = round(offset + late, 3)
                            self.put(Gap(uri, last_end, round(media.time + offset, 6), "stall"))
                    if not registered:
                        self.put(Opened(uri, source_kind(uri), self.source.name, "live" if live else "reading"))
                        registered = True
                    last_end = media.end + offset
                    connection_end = media.end
                    if offset:
                        media = replace(media, time=round(media.time + offset, 6), end=round(media.end + offset, 6))
                    self.put_step(StepReady(uri, media, time.perf_counter(), decode_s))
                self.put(SourceEnded(uri))
                break
            except MediaError as exc:
                self.put(ConnectionEnded(uri))
                if connection_end is not None:
                    same = failed_at and abs(failed_at[-1] - connection_end) <= settings.step
                    failed_at = [*failed_at, connection_end] if same else [connection_end]
                if len(failed_at) >= REPLAY_LIMIT:
                    exc = MediaError(uri, f"{exc.reason}; {len(failed_at)} connections in a row failed at the same "
                                          f"point ({connection_end:g} s into the source): a damaged file or "
                                          "response, not a dropped stream")
                if not reconnect or retries >= settings.max_retries or len(failed_at) >= REPLAY_LIMIT:
                    self.put(SourceEnded(uri))
                    warn_if_changed(uri, before, last_end)
                    if not registered:
                        raise
                    raise MediaError(uri, f"{exc.reason}; it stopped at {last_end:g} s, and the records and "
                                          "events before that are kept") from exc
                delay = min(BACKOFF_START * 2**retries, BACKOFF_MAX)
                retries += 1
                log.warning("%s: %s; reconnecting in %gs (attempt %d/%d)", uri, exc.reason, delay, retries,
                            settings.max_retries)
                if dropped_at is None:
                    dropped_at = time.monotonic()
                if last_end is None:
                    last_end = offset
                if registered:
                    self.reconnecting = True
                    self.put(StateChange(uri, "reconnecting"))
                if self.stop.wait(delay):
                    break
            finally:
                close = getattr(steps, "close", None)  # a generator: close its media now
                if close is not None:
                    close()
        warn_if_changed(uri, before, last_end)
