"""Frame-level detection metrics: ROC curve and AUC, equal error rate, metrics at a threshold,
and the regularity score of Tariq et al. (2024, Eq. 3-4).

Every function takes per-frame ``labels`` (1/True = anomalous, the positive class) and
``scores`` (higher = more anomalous), pooled over however many videos the caller chose.
Plain numpy; the tests check the numbers against scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avar.metrics.classification import _binary_inputs, _safe_divide, roc_auc

__all__ = [
    "ThresholdMetrics",
    "equal_error_rate",
    "minmax_normalize",
    "regularity_score",
    "roc_auc",
    "roc_curve",
    "threshold_metrics",
]


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` with one point per distinct score, plus the origin.

    Point ``k`` counts a frame as positive when ``score >= thresholds[k]``; thresholds fall,
    so both rates rise from (0, 0) to (1, 1). ``thresholds[0]`` is ``+inf`` (nothing flagged).
    Tied scores form one point, as in ``sklearn.metrics.roc_curve(drop_intermediate=False)``.
    """
    y, s = _binary_inputs(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"a ROC curve needs positives and negatives, got {n_pos} anomalous and {n_neg} normal frames")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    return (np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, s[last_of_run]])


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """``(eer, threshold)``: where the false positive rate equals the false negative rate.

    The crossing of ``fpr`` and ``fnr = 1 - tpr`` is interpolated linearly between the two
    ROC points that bracket it (the ROC is piecewise linear between points), so the EER is
    exact for the curve rather than snapped to a point; the threshold is interpolated the
    same way (the first point's ``+inf`` is replaced by the top score).
    """
    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    gap = fpr - fnr  # rises from -1 at the origin to +1 at (1, 1)
    k = int(np.flatnonzero(gap >= 0)[0])
    if gap[k] == 0 or k == 0:
        return float(fpr[k]), float(thresholds[k] if np.isfinite(thresholds[k]) else thresholds[1])
    w = -gap[k - 1] / (gap[k] - gap[k - 1])
    eer = fpr[k - 1] + w * (fpr[k] - fpr[k - 1])
    lo_threshold = thresholds[k - 1] if np.isfinite(thresholds[k - 1]) else thresholds[k]
    threshold = lo_threshold + w * (thresholds[k] - lo_threshold)
    return float(eer), float(threshold)


@dataclass
class ThresholdMetrics:
    """Frame counts and rates when ``score >= threshold`` flags a frame as anomalous."""

    threshold: float
    precision: float
    recall: float
    accuracy: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> ThresholdMetrics:
    """Precision, recall, accuracy and F1 of the anomalous class at ``threshold``.

    Frames with ``score >= threshold`` are predicted anomalous. An empty denominator gives 0,
    as scikit-learn's ``zero_division=0``.
    """
    y, s = _binary_inputs(labels, scores)
    if y.size == 0:
        raise ValueError("no frames to score")
    flagged = s >= threshold
    tp = int(np.sum(flagged & y))
    fp = int(np.sum(flagged & ~y))
    fn = int(np.sum(~flagged & y))
    tn = int(y.size - tp - fp - fn)
    precision, recall, f1 = (float(v) for v in _safe_divide(
        np.array([tp, tp, 2 * tp], dtype=np.float64), np.array([tp + fp, tp + fn, 2 * tp + fp + fn], dtype=np.float64)
    ))
    return ThresholdMetrics(float(threshold), precision, recall, (tp + tn) / y.size, f1, tp, fp, tn, fn)


def minmax_normalize(values: np.ndarray) -> np.ndarray:
    """``(v - min) / (max - min)`` into [0, 1]; a constant input gives zeros (nothing stands out)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    if not np.all(np.isfinite(v)):
        raise ValueError("cannot normalise NaN or infinite values; check the reconstruction errors")
    span = v.max() - v.min()
    return np.zeros_like(v) if span <= 0 else (v - v.min()) / span


def regularity_score(errors: np.ndarray) -> np.ndarray:
    """Regularity ``s_r(t) = 1 - e_n(t)`` of one video's per-frame reconstruction errors (Eq. 4).

    ``e_n`` is the error min-max normalised over the video (the paper's normalisation of Eq. 3's
    ``e(t) = ||x(t) - f_w(x(t))||_2``), so every video's scores span [0, 1]: 1 for its most
    regular frame, 0 for its least. Low regularity means anomalous.
    """
    return 1.0 - minmax_normalize(errors)
