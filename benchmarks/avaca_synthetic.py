"""AVACA on the weakly labelled synthetic benchmark: does it localise, and does audio help?

Runs, in one process and on one set of features, what these commands do::

    avar synth DATA --weak --clips-per-class 12
    avar extract DATA --out FEATURES                       # efficientnet-lite0 + logmel
    avar train avaca FEATURES --out RUN [--audio-path plain] [--zero-audio] [--seed S]
    avar train mil FEATURES --head mtcn --out RUN [--seed S]
    avar evaluate RUN FEATURES --json

and prints one JSON object: per variant and seed the frame AUC, AP (step-wise and XD
protocol), AUC on anomalous videos only, per class group (audio-only, video-only, joint),
training seconds; then mean and sample std over seeds, and the audio-minus-zero-audio AUC
gap per class group. Training runs on ``--threads`` torch threads (default 1), so the
timings are comparable across machines with more cores.

    python benchmarks/avaca_synthetic.py --work /tmp/avaca-bench --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = {
    "avaca_focused": {"method": "avaca", "audio_path": "focused"},
    "avaca_plain": {"method": "avaca", "audio_path": "plain"},
    "avaca_zero_audio": {"method": "avaca", "zero_audio": True},
    "mil_mtcn": {"method": "mil", "head_type": "mtcn"},
}
METRICS = ("frame_auc", "frame_ap", "frame_ap_xd", "frame_auc_anomalous", "video_auc")


def prepare(work: Path, clips_per_class: int, progress: bool) -> tuple[Path, dict]:
    """Synthesize and extract once; reuse what a previous run left in ``work``."""
    from avar.datasets.folders import discover
    from avar.features import DEFAULT_AUDIO, DEFAULT_VIDEO, build_extractor
    from avar.features.cache import extract_dataset
    from avar.media.synth import synthesize

    data, features = work / "synth", work / "features"
    timings = {}
    if not (data / "metadata.json").is_file():
        started = time.perf_counter()
        synthesize(data, weak=True, clips_per_class=clips_per_class, progress=progress)
        timings["synth_seconds"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    summary = extract_dataset(discover(data), features, build_extractor(DEFAULT_VIDEO, runtime="auto"),
                              build_extractor(DEFAULT_AUDIO), progress=progress)
    if summary.done:
        timings["extract_seconds"] = round(time.perf_counter() - started, 1)
    return features, timings


def summarise(runs: list[dict]) -> dict:
    def stat(values):
        kept = np.array([v for v in values if v is not None], dtype=np.float64)
        return {"mean": float(kept.mean()), "std": float(kept.std(ddof=1)) if kept.size > 1 else 0.0} if kept.size else None

    out = {m: stat([r[m] for r in runs]) for m in METRICS}
    out["train_seconds"] = stat([r["train_seconds"] for r in runs])
    out["per_group_auc"] = {g: stat([r["per_group_auc"][g] for r in runs]) for g in runs[0]["per_group_auc"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("avaca-bench"), help="folder for data, features and runs")
    parser.add_argument("--clips-per-class", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="default: WeakTrainConfig's (100)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", action="store_true", help="only the JSON result on stdout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from avar.methods.avaca.evaluate import evaluate_weak
    from avar.features.cache import FeatureSet
    from avar.methods.avaca.train import WeakTrainConfig, train_weak

    features_dir, timings = prepare(args.work, args.clips_per_class, not args.json)
    features = FeatureSet.open(features_dir)
    result = {"features": str(features_dir), "threads": torch.get_num_threads(), **timings, "variants": {}}
    for name in args.variants:
        runs = []
        for seed in range(args.seeds):
            config = WeakTrainConfig(seed=seed, **VARIANTS[name], **({"epochs": args.epochs} if args.epochs else {}))
            run_dir = args.work / "runs" / f"{name}_seed{seed}"
            run = train_weak(features, run_dir, config, progress=False)
            report = evaluate_weak(run_dir, features_dir, "test", plots=False)
            runs.append({
                "seed": seed, "train_seconds": run.record.train_seconds, "best_epoch": run.record.best_epoch,
                **{m: getattr(report, m) for m in METRICS},
                "per_group_auc": {g: m["frame_auc"] for g, m in report.per_group.items()},
            })
            if not args.json:
                print(name, json.dumps(runs[-1]))
        result["variants"][name] = {"runs": runs, "summary": summarise(runs)}
    variants = result["variants"]
    if "avaca_focused" in variants and "avaca_zero_audio" in variants:
        with_audio, without = variants["avaca_focused"]["runs"], variants["avaca_zero_audio"]["runs"]
        result["audio_gain_auc"] = {
            g: float(np.mean([a["per_group_auc"][g] - z["per_group_auc"][g] for a, z in zip(with_audio, without)]))
            for g in with_audio[0]["per_group_auc"]
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
