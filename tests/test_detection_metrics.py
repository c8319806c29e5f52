"""Frame-level detection metrics, the regularity score and the frame-difference floor."""

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics as skm

from avar.metrics.detection import (
    equal_error_rate,
    minmax_normalize,
    regularity_score,
    roc_auc,
    roc_curve,
    threshold_metrics,
)
from avar.methods.autoencoder.frame_difference import frame_difference_scores, grid_cell_means


def test_roc_curve_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # rounding makes ties
    fpr, tpr, thr = roc_curve(y, s)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, ref_fpr) and np.allclose(tpr, ref_tpr)
    assert np.allclose(thr[1:], ref_thr[1:]) and thr[0] == np.inf
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))


def test_eer_on_a_known_roc_is_interpolated_between_points():
    # Positives .9 .8 .7 | two tied negatives .6 | positives .5 .4 | negatives .3 .2: the ROC
    # runs (0, .6) -> (.5, .6) in one step, so FPR = FNR = .4 inside that segment, not at a point.
    y = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.6, 0.5, 0.4, 0.3, 0.2])
    eer, threshold = equal_error_rate(y, s)
    assert eer == pytest.approx(0.4)
    assert 0.6 <= threshold <= 0.7
    # A crossing exactly at a ROC point: FPR = FNR = .25 at threshold .6.
    eer, threshold = equal_error_rate([0, 0, 0, 0, 1, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert (eer, threshold) == (pytest.approx(0.25), pytest.approx(0.6))


def test_eer_agrees_with_the_usual_brentq_recipe():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + 1.2 * y
    fpr, tpr, _ = skm.roc_curve(y, s)
    reference = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert equal_error_rate(y, s)[0] == pytest.approx(reference, abs=1e-9)
    assert equal_error_rate(y, -s)[0] == pytest.approx(1 - reference, abs=1e-9)


def test_threshold_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) * 0.6 + 0.4 * y
    m = threshold_metrics(y, s, 0.5)
    pred = s >= 0.5
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    assert (m.precision, m.recall, m.f1) == (pytest.approx(p), pytest.approx(r), pytest.approx(f))
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert m.tp + m.fp + m.tn + m.fn == 200
    nothing = threshold_metrics(y, s, 2.0)
    assert nothing.precision == 0 and nothing.recall == 0 and nothing.f1 == 0


def test_regularity_score_is_one_minus_minmax_error_per_video():
    errors = np.array([3.0, 5.0, 4.0, 9.0])
    s = regularity_score(errors)
    assert np.allclose(s, [1.0, 2 / 3, 5 / 6, 0.0])
    assert np.allclose(regularity_score(np.full(5, 7.0)), 1.0)  # nothing stands out
    with pytest.raises(ValueError, match="NaN"):
        minmax_normalize(np.array([1.0, np.nan]))


def test_metrics_refuse_one_class_and_bad_shapes():
    with pytest.raises(ValueError, match="positives and negatives"):
        equal_error_rate([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="same length"):
        threshold_metrics([0, 1], [0.1, 0.2, 0.3], 0.5)


def test_grid_cell_means_and_the_floor_find_the_moving_block():
    frames = np.zeros((4, 20, 24), np.uint8)
    frames[1, 0:2, 0:2] = 200  # appears in frame 1, gone in frame 2
    frames[3, 10:20, 12:24] = 100  # a large block in frame 3
    cells = grid_cell_means(frames.astype(np.float32), (10, 12))
    assert cells.shape == (4, 10, 12)
    assert cells[1, 0, 0] == pytest.approx(200.0) and cells[1].sum() == pytest.approx(200.0)
    peak = frame_difference_scores(frames, (10, 12), "max")
    mean = frame_difference_scores(frames, (10, 12), "mean")
    # frame 0 copies frame 1; frames 1 and 2 see the small block come and go; frame 3 the big block
    assert np.allclose(peak, [200, 200, 200, 100])
    assert np.allclose(mean, [200 * 4 / 480, 200 * 4 / 480, 200 * 4 / 480, 100 * 120 / 480])
