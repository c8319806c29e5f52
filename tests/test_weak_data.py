"""Weakly labelled data: `avar synth --weak` end to end through the commands, MAVAD-style scenes
with their repeated per-class 60/20/20 splits, and pooling steps into clip-level features."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from avar.cli import main
from avar.datasets.annotations import FrameTruth, clip_truths
from avar.datasets.mavad import class_split, repeated_splits, scene_entries, scene_folders
from avar.features.cache import FeatureSet, StepFeatures
from avar.features.pooling import pool_feature_set, pool_steps
from avar.media.synth import CLASSES, synthesize
from avar.experiments.scenes import mean_std, run_scene_protocol
from avar.methods.avaca.train import WeakTrainConfig


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_weak_synth_extract_train_evaluate_commands(tmp_path, capsys):
    data = tmp_path / "synth"
    summary = synthesize(data, weak=True, clips_per_class=2, normal_clips=4, seconds=8.0, size=(64, 48),
                         progress=False, workers=1)
    meta = json.loads(summary.metadata.read_text())
    assert meta["weak"] and meta["seconds"] == 8.0 and meta["anomaly_seconds"] == [0.8, 2.4]
    assert Counter(c["class"] for c in meta["clips"]) == {**{c: 2 for c in CLASSES}, "normal": 4}
    for clip in meta["clips"]:
        if clip["class"] == "normal":
            assert clip["interval"] is None
        else:
            start, end = clip["interval"]
            assert 0.8 - 1e-3 <= end - start <= 2.4 + 1e-3 and 0 <= start and end <= 8.0
    # The synthetic weak data goes through the same commands as anything else: clip 0 of
    # every anomaly class and one normal clip are the test split.
    split_of = {"normal/normal_002.mp4": "val", "normal/normal_003.mp4": "test"}
    for c in meta["clips"]:
        if c["class"] != "normal":
            split_of[c["path"]] = "test" if c["path"].endswith("_000.mp4") else "train"
    rows = [f"{c['path']},{c['class']},{split_of.get(c['path'], 'train')}" for c in meta["clips"]]
    splits = tmp_path / "splits.csv"
    splits.write_text("\n".join(["path,label,split", *rows]) + "\n")
    features = tmp_path / "features"
    assert main(["extract", str(data), "--out", str(features), "--splits", str(splits), "--step", "2",
                 "--runtime", "torch", "-q", "--json"]) == 0
    capsys.readouterr()
    truths = clip_truths(FeatureSet.open(features).clips)  # found through the media's metadata.json
    interval = next(c["interval"] for c in meta["clips"] if c["path"] == "pain/pain_000.mp4")
    assert truths["pain__pain_000.mp4"] == FrameTruth.from_seconds([interval], meta["fps"])
    assert truths["normal__normal_000.mp4"].ranges == ()
    run = tmp_path / "run"
    assert main(["train", str(features), "--method", "avaca", "--out", str(run), "--epochs", "2", "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), str(features), "--json", "--no-plots"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_videos"] == 10 and report["n_frames"] == 10 * 100  # 4 steps of 25 frames
    assert report["truth"].startswith("frame ranges") and set(report["per_group"]) == {"audio_only", "video_only", "joint"}
    assert all(report[k] is not None for k in ("frame_auc", "frame_ap", "frame_ap_xd"))


def test_per_class_split_is_60_20_20_where_possible():
    labels = {f"n{i}": "normal" for i in range(20)} | {f"b{i}": "bus" for i in range(5)} | \
        {f"h{i}": "horse" for i in range(3)} | {f"u{i}": "u-turn" for i in range(2)} | {"s0": "scooter"}
    split = class_split(labels, seed=0)
    counts = {label: Counter(split[c] for c, l in labels.items() if l == label) for label in set(labels.values())}
    assert counts["normal"] == {"train": 12, "val": 4, "test": 4}
    assert counts["bus"] == {"train": 3, "val": 1, "test": 1}
    assert counts["horse"] == {"train": 1, "val": 1, "test": 1}
    assert counts["u-turn"] == {"train": 2} and counts["scooter"] == {"train": 1}
    repeats = repeated_splits(labels, 3, seed=0)
    assert repeats[0] == split and len({tuple(sorted(r.items())) for r in repeats}) == 3
    assert repeated_splits(labels, 3, seed=0) == repeats


def test_scene_folders_and_their_clips(tmp_path):
    for scene in ("mgarr", "zejtun_field"):
        for label in ("normal", "bus"):
            (tmp_path / scene / label).mkdir(parents=True)
            (tmp_path / scene / label / "clip_0.mp4").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    scenes = scene_folders(tmp_path)
    assert list(scenes) == ["mgarr", "zejtun_field"]
    entries = scene_entries(scenes["mgarr"])
    assert sorted((e.clip_id, e.label) for e in entries) == [("bus__clip_0.mp4", "bus"), ("normal__clip_0.mp4", "normal")]


def _scene(root, seed: int) -> FeatureSet:
    """Clips trimmed to their content (MAVAD style): an anomalous clip is anomalous throughout."""
    rng = np.random.default_rng(seed)
    clips = []
    for label, n, shift in (("normal", 15, 0.0), ("bus", 10, 3.0)):
        for k in range(n):
            video = rng.normal(shift, 1, (6, 5)).astype(np.float32)
            clips.append(StepFeatures(f"{label}_{k}", label, "train", video, rng.normal(0, 1, (6, 3)).astype(np.float32),
                                      np.arange(6.0)))
    return FeatureSet.create(root, clips, video={"name": "v", "version": "1", "dim": 5},
                             audio={"name": "a", "version": "1", "dim": 3})


def test_scene_protocol_reports_mean_and_std_over_repeated_splits(tmp_path):
    scenes = {"mgarr": _scene(tmp_path / "f" / "mgarr", 0), "field": _scene(tmp_path / "f" / "field", 1)}
    config = WeakTrainConfig(epochs=3, batch_size=4, alpha=2, model={"hidden": 8, "stage2_dim": 4, "ffn_dim": 8})
    result = run_scene_protocol(scenes, tmp_path / "runs", config, repeats=3, seed=0, progress=False)
    for scene in scenes:
        entry = result["scenes"][scene]
        assert len(entry["runs"]) == 3
        assert all(run["counts"] == {"train": 15, "val": 5, "test": 5} for run in entry["runs"])
        aucs = [run["frame_auc"] for run in entry["runs"]]
        assert entry["frame_auc"]["mean"] == pytest.approx(np.mean(aucs))
        assert entry["frame_auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    assert (tmp_path / "runs" / "mgarr" / "split2" / "model.safetensors").is_file()
    assert "+-" in (tmp_path / "runs" / "scenes.md").read_text()
    assert mean_std([0.5, None]) == {"mean": 0.5, "std": 0.0, "n": 1}


def test_pooling_steps_averages_frames_into_clips(tmp_path):
    x = np.arange(10, dtype=np.float32)[:, None]
    assert pool_steps(x, 4)[:, 0].tolist() == [1.5, 5.5, 8.5]
    clip = StepFeatures("c", "pain", "test", np.arange(20, dtype=np.float32).reshape(10, 2),
                        np.ones((10, 3), np.float32), np.arange(10) * 0.25)
    source = FeatureSet.create(tmp_path / "fine", [clip], video={"name": "v", "version": "1", "dim": 2},
                               audio={"name": "a", "version": "1", "dim": 3}, step=0.25,
                               records={"c": {"truth": {"fps": 12.5, "frames": [[3, 9]]}}})
    pooled = pool_feature_set(source, tmp_path / "coarse", 4)
    assert pooled.manifest["step"] == 1.0 and pooled.manifest["video"]["pooled"] == 4
    out = pooled.load(pooled.clips[0])
    assert out.video[:, 0].tolist() == [3.0, 11.0, 17.0] and out.times.tolist() == [0.0, 1.0, 2.0]
    assert pooled.clips[0]["truth"] == {"fps": 12.5, "frames": [[3, 9]]}
