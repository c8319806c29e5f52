"""How a watch opens what it reads, beyond a plain ``av.open``: a file another program is still
writing (read like a pipe until it stops growing), an HTTP response that ends (a finished
file, not a drop), and the warning for a file that changed while it was read.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time

import av

log = logging.getLogger(__name__)

FOLLOW_POLL = 0.1
"""Seconds between looks at a followed file's size while waiting at its end."""

def warn_if_changed(uri: str, before: os.stat_result | None, watched: float | None) -> None:
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


class GrowingFile:
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


class HttpResponse:
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

    def __enter__(self) -> HttpResponse:
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
