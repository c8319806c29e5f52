"""The ablation grid: cells, resume, and tables that equal the per-run metric files."""

import json
import statistics
import threading

import numpy as np
import pytest

from avar.experiments.ablate import AblationPlan, Cell, run_ablation, summarise
from avar.cli import main
from avar.features.cache import FeatureSet, StepFeatures


def toy_features(root, n_per_class=6, seed=0):
    """Three classes: 'normal', 'loud' (told by audio), 'bright' (told by video)."""
    rng = np.random.default_rng(seed)
    clips = []
    for label, shift_v, shift_a in (("normal", 0, 0), ("loud", 0, 2.5), ("bright", 2.5, 0)):
        for k in range(n_per_class):
            split = "test" if k < 2 else "val" if k < 3 else "train"
            T = int(rng.integers(6, 14))
            clips.append(StepFeatures(
                f"{label}__{k}", label, split,
                video=(rng.normal(size=(T, 6)) + shift_v).astype(np.float32),
                audio=(rng.normal(size=(T, 4)) + shift_a).astype(np.float32),
                times=np.arange(T, dtype=np.float64),
            ))
    return FeatureSet.create(root, clips, video={"name": "toy-v", "version": "1", "dim": 6},
                             audio={"name": "toy-a", "version": "1", "dim": 4})


TINY = {"mtcn": {"num_stages": 1, "num_layers": 3, "num_f_maps": 8, "attention_dim": 8},
        "gru": {"hidden": 8, "num_layers": 1}}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    features = toy_features(root / "features")
    # the paper's setup: 3 epochs really are 3 (the robust recipe trains at least 300 steps)
    plan = AblationPlan(seeds=(0, 1), epochs=3, heads=("gru", "mtcn"), seq_lens=(5, 10), head_overrides=TINY,
                        paper=True)
    results = run_ablation(features.root, root / "out", plan, workers=2, progress=False)
    return root, plan, results


def test_grid_has_every_cell_with_the_interface_fields(grid):
    root, plan, results = grid
    assert [r["id"] for r in results] == [c.id for c in plan.cells()]
    # per seed: 2 heads x 3 modalities + T=5 + late mean/learned
    assert len(results) == 2 * (6 + 1 + 2)
    saved = json.loads((root / "out" / "results.json").read_text())
    fields = {"head", "modality", "fusion", "seq_len", "seed", "accuracy", "precision_macro",
              "recall_macro", "f1_macro", "params", "train_seconds"}
    for r in saved:
        assert fields <= set(r)
    assert {r["fusion"] for r in saved} == {"early", "late-mean", "late-learned"}
    assert {r["config"]["train"]["recipe"] for r in saved} == {"paper"}
    assert {r["config"]["head"].get("stream_fusion", r["config"]["head"].get("branch", {}).get("stream_fusion"))
            for r in saved} == {"concat"}


def test_tables_equal_the_per_run_metric_files(grid):
    root, _, results = grid
    tables = json.loads((root / "out" / "tables.json").read_text())
    for head in ("gru", "mtcn"):
        for modality in ("a", "v", "av"):
            evals = []
            for seed in (0, 1):
                run_dir = root / "out" / "runs" / Cell(head, modality, "early", 10, seed).id
                evals.append(json.loads((run_dir / "eval_test.json").read_text()))
            cell = tables["table2"][head][modality]
            for metric in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
                values = [e[metric] for e in evals]
                assert cell[metric]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
                assert cell[metric]["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert set(tables["table3"]) == {"5", "10"}
    assert set(tables["fusion"]) == {"early", "late-mean", "late-learned"}
    markdown = (root / "out" / "tables.md").read_text()
    assert "| mtcn | audio + video |" in markdown and "## Table 3" in markdown


def test_a_rerun_resumes_and_skips_finished_cells(grid, tmp_path):
    root, plan, results = grid
    out = root / "out"
    victim = out / "runs" / plan.cells()[0].id / "result.json"
    victim.unlink()
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    again = run_ablation(root / "features", out, plan, workers=1, progress=False)
    assert len(again) == len(results) and victim.is_file()
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime  # untouched


def test_summary_of_a_known_case():
    rows = [{"head": "mtcn", "modality": "av", "fusion": "early", "seq_len": 10, "seed": s,
             "accuracy": a, "precision_macro": a, "recall_macro": a, "f1_macro": a,
             "params": 7, "train_seconds": 1.0, "config": {}} for s, a in ((0, 0.5), (1, 0.7), (2, 0.9))]
    cell = summarise(rows)["table2"]["mtcn"]["av"]
    assert cell["accuracy"]["mean"] == pytest.approx(0.7)
    assert cell["accuracy"]["std"] == pytest.approx(0.2)
    assert cell["seeds"] == [0, 1, 2]


def test_cli_train_accepts_heads_and_late_fusion(grid, tmp_path, capsys):
    root, _, _ = grid
    code = main(["train", str(root / "features"), "--out", str(tmp_path / "late"), "--head", "gru",
                 "--hidden", "8", "--fusion", "late", "--late-mode", "learned", "--epochs", "2", "--json", "-q"])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] > 0
    config = json.loads((tmp_path / "late" / "config.json").read_text())
    assert config["head_type"] == "late" and config["head"]["mode"] == "learned"
    assert set(info["val_branch_accuracy"]) == {"av", "a", "v"}

    code = main(["train", str(root / "features"), "--out", str(tmp_path / "paper"), "--head", "gru", "--hidden", "8",
                 "--stream-fusion", "concat", "--recipe", "paper", "--epochs", "2", "--video-motion", "2", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "branch alone" not in out  # the paper's concatenation has no branches
    assert "video read as motion over 2 steps" in out
    config = json.loads((tmp_path / "paper" / "config.json").read_text())
    assert config["train"]["recipe"] == "paper" and config["train"]["lr"] == 1e-2
    assert config["head"]["stream_fusion"] == "concat"
    assert config["video_motion"] == 2 and config["head"]["video_dim"] == 2 * config["extractors"]["video"]["dim"]


_HELD = threading.Lock()


def _cell_taking_the_lock(cell, threads):
    """In a forked worker the lock would arrive held by the parent's thread, never to be released."""
    if not _HELD.acquire(timeout=10):
        raise RuntimeError("inherited a held lock")
    return {"id": cell.id, "threads": threads}


def test_grid_workers_start_clean_even_when_the_parent_holds_locks():
    from types import SimpleNamespace

    from avar.experiments.ablate import run_parallel

    cells, done = [SimpleNamespace(id=f"c{i}") for i in range(2)], {}
    with _HELD:  # as a feature extraction's threads may hold one when the grid starts
        failures = run_parallel(_cell_taking_the_lock, cells, done, lambda cell, threads: (threads,), workers=2,
                                desc="test", total=2, progress=False)
    assert failures == [] and sorted(done) == ["c0", "c1"]
