"""Classification metrics against scikit-learn, a hand-worked case, and the report plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from avar.metrics.classification import (
    average_precision,
    classification_report,
    confusion_matrix,
    roc_auc,
)
from avar.plots import plot_bars, plot_confusion, plot_score_curve

CLASSES = ["normal", "fight", "explosion", "gunshot", "riot", "accident"]
NEVER_PREDICTED = 4  # "riot": its probability column is zero, so argmax never picks it
ABSENT = 5  # "accident": no clip has this label, though the model predicts it


def _random_case(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities with ties, a never-predicted class and an absent class."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, ABSENT, size=n)  # ABSENT is the last class, so it never occurs
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=n)
    # Make the model informative, so AUC is far from 0.5 and errors in ranking would show.
    probs[np.arange(n), y_true] += rng.uniform(0.0, 0.6, size=n)
    probs[:, NEVER_PREDICTED] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    # One decimal leaves only ~11 distinct values per column: many tied scores.
    return y_true, np.round(probs, 1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_report_matches_sklearn(seed: int) -> None:
    y_true, probs = _random_case(seed)
    y_pred = probs.argmax(axis=1)
    assert NEVER_PREDICTED not in y_pred and ABSENT in y_pred and ABSENT not in y_true
    assert len(np.unique(probs[:, 0])) < len(probs) // 4  # the ties are really there

    report = classification_report(y_true, probs, CLASSES)
    labels = list(range(len(CLASSES)))

    assert report.n == len(y_true)
    assert report.accuracy == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report.confusion == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        assert getattr(report, f"precision_{average}") == pytest.approx(p)
        assert getattr(report, f"recall_{average}") == pytest.approx(r)
        assert getattr(report, f"f1_{average}") == pytest.approx(f)

    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    aps, aucs = [], []
    for k, name in enumerate(CLASSES):
        row = report.per_class[name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[k], r[k], f[k]))
        assert row["support"] == s[k]
        if k == ABSENT:
            assert row["ap"] is None and row["auc"] is None
            continue
        is_k = y_true == k
        assert row["ap"] == pytest.approx(skm.average_precision_score(is_k, probs[:, k]))
        assert row["auc"] == pytest.approx(skm.roc_auc_score(is_k, probs[:, k]))
        aps.append(row["ap"])
        aucs.append(row["auc"])
    assert report.per_class["riot"]["precision"] == 0.0
    assert report.per_class["accident"]["recall"] == 0.0
    assert report.ap_macro == pytest.approx(np.mean(aps))
    assert report.auc_macro == pytest.approx(np.mean(aucs))

    is_anomaly = y_true != 0
    anomaly_score = 1.0 - probs[:, 0]
    assert report.anomaly_auc == pytest.approx(skm.roc_auc_score(is_anomaly, anomaly_score))
    assert report.anomaly_ap == pytest.approx(skm.average_precision_score(is_anomaly, anomaly_score))


@pytest.mark.parametrize("seed", range(5))
def test_binary_auc_ap_match_sklearn_with_heavy_ties(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    y = rng.integers(0, 2, size=57)
    scores = rng.integers(0, 4, size=57).astype(float)  # four score levels only
    assert roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))
    assert average_precision(y, scores) == pytest.approx(skm.average_precision_score(y, scores))


def test_confusion_matrix_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 4, size=80)
    y_pred = rng.integers(0, 4, size=80)
    expected = skm.confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3, 4])
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 5), expected)


def test_hand_computed_case() -> None:
    classes = ["normal", "fight"]
    y_true = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6], [0.2, 0.8]])
    report = classification_report(y_true, probs, classes)
    # Predictions [0, 1, 1, 1]: normal P=1 R=1/2 F1=2/3; fight P=2/3 R=1 F1=4/5.
    assert report.confusion == [[1, 1], [0, 2]]
    assert report.accuracy == pytest.approx(0.75)
    assert report.per_class["normal"]["precision"] == pytest.approx(1.0)
    assert report.per_class["normal"]["recall"] == pytest.approx(0.5)
    assert report.per_class["fight"]["precision"] == pytest.approx(2 / 3)
    assert report.f1_macro == pytest.approx((2 / 3 + 4 / 5) / 2)
    # Fight scores: positives {0.6, 0.8}, negatives {0.1, 0.6}. Of the 4 pairs, 3 are won
    # and the 0.6-vs-0.6 tie counts half: AUC = 3.5 / 4.
    assert report.per_class["fight"]["auc"] == pytest.approx(0.875)
    # Thresholds 0.8 (P=1, R=1/2) and 0.6 (P=2/3, R=1): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert report.per_class["fight"]["ap"] == pytest.approx(5 / 6)
    # 1 - P(normal) is the fight probability here, so the anomaly numbers agree.
    assert report.anomaly_auc == pytest.approx(0.875)
    assert report.anomaly_ap == pytest.approx(5 / 6)


def test_no_normal_class_and_undefined_auc() -> None:
    report = classification_report(np.array([0, 0]), np.array([[0.7, 0.3], [0.6, 0.4]]), ["a", "b"])
    assert report.anomaly_auc is None and report.anomaly_ap is None
    # Class "a" is every clip (no negatives) and "b" none: no class qualifies for the macro.
    assert report.per_class["a"]["ap"] == pytest.approx(1.0)
    assert report.per_class["a"]["auc"] is None
    assert report.ap_macro is None and report.auc_macro is None
    with pytest.raises(ValueError, match="positives and negatives"):
        roc_auc(np.array([1, 1]), np.array([0.2, 0.3]))


def test_to_dict_is_strict_json_and_markdown_lists_classes() -> None:
    y_true, probs = _random_case(0, n=60)
    report = classification_report(y_true, probs, CLASSES)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "per_class", "confusion"):
        assert key in data
    assert data["per_class"]["accident"]["auc"] is None
    assert data["accuracy"] == pytest.approx(report.accuracy)
    markdown = report.to_markdown()
    for name in CLASSES:
        assert f"| {name} |" in markdown
    assert "n/a" in markdown  # the absent class's AUC


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"probs must be \[n_clips, 2\]"):
        classification_report(np.array([0, 1]), np.ones((2, 3)), ["normal", "fight"])
    with pytest.raises(ValueError, match="labels must be in"):
        classification_report(np.array([0, 2]), np.ones((2, 2)), ["normal", "fight"])


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_write_png_files(tmp_path) -> None:
    confusion = [[5, 1, 0], [2, 3, 0], [0, 0, 0]]
    written = plot_confusion(confusion, ["normal", "fight", "riot"], tmp_path / "a" / "cm.png", title="cm")

    times = np.linspace(0.0, 10.0, 41)
    rng = np.random.default_rng(0)
    probs = {name: rng.uniform(size=times.size) for name in ("fight", "riot", "gunshot", "explosion")}
    curve = plot_score_curve(
        times, rng.uniform(size=times.size), tmp_path / "b" / "score.png",
        class_probs=probs, top_k=2, interval=(3.0, 6.5), title="clip",
    )
    bars = plot_bars({"audio": 0.71, "video": 0.82, "audio+video": 0.88}, tmp_path / "bars.png", "AUC", "AUC")

    for path in (written, curve, bars):
        assert path.is_file()
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
    with pytest.raises(ValueError, match="class_probs\\['fight'\\]"):
        plot_score_curve(times, times, tmp_path / "x.png", class_probs={"fight": times[:-1]})
