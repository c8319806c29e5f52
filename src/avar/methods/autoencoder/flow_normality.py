"""The autoencoder's motion term: how fast things move at each place, against normal footage.

Ped2's anomalies (bikes, skaters, carts) move faster than the walkers around them, where the
reconstruction error of a model of appearance sees them only when they look different. Dense
optical flow (OpenCV DIS, no weights) between consecutive frames, averaged inside each cell of a
grid, gives each place's speed; the normal training videos give each cell's usual top speed
(its :data:`QUANTILE` quantile). A frame's flow score is its fastest cell relative to that
cell's normal top speed; evaluation min-max normalises it per video like the reconstruction
errors (paper Eq. 4) and averages the two into the run's regularity
(:func:`avar.methods.autoencoder.evaluate.evaluate_autoencoder`, ``*_flow`` scorers).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

GRID = (12, 18)
"""Rows x columns of the speed grid (20 x 20 px cells on Ped2's 240 x 360 frames)."""
QUANTILE = 99.9
"""Per-cell quantile of the normal training speeds a frame's speed is measured against."""
WIDTH = 360
"""Frames wider than this are scaled down before the flow (Ped2's are 360 px)."""
_FLOOR = 1e-4
"""Floor of a cell's normal top speed (frame widths per frame): a cell where nothing ever moved
in training (a wall) still gives a finite ratio."""


def cell_speeds(frames: np.ndarray, grid: tuple[int, int] = GRID) -> np.ndarray:
    """``float32 [N, rows, cols]``: each frame's flow magnitude from the frame before it, in
    frame widths per frame, averaged per cell; frame 0 takes frame 1's (one frame: zeros).
    ``frames`` is grayscale ``uint8 [N, H, W]``."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be grayscale [N, H, W], got shape {list(frames.shape)}")
    n, h, w = frames.shape
    if w > WIDTH:
        size = (WIDTH, max(2, int(round(h * WIDTH / w))))
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    out = np.zeros((n, *grid), np.float32)
    for t in range(1, n):
        field = flow.calc(frames[t - 1], frames[t], None)
        magnitude = np.hypot(field[..., 0], field[..., 1]) / frames.shape[2]
        out[t] = cv2.resize(magnitude, grid[::-1], interpolation=cv2.INTER_AREA)
    if n > 1:
        out[0] = out[1]
    return out


@dataclass
class FlowNormality:
    """Each grid cell's normal top speed (``top [rows, cols]``), fitted on normal videos."""

    top: np.ndarray

    @classmethod
    def fit(cls, videos: list[np.ndarray]) -> "FlowNormality":
        """From normal videos' grayscale frames ``[N_i, H, W]``."""
        speeds = np.concatenate([cell_speeds(v) for v in videos])
        return cls(np.maximum(np.percentile(speeds, QUANTILE, axis=0), _FLOOR).astype(np.float32))

    def scores(self, frames: np.ndarray) -> np.ndarray:
        """``float64 [N]``: each frame's fastest cell over that cell's normal top speed."""
        speeds = cell_speeds(frames, self.top.shape)
        return (speeds / self.top).reshape(len(speeds), -1).max(1).astype(np.float64)

    def to_dict(self) -> dict:
        return {"grid": list(self.top.shape), "quantile": QUANTILE, "top": self.top.round(7).tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "FlowNormality":
        top = np.asarray(data["top"], np.float32)
        if top.ndim != 2 or tuple(top.shape) != tuple(data["grid"]) or not (top > 0).all():
            raise ValueError(f"flow normality: 'top' must be a {data.get('grid')} grid of speeds > 0")
        return cls(top)
