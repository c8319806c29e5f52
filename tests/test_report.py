"""The HTML report: one self-contained page for a run and for an ablation directory."""

import base64
import html
import json
import re

import numpy as np
import pytest
import torch

from avar.experiments.ablate import write_tables
from avar.cli import main
from avar.features.cache import MANIFEST, FeatureSet, StepFeatures
from avar.files import write_json_atomic
from avar.report.html import build_report, known_interval
from avar.methods.avarnet.train import TrainConfig, train_head

CLASSES = ("normal", "fire & smoke", "siren")  # "&" checks the escaping
SPLITS = {"train": 4, "val": 2, "test": 2}
T, DV, DA = 8, 6, 4
INTERVAL = (2.0, 6.0)
TINY_HEAD = {"num_stages": 1, "num_layers": 3, "num_f_maps": 8, "attention": False}
IMG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A cache of 24 clips of random features, each anomaly a shift of steps 2-5, plus
    ``metadata.json`` the way ``avar synth`` writes it; no media is ever decoded."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    rng = np.random.default_rng(0)
    clips, meta_clips = [], []
    for c, label in enumerate(CLASSES):
        for split, n in SPLITS.items():
            for k in range(n):
                video = rng.normal(size=(T, DV)).astype(np.float32)
                audio = rng.normal(size=(T, DA)).astype(np.float32)
                if label != "normal":
                    video[2:6, c] += 4.0
                    audio[2:6, c] += 4.0
                clips.append(StepFeatures(f"{label}__{split}{k}", label, split, video, audio, np.arange(T, dtype=np.float64)))
                meta_clips.append({"path": f"{label}/{split}{k}.mp4", "label": label,
                                   "interval": None if label == "normal" else list(INTERVAL)})
    features = FeatureSet.create(root / "features", clips, video={"name": "fake-video", "version": 1, "dim": DV},
                                 audio={"name": "fake-audio", "version": 1, "dim": DA})
    # Record the source media as `avar extract` does, so the report can find the metadata.
    for record, meta in zip(features.clips, meta_clips):
        record["path"] = str(data / meta["path"])
    write_json_atomic(features.root / MANIFEST, features.manifest)
    write_json_atomic(data / "metadata.json", {"clips": meta_clips})
    train_head(FeatureSet.open(features.root), root / "run", TrainConfig(epochs=3, head=TINY_HEAD), progress=False)
    return root


def images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in IMG.findall(page)]


def test_run_report_is_one_self_contained_page(bench):
    run_dir = bench / "run"
    path = build_report(run_dir, n_curves=2)
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert (run_dir / "eval_test.json").is_file(), "a missing evaluation is run first"
    # confusion, per-class bars, t-SNE and two score curves, all real PNGs inside the page
    pngs = images(page)
    assert len(pngs) == 5 and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert sorted(p.read_bytes() for p in (run_dir / "report_files").glob("*.png")) == sorted(pngs)
    assert 'alt="t-SNE map of fused clip features"' in page
    # Six test clips are too few for t-SNE, so it maps every split.
    assert "24 clips of all splits" in page
    for name in CLASSES:
        assert f"<td>{html.escape(name)}</td>" in page
    assert "<td>fire & smoke</td>" not in page
    assert f"<td>PyTorch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()} kernels" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    # One curve per anomalous class before any second clip of a class or a normal clip.
    captions = re.findall(r"<figcaption>[^<]*: true ([^<]*), predicted [^<]*; (true [^<]*)\.</figcaption>", page)
    assert sorted(captions) == [("fire &amp; smoke", "true anomaly shaded"), ("siren", "true anomaly shaded")]


def test_known_interval_reads_synth_metadata(bench):
    assert known_interval(bench / "data" / "fire & smoke" / "test0.mp4") == INTERVAL
    assert known_interval(bench / "data" / "normal" / "test0.mp4") is None
    assert known_interval(bench / "elsewhere" / "fire" / "x.mp4") is None


def test_ablation_report_has_the_tables_and_the_best_fused_run(bench, tmp_path, capsys):
    run = json.loads((bench / "run" / "config.json").read_text())
    base = {"head": "mtcn", "modality": "av", "fusion": "early", "seq_len": 10, "precision_macro": 0.5,
            "recall_macro": 0.5, "f1_macro": 0.5, "params": 1234, "train_seconds": 1.0,
            "run_dir": str(bench / "run"), "config": {"train": run["train"], "head_type": "mtcn", "head": run["head"]}}
    results = [
        {**base, "id": "mtcn-av-early-T10-s0", "seed": 0, "accuracy": 0.8},
        {**base, "id": "mtcn-av-early-T10-s1", "seed": 1, "accuracy": 0.9},
        {**base, "id": "gru-a-early-T10-s0", "head": "gru", "modality": "a", "seed": 0, "accuracy": 0.4},
    ]
    write_json_atomic(tmp_path / "results.json", results)
    write_tables(results, tmp_path)
    out = tmp_path / "page" / "ablation.html"
    assert main(["report", str(tmp_path), "--out", str(out), "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    assert "<td>mtcn</td><td>audio + video</td><td>85.0 ± 7.1</td>" in page
    assert "<td>gru</td><td>audio</td><td>40.0 ± 0.0</td>" in page
    assert "<td>1,234</td>" in page and "<details><summary>config</summary>" in page
    assert "Best fused AVAR-Net run: mtcn-av-early-T10-s1 (seed 1" in page
    # the accuracy chart, then the best run's confusion, per-class bars, t-SNE and 4 of 6 test clips' curves
    assert len(images(page)) == 1 + 3 + 4
    assert (tmp_path / "page" / "ablation_files" / "ablation_accuracy.png").is_file()
