"""The MAVAD protocol end to end: per scene, 3 random per-class 60/20/20 splits, weak training
and frame-level evaluation on each, mean +- std per scene (paper Table III).

Features are extracted once per scene (the split does not change them); each repeat only
reassigns clips to train / val / test (:func:`avar.datasets.mavad.repeated_splits`). The runs
are grid cells in worker processes on this machine or, with an ``engine``, Ray tasks (and the
extraction a Ray actor pool) on a cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avar.datasets.mavad import REPEATS, repeated_splits, scene_entries, scene_folders
from avar.experiments.ablate import RESULT_FILE, finished, run_parallel
from avar.methods.avaca.evaluate import evaluate_weak
from avar.features.cache import FeatureSet, extract_dataset
from avar.files import write_json_atomic
from avar.metrics.classification import _json_ready, _table
from avar.methods.avaca.train import WeakTrainConfig, train_weak

if TYPE_CHECKING:  # Ray is optional: imported only when the protocol runs on it
    from avar.cluster import RayEngine

METRICS = ("frame_auc", "frame_ap", "frame_ap_xd", "frame_auc_anomalous", "video_auc")


def mean_std(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value) of the defined values."""
    kept = np.array([v for v in values if v is not None], dtype=np.float64)
    if kept.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(kept.mean()), "std": float(kept.std(ddof=1)) if kept.size > 1 else 0.0, "n": int(kept.size)}


@dataclass(frozen=True)
class SceneCell:
    """One repeat of one scene: a training run on that repeat's random split."""

    scene: str
    repeat: int

    @property
    def id(self) -> str:
        return f"{self.scene}/split{self.repeat}"


def run_scene_cell(cell: SceneCell, features_dir: str, out_dir: str, config: WeakTrainConfig, split: dict[str, str],
                   split_seed: int, threads: int) -> dict:
    """Train and evaluate one repeat; returns (and writes, as ``result.json``) its run entry."""
    import torch

    torch.set_num_threads(threads)
    run_dir = Path(out_dir) / cell.id
    train_weak(FeatureSet.open(features_dir), run_dir, replace(config, seed=config.seed + cell.repeat), splits=split,
               progress=False)
    report = evaluate_weak(run_dir, features_dir, "test", splits=split, plots=False)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    run = _json_ready({"split_seed": split_seed, "counts": counts, **{m: getattr(report, m) for m in METRICS},
                       "config": asdict(config)})
    write_json_atomic(run_dir / RESULT_FILE, run)
    return run


def run_scene_protocol(
    scenes: dict[str, FeatureSet],
    out_dir: Path | str,
    config: WeakTrainConfig | None = None,
    *,
    repeats: int = REPEATS,
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    engine: RayEngine | None = None,
) -> dict:
    """Train and evaluate every scene ``repeats`` times; writes ``scenes.json`` / ``scenes.md``.

    Returns ``{"config", "repeats", "seed", "scenes": {scene: {"runs": [...], metric: {mean, std, n}}}}``
    where each run holds its split counts and the test metrics. The runs are the cells of a
    grid (:func:`avar.experiments.ablate.run_parallel`: worker processes, or Ray tasks with
    ``engine``); each writes ``<scene>/split<r>/result.json``, so a rerun with the same
    settings skips the runs already done.
    """
    config = config or WeakTrainConfig()
    out_dir = Path(out_dir)
    splits = {}
    for scene, features in scenes.items():
        labels = {c["clip_id"]: c["label"] for c in features.clips}
        for r, split in enumerate(repeated_splits(labels, repeats, seed)):
            splits[SceneCell(scene, r)] = split
    cells = list(splits)
    settings = _json_ready(asdict(config))
    done = {k: v for k, v in finished(cells, out_dir, runs=".").items() if v.get("config") == settings}
    failures = run_parallel(
        run_scene_cell, [c for c in cells if c.id not in done], done,
        lambda cell, threads: (str(scenes[cell.scene].root), str(out_dir), config, splits[cell], seed + cell.repeat,
                               threads),
        workers=workers, desc="scenes", total=len(cells), progress=progress, engine=engine,
    )
    if failures:
        write_json_atomic(out_dir / "failures.json", failures)
        raise RuntimeError(f"{len(failures)} of {len(cells)} scene runs failed (first: {failures[0]['id']}: "
                           f"{failures[0]['error']}); see {out_dir / 'failures.json'}, then run the same command "
                           "again to redo them")
    result = {"config": config.__dict__, "repeats": repeats, "seed": seed, "scenes": {}}
    for scene in scenes:
        runs = [{k: v for k, v in done[SceneCell(scene, r).id].items() if k != "config"} for r in range(repeats)]
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
                   progress: bool = True, engine: RayEngine | None = None) -> tuple[dict[str, FeatureSet], list[dict]]:
    """Extract (or resume) one feature cache per scene into ``out_dir/<scene>``.

    Returns the caches and the files that could not be decoded (with the scene and reason).
    ``video`` / ``audio`` are extractors, or with ``engine`` (a Ray cluster)
    :class:`avar.features.distributed.ExtractorSpec` objects its workers build themselves.
    """
    scenes, failures = {}, []
    for scene, folder in scene_folders(data_dir).items():
        if engine is None:
            summary = extract_dataset(scene_entries(folder), Path(out_dir) / scene, video, audio, step=step,
                                      progress=progress)
        else:
            from avar.features.distributed import extract_dataset_ray

            summary = extract_dataset_ray(scene_entries(folder), Path(out_dir) / scene, video, audio, engine=engine,
                                          step=step, progress=progress)
        failures += [{"scene": scene, **f} for f in summary.failures]
        scenes[scene] = FeatureSet.open(Path(out_dir) / scene)
    return scenes, failures
