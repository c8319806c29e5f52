"""The visual sequence autoencoder on real UCSD Ped2, trained and scored in one run; prints JSON.

Trains the visual model (paper Table 3) on the 16 normal training videos (2550 frames), scores
all 2010 test frames, and prints pooled frame-level ROC AUC and EER of the run's scorer, of the
paper's whole-frame Euclidean error, and of the learning-free frame-difference floor, with the
training time. Usage::

    python benchmarks/ped2_autoencoder.py                       # defaults of `avar train autoencoder`
    python benchmarks/ped2_autoencoder.py --epochs 4 --out /tmp/ped2-run --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from avar.methods.autoencoder.evaluate import evaluate_autoencoder
from avar.methods.autoencoder.config import SCORERS, AETrainConfig
from avar.methods.autoencoder.train import train_autoencoder

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucsd-ped2"


def main() -> None:
    defaults = AETrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("AVAR_PED2", str(DEFAULT_DATA)), help="UCSD Ped2 folder")
    parser.add_argument("--out", help="RUN_DIR to keep (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--score", choices=SCORERS, default=defaults.score)
    parser.add_argument("--smooth", type=int, default=defaults.smooth, help="frames each score is averaged over")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=defaults.precision)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    args = parser.parse_args()

    config = AETrainConfig(modality="v", epochs=args.epochs, threads=args.threads, score=args.score, smooth=args.smooth,
                           precision=args.precision, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.out) if args.out else Path(tmp) / "run"
        started = time.perf_counter()
        run = train_autoencoder(args.data, run_dir, config, progress=args.progress)
        train_wall = time.perf_counter() - started
        report = evaluate_autoencoder(run_dir, args.data, plots=bool(args.out), progress=args.progress)
    print(json.dumps({
        "frame_auc": report.frame_auc,
        "eer": report.eer,
        "score": report.score,
        "frame_auc_paper_scorer": report.scorers["video_frame"]["auc"],
        "eer_paper_scorer": report.scorers["video_frame"]["eer"],
        "floor_auc": report.floor_auc,
        "floor_eer": report.floor_eer,
        "floor_mean_auc": report.floor_mean_auc,
        "floor_smoothed_auc": report.floor_smoothed_auc,
        "smooth": report.smooth,
        "scorers": report.scorers,
        "train_seconds": round(train_wall, 1),
        "model_train_seconds": run.record.video_train_seconds,
        "eval_seconds": report.eval_seconds,
        "epochs": config.epochs,
        "precision": run.record.precision,
        "threads": torch.get_num_threads(),
        "test_frames": report.n_frames,
        "train_frames": run.record.data["train_frames_read"],
        "history": json.loads((run_dir / "history.json").read_text())["video"] if args.out else None,
    }, indent=1))


if __name__ == "__main__":
    main()
