"""The MAVAD protocol end to end: per scene, 3 random per-class 60/20/20 splits, weak training
and frame-level evaluation on each, mean +- std per scene (paper Table III).

Features are extracted once per scene (the split does not change them); each repeat only
reassigns clips to train / val / test (:func:`avar.datasets.mavad.repeated_splits`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from avar.datasets.mavad import REPEATS, repeated_splits, scene_entries, scene_folders
from avar.methods.avaca.evaluate import evaluate_weak
from avar.features.cache import FeatureSet, extract_dataset, write_json_atomic
from avar.metrics.classification import _json_ready, _table
from avar.methods.avaca.train import WeakTrainConfig, train_weak

METRICS = ("frame_auc", "frame_ap", "frame_ap_xd", "frame_auc_anomalous", "video_auc")


def mean_std(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value) of the defined values."""
    kept = np.array([v for v in values if v is not None], dtype=np.float64)
    if kept.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(kept.mean()), "std": float(kept.std(ddof=1)) if kept.size > 1 else 0.0, "n": int(kept.size)}


def run_scene_protocol(
    scenes: dict[str, FeatureSet],
    out_dir: Path | str,
    config: WeakTrainConfig | None = None,
    *,
    repeats: int = REPEATS,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train and evaluate every scene ``repeats`` times; writes ``scenes.json`` / ``scenes.md``.

    Returns ``{"config", "repeats", "seed", "scenes": {scene: {"runs": [...], metric: {mean, std, n}}}}``
    where each run holds its split counts and the test metrics.
    """
    config = config or WeakTrainConfig()
    out_dir = Path(out_dir)
    result = {"config": config.__dict__, "repeats": repeats, "seed": seed, "scenes": {}}
    for scene, features in scenes.items():
        labels = {c["clip_id"]: c["label"] for c in features.clips}
        runs = []
        for r, split in enumerate(repeated_splits(labels, repeats, seed)):
            run_dir = out_dir / scene / f"split{r}"
            train_weak(features, run_dir, replace(config, seed=config.seed + r), splits=split, progress=progress)
            report = evaluate_weak(run_dir, features.root, "test", splits=split, plots=False)
            counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
            runs.append({"split_seed": seed + r, "counts": counts, **{m: getattr(report, m) for m in METRICS}})
        result["scenes"][scene] = {"runs": runs, **{m: mean_std([run[m] for run in runs]) for m in METRICS}}
    write_json_atomic(out_dir / "scenes.json", _json_ready(result))
    (out_dir / "scenes.md").write_text(scenes_markdown(result))
    return result


def scenes_markdown(result: dict) -> str:
    """One row per scene: each metric as mean +- std over the repeats (in %)."""

    def cell(stat: dict) -> str:
        return "n/a" if stat["mean"] is None else f"{100 * stat['mean']:.2f} +- {100 * stat['std']:.2f}"

    rows = [[scene, *(cell(entry[m]) for m in METRICS)] for scene, entry in result["scenes"].items()]
    header = f"{result['repeats']} random per-class 60/20/20 splits per scene (mean +- sample std, %)"
    return header + "\n\n" + "\n".join(_table(["scene", *METRICS], rows)) + "\n"


def extract_scenes(data_dir: Path | str, out_dir: Path | str, video, audio, *, step: float = 1.0,
                   progress: bool = True) -> tuple[dict[str, FeatureSet], list[dict]]:
    """Extract (or resume) one feature cache per scene into ``out_dir/<scene>``.

    Returns the caches and the files that could not be decoded (with the scene and reason).
    """
    scenes, failures = {}, []
    for scene, folder in scene_folders(data_dir).items():
        summary = extract_dataset(scene_entries(folder), Path(out_dir) / scene, video, audio, step=step,
                                  progress=progress)
        failures += [{"scene": scene, **f} for f in summary.failures]
        scenes[scene] = FeatureSet.open(Path(out_dir) / scene)
    return scenes, failures
