"""A visual autoencoder run on a UCSD Ped2 test video as a stream: does `avar watch` score it as
`avar evaluate` does? Prints JSON.

Trains (or reuses, ``--run``) the visual autoencoder on Ped2's normal training videos (20% of
them held out for the calibration), encodes each chosen test video's frames as an H.264 file
at Ped2's 10 frames/s, watches the file with ``avar.serve.watch.Watcher`` and compares,
per video, the frame AUC of the watched steps with the frame AUC of the calibrated scores
``avar evaluate`` computes from the frame folder, and the largest per-step difference::

    python benchmarks/ped2_stream.py --epochs 1 --run /tmp/ped2-stream-run --videos 01 02 03
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from avar.datasets.framefolders import load_video, open_frame_dataset
from avar.media.synth import write_av_file
from avar.metrics.classification import roc_auc
from avar.serve.watch import Watcher
from avar.runs import load_run
from avar.methods.autoencoder.config import AETrainConfig
from avar.methods.autoencoder.train import train_autoencoder

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucsd-ped2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("AVAR_PED2", str(DEFAULT_DATA)), help="UCSD Ped2 folder")
    parser.add_argument("--run", help="RUN_DIR to reuse or keep (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=AETrainConfig().epochs)
    parser.add_argument("--videos", nargs="+", default=["01", "02", "03"], help="test video ids")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ped2-stream-"))
    run_dir = Path(args.run) if args.run else work / "run"
    out: dict = {"data": args.data, "run": str(run_dir)}
    if not (run_dir / "config.json").is_file():
        started = time.perf_counter()
        train_autoencoder(args.data, run_dir, AETrainConfig(epochs=args.epochs), progress=False)
        out["train_seconds"] = round(time.perf_counter() - started, 1)
    run = load_run(run_dir)
    out["calibration"] = {k: v for k, v in run.stream["calibration"].items() if k != "quantiles"}
    tests = {v.video_id: v for v in open_frame_dataset(args.data).split("test")}
    watcher = Watcher(run)
    per_video = {}
    for name in args.videos:
        video = tests[f"testing/{name}"] if f"testing/{name}" in tests else tests[name]
        loaded = load_video(video, run.frame_size, keep_native=True)
        started = time.perf_counter()
        evaluated = run.step_probabilities(loaded.frames.reshape(len(loaded.frames), -1).astype(np.float32),
                                           np.zeros((len(loaded.frames), 0), np.float32))[:, 1]
        evaluate_s = time.perf_counter() - started
        rgb = np.repeat(loaded.native[..., None], 3, axis=-1)
        media = write_av_file(work / f"{name}.mp4", rgb, loaded.fps, None, 16_000)
        started = time.perf_counter()
        watched = np.array([r.anomaly_score for r in watcher.watch(media)])
        watch_s = time.perf_counter() - started
        n = min(len(watched), len(loaded.labels))
        per_video[name] = {
            "frames": int(len(loaded.labels)), "steps_watched": int(len(watched)),
            "anomalous_frames": int(loaded.labels.sum()),
            "auc_evaluate_calibrated": roc_auc(loaded.labels, evaluated),
            "auc_watch": roc_auc(loaded.labels[:n], watched[:n]),
            "max_abs_score_difference": float(np.abs(watched[:n] - evaluated[:n]).max()),
            "mean_abs_score_difference": float(np.abs(watched[:n] - evaluated[:n]).mean()),
            "evaluate_seconds": round(evaluate_s, 1), "watch_seconds": round(watch_s, 1),
        }
    out["per_video"] = per_video
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
