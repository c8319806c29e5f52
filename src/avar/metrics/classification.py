"""Clip-level classification metrics: accuracy, P/R/F1, confusion, one-vs-rest AUC and AP.

Everything is plain numpy so the definitions are visible and owned here; the tests check
every number against scikit-learn (``precision_recall_fscore_support`` with
``zero_division=0``, ``confusion_matrix``, ``roc_auc_score``, ``average_precision_score``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``int64 [n_classes, n_classes]``: rows are true classes, columns predicted."""
    y_true = _labels(y_true, n_classes, "y_true")
    y_pred = _labels(y_pred, n_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has {y_true.size} labels but y_pred has {y_pred.size}; pass one prediction per clip"
        )
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def roc_auc(y_binary: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic.

    Tied scores get the average of the ranks they span, which is exactly what the
    trapezoidal ROC area does with ties, so this equals ``sklearn.metrics.roc_auc_score``.
    Raises ``ValueError`` when ``y_binary`` lacks positives or negatives (AUC is undefined).
    """
    y, s = _binary_inputs(y_binary, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"ROC AUC needs both positives and negatives, got {n_pos} positives and {n_neg} negatives"
        )
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(y_binary: np.ndarray, scores: np.ndarray) -> float:
    """Step-wise average precision, ``sum_n (R_n - R_{n-1}) P_n``, over distinct thresholds.

    Tied scores form one threshold (they enter the ranking together), matching
    ``sklearn.metrics.average_precision_score``; no interpolation of precision.
    Raises ``ValueError`` when ``y_binary`` has no positives (recall is undefined).
    """
    y, s = _binary_inputs(y_binary, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive, got none")
    _, tps, predicted = _threshold_counts(y, s)
    precision = tps / predicted
    recall = tps / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


@dataclass
class ClassificationReport:
    """Clip-level metrics for one evaluation run; built by :func:`classification_report`.

    Per-class entries hold ``precision``, ``recall``, ``f1``, ``support`` (number of true
    clips), ``ap`` and ``auc`` (one-vs-rest on that class's probability; ``None`` when the
    class has no positives, and ``auc`` also ``None`` when it has no negatives).
    """

    classes: list[str]
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    per_class: dict[str, dict[str, float | int | None]]
    confusion: list[list[int]]
    """Rows are true classes, columns predicted, both in the order of ``classes``."""
    ap_macro: float | None
    """Mean one-vs-rest AP over classes with positives and negatives; ``None`` if none do."""
    auc_macro: float | None
    """Mean one-vs-rest ROC AUC over classes with positives and negatives."""
    anomaly_auc: float | None
    """Normal-vs-anomaly ROC AUC with score ``1 - P(normal)``; ``None`` without a normal class
    or when the clips are all normal or all anomalous."""
    anomaly_ap: float | None
    """Normal-vs-anomaly AP (anomaly is the positive class), same score and conditions."""
    n: int
    """Number of clips evaluated."""
    branch_accuracy: dict[str, float] | None = None
    """A fused head's accuracy with both streams ('av') and each alone ('a', 'v'), where the
    head can run with a stream missing; set by :func:`avar.methods.avarnet.evaluate.evaluate_run`."""
    fusion_warning: str | None = None
    """Set when the fused accuracy is below the best single stream's."""
    events: dict | None = None
    """Event-level figures of the run's stored thresholds (:func:`avar.metrics.events.event_figures`)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only: non-finite floats become ``None`` so ``allow_nan=False`` works."""
        return _json_ready(asdict(self))

    def to_markdown(self) -> str:
        """Summary table, per-class table and confusion matrix as GitHub-flavoured markdown."""
        summary = [
            ("clips", str(self.n)),
            ("accuracy", _fmt(self.accuracy)),
            ("precision (macro / weighted)", _pair(self.precision_macro, self.precision_weighted)),
            ("recall (macro / weighted)", _pair(self.recall_macro, self.recall_weighted)),
            ("F1 (macro / weighted)", _pair(self.f1_macro, self.f1_weighted)),
            ("AP (macro, one-vs-rest)", _fmt(self.ap_macro)),
            ("ROC AUC (macro, one-vs-rest)", _fmt(self.auc_macro)),
            ("anomaly ROC AUC", _fmt(self.anomaly_auc)),
            ("anomaly AP", _fmt(self.anomaly_ap)),
        ]
        if self.branch_accuracy:
            summary += [(f"accuracy, {name} branch alone", _fmt(self.branch_accuracy[key]))
                        for key, name in (("a", "audio"), ("v", "video"))]
        if self.events:
            from avar.metrics.events import event_rows

            summary += event_rows(self.events)
        lines = _table(["metric", "value"], [list(row) for row in summary])
        lines.append("")
        if self.fusion_warning:
            lines += [f"**Warning**: {self.fusion_warning}", ""]
        per_class_rows = [
            [name]
            + [_fmt(self.per_class[name][key]) for key in ("precision", "recall", "f1")]
            + [str(self.per_class[name]["support"])]
            + [_fmt(self.per_class[name][key]) for key in ("ap", "auc")]
            for name in self.classes
        ]
        lines += _table(["class", "precision", "recall", "F1", "support", "AP", "AUC"], per_class_rows)
        lines.append("")
        lines.append("Confusion matrix (rows: true, columns: predicted)")
        lines.append("")
        confusion_rows = [[name] + [str(c) for c in row] for name, row in zip(self.classes, self.confusion)]
        lines += _table(["true \\ pred", *self.classes], confusion_rows)
        return "\n".join(lines) + "\n"


def classification_report(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    normal_class: str = "normal",
) -> ClassificationReport:
    """Score clip predictions against labels.

    ``y_true`` is ``int [N]`` with indices into ``classes``; ``probs`` is ``float [N, K]``,
    one score per class (softmax outputs, but any scores where higher means more likely
    work). The prediction is the argmax of ``probs``, the first class winning a tie.
    Averages: macro over every class in ``classes`` (a class absent from ``y_true`` still
    counts, with recall 0); weighted by true support. A class never predicted has
    precision 0, as scikit-learn's ``zero_division=0``.
    """
    n_classes = len(classes)
    if n_classes == 0:
        raise ValueError("classes is empty; pass the class names in the order of the probs columns")
    if len(set(classes)) != n_classes:
        raise ValueError(f"class names must be unique, got {classes}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(
            f"probs must be [n_clips, {n_classes}] (one column per class in {classes}),"
            f" got shape {probs.shape}"
        )
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contains NaN or infinite values; check the model outputs")
    y_true = _labels(y_true, n_classes, "y_true")
    if y_true.size != probs.shape[0]:
        raise ValueError(f"y_true has {y_true.size} labels but probs has {probs.shape[0]} rows")
    if y_true.size == 0:
        raise ValueError("no clips to evaluate: y_true is empty")

    y_pred = probs.argmax(axis=1)
    confusion = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    # 2TP / (2TP + FP + FN) is the harmonic mean of P and R where both are defined and
    # gives 0 (not NaN) where they are not, as scikit-learn does.
    f1 = _safe_divide(2 * tp, support + predicted)
    weights = support / support.sum()

    per_class: dict[str, dict[str, float | int | None]] = {}
    aps: list[float] = []
    aucs: list[float] = []
    for k, name in enumerate(classes):
        is_k = y_true == k
        n_pos = int(is_k.sum())
        ap = average_precision(is_k, probs[:, k]) if n_pos > 0 else None
        auc = roc_auc(is_k, probs[:, k]) if 0 < n_pos < y_true.size else None
        if ap is not None and auc is not None:
            aps.append(ap)
            aucs.append(auc)
        per_class[name] = {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "ap": ap,
            "auc": auc,
        }

    anomaly_auc = anomaly_ap = None
    if normal_class in classes:
        normal = classes.index(normal_class)
        is_anomaly = y_true != normal
        if 0 < int(is_anomaly.sum()) < y_true.size:
            anomaly_score = 1.0 - probs[:, normal]
            anomaly_auc = roc_auc(is_anomaly, anomaly_score)
            anomaly_ap = average_precision(is_anomaly, anomaly_score)

    return ClassificationReport(
        classes=list(classes),
        accuracy=float(np.mean(y_pred == y_true)),
        precision_macro=float(precision.mean()),
        recall_macro=float(recall.mean()),
        f1_macro=float(f1.mean()),
        precision_weighted=float(weights @ precision),
        recall_weighted=float(weights @ recall),
        f1_weighted=float(weights @ f1),
        per_class=per_class,
        confusion=confusion.tolist(),
        ap_macro=float(np.mean(aps)) if aps else None,
        auc_macro=float(np.mean(aucs)) if aucs else None,
        anomaly_auc=anomaly_auc,
        anomaly_ap=anomaly_ap,
        n=int(y_true.size),
    )


def _labels(y: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"{name} holds indices in [{y.min()}, {y.max()}] but there are {n_classes} classes;"
            f" labels must be in [0, {n_classes - 1}]"
        )
    return y


def _binary_inputs(y_binary: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_binary)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"y_binary and scores must be 1-D and the same length, got {y.shape} and {s.shape}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("y_binary must hold only 0/1 (or False/True)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or infinite values")
    return y.astype(bool), s


def _threshold_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, true_positives, predicted_positives)`` at each distinct score, falling.

    A sample counts as positive when ``score >= threshold``; tied scores enter together, so
    counts are read at the last index of each run of equal scores after a stable sort.
    """
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    return s[last_of_run], np.cumsum(y)[last_of_run], last_of_run + 1


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they occupy."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    mean_rank = last_rank - (counts - 1) / 2.0
    return mean_rank[inverse]


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _fmt(value: float | int | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _pair(macro: float, weighted: float) -> str:
    return f"{_fmt(macro)} / {_fmt(weighted)}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
