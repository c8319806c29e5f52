"""Motion extractors: dense optical flow between frame pairs, summarised per step.

Appearance backbones see what a frame looks like, not what moves; the field's video features
are two-stream (appearance + optical flow) for that reason. Flow here comes from OpenCV's DIS
(no weights), on the small gray frame pairs the decoder keeps in the same pass as the
appearance frames (:class:`avar.media.decode.MotionSampling`: ``pairs`` per step, the frame
on screen at each sample time and the next one).

``flow-hist`` describes each pair's flow, in frame widths per second (so a scene's resolution
and frame rate do not change the numbers), by

* per cell of a 3 x 3 grid: an 8-bin orientation histogram weighted by magnitude (the shares
  of the cell's motion going each way; bin ``k`` is centred on the angle ``-pi + k pi/4`` in
  image coordinates, so leftward motion falls in bin 0, rightward in bin 4, downward in 6), a
  7-bin magnitude histogram (the share of pixels per speed band, :data:`MAGNITUDE_EDGES`), and the violent-flows statistics
  (Hassner et al., 2012): the cell's mean magnitude, its mean absolute change from the step's
  previous pair, and the share of pixels whose change exceeds the frame's mean change;
* over the whole frame, what carries across scenes: the orientation histogram rotated so its
  largest bin comes first, the mean and 50/90/99th percentiles of magnitude, the shares of
  pixels moving faster than 0.05 and 0.2 frame widths/s, mean absolute divergence and curl, mean
  change and share of changing pixels, orientation entropy, coherence (the length of the summed
  flow over the summed magnitude: one crowd walking one way is near 1, a scuffle near 0), and the
  largest cell mean, the spread of cell means, the largest cell change and the lowest cell
  entropy (where in the frame the motion concentrates).

A step's vector is the mean, max and std of its pairs' vectors (``3 x 186`` = 558 numbers);
a step with no pair (a one-frame clip, no video) is all zeros.
"""

from __future__ import annotations

import cv2
import numpy as np

from avar.media.decode import MotionPairs, MotionSampling

GRID = 3
ORIENTATIONS = 8
MAGNITUDE_EDGES = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8], np.float32)
"""Speed bands (frame widths per second) of the magnitude histograms: 7 bins."""
PAIR_DIM = GRID * GRID * (ORIENTATIONS + len(MAGNITUDE_EDGES) + 1 + 3) + ORIENTATIONS + 16


def _entropy(weights: np.ndarray) -> float:
    p = weights / max(float(weights.sum()), 1e-9)
    return float(-(p * np.log(p + 1e-9)).sum())


def flow_descriptor(flow: np.ndarray, prev_magnitude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The :data:`PAIR_DIM` numbers of one flow field ``[h, w, 2]`` in frame widths per second
    (see the module docstring), and its magnitude ``[h, w]`` for the next pair's change;
    ``prev_magnitude`` is the previous pair's (None: no change known, zeros)."""
    h, w = flow.shape[:2]
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    angle = np.arctan2(flow[..., 1], flow[..., 0])
    # Bin k is centred on angle -pi + k * 2 pi / 8: leftward motion in bin 0, rightward in bin 4.
    orientation = np.floor((angle + np.pi) / (2 * np.pi) * ORIENTATIONS + 0.5).astype(np.int64) % ORIENTATIONS
    speed = np.searchsorted(MAGNITUDE_EDGES, magnitude)
    change = (np.abs(magnitude - prev_magnitude) if prev_magnitude is not None
              and prev_magnitude.shape == magnitude.shape else np.zeros_like(magnitude))
    mean_change = float(change.mean())
    parts, cells = [], []
    for gy in range(GRID):
        for gx in range(GRID):
            cell = (slice(gy * h // GRID, (gy + 1) * h // GRID), slice(gx * w // GRID, (gx + 1) * w // GRID))
            m, c = magnitude[cell], change[cell]
            weights = np.bincount(orientation[cell].ravel(), m.ravel(), ORIENTATIONS)
            parts += [weights / (m.sum() + 1e-6), np.bincount(speed[cell].ravel(), None, len(MAGNITUDE_EDGES) + 1) / m.size,
                      [m.mean(), c.mean(), (c > mean_change).mean()]]
            cells.append((m.mean(), c.mean(), _entropy(weights)))
    cells = np.array(cells)
    du, dv = np.gradient(flow[..., 0]), np.gradient(flow[..., 1])
    divergence, curl = du[1] + dv[0], dv[1] - du[0]
    weights = np.bincount(orientation.ravel(), magnitude.ravel(), ORIENTATIONS)
    shares = weights / max(float(weights.sum()), 1e-9)
    total = max(float(magnitude.sum()), 1e-9)
    whole = [magnitude.mean(), *np.percentile(magnitude, (50, 90, 99)), (magnitude > 0.05).mean(), (magnitude > 0.2).mean(),
             np.abs(divergence).mean(), np.abs(curl).mean(), mean_change, (change > mean_change + 1e-9).mean(),
             _entropy(weights), np.hypot(flow[..., 0].sum(), flow[..., 1].sum()) / total,
             cells[:, 0].max(), cells[:, 0].std(), cells[:, 1].max(), cells[:, 2].min()]
    out = np.concatenate([np.ravel(p) for p in parts] + [np.roll(shares, -int(np.argmax(shares))), whole])
    return out.astype(np.float32), magnitude


class FlowHistExtractor:
    """``flow-hist``: DIS optical flow on each step's frame pairs, summarised as histograms and
    violent-flows statistics (module docstring). Plain numpy and OpenCV: no weights, offline."""

    name = "flow-hist"
    modality = "motion"
    dim = 3 * PAIR_DIM
    version = "1"
    default_source = "OpenCV DIS optical flow (no weights)"
    preprocessing = "4 gray frame pairs per step at 160 px wide, DIS ultrafast, frame widths/s"
    sampling = MotionSampling(pairs=4, width=160)
    """The frame pairs the decoder keeps for it."""
    runtime = "numpy"

    def __init__(self, weights: str | None = None, device: str = "cpu"):
        if weights is not None:
            raise ValueError(f"extractor '{self.name}' has no weights; drop --motion-weights")
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    @classmethod
    def available_offline(cls) -> bool:
        return True

    def __call__(self, pairs: MotionPairs) -> np.ndarray:
        """``[N, dim]`` for ``N`` steps' pairs (``frames uint8 [N, P, 2, h, w]``, ``dt [N, P]``)."""
        frames, dt = np.asarray(pairs.frames), np.asarray(pairs.dt)
        if frames.ndim != 5 or frames.shape[2] != 2 or frames.dtype != np.uint8 or dt.shape != frames.shape[:2]:
            raise ValueError(f"extractor '{self.name}' expects frame pairs uint8 [N, P, 2, h, w] and dt [N, P], "
                             f"got {frames.dtype} {list(frames.shape)} and {list(dt.shape)}")
        out = np.zeros((len(frames), self.dim), np.float32)
        for i in range(len(frames)):
            vectors, prev = [], None
            for j in np.flatnonzero(dt[i] > 0):
                a, b = frames[i, j]
                flow = self.flow.calc(a, b, None) / (a.shape[1] * float(dt[i, j]))
                vector, prev = flow_descriptor(flow, prev)
                vectors.append(vector)
            if vectors:
                stacked = np.stack(vectors)
                out[i] = np.concatenate([stacked.mean(0), stacked.max(0), stacked.std(0)])
        return out


__all__ = ["FlowHistExtractor", "MAGNITUDE_EDGES", "PAIR_DIM", "flow_descriptor"]
