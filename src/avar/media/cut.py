"""Cut one interval of a media file into a clip of its own, picture and sound together.

A clip of ``[start, end)`` holds the frames shown at times in ``[start, end)`` and the sound of
``[start, end)``. Where its first frame is a key frame (and the video has no frames decoded out
of order), the packets are copied as they are: no decoding, no loss, as fast as the disk; the
sound then starts and ends on whole compressed frames inside the interval (an AAC frame is
21 ms at 48 kHz), so it may fall short of either end by less than one. Otherwise the interval
is decoded and encoded again (H.264 + AAC), accurate to a frame and to a sample. Either way
one pass reads only the interval (after a seek to the key frame before it), so memory stays
flat however long the recording.

Times are seconds from the file's start, the earliest start of its first video and audio
streams, as a player shows them and as :mod:`avar.media.decode` counts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avar.files import atomic_path
from avar.media.decode import MediaError, first_streams, origin_of

AAC_FRAME = 1024
"""Samples per AAC frame: what the encoder takes at a time."""


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds, from its headers (nothing decoded): ``duration`` in seconds,
    the first video stream's ``fps`` and ``width`` x ``height`` (None without video), the
    first audio stream's ``sample_rate`` and ``channels`` (None without audio)."""

    duration: float
    fps: float | None
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None
    video_codec: str | None
    audio_codec: str | None

    @property
    def has_video(self) -> bool:
        return self.fps is not None

    @property
    def has_audio(self) -> bool:
        return self.sample_rate is not None


def media_info(path: Path | str) -> MediaInfo:
    """:class:`MediaInfo` of ``path``; a ``MediaError`` naming it when it is not readable media."""
    try:
        with av.open(str(path)) as container:
            video, audio = first_streams(container)
            if video is None and audio is None:
                raise MediaError(path, "no video or audio stream")
            duration = container.duration / av.time_base if container.duration else 0.0
            rate = video.average_rate or video.guessed_rate if video is not None else None
            return MediaInfo(
                duration=float(duration),
                fps=None if video is None else float(rate or 0.0),
                width=video.codec_context.width if video is not None else None,
                height=video.codec_context.height if video is not None else None,
                sample_rate=audio.codec_context.sample_rate if audio is not None else None,
                channels=audio.codec_context.channels if audio is not None else None,
                video_codec=video.codec_context.name if video is not None else None,
                audio_codec=audio.codec_context.name if audio is not None else None,
            )
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(path, f"cannot open as media ({exc})") from exc


def key_frame_times(path: Path | str) -> np.ndarray:
    """Seconds from the file's start of every key frame of its first video stream (packets read,
    nothing decoded); empty without video."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return np.zeros(0)
            video = container.streams.video[0]
            origin = origin_of(container)
            times = [float(p.pts * p.time_base) - origin for p in container.demux(video)
                     if p.pts is not None and p.is_keyframe]
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(path, f"cannot read its packets ({exc})") from exc
    return np.sort(np.asarray(times, dtype=np.float64))


@dataclass(frozen=True)
class Cut:
    """One clip written by :func:`cut`: its ``path``, the interval of the source it holds
    (``start``, ``end`` in seconds: its first frame's time and the end of its last frame),
    how (``copied``: packets copied; else re-encoded), and what it holds."""

    path: Path
    start: float
    end: float
    copied: bool
    frames: int
    audio_samples: int


class _NotCopyable(Exception):
    """Raised inside a copy when the packets turn out to need decoding (frames out of order)."""


def cut(source: Path | str, start: float, end: float, out: Path | str, *, copy: bool | None = None) -> Cut:
    """Write ``[start, end)`` seconds of ``source`` to ``out`` (.mp4, .mkv or .mov), copying the
    packets where the interval starts on a key frame and re-encoding otherwise (``copy``
    forces one or the other: ``True`` where the cut cannot be copied is a ``ValueError``).
    The file appears whole or not at all. A ``MediaError`` names a source that cannot be cut."""
    source, out = Path(source), Path(out)
    fmt = _format(out)
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise ValueError(f"{source}: cannot cut [{start}, {end}): start must be >= 0 and end after it")
    try:
        with av.open(str(source)) as container:
            video, _ = first_streams(container)
            key_frame = start if video is None else _key_frame_at(container, video, start)
            if copy and key_frame is None:
                raise ValueError(f"{source}: {start:.3f} s is not on a key frame; the cut must be re-encoded")
        if copy is not False and key_frame is not None:
            try:
                with atomic_path(out) as partial:
                    result = _copy(source, key_frame, end, partial, fmt)
                return replace(result, path=out)
            except _NotCopyable:
                if copy:
                    raise ValueError(f"{source}: its video has frames decoded out of order; the cut must be "
                                     "re-encoded") from None
        with atomic_path(out) as partial:
            result = _encode(source, start, end, partial, fmt)
        return replace(result, path=out)
    except av.error.FFmpegError as exc:
        raise MediaError(source, f"cutting [{start:.3f}, {end:.3f}) s failed ({exc})") from exc


def _frame(video) -> float:
    """Seconds per frame of ``video``."""
    return 1.0 / float(video.average_rate or video.guessed_rate or 25)


def _seek(container, stream, time: float) -> None:
    """To the key frame at or before ``time`` (seconds from the file's start)."""
    target = time + origin_of(container)
    container.seek(max(0, int(math.floor(target / stream.time_base))), stream=stream, backward=True)


def _key_frame_at(container, video, start: float) -> float | None:
    """The time of the first frame shown at or after ``start`` if it is a key frame, else None."""
    origin = origin_of(container)
    _seek(container, video, start)
    for packet in container.demux(video):
        if packet.pts is None:
            continue
        time = float(packet.pts * packet.time_base) - origin
        if time >= start - TOLERANCE:
            return time if packet.is_keyframe else None
    return None


TOLERANCE = 1e-3
"""Seconds by which a frame time may miss an interval's bound and still count as on it
(times written as decimals, e.g. 13.3, are not exact in a stream's time base)."""
HORIZON = 2.0
"""Seconds past the cut's end at which reading stops even if a stream has not reached it (a
track that ends early): streams are interleaved within far less."""


def _copy(source: Path, start: float, end: float, out: Path, fmt: str) -> Cut:
    """Copy the packets of ``[start, end)``, ``start`` being a key frame's time."""
    with av.open(str(source)) as container, av.open(str(out), "w", format=fmt) as output:
        origin = origin_of(container)
        video, audio = first_streams(container)
        streams = [s for s in (video, audio) if s is not None]
        mapped = {s.index: output.add_stream_from_template(s) for s in streams}
        if video is not None:
            _seek(container, video, start)
        else:
            _seek(container, audio, start)
        first = last_end = None
        frames = samples = 0
        last_pts = {}
        done = {s.index: False for s in streams}
        for packet in container.demux(*streams):
            if packet.pts is None or packet.size == 0:
                continue
            time = float(packet.pts * packet.time_base) - origin
            if time >= end + HORIZON:
                break
            if video is not None and packet.stream.index == video.index:
                if time >= end - TOLERANCE:
                    done[packet.stream.index] = True
                elif time >= start - TOLERANCE:
                    if packet.pts <= last_pts.get(packet.stream.index, -1):
                        raise _NotCopyable
                    last_pts[packet.stream.index] = packet.pts
                    first = time if first is None else first
                    frames += 1
                    duration = float(packet.duration * packet.time_base) if packet.duration else _frame(video)
                    last_end = time + duration
                    _mux(output, packet, mapped, start + origin)
            else:
                length = float((packet.duration or AAC_FRAME) * packet.time_base)
                if time + length > end + 1e-6:  # a packet running past the end stays out: no clip crosses it
                    done[packet.stream.index] = True
                elif time >= start - 1e-6:
                    samples += packet.duration or AAC_FRAME
                    _mux(output, packet, mapped, start + origin)
            if all(done.values()):
                break
    if video is not None and frames == 0:
        raise MediaError(source, f"no video frame between {start:.3f} and {end:.3f} s")
    return Cut(out, first if first is not None else start, min(end, last_end) if last_end else end, True, frames,
               samples)


def _mux(output, packet, mapped: dict, zero: float) -> None:
    """``packet`` into ``output``, its time moved so that ``zero`` (the source's own clock) is zero."""
    shift = int(round(zero / packet.time_base))
    packet.pts -= shift
    if packet.dts is not None:
        packet.dts -= shift
    packet.stream = mapped[packet.stream.index]
    output.mux(packet)


def _format(path: Path) -> str:
    formats = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
    if path.suffix.lower() not in formats:
        raise ValueError(f"{path}: clips are written as {', '.join(sorted(formats))}")
    return formats[path.suffix.lower()]


def _encode(source: Path, start: float, end: float, out: Path, fmt: str) -> Cut:
    """Decode ``[start, end)`` and encode it again: H.264 (same size and rate) and AAC."""
    with av.open(str(source)) as container, av.open(str(out), "w", format=fmt) as output:
        origin = origin_of(container)
        video, audio = first_streams(container)
        streams = [s for s in (video, audio) if s is not None]
        encoders = {}
        if video is not None:
            rate = Fraction(video.average_rate or video.guessed_rate or 25).limit_denominator(1001)
            encoder = output.add_stream("libx264", rate=rate)
            encoder.time_base = encoder.codec_context.time_base = 1 / rate
            encoder.width, encoder.height = video.codec_context.width, video.codec_context.height
            encoder.pix_fmt = "yuv420p"
            encoder.options = {"preset": "veryfast", "crf": "18"}
            encoders["video"] = encoder
        if audio is not None:
            rate_hz = audio.codec_context.sample_rate
            layout = "mono" if audio.codec_context.channels == 1 else "stereo"
            encoders["audio"] = output.add_stream("aac", rate=rate_hz, layout=layout)
            fifo = av.AudioFifo()
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate_hz)
            first_sample, last_sample = int(round(start * rate_hz)), int(round(end * rate_hz))
        _seek(container, video or audio, start)
        frames = samples = 0
        first = None
        done = {s.index: False for s in streams}
        for frame in container.decode(*streams):
            if frame.time is None:
                continue
            time = frame.time - origin
            if time >= end + HORIZON:
                break
            if video is not None and isinstance(frame, av.VideoFrame):
                if time >= end - TOLERANCE:
                    done[video.index] = True
                elif time >= start - TOLERANCE:
                    first = time if first is None else first
                    picture = frame.reformat(format="yuv420p")
                    picture.pts, picture.time_base = frames, 1 / rate
                    output.mux(encoders["video"].encode(picture))
                    frames += 1
            elif audio is not None and isinstance(frame, av.AudioFrame):
                for chunk in resampler.resample(frame):
                    at = int(round(time * rate_hz))
                    lo, hi = max(first_sample, at), min(last_sample, at + chunk.samples)
                    if at >= last_sample:
                        done[audio.index] = True
                    if hi > lo:
                        kept = chunk.to_ndarray()[:, lo - at : hi - at]
                        piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(kept), format="fltp", layout=layout)
                        piece.sample_rate = rate_hz
                        fifo.write(piece)
                    time += chunk.samples / rate_hz
                while fifo.samples >= AAC_FRAME:
                    samples += _encode_audio(output, encoders["audio"], fifo.read(AAC_FRAME), samples)
            if all(done.values()):
                break
        if audio is not None:
            for chunk in resampler.resample(None):
                fifo.write(chunk)
            rest = fifo.read()
            if rest is not None:
                samples += _encode_audio(output, encoders["audio"], rest, samples)
        for encoder in encoders.values():
            output.mux(encoder.encode(None))
    if video is not None and frames == 0:
        raise MediaError(source, f"no video frame between {start:.3f} and {end:.3f} s")
    return Cut(out, first if first is not None else start, end, False, frames, samples)


def _encode_audio(output, encoder, frame, offset: int) -> int:
    frame.pts, frame.time_base = offset, Fraction(1, encoder.codec_context.sample_rate)
    output.mux(encoder.encode(frame))
    return frame.samples
