"""Whole-file readers: every video frame of a file, or its whole audio track at a chosen rate.

:mod:`avar.media.decode` cuts files into fixed time steps for the supervised heads; the
frame-level detectors (the sequence autoencoder) need every frame instead, and audio at the
rate their features expect. Both readers put time zero at the file's earliest stream start,
so a frame and the audio under it line up as they do in :func:`decode.decode_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from avar.media.decode import MediaError, origin_of


@dataclass
class VideoFrames:
    """Every decoded frame of a file.

    ``frames`` is ``uint8 [N, H, W]`` grayscale (or ``[N, H, W, 3]`` RGB); ``times`` is
    ``float64 [N]`` seconds from the file's start; ``fps`` the stream's average rate (Hz).
    """

    frames: np.ndarray
    times: np.ndarray
    fps: float


def read_frames(path: Path | str, size: tuple[int, int] | None = None, gray: bool = True) -> VideoFrames:
    """Decode every frame of ``path``; ``size`` = (width, height) resizes with area averaging.

    Raises :class:`MediaError` naming the file when it has no video or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream; the autoencoder's visual model needs frames")
            stream = container.streams.video[0]
            origin = origin_of(container)
            rate = stream.average_rate or stream.guessed_rate
            frames, times = [], []
            for frame in container.decode(stream):
                image = frame.to_ndarray(format="gray" if gray else "rgb24")
                if size is not None and image.shape[1::-1] != tuple(size):
                    image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
                frames.append(image)
                times.append((frame.time if frame.time is not None else len(times) / float(rate or 25)) - origin)
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"decoding failed ({exc}); the file may be truncated or not a video") from exc
    if not frames:
        raise MediaError(path, "no decodable video frames")
    fps = float(rate) if rate else (len(times) - 1) / max(times[-1] - times[0], 1e-9)
    return VideoFrames(np.stack(frames), np.asarray(times, dtype=np.float64), fps)


def read_audio(path: Path | str, rate: int) -> np.ndarray | None:
    """The whole audio track of ``path`` as mono ``float32 [S]`` at ``rate`` Hz, or None if it has none.

    Sample 0 sits at the file's start (the earliest stream start), so a track that starts late
    is preceded by silence. Raises :class:`MediaError` naming the file when it cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            origin = origin_of(container)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks, start = [], None
            for frame in container.decode(stream):
                if start is None:
                    start = frame.time if frame.time is not None else origin
                chunks += [c.to_ndarray().reshape(-1) for c in resampler.resample(frame)]
            chunks += [c.to_ndarray().reshape(-1) for c in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"decoding audio failed ({exc}); the file may be truncated") from exc
    if not chunks:
        return None
    wave = np.concatenate(chunks).astype(np.float32)
    lead = int(round(((start or origin) - origin) * rate))
    return np.concatenate([np.zeros(lead, np.float32), wave]) if lead > 0 else wave
