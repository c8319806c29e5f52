"""The learning-free floor: how much does a frame differ from the one before it?

Surveillance anomalies such as Ped2's bikes, carts and skaters move faster or cover more of
the picture than walkers, so plain motion energy already ranks many anomalous frames high.
Every frame-level result in avar reports this floor beside the model, so the number shows
what learning added.
"""

from __future__ import annotations

import numpy as np

DEFAULT_GRID = (10, 12)
"""Rows x columns of the cell grid (24 x 30 px cells on Ped2's 240 x 360 frames)."""


def frame_difference_scores(frames: np.ndarray, grid: tuple[int, int] = DEFAULT_GRID, reduce: str = "max") -> np.ndarray:
    """Per-frame motion score ``float64 [N]`` of one video, before any normalisation.

    ``frames`` is ``[N, H, W]`` grayscale (uint8 or float). Frame ``t``'s absolute difference
    to frame ``t - 1`` is averaged inside each cell of a ``grid`` over the picture, and the
    cells are reduced by ``reduce``: ``"max"`` (the busiest cell: local motion, the floor
    quoted in issue 5) or ``"mean"`` (the global mean difference). Frame 0 has no predecessor
    and takes frame 1's score. Cells split the picture as evenly as integer edges allow.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"frames must be grayscale [N, H, W], got shape {list(x.shape)}")
    if len(x) < 2:
        return np.zeros(len(x))
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    diff = np.abs(np.diff(x, axis=0))
    if reduce == "mean":
        scores = diff.mean(axis=(1, 2))
    else:
        scores = grid_cell_means(diff, grid).max(axis=(1, 2))
    return np.r_[scores[0], scores].astype(np.float64)


def grid_cell_means(maps: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Mean of ``maps [N, H, W]`` inside each cell of a ``rows x cols`` grid -> ``[N, rows, cols]``."""
    rows, cols = grid
    n, h, w = maps.shape
    if not (1 <= rows <= h and 1 <= cols <= w):
        raise ValueError(f"grid {grid} does not fit {h} x {w} maps")
    r_edges = np.linspace(0, h, rows + 1).round().astype(int)
    c_edges = np.linspace(0, w, cols + 1).round().astype(int)
    # Sums over runs of rows then columns via reduceat: one pass, any cell sizes.
    sums = np.add.reduceat(np.add.reduceat(maps, r_edges[:-1], axis=1), c_edges[:-1], axis=2)
    areas = np.outer(np.diff(r_edges), np.diff(c_edges))
    return sums / areas
