"""Frame-level detection metrics: ROC curve and AUC, equal error rate, metrics at a threshold,
and the regularity score of Tariq et al. (2024, Eq. 3-4).

Every function takes per-frame ``labels`` (1/True = anomalous, the positive class) and
``scores`` (higher = more anomalous), pooled over however many videos the caller chose.
Plain numpy; the tests check the numbers against scikit-learn.

Average precision comes two ways, because the weakly supervised literature reports both:
``average_precision`` is the step-wise sum ``sum_n (R_n - R_{n-1}) P_n`` (scikit-learn's
``average_precision_score``); ``xd_average_precision`` is the XD-Violence protocol, the
trapezoidal area under ``precision_recall_curve`` (the official code's ``auc(recall,
precision)``), which interpolates linearly between points and also counts the segment up to
the curve's (recall 0, precision 1) end point, so the two differ slightly. ``expand_to_frames``
turns per-step (snippet) scores into per-frame ones, as both protocols score frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avar.metrics.classification import _binary_inputs, _safe_divide, _threshold_counts, average_precision, roc_auc

__all__ = [
    "ThresholdMetrics",
    "average_precision",
    "equal_error_rate",
    "expand_to_frames",
    "minmax_normalize",
    "precision_recall_curve",
    "regularity_score",
    "roc_auc",
    "roc_curve",
    "threshold_metrics",
    "xd_average_precision",
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
    thresholds, tps, predicted = _threshold_counts(y, s)
    fps = predicted - tps
    return (np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thresholds])


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


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` as ``sklearn.metrics.precision_recall_curve`` gives them.

    One point per distinct score (a frame counts as positive when ``score >= threshold``),
    thresholds rising, then the end point ``precision = 1, recall = 0`` with no threshold.
    """
    y, s = _binary_inputs(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("a precision-recall curve needs at least one anomalous frame, got none")
    thresholds, tps, predicted = _threshold_counts(y, s)
    precision = tps / predicted
    recall = tps / n_pos
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def xd_average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """The XD-Violence AP: trapezoidal area under the precision-recall curve.

    Equals ``sklearn.metrics.auc(recall, precision)`` on ``precision_recall_curve``'s output,
    the computation of the benchmark's official evaluation (Wu et al., ECCV 2020).
    """
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.sum(-np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0))


def expand_to_frames(step_scores: np.ndarray, frames_per_step: float, n_frames: int | None = None) -> np.ndarray:
    """Per-frame scores from per-step ones: frame ``k`` takes the score of the step it falls in.

    ``frames_per_step`` is the step length in frames (16 for XD-Violence's I3D snippets, so
    every score is repeated 16 times; ``step_s * fps`` in general, need not be whole).
    ``n_frames`` defaults to ``floor(T * frames_per_step)``; frames past the last step take
    the last step's score.
    """
    scores = np.asarray(step_scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"step_scores must be a non-empty 1-D array, got shape {scores.shape}")
    if frames_per_step <= 0:
        raise ValueError(f"frames_per_step must be > 0, got {frames_per_step}")
    if abs(frames_per_step - round(frames_per_step)) < 1e-4:
        # A step given in rounded seconds (0.666667 s at 24 fps) still spans whole frames.
        frames_per_step = round(frames_per_step)
    if n_frames is None:
        n_frames = int(np.floor(scores.size * frames_per_step + 1e-6))
    # The small offset keeps exact boundaries (frame 16 of 16-frame steps) from falling back
    # into the previous step through rounding.
    step = np.floor((np.arange(n_frames) + 1e-6) / frames_per_step).astype(np.int64)
    return scores[np.minimum(step, scores.size - 1)]
