"""XD-Violence: the real lists and annotations, feature import from generated files, the XD AP
protocol, and frame expansion at the 16-frame snippet protocol."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from avar.cli import main
from avar.datasets.annotations import FrameTruth, clip_truths, read_annotations_file
from avar.datasets.xd_violence import (
    SNIPPET_FRAMES,
    STEP_S,
    XDViolence,
    align_rows,
    import_features,
    parse_label_codes,
    read_annotations,
    write_splits_csv,
)
from avar.methods.avaca.evaluate import clip_frames
from avar.metrics.detection import (
    average_precision,
    expand_to_frames,
    precision_recall_curve,
    xd_average_precision,
)

XD = Path(os.environ.get("AVAR_XD", Path(__file__).resolve().parents[2] / "shared" / "data" / "xd-violence"))
needs_xd = pytest.mark.skipif(not (XD / "train_videos.txt").is_file(),
                              reason=f"XD-Violence lists not found at {XD} (set AVAR_XD)")


# --------------------------------------------------------------------------- metrics


def test_xd_ap_equals_a_direct_computation_on_a_known_case():
    # Ranked .9 (+) .8 (-) .7 (+) .1 (-): PR points (recall, precision) (.5, 1), (.5, .5),
    # (1, 2/3), (1, .5), plus the curve's end (0, 1). Trapezoids: .5 * (1 + 1) / 2 from (0, 1)
    # to (.5, 1), nothing on the vertical drop, .5 * (.5 + 2/3) / 2 to (1, 2/3): 19/24.
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    assert xd_average_precision(labels, scores) == pytest.approx(19 / 24)
    # Step-wise AP reads precision at each recall step instead: .5 * 1 + .5 * 2/3 = 5/6.
    assert average_precision(labels, scores) == pytest.approx(5 / 6)
    # The protocol repeats each snippet's score 16 times: same curve, same area.
    frames_y, frames_s = np.repeat(labels, SNIPPET_FRAMES), expand_to_frames(scores, SNIPPET_FRAMES)
    assert np.array_equal(frames_s, np.repeat(scores, 16))
    assert xd_average_precision(frames_y, frames_s) == pytest.approx(19 / 24)


def test_xd_ap_matches_the_official_sklearn_computation_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + y, 1)
    precision, recall, thresholds = precision_recall_curve(y, s)
    ref_p, ref_r, ref_t = skm.precision_recall_curve(y, s)
    assert np.allclose(precision, ref_p) and np.allclose(recall, ref_r) and np.allclose(thresholds, ref_t)
    assert xd_average_precision(y, s) == pytest.approx(skm.auc(ref_r, ref_p))
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))


def test_step_scores_expand_to_frames_at_any_rate():
    assert expand_to_frames(np.array([0.1, 0.7]), 2.5).tolist() == [0.1, 0.1, 0.1, 0.7, 0.7]
    # Steps of 0.666667 s at 24 fps are 16 frames each, not 16.000008.
    assert np.array_equal(expand_to_frames(np.arange(300.0), 0.666667 * 24), np.repeat(np.arange(300.0), 16))
    truth = FrameTruth.from_seconds([(1.0, 2.2)], fps=12.5)  # frames 13..27 (t = k / 12.5)
    scores, labels = clip_frames(np.array([0.0, 1.0, 0.5]), 1.0, truth, anomalous=True)
    assert scores.size == labels.size == 37
    assert np.flatnonzero(labels).tolist() == list(range(13, 28))
    scores, labels = clip_frames(np.array([0.2, 0.3]), 1.0, None, anomalous=True)
    assert labels.tolist() == [True, True]  # no truth: the video label on every step


# --------------------------------------------------------------------------- lists


def test_label_codes_from_names():
    assert parse_label_codes("Bad.Boys.II.2003__#00-06-42_00-10-00_label_B2-G-0") == ("B2", "G")
    assert parse_label_codes("v=abc__#1_label_A") == ("A",)
    with pytest.raises(ValueError, match="unknown label code"):
        parse_label_codes("movie__#1_label_B3-0-0")
    with pytest.raises(ValueError, match="after '_label_'"):
        parse_label_codes("movie__#1")


@needs_xd
def test_the_real_lists_and_annotations_reproduce_the_counts():
    xd = XDViolence.load(XD)
    assert xd.counts() == {"train": 3954, "train_normal": 2049, "test": 800, "test_normal": 300, "annotated": 500}
    # Every anomalous test video is annotated, and only those.
    assert {v.name for v in xd.test if v.anomalous} == set(xd.annotations)
    labels = {v.label for v in xd.videos}
    assert labels == {"normal", "fighting", "shooting", "riot", "abuse", "car_accident", "explosion"}


@needs_xd
def test_frame_ground_truth_at_the_snippet_protocol():
    xd = XDViolence.load(XD)
    video = next(v for v in xd.test if v.name == "v=u5SF4SlqNDQ__#00-00-00_00-01-00_label_G-0-0")
    assert xd.annotations[video.name] == [(624, 912), (950, 1441)]
    labels = xd.frame_labels(video, n_snippets=100)
    assert labels.size == 1600
    assert np.flatnonzero(np.diff(labels.astype(int))).tolist() == [623, 912, 949, 1441]
    assert labels.sum() == (912 - 624 + 1) + (1441 - 950 + 1)
    # Names carried a stray ".mp4" for 14 lines of the published file; they still match.
    assert "The.Fast.and.the.Furious.2001__#00-29-00_00-29-52_label_B2-G-0" in xd.annotations
    normal = next(v for v in xd.test if not v.anomalous)
    assert not xd.frame_labels(normal, 10).any()
    with pytest.raises(ValueError, match="no frame annotation"):
        xd.frame_labels(xd.train[0], 10)


def test_annotation_file_errors(tmp_path):
    bad = tmp_path / "annotations.txt"
    bad.write_text("a_label_G-0-0 10 20 30\n")
    with pytest.raises(ValueError, match="pairs of frame numbers"):
        read_annotations(bad)
    bad.write_text("a_label_G-0-0 30 20\n")
    with pytest.raises(ValueError, match="ends before it starts"):
        read_annotations(bad)


# --------------------------------------------------------------------------- feature import


def _write_lists(root: Path, train: list[str], test: list[str], annotations: dict[str, list[int]]) -> XDViolence:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_videos.txt").write_text("\n".join(train) + "\n")
    (root / "test_videos.txt").write_text("\n".join(test) + "\n")
    (root / "annotations.txt").write_text("".join(f"{n} {' '.join(map(str, f))}\n" for n, f in annotations.items()))
    return XDViolence.load(root)


@pytest.fixture
def small_xd(tmp_path):
    """Names from the real lists when present (else look-alikes), with generated feature files."""
    if (XD / "train_videos.txt").is_file():
        real = XDViolence.load(XD)
        train = [v.name for v in real.train if not v.anomalous][:6] + [v.name for v in real.train if v.anomalous][:6]
        test = [v.name for v in real.test if not v.anomalous][:2] + [v.name for v in real.test if v.anomalous][:3]
        annotations = {n: [a for pair in real.annotations[n] for a in pair] for n in test if n in real.annotations}
    else:
        train = [f"m{i}__#1_label_A" for i in range(6)] + [f"m{i}__#1_label_B1-0-0" for i in range(6, 12)]
        test = ["t0__#1_label_A", "t1__#1_label_A"] + [f"t{i}__#1_label_G-B2-0" for i in range(2, 5)]
        annotations = {n: [16, 40] for n in test[2:]}
    xd = _write_lists(tmp_path / "lists", train, test, annotations)
    rng = np.random.default_rng(0)
    rgb, audio = tmp_path / "i3d" / "RGB", tmp_path / "vggish"
    lengths = {}
    for k, name in enumerate(train + test):
        t = int(rng.integers(8, 30))
        lengths[name] = t
        for crop in range(5):
            path = rgb / ("train" if name in train else "test") / f"{name}__{crop}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rng.normal(crop, 1, (t, 1024)).astype(np.float32))
        if k != 1:  # one video without audio
            audio.mkdir(parents=True, exist_ok=True)
            np.save(audio / f"{name}__vggish.npy", np.arange((t - k % 2) * 128, dtype=np.float32).reshape(-1, 128))
    return xd, rgb, audio, lengths, train, test


def test_import_features_builds_a_cache_with_weak_labels_and_frame_truth(small_xd, tmp_path):
    xd, rgb, audio, lengths, train, test = small_xd
    with pytest.warns(UserWarning, match="no VGGish file"):
        summary = import_features(xd, [rgb], [audio], tmp_path / "features", val_fraction=0.34, progress=False)
    features = summary.features
    assert summary.clips == len(train) + len(test) and not summary.missing_rgb
    assert summary.missing_audio == [train[1]]
    assert features.manifest["step"] == pytest.approx(16 / 24)
    by_id = {c["clip_id"]: c for c in features.clips}
    splits = [by_id[n]["split"] for n in train]
    assert splits.count("val") == 4 and splits.count("train") == 8  # 34% of each weak label (6 and 6)
    assert all(by_id[n]["split"] == "test" for n in test)
    for name in train + test:
        clip = features.load(by_id[name])
        assert clip.video.shape == (lengths[name], 1024) and clip.audio.shape == (lengths[name], 128)
        assert np.allclose(clip.video.mean(), 2.0, atol=0.1)  # the mean of crops 0..4
        assert clip.label == xd.videos[[v.name for v in xd.videos].index(name)].label
    silent = features.load(by_id[train[1]])
    assert silent.audio_missing and not silent.audio.any()
    # Anomalous test clips carry their annotated frames; normal ones an empty truth; training
    # clips none (weak labels only).
    truths = clip_truths(features.clips)
    for name in test:
        video = next(v for v in xd.test if v.name == name)
        assert truths[name] == xd.frame_truth(video)
        frames = truths[name].labels(SNIPPET_FRAMES * lengths[name])
        assert np.array_equal(frames, xd.frame_labels(video, lengths[name]))
    assert truths[train[-1]] is None


def test_import_every_crop_as_its_own_training_clip(small_xd, tmp_path):
    xd, rgb, audio, lengths, train, test = small_xd
    with pytest.warns(UserWarning):
        features = import_features(xd, rgb, audio, tmp_path / "features", crops="all", val_fraction=0.0,
                                   progress=False).features
    ids = {c["clip_id"] for c in features.clips}
    assert {f"{train[0]}__{k}" for k in range(5)} <= ids and train[0] not in ids
    assert test[0] in ids and f"{test[0]}__0" not in ids
    crop3 = features.load(next(c for c in features.clips if c["clip_id"] == f"{train[0]}__3"))
    assert np.allclose(crop3.video.mean(), 3.0, atol=0.1)


def test_audio_rows_align_to_the_snippets():
    rows = np.arange(10)[:, None].astype(np.float32)
    assert np.array_equal(align_rows(rows, 10), rows)  # same count: unchanged
    assert align_rows(rows, 11)[:, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert align_rows(rows, 5)[:, 0].tolist() == [0, 2, 4, 6, 8]


def test_xd_violence_command_imports_and_writes_splits(small_xd, tmp_path, capsys):
    xd, rgb, audio, lengths, train, test = small_xd
    with pytest.warns(UserWarning):
        assert main(["xd-violence", str(xd.root), "--out", str(tmp_path / "f"), "--rgb", str(rgb), "--audio",
                     str(audio), "-q", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["clips"] == len(train) + len(test) and info["missing_audio"] == 1
    videos = tmp_path / "videos" / "test"
    videos.mkdir(parents=True)
    (videos / f"{test[0]}.mp4").write_bytes(b"")
    path, missing = write_splits_csv(xd, tmp_path / "videos", tmp_path / "splits.csv")
    assert path.read_text().splitlines()[1] == f"test/{test[0]}.mp4,{xd.test[0].label},test"
    assert len(missing) == len(xd.videos) - 1


def test_annotations_file_formats(tmp_path):
    text = tmp_path / "annotations.txt"
    text.write_text("a__#1_label_G-0-0.mp4 3 5\n")
    assert read_annotations_file(text) == {"a__#1_label_G-0-0": FrameTruth(24.0, ((3, 6),))}
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"fps": 10.0, "clips": [{"path": "pain/pain_000.mp4", "interval": [1.0, 2.05]},
                                                      {"path": "normal/normal_000.mp4", "interval": None}]}))
    assert read_annotations_file(meta) == {"pain__pain_000.mp4": FrameTruth(10.0, ((10, 21),)),
                                           "normal__normal_000.mp4": FrameTruth(10.0, ())}
    records = [{"clip_id": "test__a__#1_label_G-0-0", "path": ""}, {"clip_id": "other", "path": ""}]
    truths = clip_truths(records, text)
    assert truths["test__a__#1_label_G-0-0"] == FrameTruth(24.0, ((3, 6),)) and truths["other"] is None
    assert STEP_S == pytest.approx(2 / 3)
