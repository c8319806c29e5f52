"""The AVAR-Net paper's ablations (sec. 4.4) on any feature cache, by one call.

The grid: Table 2 (every head x audio / video / fused), Table 3 (sequence length 5 / 10 / 15
with the AVAR-Net head, fused) and early vs late fusion (AVAR-Net head), each over several
seeds. Every cell is a run directory with its own ``result.json``; a rerun skips finished
cells, so a killed grid resumes. Cells run in parallel worker processes, or as Ray tasks
(``engine``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from avar.files import write_json_atomic

if TYPE_CHECKING:  # Ray is optional: imported only when a grid runs on it
    from avar.cluster import RayEngine

HEAD_ORDER = ("gru", "bigru", "lstm", "bilstm", "transformer", "mtcn")
MODALITY_ORDER = ("a", "v", "av")
MODALITY_LABELS = {"a": "audio", "v": "video", "av": "audio + video"}
SEQ_LENS = (5, 10, 15)
METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    head: str
    modality: str
    fusion: str
    seq_len: int
    seed: int
    late_mode: str = "mean"

    @property
    def id(self) -> str:
        fusion = f"late-{self.late_mode}" if self.fusion == "late" else "early"
        return f"{self.head}-{self.modality}-{fusion}-T{self.seq_len}-s{self.seed}"


@dataclass
class AblationPlan:
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 50
    heads: tuple[str, ...] = HEAD_ORDER
    seq_lens: tuple[int, ...] = SEQ_LENS
    head_overrides: dict = field(default_factory=dict)
    paper: bool = False
    """The paper's setup: raw streams concatenated (Eq. 6) and the paper's training recipe,
    for the fidelity tables; the default trains avar's robust fusion and recipe."""

    @classmethod
    def quick(cls) -> "AblationPlan":
        """Both tables, fewer seeds and epochs: minutes on two cores."""
        return cls(seeds=(0, 1), epochs=20)

    def cells(self) -> list[Cell]:
        cells = []
        for seed in self.seeds:
            cells += [Cell(h, m, "early", 10, seed) for h in self.heads for m in MODALITY_ORDER]
            cells += [Cell("mtcn", "av", "early", t, seed) for t in self.seq_lens if t != 10]
            cells += [Cell("mtcn", "av", "late", 10, seed, mode) for mode in ("mean", "learned")]
        return cells


def run_cell(cell: Cell, features_dir: str, out_dir: str, epochs: int, head_overrides: dict, threads: int,
             paper: bool = False) -> dict:
    """Train and evaluate one cell; returns (and writes) its result record."""
    import torch

    from avar.methods.avarnet.evaluate import evaluate_run
    from avar.features.cache import FeatureSet
    from avar.methods.avarnet.train import TrainConfig, train_head

    torch.set_num_threads(threads)
    run_dir = Path(out_dir) / "runs" / cell.id
    config = TrainConfig(
        head_type=cell.head, modality=cell.modality, fusion=cell.fusion, late_mode=cell.late_mode,
        seq_len=cell.seq_len, epochs=epochs, seed=cell.seed, recipe="paper" if paper else "robust",
        head={**({"stream_fusion": "concat"} if paper else {}), **head_overrides.get(cell.head, {})},
    )
    run = train_head(FeatureSet.open(features_dir), run_dir, config, progress=False)
    report = evaluate_run(run_dir, features_dir, "test")
    result = {
        "id": cell.id,
        "head": cell.head,
        "modality": cell.modality,
        "fusion": cell.fusion if cell.fusion == "early" else f"late-{cell.late_mode}",
        "seq_len": cell.seq_len,
        "seed": cell.seed,
        **{m: getattr(report, m) for m in METRICS},
        "params": run.record.params,
        "train_seconds": run.record.train_seconds,
        "best_epoch": run.record.best_epoch,
        "run_dir": str(run_dir),
        "config": {"train": run.record.to_dict()["train"], "head_type": cell.head, "head": run.config.to_dict()},
    }
    write_json_atomic(run_dir / RESULT_FILE, result)
    return result


def finished(cells: list, out: Path, runs: str = "runs") -> dict[str, dict]:
    """The results of the cells already done, by id (``out/runs/<id>/result.json``): what a
    rerun of a grid skips."""
    paths = {cell.id: out / runs / cell.id / RESULT_FILE for cell in cells}
    return {cell_id: json.loads(path.read_text()) for cell_id, path in paths.items() if path.is_file()}


def run_parallel(func, cells: list, done: dict, arguments, *, workers: int | None, desc: str, total: int,
                 progress: bool, engine: RayEngine | None = None) -> list[dict]:
    """Run ``func(cell, *arguments(cell, threads))`` for every cell in worker processes (one
    per core by default, the cores shared out as torch threads), storing each result in
    ``done[cell.id]``; a cell that fails is reported and the rest go on. Returns the failures.

    With ``engine`` (an :class:`avar.cluster.RayEngine`) the cells run as Ray tasks on its
    cluster instead (``workers`` at once, ``engine.cpus_per_worker`` threads each); ``func``
    must write its results where the driver reads them (a shared folder on a cluster)."""
    bar = tqdm(total=total, initial=total - len(cells), desc=desc, unit="run", disable=not progress)
    if engine is not None:
        from avar.cluster import run_cells

        engine = replace(engine, workers=workers) if workers else engine
        failures = run_cells(engine, func, cells, done, arguments, lambda: bar.update(1))
        bar.close()
        return failures
    workers = max(1, min(workers or os.cpu_count() or 1, len(cells) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    failures = []
    # Spawned, not forked: a process that already ran torch or has other threads (a feature
    # extraction before the grid) can hand a forked child a lock that is never released.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(func, c, *arguments(c, threads)): c for c in cells}
        for future in as_completed(futures):
            cell = futures[future]
            try:
                done[cell.id] = future.result()
            except Exception as exc:  # one failed cell must not lose the rest of the grid
                failures.append({"id": cell.id, "error": f"{type(exc).__name__}: {exc}"})
                tqdm.write(f"cell {cell.id} failed: {exc}")
            bar.update(1)
    bar.close()
    return failures


def run_ablation(
    features_dir: Path | str,
    out_dir: Path | str,
    plan: AblationPlan | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    engine: RayEngine | None = None,
) -> list[dict]:
    """Run (or finish) the grid and write ``results.json`` and the tables; returns the results.
    ``engine`` runs the cells on a Ray cluster (see :func:`run_parallel`)."""
    plan = plan or AblationPlan()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = plan.cells()
    done = finished(cells, out)
    write_json_atomic(out / "plan.json", {
        "features_dir": str(features_dir), "seeds": list(plan.seeds), "epochs": plan.epochs,
        "heads": list(plan.heads), "seq_lens": list(plan.seq_lens), "paper": plan.paper, "cells": [c.id for c in cells],
    })
    failures = run_parallel(
        run_cell, [c for c in cells if c.id not in done], done,
        lambda cell, threads: (str(features_dir), str(out), plan.epochs, plan.head_overrides, threads, plan.paper),
        workers=workers, desc="ablate", total=len(cells), progress=progress, engine=engine,
    )
    results = [done[c.id] for c in cells if c.id in done]
    write_json_atomic(out / "results.json", results)
    write_tables(results, out)
    if failures:
        write_json_atomic(out / "failures.json", failures)
    return results


def _mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def _group(results: list[dict], **where) -> list[dict]:
    return [r for r in results if all(r[k] == v for k, v in where.items())]


def summarise(results: list[dict]) -> dict:
    """Mean and std over seeds of every metric, laid out like the paper's Tables 2 and 3."""

    def row(rows: list[dict]) -> dict:
        return {
            **{m: _mean_std([r[m] for r in rows]) for m in METRICS},
            "params": rows[0]["params"],
            "train_seconds": _mean_std([r["train_seconds"] for r in rows]),
            "seeds": sorted(r["seed"] for r in rows),
            "config": rows[0]["config"],
        }

    table2 = {}
    for head in HEAD_ORDER:
        for modality in MODALITY_ORDER:
            rows = _group(results, head=head, modality=modality, fusion="early", seq_len=10)
            if rows:
                table2.setdefault(head, {})[modality] = row(rows)
    table3 = {}
    for seq_len in sorted({r["seq_len"] for r in results}):
        rows = _group(results, head="mtcn", modality="av", fusion="early", seq_len=seq_len)
        if rows:
            table3[str(seq_len)] = row(rows)
    fusion = {}
    for name in ("early", "late-mean", "late-learned"):
        rows = _group(results, head="mtcn", modality="av", fusion=name, seq_len=10)
        if rows:
            fusion[name] = row(rows)
    return {"table2": table2, "table3": table3, "fusion": fusion}


def _fmt(stat: dict) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def tables_markdown(summary: dict) -> str:
    lines = ["## Table 2: heads x modality (test split, %, mean ± std over seeds)", "",
             "| head | modality | accuracy | precision | recall | F1 | params | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for head, by_modality in summary["table2"].items():
        for modality, r in by_modality.items():
            lines.append(
                f"| {head} | {MODALITY_LABELS[modality]} | " + " | ".join(_fmt(r[m]) for m in METRICS)
                + f" | {r['params']:,} | {r['train_seconds']['mean']:.1f} |"
            )
    lines += ["", "## Table 3: sequence length, AVAR-Net head, audio + video", "",
              "| T | accuracy | precision | recall | F1 | train s |", "|---|---|---|---|---|---|"]
    for seq_len, r in summary["table3"].items():
        lines.append(f"| {seq_len} | " + " | ".join(_fmt(r[m]) for m in METRICS) + f" | {r['train_seconds']['mean']:.1f} |")
    lines += ["", "## Early vs late fusion, AVAR-Net head", "",
              "| fusion | accuracy | precision | recall | F1 | params |", "|---|---|---|---|---|---|"]
    for name, r in summary["fusion"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r[m]) for m in METRICS) + f" | {r['params']:,} |")
    return "\n".join(lines) + "\n"


def write_tables(results: list[dict], out_dir: Path | str) -> dict:
    out = Path(out_dir)
    summary = summarise(results)
    write_json_atomic(out / "tables.json", summary)
    (out / "tables.md").write_text(tables_markdown(summary))
    return summary
