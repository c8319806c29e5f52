"""Does fusion hold up on small and real data? One command, JSON out (issue 11).

    .venv/bin/python benchmarks/fusion_robustness.py --out avar-robustness --json

For each seed: ``avar synth`` (24 clips per class, that seed) -> offline features -> caches of
6, 12 and 24 clips per class, each clean and with video or audio shuffled across clips ->
every head on audio, video and both (default training) -> test accuracy, and a pooled-feature
logistic regression on the same caches; runs on the smaller clean caches are also scored on the
clips their subset left out (a larger held-out test). With ``--fight-dev DIR`` (default: the shared
fight-dev clips when present) the same heads and the regression run on real surveillance
clips with their own sound, on its grouped split, over the same seeds; and, since its 55 test
clips cannot tell two classifiers a clip or two apart, the same runs and the regression are also
cross-validated on its labelled clips in folds of whole source videos (its ``sources.csv``;
:func:`~avar.experiments.robustness.fold_caches`), the folds drawn anew for each seed. A rerun
resumes.
Prints JSON (``--json``) and writes ``OUT/summary.json`` and ``OUT/tables.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from avar.experiments.ablate import HEAD_ORDER, MODALITY_ORDER
from avar.datasets.folders import discover
from avar.features import DEFAULT_AUDIO, DEFAULT_VIDEO, build_extractor
from avar.features.cache import FeatureSet, extract_dataset
from avar.files import write_json_atomic
from avar.methods.avarnet.stream_selection import LEGACY_POOLING, POOLING, cross_validated, select_streams
from avar.media.synth import synthesize
from avar.experiments.robustness import (
    VARIANTS, Cell, cache_name, checks, fold_caches, head_alone_accuracy, held_out, plan_cells, pooled_logistic_regression,
    run_cells, subsample, summarise, table_markdown, uninformative,
)

FIGHT_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-dev"


def _features(data_dir: Path, out: Path, seed: int, step: float) -> FeatureSet:
    if not (out / "manifest.json").is_file():
        extract_dataset(discover(data_dir, seed=seed), out, build_extractor(DEFAULT_VIDEO, runtime="auto"),
                        build_extractor(DEFAULT_AUDIO), step=step, progress=False)
    features = FeatureSet.open(out)
    if abs(features.manifest["step"] - step) > 1e-9:
        raise SystemExit(f"{out}: extracted at {features.manifest['step']} s steps, not {step}; pass another --out")
    return features


def grouped_cv(cache: FeatureSet, seed: int = 0) -> dict:
    """What the pooled regression knows across scenes: its accuracy on the labelled clips
    (train + val) cross-validated as the stream selection does it (in folds of whole recordings:
    the cache's groups, from the dataset's ``sources.csv``), and on the test split, per pooling
    and stream choice."""
    fit = cache.split("train") + cache.split("val")
    y = [c.label for c in fit]
    out = {}
    for name, stats in (("mean+max", LEGACY_POOLING), ("mean+max+change", POOLING)):
        cv, _ = cross_validated(fit, MODALITY_ORDER, seed, stats)
        for modality in MODALITY_ORDER:
            acc = pooled_logistic_regression(cache, modality, seed, stats=stats)
            out.setdefault(name, {})[modality] = {"grouped_cv": cv[modality], "test": round(acc, 4)}
    out["largest_class"] = round(max(y.count(label) for label in set(y)) / len(y), 4)
    return out


def out_of_fold(out: Path, folds: dict[int, list[str]], results: list[dict]) -> tuple[dict, dict]:
    """Accuracy over every held-out clip of the fold caches (:func:`fold_caches`), per head and
    stream choice, for the fused runs' head alone (``<head> alone``) and for the pooled
    regression: mean ± std over the seeds, each seed's runs scored on its own draw of folds
    (``folds``: seed -> its fold caches), so that no figure rests on one way of cutting the
    clips; and the same per seed (``{seed: {head: {modality: accuracy}}}``)."""
    caches = {f: FeatureSet.open(out / "caches" / f) for names in folds.values() for f in names}
    sizes = {f: sum(c["split"] == "test" for c in cache.clips) for f, cache in caches.items()}

    def pooled(by_fold: dict) -> float:  # each fold weighted by its clips: every clip counts once
        return sum(sizes[f] * accuracy for f, accuracy in by_fold.items()) / sum(sizes[f] for f in by_fold)

    rows: list[dict] = []
    for r in results:
        if r["cache"] in folds.get(r["seed"], ()):
            rows.append(r)
            if r["modality"] == "av":
                rows.append(dict(r, head=f"{r['head']} alone",
                                 accuracy=head_alone_accuracy(out / "runs" / r["id"], out / "caches" / r["cache"])))
    by_cell: dict[tuple, dict] = {}
    for r in rows:
        by_cell.setdefault((r["head"], r["modality"], r["seed"]), {})[r["cache"]] = r["accuracy"]
    runs = [{"cache": f"s{seed}-n0-cv", "seed": seed, "head": head, "modality": modality, "accuracy": pooled(by_fold)}
            for (head, modality, seed), by_fold in by_cell.items() if len(by_fold) == len(folds[seed])]
    base = [{"cache": f"s{seed}-n0-cv", "seed": seed, "head": "logreg", "modality": m,
             "accuracy": pooled({f: pooled_logistic_regression(caches[f], m, seed) for f in names})}
            for seed, names in folds.items() for m in MODALITY_ORDER]
    by_seed: dict[str, dict] = {}
    for r in runs + base:
        by_seed.setdefault(str(r["seed"]), {}).setdefault(r["head"], {})[r["modality"]] = round(r["accuracy"], 4)
    return summarise(runs, base)["0"]["cv"], by_seed


def fight_checks(table: dict, test_set: str) -> list[dict]:
    """The issue's fight-dev target for every head of ``table``: fused >= the better single stream
    and >= the best pooled regression."""
    logreg_best = max(v["mean"] for v in table["logreg"].values())
    return [{"check": f"fight-dev ({test_set}): fused >= best single and >= logreg", "head": h,
             "fused": row["av"]["mean"], "best_single": max(row["a"]["mean"], row["v"]["mean"]),
             "logreg_best": logreg_best,
             "pass": row["av"]["mean"] >= max(row["a"]["mean"], row["v"]["mean"]) and row["av"]["mean"] >= logreg_best}
            for h, row in table.items() if h != "logreg" and {"a", "v", "av"} <= set(row)]


SYNTH_CLIPS_PER_CLASS = 24
"""Clips per class each seed's built-in data is synthesised with, whatever ``--sizes`` asks for
(more when a size is larger): every size's cache is drawn from the same data, so a rerun with
fewer sizes (``--sizes 6``) reproduces the full run's row rather than one of other clips."""


def prepare_synthetic(out: Path, seeds, sizes) -> None:
    """The benchmark's caches under ``out/caches`` (skipped where they exist)."""
    per_class = max(SYNTH_CLIPS_PER_CLASS, *sizes)
    for seed in seeds:
        data = out / "data" / f"s{seed}"
        if not (data / "metadata.json").is_file():
            synthesize(data, seed=seed, clips_per_class=per_class, progress=False)
        made = json.loads((data / "metadata.json").read_text()).get("clips_per_class")
        if made != per_class:
            raise SystemExit(f"{data}: synthesised with {made} clips per class, not {per_class}; pass another --out")
        full = _features(data, out / "features" / f"s{seed}", seed, 1.0)
        for size in sizes:
            clean = out / "caches" / cache_name(seed, size, "clean")
            if not (clean / "manifest.json").is_file():
                subsample(full, clean, size, seed)
            heldout = out / "caches" / cache_name(seed, size, "heldout")
            if size < per_class and not (heldout / "manifest.json").is_file():
                held_out(full, FeatureSet.open(clean), heldout)
            for variant in VARIANTS[1:]:
                path = out / "caches" / cache_name(seed, size, variant)
                if not (path / "manifest.json").is_file():
                    uninformative(FeatureSet.open(clean), path, variant.split("-")[0], seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="avar-robustness")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 12, 24], help="clips per class")
    parser.add_argument("--heads", nargs="+", default=list(HEAD_ORDER), choices=HEAD_ORDER)
    parser.add_argument("--fight-dev", default=str(FIGHT_DEV) if FIGHT_DEV.is_dir() else None,
                        help="real clips (class folders + splits.csv); 'none' to skip")
    parser.add_argument("--fight-step", type=float, default=0.5, help="seconds per step on fight-dev (2-s clips)")
    parser.add_argument("--fight-video-motion", type=int, default=0, metavar="K",
                        help="fight-dev runs read the video as motion over K steps (avar train avarnet --video-motion; "
                        "e.g. 4 with --fight-step 0.125); 0: off, the default")
    parser.add_argument("--recipe", default="robust", choices=("robust", "paper"))
    parser.add_argument("--concat", action="store_true", help="the paper's plain concatenation instead of the "
                        "projected streams (with --recipe paper: the paper's setup)")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    overrides = {"recipe": args.recipe, "head": {"stream_fusion": "concat"} if args.concat else {}}

    prepare_synthetic(out, args.seeds, args.sizes)
    cells = plan_cells(args.seeds, args.sizes, args.heads)
    fight = args.fight_dev if args.fight_dev and args.fight_dev != "none" else None
    folds: dict[int, list[str]] = {}
    results, failures = run_cells(cells, out, workers=args.workers, train_overrides=overrides)
    if fight:
        fight_cache = _features(Path(fight), out / "caches" / "fight-dev", 0, args.fight_step)
        folds = {s: fold_caches(fight_cache, out / "caches", f"fight-dev-s{s}", s) for s in args.seeds}
        fight_cells = [Cell(c, h, m, s) for s in args.seeds for c in ["fight-dev", *folds[s]]
                       for h in args.heads for m in MODALITY_ORDER]
        for cell in fight_cells:  # a rerun resumes only runs of the same setting
            config = out / "runs" / cell.id / "config.json"
            if config.is_file() and json.loads(config.read_text())["train"].get("video_motion", 0) != args.fight_video_motion:
                raise SystemExit(f"{out}: its fight-dev runs read the video otherwise than --fight-video-motion "
                                 f"{args.fight_video_motion}; pass another --out")
        more, more_failures = run_cells(fight_cells, out, workers=args.workers,
                                        train_overrides={**overrides, "video_motion": args.fight_video_motion})
        results, failures = results + more, failures + more_failures

    synthetic = [r for r in results if not r["cache"].startswith("fight-dev")]
    baselines = []
    for seed in args.seeds:
        for size in args.sizes:
            for variant in VARIANTS:
                name = cache_name(seed, size, variant)
                for modality in (MODALITY_ORDER if variant == "clean" else ("av",)):
                    accuracy = pooled_logistic_regression(FeatureSet.open(out / "caches" / name), modality)
                    baselines.append({"cache": name, "modality": modality, "accuracy": accuracy})
    table = summarise(synthetic, baselines)
    # the same runs on the clips their subset left out (sizes below the synthesised count)
    heldout_base = [{"cache": cache_name(s, n, "clean"), "modality": m,
                     "accuracy": pooled_logistic_regression(FeatureSet.open(out / "caches" / cache_name(s, n, "clean")),
                                                            m, test_on=FeatureSet.open(held))}
                    for s in args.seeds for n in args.sizes for m in MODALITY_ORDER
                    if (held := out / "caches" / cache_name(s, n, "heldout")).is_dir()]
    heldout_table = summarise(synthetic, heldout_base, field="heldout_accuracy")
    # the same fused runs' head without the clip blend: what the per-step scores come from
    fused = [r for r in results if r["modality"] == "av" and (r["cache"].endswith("-clean") or r["cache"] == "fight-dev")]
    head_alone = [dict(r, accuracy=head_alone_accuracy(out / "runs" / r["id"], out / "caches" / r["cache"]),
                       cache=r["cache"] if r["cache"] != "fight-dev" else f"s{r['seed']}-n0-fight") for r in fused]
    # what the default recipe's stream selection decides on each cache (the same call train_head makes)
    selection = {name: select_streams((fs := FeatureSet.open(out / "caches" / name)).split("train") + fs.split("val"),
                                      int(name.split("-")[0][1:])).modality
                 for name in sorted({cache_name(s, n, v) for s in args.seeds for n in args.sizes for v in VARIANTS})}
    summary = {"synthetic": table, "synthetic_heldout": heldout_table, "head_alone": summarise(head_alone),
               "checks": checks(table) + checks(heldout_table, "held-out clips"), "failures": failures,
               "stream_selection": selection,
               "settings": {"seeds": args.seeds, "sizes": args.sizes, "heads": args.heads, **overrides,
                            "fight_step": args.fight_step, "fight_video_motion": args.fight_video_motion}}
    markdown = "## Built-in benchmark (test accuracy, mean ± std over seeds)\n\n" + table_markdown(table)
    markdown += ("\n## The same runs on the clips each subset left out (held-out test, mean ± std over seeds)\n\n"
                 + table_markdown(heldout_table))
    markdown += ("\n## The fused runs' head alone, without the clip blend (mean ± std over seeds; n0 = fight-dev)\n\n"
                 + table_markdown(summarise(head_alone)))
    markdown += "\n\nStreams the default recipe's selection keeps, per cache: " + ", ".join(
        f"{name} {streams}" for name, streams in selection.items()) + "\n"
    if fight:
        fight_rows = [dict(r, cache=f"s{r['seed']}-n0-fight") for r in results if r["cache"] == "fight-dev"]
        cache = fight_cache
        fight_base = [{"cache": f"s{s}-n0-fight", "modality": m, "accuracy": pooled_logistic_regression(cache, m)}
                      for s in args.seeds[:1] for m in MODALITY_ORDER]
        fight_table = summarise(fight_rows, fight_base)["0"]["fight"]
        summary["fight_dev"] = fight_table
        summary["stream_selection"]["fight-dev"] = [
            select_streams(cache.split("train") + cache.split("val"), s).modality for s in args.seeds]
        summary["fight_dev_checks"] = fight_checks(fight_table, "test split")
        markdown += (f"\n## fight-dev ({fight}, step {args.fight_step} s, grouped split)\n\n"
                     + table_markdown({"fight-dev": {"real": fight_table}}))
        if folds:
            cv_table, summary["fight_dev_cv_by_seed"] = out_of_fold(out, folds, results)
            summary["fight_dev_cv"] = cv_table
            summary["fight_dev_checks"] += fight_checks(cv_table, "grouped cross-validation")
            clips = sum(c["split"] != "test" for c in cache.clips)  # the fold caches hold each once
            markdown += (f"\nThe same, cross-validated: the labelled clips (train + val) in "
                         f"{len(folds[args.seeds[0]])} folds of whole source videos, drawn anew for each seed, each "
                         f"clip scored once per seed by runs that never saw its source ({clips} clips):\n\n"
                         + table_markdown({"fight-dev": {"cross-validated": cv_table}})
                         + "\nPer seed, each on its own draw of folds (audio / video / audio + video): " + "; ".join(
                             f"seed {seed}: " + ", ".join(f"{head} " + " / ".join(f"{row[m]:.3f}" for m in MODALITY_ORDER
                                                                                if m in row)
                                                          for head, row in heads.items())
                             for seed, heads in summary["fight_dev_cv_by_seed"].items()) + "\n")
        if all(c.get("group") is not None for c in cache.clips):
            summary["fight_dev_grouped_cv"] = grouped = grouped_cv(cache)
            markdown += ("\nPooled regression, cross-validated in folds grouped by source video (and on the test "
                         f"split); largest class {grouped['largest_class']:.3f}:\n\n"
                         "| pooling | audio | video | audio + video |\n|---|---|---|---|\n" + "".join(
                             f"| {name} | " + " | ".join(f"{grouped[name][m]['grouped_cv']:.3f} "
                                                       f"({grouped[name][m]['test']:.3f})" for m in MODALITY_ORDER)
                             + " |\n" for name in ("mean+max", "mean+max+change")))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out / "summary.json", summary)
    (out / "tables.md").write_text(markdown)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(markdown)
        for check in summary["checks"] + summary.get("fight_dev_checks", []):
            if not check["pass"]:
                print("NOT MET:", json.dumps(check), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
