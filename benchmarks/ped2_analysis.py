"""The readings of docs/autoencoder.md, recomputed from an evaluation's frame_scores.csv; prints JSON.

Reads the ``frame_scores.csv`` that ``avar evaluate RUN --data UCSD_PED2`` writes and reports,
for the model's scorer against the like-for-like floor: the per-video Pearson correlation of
the two curves, per-video AUCs, the mean normalised score of normal frames and of videos that
are anomalous throughout, the pooled AUC without those videos, and the pooled AUC of the raw
(unnormalised) errors. With ``--data`` it also scores the frame-difference floor with frame 0
set to zero instead of frame 1's score (how much the floor moves with that detail). Usage::

    python benchmarks/ped2_analysis.py /tmp/ped2/eval/frame_scores.csv --data ../shared/data/ucsd-ped2
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from avar.datasets.framefolders import load_video, open_frame_dataset
from avar.metrics.detection import minmax_normalize, roc_auc
from avar.methods.autoencoder.frame_difference import frame_difference_scores


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no rows; pass the frame_scores.csv written by `avar evaluate`")
    videos = np.array([r["video"] for r in rows])
    labels = np.array([r["anomalous"] in ("1", "True", "true") for r in rows])
    columns = {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k not in ("video", "frame", "anomalous")}
    return videos, labels, columns


def analyse(path: Path, model: str, floor: str) -> dict:
    videos, labels, col = _read(path)
    per_video, correlations = [], []
    for vid in dict.fromkeys(videos):
        idx = videos == vid
        y = labels[idx]
        correlations.append(float(np.corrcoef(col[model][idx], col[floor][idx])[0, 1]))
        if 0 < y.sum() < y.size:
            per_video.append({"video": str(vid), "model_auc": roc_auc(y, col[model][idx]),
                              "floor_auc": roc_auc(y, col[floor][idx])})
    whole = [v for v in dict.fromkeys(videos) if labels[videos == v].all()]
    partial = ~np.isin(videos, whole)
    out = {"model": model, "floor": floor, "mean_per_video_pearson": float(np.mean(correlations)),
           "per_video": per_video, "videos_anomalous_throughout": whole,
           "frames_in_those_videos": int((~partial).sum())}
    for name in (model, floor):
        out[name] = {
            "pooled_auc": roc_auc(labels, col[name]),
            "pooled_auc_without_videos_anomalous_throughout": roc_auc(labels[partial], col[name][partial]),
            "mean_score_normal_frames": float(col[name][~labels].mean()),
            "mean_score_videos_anomalous_throughout": float(col[name][~partial].mean()),
            "pooled_auc_raw_errors": roc_auc(labels, col[f"raw_{name}"]),
        }
    return out


def floor_first_frame_zero(data: Path) -> dict:
    """The floor (busiest cell, and global mean) with frame 0 scored 0 instead of frame 1's score."""
    tests = open_frame_dataset(data).split("test")
    loaded = [load_video(v, keep_native=True) for v in tests]
    labels = np.concatenate([v.labels for v in loaded])
    out = {}
    for reduce in ("max", "mean"):
        scores = []
        for v in loaded:
            s = frame_difference_scores(v.native, reduce=reduce)
            s[0] = 0.0
            scores.append(minmax_normalize(s))
        out[f"floor_{reduce}_first_frame_zero_auc"] = roc_auc(labels, np.concatenate(scores))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frame_scores", type=Path, help="frame_scores.csv from `avar evaluate`")
    parser.add_argument("--model", default="video_motion", help="model column (default video_motion)")
    parser.add_argument("--floor", default="floor_smoothed", help="floor column (default floor_smoothed)")
    parser.add_argument("--data", type=Path, help="UCSD Ped2 folder: also score the floor with frame 0 = 0")
    args = parser.parse_args()
    result = analyse(args.frame_scores, args.model, args.floor)
    if args.data:
        result.update(floor_first_frame_zero(args.data))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
