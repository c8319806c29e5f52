"""fight-dev with and without the motion stream: the default fused run, cross-validated in folds
of whole source videos (a new draw of folds per seed) and on the fixed test split, beside the
pooled-feature regression on the same cache. Prints JSON.

    .venv/bin/python benchmarks/motion_fight.py --out avar-motion-fight [--step 0.5] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from avar.datasets.folders import discover
from avar.features import DEFAULT_AUDIO, DEFAULT_MOTION, DEFAULT_VIDEO, build_extractor
from avar.features.cache import FeatureSet, extract_dataset, visual_clips
from avar.experiments.robustness import fold_caches
from avar.methods.avarnet.stream_selection import pooled_design, pooled_regression
from avar.methods.avarnet.train import TrainConfig, train_head
from avar.training.events import event_report

FIGHT_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-dev"


def regression_accuracy(features: FeatureSet, motion: bool, seed: int) -> tuple[int, int]:
    """(right, scored) on the test split of the pooled regression on appearance (+ motion) and
    audio, streams balanced, fitted on train + val: the baseline the runs must beat."""
    fit = [c for s in ("train", "val") for c in features.split(s)]
    test = features.split("test")
    motion_dim = fit[0].motion.shape[1] if motion else 0
    x, balance = pooled_design(visual_clips(fit, motion), "av", motion_dim=motion_dim)
    model = pooled_regression(seed, balance).fit(x, [c.label for c in fit])
    predicted = model.predict(pooled_design(visual_clips(test, motion), "av", motion_dim=motion_dim)[0])
    return int(sum(p == c.label for p, c in zip(predicted, test))), len(test)


def run_accuracy(cache: Path, run_dir: Path, motion: bool, seed: int) -> tuple[int, int, dict]:
    """(right, scored, event figures) on the cache's test split of the default fused run."""
    features = FeatureSet.open(cache)
    run = train_head(features, run_dir, TrainConfig(seed=seed, motion=motion), progress=False)
    test = run.read(features.split("test"))
    right = sum(run.classes[int(np.argmax(run.clip_probabilities(c.video, c.audio)))] == c.label for c in test)
    return int(right), len(test), {"streams": run.record.streams, **event_report(run, test)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="avar-motion-fight")
    parser.add_argument("--data", default=str(FIGHT_DEV))
    parser.add_argument("--step", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    out = Path(args.out)
    cache = out / "caches" / "fight-dev"
    started = time.perf_counter()
    if not (cache / "manifest.json").is_file():
        extract_dataset(discover(args.data), cache, build_extractor(DEFAULT_VIDEO, runtime="auto"),
                        build_extractor(DEFAULT_AUDIO), step=args.step, motion=build_extractor(DEFAULT_MOTION),
                        progress=False)
    features = FeatureSet.open(cache)
    rows = []
    for seed in args.seeds:
        folds = fold_caches(features, out / "caches", f"fight-dev-s{seed}", seed)
        for motion in (True, False):
            name = "motion" if motion else "no-motion"
            oof = [run_accuracy(out / "caches" / f, out / "runs" / f"{f}-{name}", motion, seed) for f in folds]
            reg = [regression_accuracy(FeatureSet.open(out / "caches" / f), motion, seed) for f in folds]
            test = run_accuracy(cache, out / "runs" / f"test-s{seed}-{name}", motion, seed)
            rows.append({
                "seed": seed, "motion": motion,
                "oof_accuracy": sum(r for r, _, _ in oof) / sum(n for _, n, _ in oof),
                "oof_regression": sum(r for r, _ in reg) / sum(n for _, n in reg),
                "test_accuracy": test[0] / test[1],
                "test_regression": (lambda r: r[0] / r[1])(regression_accuracy(features, motion, seed)),
                "test_streams": test[2]["streams"],
                "test_events": {k: test[2][k] for k in ("threshold", "recall", "false_events",
                                                        "false_events_per_hour", "mean_delay_s")},
                "oof_streams": [e["streams"] for _, _, e in oof],
            })
    summary = {}
    for motion in (True, False):
        mine = [r for r in rows if r["motion"] == motion]
        summary["motion" if motion else "no-motion"] = {
            k: {"mean": round(float(np.mean([r[k] for r in mine])), 3), "std": round(float(np.std([r[k] for r in mine])), 3)}
            for k in ("oof_accuracy", "oof_regression", "test_accuracy", "test_regression")}
    print(json.dumps({"step": args.step, "seeds": args.seeds, "summary": summary, "runs": rows,
                      "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
