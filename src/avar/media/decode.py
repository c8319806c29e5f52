"""Cut a media file into time steps by presentation timestamp (PyAV).

A step ``i`` covers ``[i * step, (i + 1) * step)`` seconds on the file's own timeline, whose
zero is the earliest stream start. Its picture is the video frame on screen at the step's
centre (the last frame whose timestamp is at or before it) and its sound is every audio sample
inside the step, resampled to 16 kHz mono. Selecting by timestamps rather than frame or sample
counts keeps variable frame rates, late-starting streams and any audio rate in sync.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 16_000
"""Sample rate (Hz) of the audio in every ``ClipSteps``."""

MEDIA_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".avi", ".mov", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".3gp"}
)


class MediaError(RuntimeError):
    """A file that cannot be decoded; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


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

    @property
    def n_steps(self) -> int:
        return len(self.times)


def stream_start(stream) -> float | None:
    """A stream's start time in seconds, or None when the container does not say."""
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def n_steps_for(duration: float, step: float) -> int:
    """Steps in a clip: a final partial step counts once it is at least half a step long."""
    return max(1, int(math.floor(duration / step + 0.5)))


class CentreFrames:
    """Streams decoded frames and keeps, for each step centre, the frame on screen then.

    Only kept frames are converted to RGB, because conversion costs more than decoding.
    ``kept[i]`` is step ``i``'s frame; a streaming reader (``avar.realtime.watch``) may take
    a frame out and leave ``None`` so memory stays bounded on long streams.
    """

    def __init__(self, origin: float, step: float, size: tuple[int, int] | None):
        self.origin, self.step, self.size = origin, step, size
        self.kept: list[np.ndarray] = []
        self.prev = None
        self.first_time: float | None = None
        self.last_time: float | None = None

    def rgb(self, frame) -> np.ndarray:
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])

    def _centre(self, i: int) -> float:
        return self.origin + (i + 0.5) * self.step

    def push(self, frame) -> None:
        t = frame.time
        if t is None:
            raise ValueError("a video frame has no timestamp")
        if self.first_time is None:
            self.first_time = t
        self.last_time = t if self.last_time is None else max(self.last_time, t)
        # Centres before this frame show the previous frame (or this one, if none came yet).
        while self._centre(len(self.kept)) < t:
            shown = self.prev if self.prev is not None else frame
            self.kept.append(self.rgb(shown))
        self.prev = frame

    def finish(self, n_steps: int) -> np.ndarray:
        while len(self.kept) < n_steps and self.prev is not None:
            self.kept.append(self.rgb(self.prev))
        return np.stack(self.kept[:n_steps])


def decode_steps(
    path: Path | str, step: float = 1.0, frame_size: tuple[int, int] | None = None
) -> ClipSteps:
    """Decode ``path`` into ``ClipSteps``; ``frame_size`` (width, height) resizes kept frames.

    Raises ``MediaError`` naming the file when it cannot be opened or decoded.
    """
    path = Path(path)
    if step <= 0:
        raise ValueError(f"step must be positive seconds, got {step}")
    if not path.is_file():
        raise MediaError(path, "no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(path, f"cannot open as media ({exc}); is it a video file FFmpeg can read?")
    with container:
        try:
            return _decode(container, path, step, frame_size)
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            raise MediaError(path, f"decoding failed ({exc}); the file may be truncated or corrupt")


def _decode(container, path: Path, step: float, frame_size) -> ClipSteps:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise MediaError(path, "no video or audio stream")
    starts = [s for s in (stream_start(video) if video else None, stream_start(audio) if audio else None) if s is not None]
    origin = min(starts) if starts else 0.0

    frames = CentreFrames(origin, step, frame_size) if video is not None else None
    if video is not None:
        video.thread_type = "AUTO"
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE) if audio else None
    chunks: list[np.ndarray] = []
    audio_start: float | None = None
    audio_end = origin

    streams = [s for s in (video, audio) if s is not None]
    for packet in container.demux(*streams):
        for frame in packet.decode():
            if packet.stream is video:
                frames.push(frame)
            else:
                if audio_start is None:
                    audio_start = frame.time if frame.time is not None else origin
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    if resampler is not None:
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio_start is not None:
        audio_end = audio_start + len(wave) / AUDIO_RATE

    video_end = origin
    if frames is not None and frames.last_time is not None:
        rate = video.average_rate or video.guessed_rate
        frame_dur = 1.0 / float(rate) if rate else 0.0
        video_end = frames.last_time + frame_dur
    duration = max(video_end, audio_end) - origin
    if duration <= 0:
        raise MediaError(path, "no decodable frames or samples")

    n = n_steps_for(duration, step)
    per_step = int(round(step * AUDIO_RATE))
    video_missing = frames is None or frames.prev is None
    if video_missing:
        warnings.warn(f"{path}: no video stream; using black frames (video_missing)", stacklevel=3)
        w, h = frame_size or (64, 64)
        rgb = np.zeros((n, h, w, 3), np.uint8)
    else:
        rgb = frames.finish(n)

    audio_missing = audio is None or len(wave) == 0
    if audio_missing:
        warnings.warn(f"{path}: no audio stream; using zero audio (audio_missing)", stacklevel=3)
    track = np.zeros(n * per_step, np.float32)
    if not audio_missing:
        offset = int(round((audio_start - origin) * AUDIO_RATE))
        lo, hi = max(offset, 0), min(offset + len(wave), len(track))
        if hi > lo:
            track[lo:hi] = wave[lo - offset : hi - offset]
    return ClipSteps(
        path=path,
        step=step,
        times=np.arange(n, dtype=np.float64) * step,
        frames=rgb,
        audio=track.reshape(n, per_step),
        duration=duration,
        audio_missing=audio_missing,
        video_missing=video_missing,
    )
