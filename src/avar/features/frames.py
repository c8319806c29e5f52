"""Checks and resizing shared by the video extractors."""

from __future__ import annotations

import cv2
import numpy as np


def check_frames(frames: np.ndarray, extractor: str) -> np.ndarray:
    """Return ``frames`` if it is RGB ``uint8 [N, H, W, 3]``, else raise a ``ValueError``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"extractor '{extractor}' expects RGB frames uint8 [N, H, W, 3], "
            f"got {frames.dtype} {list(frames.shape)}"
        )
    return frames


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize whole frames to ``size`` = (width, height), without cropping.

    Nothing is cropped because surveillance anomalies can sit at the frame's edges.
    ``INTER_AREA`` averages the source pixels under each output pixel, so shrinking a
    large frame does not alias; frames already at ``size`` are returned as they are.
    """
    width, height = size
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
