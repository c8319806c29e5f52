"""Cut a media file into time steps by presentation timestamp (PyAV).

A step ``i`` covers ``[i * step, (i + 1) * step)`` seconds on the file's own timeline, whose
zero is the earliest stream start. Its picture is the video frame on screen at the step's
centre (the last frame whose timestamp is at or before it) and its sound is every audio sample
inside the step, resampled to 16 kHz mono. Selecting by timestamps rather than frame or sample
counts keeps variable frame rates, late-starting streams and any audio rate in sync.

For a motion stream (``MotionSampling``) the same pass also keeps, at a few evenly spaced times
inside each step, the frame on screen then and the frame after it, small and gray: the pairs
dense optical flow is computed on (``avar.features.motion``). A pair is complete once the
frame after its time has arrived, so the stream stays causal.

``iter_steps`` streams the steps as soon as each is complete (files, URLs, devices: what
``avar watch`` reads); ``decode_steps`` collects them for a whole file (what ``avar extract``
and ``avar predict`` read), so the two can never disagree.
"""

from __future__ import annotations

import bisect
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import av
import cv2
import numpy as np

AUDIO_RATE = 16_000
"""Sample rate (Hz) of the audio in every ``ClipSteps``."""

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".avi", ".mov", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".3gp"}
)
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"})
"""Sound-only files: their steps get black frames and are flagged ``video_missing``."""
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS

JUMP_SECONDS = 10.0
"""Consecutive video frames further apart than this (and than 10 steps) are a timestamp jump
(a broken muxer, a camera clock reset), not a pause: the gap is closed and a warning names it,
so one bad timestamp cannot turn a short clip into thousands of repeated steps."""


class MediaError(RuntimeError):
    """A file that cannot be decoded; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class MotionSampling:
    """Which frames a motion stream reads: ``pairs`` times per step, evenly spaced (pair ``j`` of
    step ``i`` at ``(i + (j + 0.5) / pairs) * step`` s), each giving the frame on screen then and
    the next frame, converted to gray at ``width`` pixels (height by the aspect ratio, even)."""

    pairs: int = 4
    width: int = 160

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.width < 8:
            raise ValueError(f"motion sampling needs pairs >= 1 and width >= 8, got {self.pairs}, {self.width}")


@dataclass
class MotionPairs:
    """The frame pairs of ``N`` steps: ``frames uint8 [N, P, 2, h, w]`` gray (the frame on screen
    at each sample time and the next one) and ``dt float32 [N, P]``, the seconds between the two;
    ``dt`` is 0 where no pair exists (before the first frame, after the last, no video)."""

    frames: np.ndarray
    dt: np.ndarray

    def __len__(self) -> int:
        return len(self.dt)

    def __getitem__(self, index) -> "MotionPairs":
        return MotionPairs(self.frames[index], self.dt[index])

    @staticmethod
    def stack(steps: list["MotionPairs"]) -> "MotionPairs":
        return MotionPairs(np.concatenate([s.frames for s in steps]), np.concatenate([s.dt for s in steps]))


@dataclass
class ClipSteps:
    """One media file cut into ``T`` time steps.

    ``frames`` is ``uint8 [T, H, W, 3]`` RGB (the frame shown at each step's centre);
    ``audio`` is ``float32 [T, S]`` mono at ``AUDIO_RATE`` Hz with ``S = round(step * 16000)``;
    ``times`` is ``float64 [T]``, each step's start in seconds from the file's start.
    A missing stream is all zeros and flagged, so downstream shapes never change.
    """

    path: Path
    step: float
    times: np.ndarray
    frames: np.ndarray
    audio: np.ndarray
    duration: float
    audio_missing: bool = False
    video_missing: bool = False
    audio_partial: bool = False
    """Sound covers only part of the clip: the steps after it hold zeros."""
    motion: MotionPairs | None = None
    """Each step's frame pairs, when decoded with a ``MotionSampling`` (``[T, P, 2, h, w]``)."""

    @property
    def n_steps(self) -> int:
        return len(self.times)


def stream_start(stream) -> float | None:
    """A stream's start time in seconds, or None when the container does not say."""
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def first_streams(container) -> tuple:
    """The first video and the first audio stream of an open container (None where it has none)."""
    return (container.streams.video[0] if container.streams.video else None,
            container.streams.audio[0] if container.streams.audio else None)


def origin_of(container) -> float:
    """Time zero of a file: the earliest start of its first video and audio streams (0 when
    the container gives neither). Every reader of avar counts time from it."""
    starts = [stream_start(s) for s in first_streams(container) if s is not None]
    starts = [s for s in starts if s is not None]
    return min(starts) if starts else 0.0


def check_step(step: float) -> float:
    """``step`` if it is a usable step length in seconds, else a ValueError saying so."""
    try:
        value = float(step)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--step must be a positive number of seconds, got {step!r}")
    return value


def n_steps_for(duration: float, step: float) -> int:
    """Steps in a clip: a final partial step counts once it is at least half a step long."""
    return max(1, int(math.floor(duration / step + 0.5)))


@dataclass
class DecodeStats:
    """What decoding a source cost: video packets read, frames the decoder produced, and
    frames it was allowed to skip because no step could show them (see ``CentreFrames.plan``)."""

    packets: int = 0
    frames_decoded: int = 0
    frames_skipped: int = 0


class _Skipped:
    """Stands in for a frame the decoder skipped; only its timestamp entered the timeline."""


SKIPPED = _Skipped()


class CentreFrames:
    """Streams decoded frames and keeps, for each step centre, the frame on screen then.

    Only kept frames are converted to RGB, because conversion costs more than decoding.
    ``kept[i]`` is step ``i``'s frame; a streaming reader (``avar.serve.watch``) may take
    a frame out and leave ``None`` so memory stays bounded on long streams.

    ``plan`` tells, per video packet before it is decoded, whether the decoder may skip it
    (if it is a non-reference frame): only when no step can show it. Skipped frames still
    enter the timeline by their packet's timestamp (``_place``), so the gaps, jumps, first
    and last times, and hence every step, are exactly those of decoding every frame.
    """

    def __init__(self, origin: float, step: float, size: tuple[int, int] | None, source: str = "",
                 rate: float | None = None, motion: MotionSampling | None = None):
        self.origin, self.step, self.size, self.source = origin, step, size, source
        self.motion = motion
        self.pairs: list[tuple | None] = []  # per sample time, in order: (earlier, later, dt), or None: no pair
        self.pair_size: tuple[int, int] | None = None
        self.kept: list[np.ndarray] = []
        self.prev = None
        self.prev_time = 0.0  # the previous frame's time on the closed timeline
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.shift = 0.0  # seconds taken off every later timestamp, closing jumps
        self.interval = min(step, 0.04)  # the last regular gap between frames
        self.jumps: list[tuple[float, float]] = []
        # Skipping needs the container's frame interval; without one every frame is decoded.
        self.nominal = 1.0 / rate if rate and rate > 0 else None
        self.recent: list[float] = []  # timestamps of the last video packets read (decode order)
        self.pending: list[float] = []  # sorted timestamps of packets the decoder may have skipped
        self.raw_last: float | None = None  # the last decoded frame's own timestamp
        self.ordered = True  # decoded frames came out in timestamp order so far
        self.skipped = 0  # frames the decoder skipped

    def rgb(self, frame) -> np.ndarray:
        if frame is SKIPPED:
            raise RuntimeError(f"{self.source}: a frame the decoder skipped was to be shown; "
                               "CentreFrames.plan let through a frame a step needs")
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])

    def _centre(self, i: int) -> float:
        return self.origin + (i + 0.5) * self.step

    def _sample(self, k: int) -> float:
        """The time of motion pair ``k`` (pair ``k % pairs`` of step ``k // pairs``)."""
        p = self.motion.pairs
        return self.origin + (k // p + (k % p + 0.5) / p) * self.step

    def gray(self, frame) -> np.ndarray:
        if frame is SKIPPED:
            raise RuntimeError(f"{self.source}: a frame the decoder skipped was to be read for motion; "
                               "CentreFrames.plan let through a frame a motion pair needs")
        return luma(frame, self.pair_size)

    def _needed_by_motion(self, lo: float, hi: float) -> bool:
        """Whether a motion pair reads a frame shown in ``[lo, hi]``: one whose sample time lies
        there, or the frame right after one (up to 1.5 frame intervals before ``lo``)."""
        if self.motion is None:
            return False
        p = self.motion.pairs
        k = max(0, math.floor((lo - 1.5 * self.nominal - self.origin) / self.step * p - 0.5))
        while self._sample(k) < lo - 1.5 * self.nominal:
            k += 1
        return self._sample(k) <= hi

    def pairs_ready(self, i: int) -> bool:
        """Whether step ``i``'s motion pairs are all complete (always, without motion)."""
        return self.motion is None or len(self.pairs) >= (i + 1) * self.motion.pairs

    def take_pairs(self, i: int) -> MotionPairs | None:
        """Step ``i``'s pairs, handed over (their slots keep the index, memory stays bounded)."""
        if self.motion is None:
            return None
        p = self.motion.pairs
        taken = self.pairs[i * p:(i + 1) * p]
        self.pairs[i * p:(i + 1) * p] = [None] * len(taken)
        return _pairs_of(taken, p, self.pair_size)

    def plan(self, t: float | None) -> bool:
        """Whether the video packet shown at ``t`` seconds (its pts, None if unknown) may be
        skipped by the decoder, decided before decoding it. A frame is on screen from its
        timestamp until the next frame's; it may be skipped when a packet already read shows
        the next frame within 1.5 frame intervals and no step centre falls in between (with a
        quarter interval to spare). Anything unusual decodes the packet: no timestamp, no frame
        rate, no frame decoded yet (the first frame is shown before it), a timestamp jump so far,
        frames out of order, or a packet not later than the frames already decoded (or so far
        after them that a jump may lie between)."""
        if t is None:
            return False
        ahead = [r for r in self.recent if r > t]
        self.recent = self.recent[-15:] + [t]  # a reorder window; B-frame pyramids stay well inside it
        if (self.nominal is None or self.first_time is None or self.jumps or not self.ordered or not ahead
                or t <= self.last_time):
            return False
        if t - self.last_time > max(JUMP_SECONDS, 10 * self.step):
            return False  # a jump may lie between the frames decoded so far and this one
        following = min(ahead)
        margin = 0.25 * self.nominal
        if following - t > 1.5 * self.nominal:
            return False
        # The first step centre at or after t - margin must come after following + margin.
        i = max(0, math.floor((t - margin - self.origin) / self.step - 0.5))
        while self._centre(i) < t - margin:
            i += 1
        if self._centre(i) <= following + margin or self._needed_by_motion(t - margin, following + margin):
            return False
        bisect.insort(self.pending, t)
        return True

    def push(self, frame) -> None:
        t = frame.time
        if t is None:
            raise ValueError("a video frame has no timestamp")
        if self.raw_last is not None and t <= self.raw_last:
            self.ordered = False
        self.raw_last = t
        # Packets sent as skippable and timed before this frame were skipped: frames come out in
        # timestamp order. One timed exactly at it was a reference frame and is this one.
        while self.pending and self.pending[0] <= t:
            skipped = self.pending.pop(0)
            if skipped < t:
                self.skipped += 1
                self._place(skipped, SKIPPED)
        self._place(t, frame)

    def finish(self) -> None:
        """Place skipped frames timed after the last decoded one (only possible if a frame the
        decoder should have produced never came); call once the decoder is drained."""
        while self.pending:
            self.skipped += 1
            self._place(self.pending.pop(0), SKIPPED)

    def close_pairs(self, n_steps: int) -> None:
        """Fill the motion pairs of the first ``n_steps`` steps that no later frame completed
        (the stream ended): no motion known there (``dt`` 0)."""
        if self.motion is not None:
            while len(self.pairs) < n_steps * self.motion.pairs:
                self.pairs.append(None)

    def _place(self, t: float, frame) -> None:
        t -= self.shift
        if self.last_time is not None:
            gap = t - self.last_time
            if gap > max(JUMP_SECONDS, 10 * self.step):
                self.jumps.append((self.last_time, t + self.shift))
                warnings.warn(f"{self.source}: video timestamps jump from {self.last_time:.2f} s to "
                              f"{t + self.shift:.2f} s; the gap is closed (timestamp_jump)", stacklevel=3)
                self.shift += gap - self.interval
                t -= gap - self.interval
            elif gap > 0:
                self.interval = gap
        if self.first_time is None:
            self.first_time = t
            if self.motion is not None:
                w = self.motion.width
                self.pair_size = (w, max(2, int(round(frame.height * w / frame.width / 2)) * 2))
        self.last_time = t if self.last_time is None else max(self.last_time, t)
        # Centres before this frame show the previous frame (or this one, if none came yet).
        while self._centre(len(self.kept)) < t:
            shown = self.prev if self.prev is not None else frame
            self.kept.append(self.rgb(shown))
        # A sample time before this frame: the frame on screen then, and this one after it.
        while self.motion is not None and self._sample(len(self.pairs)) < t:
            self.pairs.append(None if self.prev is None else (self.gray(self.prev), self.gray(frame), t - self.prev_time))
        self.prev = frame
        self.prev_time = t


LUMA_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"})
"""8-bit pixel formats whose first plane is the luma (brightness) itself."""


def luma(frame, size: tuple[int, int]) -> np.ndarray:
    """A decoded frame's brightness ``uint8 [h, w]`` at ``size`` (width, height), area-averaged.
    Read straight from the luma plane where the format has one (4-5x faster than FFmpeg's
    conversion to gray at 160 px), else converted."""
    if frame.format.name not in LUMA_FORMATS:
        return frame.to_ndarray(format="gray", width=size[0], height=size[1])
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : frame.width]
    return cv2.resize(y, size, interpolation=cv2.INTER_AREA)


MIN_PAIR_DT = 1.0 / 240
"""Floor of a pair's time gap (s): frames stamped out of order or twice still give finite flow."""


def _pairs_of(taken: list, pairs: int, size: tuple[int, int] | None) -> MotionPairs:
    """One step's ``MotionPairs`` from its ``CentreFrames.pairs`` slots; None (before the first
    frame, after the last) is no pair."""
    w, h = size or (8, 8)
    frames = np.zeros((1, pairs, 2, h, w), np.uint8)
    dt = np.zeros((1, pairs), np.float32)
    for j, item in enumerate(taken):
        if item is not None:
            frames[0, j, 0], frames[0, j, 1] = item[0], item[1]
            dt[0, j] = max(item[2], MIN_PAIR_DT)
    return MotionPairs(frames, dt)


def resize_rgb(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """An RGB frame at ``size`` (width, height) by the scaler the decoder resizes with, so a
    frame changed at full size (anonymised) and resized after matches one resized in decoding."""
    if size is None or frame.shape[1::-1] == tuple(size):
        return frame
    return av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(size[0], size[1]).to_ndarray(format="rgb24")


Opener = Callable[[str], "av.container.InputContainer"]


@dataclass
class StepMedia:
    """One time step's media as soon as it is complete.

    ``time``/``end`` in seconds from the source's start (``end`` is ``time + step``, except for
    the steps handed over after the stream ended, which stop at its duration); ``frame`` is
    ``uint8 [H, W, 3]`` RGB, the frame on screen at the step's centre; ``audio`` is
    ``float32 [S]`` mono at 16 kHz, ``S = round(step * 16000)``, zeros where the source had none.
    """

    time: float
    end: float
    frame: np.ndarray
    audio: np.ndarray
    audio_missing: bool = False
    """No sound in this step: the source has none, or its sound ended before the step."""
    video_missing: bool = False
    motion: MotionPairs | None = None
    """The step's frame pairs (one step: ``[1, P, 2, h, w]``) when a ``MotionSampling`` was asked for."""


def iter_steps(
    source: str | Path,
    step: float = 1.0,
    frame_size: tuple[int, int] | None = None,
    *,
    opener: Opener = av.open,
    decode_all: bool = False,
    stats: DecodeStats | None = None,
    motion: MotionSampling | None = None,
) -> Iterator[StepMedia]:
    """Stream ``source`` (a file, URL or device FFmpeg can open) as ``StepMedia``, one per step.

    A step is handed over once the first frame after its centre has arrived and the audio has
    reached its end, or the stream has ended. ``frame_size`` (width, height) resizes frames.
    The decoder skips non-reference frames no step can show (``CentreFrames.plan``); the steps
    are the same as with ``decode_all=True``, which decodes every frame (the reference the
    tests and ``benchmarks/decode_speed.py`` compare against). ``stats``, if given, is filled
    with what decoding cost. ``motion`` also hands over each step's frame pairs
    (``StepMedia.motion``), once the frame after its last sample time has arrived. Raises
    ``MediaError`` naming the source when it cannot be opened or decoding fails.
    """
    check_step(step)
    try:
        container = opener(str(source))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(source, f"cannot open as media ({exc}); is it a video file, URL or device FFmpeg can read?")
    with container:
        try:
            yield from _stream(container, str(source), step, frame_size, decode_all, stats or DecodeStats(), motion)
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            raise MediaError(source, f"decoding failed ({exc}); the file may be truncated or the stream dropped")


def _stream(container, source: str, step: float, frame_size, decode_all: bool,
            stats: DecodeStats, motion: MotionSampling | None) -> Iterator[StepMedia]:
    video, audio = first_streams(container)
    if video is None and audio is None:
        raise MediaError(source, "no video or audio stream")
    origin = origin_of(container)
    per_step = int(round(step * AUDIO_RATE))

    frames = None
    if video is not None:
        rate = video.average_rate or video.guessed_rate
        frames = CentreFrames(origin, step, frame_size, source, None if decode_all else rate, motion)
        video.thread_type = "AUTO"
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE) if audio else None
    # The track from ``base`` (a sample index on the source's timeline, 0 = origin) onwards;
    # samples of steps already handed over are dropped, so memory stays bounded on live streams.
    track = np.zeros(0, np.float32)
    base = 0
    audio_start: float | None = None
    written = 0  # samples of the resampled wave so far
    black = None if video is not None else np.zeros(((frame_size or (64, 64))[1], (frame_size or (64, 64))[0], 3), np.uint8)
    done = 0  # steps handed over

    def add_audio(chunks) -> None:
        nonlocal track, written
        for chunk in chunks:
            wave = chunk.to_ndarray().reshape(-1).astype(np.float32)
            # Sample k of the wave sits at audio_start + k / 16 kHz, as in decode_steps.
            offset = int(round((audio_start - origin) * AUDIO_RATE)) + written
            written += len(wave)
            lo = max(offset, base)
            if offset + len(wave) <= lo:
                continue
            need = offset + len(wave) - base
            if need > len(track):
                track = np.concatenate([track, np.zeros(need - len(track), np.float32)])
            track[lo - base : offset + len(wave) - base] = wave[lo - offset :]

    def take(i: int, end: float, frame: np.ndarray, missing: bool) -> StepMedia:
        nonlocal track, base
        lo, hi = i * per_step - base, (i + 1) * per_step - base
        clip = np.zeros(per_step, np.float32)
        part = track[max(lo, 0) : hi]
        clip[: len(part)] = part
        track, base = track[max(hi, 0) :], max(base, (i + 1) * per_step)
        pairs = None
        if motion is not None:
            pairs = frames.take_pairs(i) if frames is not None else _pairs_of([], motion.pairs, None)
        return StepMedia(round(i * step, 6), round(end, 6), frame, clip, missing, frames is None, pairs)

    def frame_of(i: int) -> np.ndarray:
        if frames is None:
            return black
        shown, frames.kept[i] = frames.kept[i], None  # hand it over, keep the index
        return shown

    def audio_ready(i: int) -> bool:
        return audio is None or (audio_start is not None and base + len(track) >= (i + 1) * per_step)

    streams = [s for s in (video, audio) if s is not None]
    for packet in container.demux(*streams):
        if packet.stream is video:
            skip = False
            if packet.size:
                stats.packets += 1
                # As PyAV times frames, so a skipped frame's timestamp equals the decoded one's.
                skip = frames.plan(None if packet.pts is None else float(packet.pts)
                                   * packet.time_base.numerator / packet.time_base.denominator)
            # FFmpeg hands skip_frame to its frame threads with each packet, so it holds per
            # packet; NONREF skips only frames no other frame is predicted from.
            video.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
        for frame in packet.decode():
            if packet.stream is video:
                stats.frames_decoded += 1
                frames.push(frame)
            else:
                if audio_start is None:
                    audio_start = frame.time if frame.time is not None else origin
                add_audio(resampler.resample(frame))
        while (frames is None or (len(frames.kept) > done and frames.pairs_ready(done))) and audio_ready(done):
            yield take(done, (done + 1) * step, frame_of(done), audio is None)
            done += 1

    if frames is not None:
        frames.finish()
        stats.frames_skipped = frames.skipped
    if resampler is not None and audio_start is not None:
        add_audio(resampler.resample(None))
    audio_end = origin if audio_start is None else audio_start + written / AUDIO_RATE
    video_end = origin
    if frames is not None and frames.last_time is not None:
        rate = video.average_rate or video.guessed_rate
        # After a jump the container's average rate is meaningless; the frames' own spacing is not.
        regular = rate and rate > 0 and not frames.jumps
        video_end = frames.last_time + (1.0 / float(rate) if regular else frames.interval)
    duration = max(video_end, audio_end) - origin
    if duration <= 0:
        raise MediaError(source, "no decodable frames or samples")
    n = n_steps_for(duration, step)
    if frames is None or frames.prev is None:
        warnings.warn(f"{source}: no video; using black frames (video_missing)", stacklevel=2)
        w, h = frame_size or (64, 64)
        frames, black = None, np.zeros((h, w, 3), np.uint8)
    audio_missing = audio is None or written == 0
    if audio_missing:
        warnings.warn(f"{source}: no audio; using zero audio (audio_missing)", stacklevel=2)
    elif audio_end - origin < duration - step:
        warnings.warn(f"{source}: audio covers {audio_end - origin:.2f} s of {duration:.2f} s; zero audio after "
                      "(audio_missing on those steps)", stacklevel=2)
    if frames is not None:
        while len(frames.kept) < n:
            frames.kept.append(frames.rgb(frames.prev))
        frames.close_pairs(n)
    for i in range(done, n):
        # A step starting after the last sample has no sound at all.
        silent = audio_missing or i * step >= audio_end - origin
        yield take(i, min((i + 1) * step, duration), frame_of(i), silent)


def probe(path: Path | str, step: float = 1.0) -> float:
    """Check that ``path`` is media avar can read by decoding its first step; returns its
    duration in seconds (the container's, else the first step's end). Raises ``MediaError``
    naming the file otherwise. Cheap: only the start of the file is decoded."""
    steps = iter_steps(path, step, (32, 32))
    try:
        first = next(steps, None)
    finally:
        steps.close()
    if first is None:
        raise MediaError(path, "no step could be decoded; the file holds no video frames or sound")
    try:
        with av.open(str(path)) as container:
            duration = container.duration / av.time_base if container.duration else None
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(path, f"cannot open as media ({exc})")
    return float(duration) if duration and duration > 0 else first.end


def decode_steps(
    path: Path | str, step: float = 1.0, frame_size: tuple[int, int] | None = None,
    motion: MotionSampling | None = None,
) -> ClipSteps:
    """Decode a whole file into ``ClipSteps``; ``frame_size`` (width, height) resizes frames,
    ``motion`` keeps each step's frame pairs too (``ClipSteps.motion``).

    The same steps as :func:`iter_steps`, collected. Raises ``MediaError`` naming the file
    when it cannot be opened or decoded.
    """
    path = Path(path)
    check_step(step)
    if not path.is_file():
        raise MediaError(path, "no such file")
    steps = list(iter_steps(path, step, frame_size, motion=motion))
    return ClipSteps(
        path=path,
        step=step,
        times=np.array([s.time for s in steps], dtype=np.float64),
        frames=np.stack([s.frame for s in steps]),
        audio=np.stack([s.audio for s in steps]),
        duration=steps[-1].end,
        audio_missing=all(s.audio_missing for s in steps),
        video_missing=steps[-1].video_missing,
        audio_partial=any(s.audio_missing for s in steps) and not all(s.audio_missing for s in steps),
        motion=None if motion is None else MotionPairs.stack([s.motion for s in steps]),
    )
