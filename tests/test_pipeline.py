"""End to end on the built-in benchmark: synth -> extract -> train -> evaluate -> predict (CLI)."""

import json

import numpy as np
import pytest

from avar.cli import main
from avar.features.cache import FeatureSet
from avar.methods.avarnet.train import TrainConfig, train_head
from avar.methods.avarnet.run import Run

SMALL_HEAD = {"num_stages": 2, "num_layers": 6, "num_f_maps": 32, "attention_dim": 64, "stream_fusion": "concat"}
# The pipeline's wiring, trained as before issue 11 (the paper's concatenation and recipe): on
# this 20-clip test split (2 normal clips) the robust defaults reached accuracy >= 0.6 but an
# anomaly AUC of 0.778; their own checks are in test_fusion_robustness.py.
RECIPE = "paper"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    assert main(["synth", str(root / "data"), "--clips-per-class", "8", "--seconds", "4", "-q"]) == 0
    assert main(["extract", str(root / "data"), "--out", str(root / "features"), "-q"]) == 0
    return root


@pytest.fixture(scope="module")
def fused_run(bench):
    features = FeatureSet.open(bench / "features")
    config = TrainConfig(modality="av", epochs=30, seed=0, lr=1e-3, recipe=RECIPE, head=SMALL_HEAD)
    train_head(features, bench / "run-av", config, progress=False)
    return bench / "run-av"


def test_fused_head_beats_chance_by_a_wide_margin(bench, fused_run, capsys):
    assert main(["evaluate", str(fused_run), str(bench / "features"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"accuracy", "precision_macro", "recall_macro", "f1_macro", "anomaly_auc"} <= set(report)
    chance = 1 / len(report["classes"])
    assert len(report["classes"]) == 10
    assert report["accuracy"] >= 0.6 > 5 * chance
    assert report["anomaly_auc"] >= 0.8
    assert (fused_run / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"


def test_training_is_deterministic_per_seed(bench, fused_run, tmp_path):
    features = FeatureSet.open(bench / "features")
    config = TrainConfig(modality="av", epochs=30, seed=0, lr=1e-3, recipe=RECIPE, head=SMALL_HEAD)
    again = train_head(features, tmp_path / "again", config, progress=False)
    first = Run.load(fused_run)
    for (name, a), b in zip(first.head.state_dict().items(), again.head.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy()), name


def test_run_directory_has_no_pickle_and_reloads(fused_run):
    names = {p.name for p in fused_run.iterdir()}
    assert {"model.safetensors", "config.json", "labels.json", "history.json"} <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".pkl", ".bin"))]
    run = Run.load(fused_run)
    assert run.classes[0] == "normal" and run.seq_len == 10 and run.step == 1.0
    assert run.extractors["video"]["name"] == "efficientnet-lite0"


def test_predict_explains_each_second(bench, fused_run, tmp_path, capsys):
    meta = json.loads((bench / "data" / "metadata.json").read_text())
    clip = next(c for c in meta["clips"] if c["class"] == "police_siren")
    media = bench / "data" / clip["path"]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope" * 100)
    code = main(["predict", str(fused_run), str(media), str(bad), "--out", str(tmp_path / "pred"), "--json", "-q"])
    assert code == 1  # one file failed, the other was still explained
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1
    pred = lines[0]
    assert [s["time"] for s in pred["steps"]] == [0.0, 1.0, 2.0, 3.0]
    for step in pred["steps"]:
        assert abs(sum(step["probabilities"].values()) - 1) < 1e-3
        assert abs(step["anomaly_score"] - (1 - step["probabilities"]["normal"])) < 1e-4
    stem = media.stem
    assert len((tmp_path / "pred" / f"{stem}.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "pred" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert saved["failures"][0]["path"] == str(bad)


def test_evaluate_refuses_features_from_other_extractors(bench, fused_run, tmp_path, capsys):
    manifest = json.loads((bench / "features" / "manifest.json").read_text())
    manifest["video"] = {**manifest["video"], "name": "mobilevit-small"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["evaluate", str(fused_run), str(tmp_path)]) == 2
    assert "--video efficientnet-lite0" in capsys.readouterr().err


def test_watch_streams_records_and_stores_events(bench, fused_run, tmp_path, capsys):
    meta = json.loads((bench / "data" / "metadata.json").read_text())
    clip = next(c for c in meta["clips"] if c["class"] == "explosion")
    db = tmp_path / "events.db"
    code = main(["watch", str(fused_run), str(bench / "data" / clip["path"]), "--causal", "--db", str(db),
                 "--threshold", "0.0", "--release", "0.0", "--json"])
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["time"] for r in records] == [0.0, 1.0, 2.0, 3.0]
    assert main(["events", str(db), "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(events) == 1 and events[0]["start"] == 0.0 and events[0]["end"] == 4.0
