"""Frame-level evaluation of an unsupervised detector run on a frame-level dataset.

Scores every test frame, pools the frames of all test videos, and reports ROC AUC, EER and
precision / recall / accuracy / F1 at a threshold, for the run's scorer and, always beside
it, for the learning-free floor (:mod:`avar.methods.autoencoder.frame_difference`). Writes
``eval_frames.json``, ``eval_frames.md``, ``frame_scores.csv``, one score plot per test
video (ground truth shaded) and the pooled ROC curves (``plots/roc.png``) into the output
directory.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from avar.datasets.framefolders import FrameVideo, load_video, open_frame_dataset
from avar.files import write_json_atomic
from avar.features.spectral import SPECTRAL_RATE
from avar.metrics.classification import _json_ready
from avar.metrics.detection import equal_error_rate, minmax_normalize, roc_auc, roc_curve, threshold_metrics
from avar.methods.autoencoder.frame_difference import frame_difference_scores
from avar.methods.autoencoder import JointConfig, JointFusionNet
from avar.plots import plot_frame_scores, plot_roc
from avar.methods.autoencoder.config import SCORERS
from avar.methods.autoencoder.run import AERun, smooth_scores
from avar.methods.autoencoder.train import retain_freed_memory

PAPER_GAMMA = {"v": 0.92, "a": 0.85}
"""Regularity thresholds of paper Table 6 for UCSD Ped2 (video 0.92, audio 0.85)."""
JOINT_GAMMA = 0.5
"""Regularity threshold of the joint model: its output is a probability, so 0.5."""
FLOOR = "floor"
FLOOR_MEAN = "floor_mean"
FLOOR_SMOOTHED = "floor_smoothed"
FLOW = "flow"
"""The motion term's scores (:mod:`avar.methods.autoencoder.flow_normality`); ``<video scorer>_flow``
is its average with that scorer, reported beside it."""
CALIBRATED = "calibrated"
"""The run's scores as files and streams get them (:class:`~avar.methods.autoencoder.run.AERun`):
no per-video min-max, the held-out normal calibration instead."""
_META = ("video", "labels", "fps")


@dataclass
class DetectionEvaluation:
    """Pooled frame-level results of one run on one dataset's test videos.

    Scores are anomaly scores ``1 - s_r(t)`` (Eq. 4), i.e. per-video min-max normalised errors:
    higher is more anomalous. ``threshold`` is the anomaly-score cut ``1 - gamma``.
    """

    run_dir: str
    data_dir: str
    modality: str
    score: str
    """Key of ``scorers`` reported as ``frame_auc`` / ``eer``."""
    audio_pairing: str
    n_videos: int
    n_frames: int
    n_anomalous: int
    frame_auc: float
    eer: float
    gamma: float
    """Regularity threshold: a frame is anomalous when ``s_r(t) < gamma``."""
    threshold_source: str
    threshold: float
    precision: float
    recall: float
    accuracy: float
    f1: float
    floor_auc: float
    """The learning-free floor on the same frames: max over a 10 x 12 grid of mean absolute
    frame differences, min-max normalised per video."""
    floor_eer: float
    floor_mean_auc: float
    """The same floor with the global mean difference instead of the busiest cell."""
    smooth: int
    """Frames each model score was averaged over (centred); 1 = none."""
    floor_smoothed_auc: float | None
    """The floor averaged over the same ``smooth`` frames as the model: the like-for-like
    comparison (None when ``smooth`` is 1)."""
    scorers: dict[str, dict[str, float]]
    """``{name: {"auc", "eer"}}`` for every scorer computed (model variants, fusions, floors)."""
    per_video: list[dict]
    eval_seconds: float
    plots: list[str] = field(default_factory=list)
    train: dict = field(default_factory=dict)
    """Training facts copied from the run: seconds, epochs, precision, threads, parameters."""

    def to_dict(self) -> dict:
        return _json_ready(asdict(self))

    def to_markdown(self) -> str:
        fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"
        lines = [
            f"Frame-level detection: {self.n_frames} frames of {self.n_videos} test videos "
            f"({self.n_anomalous} anomalous), all pooled. Audio: {self.audio_pairing}. "
            f"Model scores averaged over {self.smooth} frame(s); `floor` and `floor_mean` unsmoothed.",
            "",
            "| scorer | ROC AUC | EER |",
            "|---|---|---|",
        ]
        for name, r in self.scorers.items():
            mark = " (reported)" if name == self.score else ""
            lines.append(f"| {name}{mark} | {fmt(r['auc'])} | {fmt(r['eer'])} |")
        lines += [
            "",
            f"At gamma = {self.gamma:.3f} ({self.threshold_source}): precision {fmt(self.precision)}, "
            f"recall {fmt(self.recall)}, accuracy {fmt(self.accuracy)}, F1 {fmt(self.f1)}.",
        ]
        return "\n".join(lines) + "\n"


def _fusion_features(normalised: dict[str, list[np.ndarray]], video_key: str) -> list[np.ndarray]:
    return [np.stack([a, v], axis=1).astype(np.float32)
            for a, v in zip(normalised["audio_frame"], normalised[video_key])]


def fit_joint(features: np.ndarray, labels: np.ndarray, *, seed: int = 0, epochs: int = 20,
              batch_size: int = 256, lr: float = 1e-3) -> JointFusionNet:
    """Train the joint model (Table 4) on per-frame ``[N, 2]`` scores with BCE (sec. 4.2.1)."""
    torch.manual_seed(seed)
    net = JointFusionNet(JointConfig(n_inputs=features.shape[1]))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    x = torch.from_numpy(features)
    y = torch.from_numpy(labels.astype(np.float32))
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for k in range(0, len(x), batch_size):
            idx = order[k : k + batch_size]
            if len(idx) < 2:
                continue  # batch norm needs two samples
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.eval()
    return net


@torch.inference_mode()
def _joint_probabilities(net: JointFusionNet, features: np.ndarray) -> np.ndarray:
    return torch.sigmoid(net(torch.from_numpy(features))).double().numpy()


def cross_fit_joint(features: list[np.ndarray], labels: list[np.ndarray], *, folds: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Joint-model probabilities for every video from a model that never saw that video.

    The videos are split into ``folds`` groups; each group is scored by a joint model trained
    on the other groups' frames and labels. Used when no labelled validation videos exist, so
    that supervised fusion never scores the frames it was fitted on.
    """
    n = len(features)
    folds = max(2, min(folds, n))
    group = np.arange(n) % folds
    out: list[np.ndarray | None] = [None] * n
    for g in range(folds):
        train = [i for i in range(n) if group[i] != g]
        net = fit_joint(np.concatenate([features[i] for i in train]), np.concatenate([labels[i] for i in train]), seed=seed)
        for i in range(n):
            if group[i] == g:
                out[i] = _joint_probabilities(net, features[i])
    return out


def _score_split(run: AERun, videos: list[FrameVideo], smooth: int, progress: bool, desc: str) -> dict:
    """Errors (averaged over ``smooth`` frames), floor scores and labels of every video in ``videos``."""
    rows: dict[str, list] = {"video": [], "labels": [], "fps": [], FLOOR: [], FLOOR_MEAN: []}
    use_audio, flow = run.audio_model is not None, run.flow
    for video in tqdm(videos, desc=desc, disable=not progress, leave=False):
        loaded = load_video(video, run.frame_size, keep_native=True, audio_rate=SPECTRAL_RATE if use_audio else None)
        errors = run.frame_errors(loaded)
        for key, value in errors.items():
            rows.setdefault(key, []).append(smooth_scores(value, smooth))
        rows["video"].append(video.video_id)
        rows["labels"].append(loaded.labels)
        rows["fps"].append(loaded.fps)
        rows[FLOOR].append(frame_difference_scores(loaded.native, reduce="max"))
        rows[FLOOR_MEAN].append(frame_difference_scores(loaded.native, reduce="mean"))
        if smooth > 1:
            rows.setdefault(FLOOR_SMOOTHED, []).append(smooth_scores(rows[FLOOR][-1], smooth))
        if flow is not None:
            rows.setdefault(FLOW, []).append(smooth_scores(flow.scores(loaded.native), smooth))
    return rows


def _anomaly_scores(rows: dict, run: AERun, video_key: str, val_rows: dict | None, seed: int) -> dict[str, list[np.ndarray]]:
    """Per-video min-max normalised errors (``1 - s_r``), plus the fusions for modality av."""
    keys = [k for k in rows if k not in _META]
    scores = {k: [minmax_normalize(v) for v in rows[k]] for k in keys}
    if FLOW in scores:  # the motion term: each video scorer's regularity averaged with the flow's
        for variant in ("video_frame", "video_patch", "video_motion"):
            if variant in scores:
                scores[f"{variant}_{FLOW}"] = [(v + f) / 2 for v, f in zip(scores[variant], scores[FLOW])]
    if run.audio_model is not None and run.video_model is not None:
        for variant in ("video_frame", "video_patch", "video_motion"):
            suffix = "" if variant == video_key else f"_{variant.split('_')[1]}"
            scores[f"fused_mean{suffix}"] = [(a + v) / 2 for a, v in zip(scores["audio_frame"], scores[variant])]
            features = _fusion_features(scores, variant)
            if val_rows is not None:
                val_scores = {k: [minmax_normalize(v) for v in val_rows[k]] for k in ("audio_frame", variant)}
                val_features = _fusion_features(val_scores, variant)
                net = fit_joint(np.concatenate(val_features), np.concatenate(val_rows["labels"]), seed=seed)
                joint = [_joint_probabilities(net, f) for f in features]
            else:
                joint = cross_fit_joint(features, rows["labels"], seed=seed)
            scores[f"joint{suffix}"] = joint
    return scores


def _primary(run: AERun, score: str) -> str:
    video_key = f"video_{score}"
    return {"v": video_key, "a": "audio_frame", "av": "joint"}[run.config.modality]


def _best_gamma(labels: np.ndarray, anomaly: np.ndarray) -> float:
    """The regularity threshold with the best F1 on labelled validation frames."""
    candidates = np.unique(anomaly)
    f1 = [threshold_metrics(labels, anomaly, t).f1 for t in candidates]
    return float(1.0 - candidates[int(np.argmax(f1))])


def evaluate_autoencoder(
    run_dir: Path | str,
    data_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    gamma: float | None = None,
    score: str | None = None,
    smooth: int | None = None,
    audio_dir: Path | str | None = None,
    plots: bool = True,
    progress: bool = True,
) -> DetectionEvaluation:
    """Score every test frame of ``data_dir`` with the run in ``run_dir`` and write the results.

    ``gamma`` is the regularity threshold (a frame is anomalous when ``s_r < gamma``); without
    it, gamma is chosen for the best F1 on labelled validation videos when the dataset has them,
    else paper Table 6's (0.92 video, 0.85 audio; 0.5 for the joint model's probability), and
    the source is stated. ``score`` overrides the run's scorer (``frame``, ``patch`` or
    ``motion``) and ``smooth`` its averaging window in frames.
    ``audio_dir`` defaults to the one the run was trained with.
    """
    started = time.perf_counter()
    run = AERun.load(run_dir)
    score = score or run.config.score
    if score not in SCORERS:
        raise ValueError(f"score must be one of {SCORERS}, got {score!r}")
    smooth = run.config.smooth if smooth is None else smooth
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1 frame, got {smooth}")
    if run.config.threads:
        torch.set_num_threads(run.config.threads)
    retain_freed_memory()
    audio_dir = audio_dir or (run.record.audio_dir if run.audio_model is not None else None)
    dataset = open_frame_dataset(data_dir, audio_dir=audio_dir, seed=run.config.seed)
    tests = dataset.split("test")
    if not tests:
        raise ValueError(f"{dataset.root}: no test videos to evaluate")
    unlabelled = [v.video_id for v in tests if not v.labelled]
    if unlabelled:
        raise ValueError(f"{dataset.root}: test videos {unlabelled[:3]} have no frame labels; add test_frame_labels.csv")
    vals = [v for v in dataset.split("val") if v.labelled]
    video_key = f"video_{score}"
    rows = _score_split(run, tests, smooth, progress, "scoring test videos")
    val_rows = _score_split(run, vals, smooth, progress, "scoring validation videos") if vals else None
    val_labels = np.concatenate(val_rows["labels"]) if val_rows else None
    if val_rows is not None and (val_labels.all() or not val_labels.any()):
        val_rows = None  # supervised choices need both classes
    scores = _anomaly_scores(rows, run, video_key, val_rows, run.config.seed)
    labels = np.concatenate(rows["labels"])
    if labels.all() or not labels.any():
        raise ValueError(f"{dataset.root}: the test frames are all {'anomalous' if labels.any() else 'normal'}; AUC is undefined")
    pooled = {k: np.concatenate(v) for k, v in scores.items()}
    scorers = {}
    for name, s in pooled.items():
        eer, _ = equal_error_rate(labels, s)
        scorers[name] = {"auc": roc_auc(labels, s), "eer": eer}
    primary = _primary(run, score)
    if run.video_model is not None and run.audio_model is None and run.record.stream:
        # What `avar watch` scores: centred windows, mapped through the run's normal calibration,
        # no per-video normalisation (so it needs no whole video).
        calibrated = np.concatenate([run.step_probabilities(load_video(v, run.frame_size).frames.reshape(
            len(y), -1).astype(np.float32), np.zeros((len(y), 0), np.float32))[:, 1]
            for v, y in zip(tests, rows["labels"])])
        eer, _ = equal_error_rate(labels, calibrated)
        scorers[CALIBRATED] = {"auc": roc_auc(labels, calibrated), "eer": eer}

    if gamma is not None:
        source = "given"
    elif val_rows is not None:
        val_scores = _anomaly_scores(val_rows, run, video_key, val_rows, run.config.seed)
        gamma = _best_gamma(val_labels, np.concatenate(val_scores[primary]))
        source = "validation videos (best F1)"
    elif run.config.modality == "av":
        gamma, source = JOINT_GAMMA, "joint model probability 0.5"
    else:
        gamma, source = PAPER_GAMMA[run.config.modality], "paper Table 6 (UCSD Ped2)"
    at = threshold_metrics(labels, pooled[primary], 1.0 - gamma)

    floor = FLOOR_SMOOTHED if FLOOR_SMOOTHED in scores else FLOOR  # like for like with the model's smoothing
    per_video = []
    for i, vid in enumerate(rows["video"]):
        y = rows["labels"][i]
        per_video.append({
            "video": vid, "frames": int(len(y)), "anomalous": int(y.sum()),
            "auc": roc_auc(y, scores[primary][i]) if 0 < y.sum() < len(y) else None,
            "floor_auc": roc_auc(y, scores[floor][i]) if 0 < y.sum() < len(y) else None,
        })
    out = Path(out_dir) if out_dir else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_paths = []
    if plots:
        for i, vid in enumerate(rows["video"]):
            curves = {f"model ({primary})": scores[primary][i], "floor (frame difference)": scores[floor][i]}
            path = out / "plots" / f"{vid.replace('/', '_')}.png"
            auc = per_video[i]["auc"]
            detail = f"AUC {auc:.3f}" if auc is not None else "every frame is one class, no per-video AUC"
            plot_frame_scores(curves, rows["labels"][i], path, threshold=1.0 - gamma, title=f"{vid}: {detail}")
            plot_paths.append(str(path))
        shown = dict.fromkeys([primary, "video_frame", FLOOR_SMOOTHED, FLOOR])  # ordered, no repeats
        roc = {f"{k} (AUC {scorers[k]['auc']:.3f})": roc_curve(labels, pooled[k])[:2] for k in shown if k in pooled}
        path = plot_roc(roc, out / "plots" / "roc.png", title=f"{labels.size} test frames of {len(tests)} videos, pooled")
        plot_paths.append(str(path))
    _write_frame_scores(out / "frame_scores.csv", rows, scores)
    train = {k: getattr(run.record, k) for k in ("train_seconds", "video_train_seconds", "audio_train_seconds",
                                                 "precision", "torch_threads", "video_params", "audio_params")}
    train["epochs"] = run.config.epochs
    report = DetectionEvaluation(
        run_dir=str(run_dir), data_dir=str(data_dir), modality=run.config.modality, score=primary,
        audio_pairing=dataset.audio_pairing if run.audio_model is not None else "none: video-only model",
        n_videos=len(tests), n_frames=int(labels.size), n_anomalous=int(labels.sum()),
        frame_auc=scorers[primary]["auc"], eer=scorers[primary]["eer"], gamma=float(gamma),
        threshold_source=source, threshold=float(1.0 - gamma), precision=at.precision, recall=at.recall,
        accuracy=at.accuracy, f1=at.f1, floor_auc=scorers[FLOOR]["auc"], floor_eer=scorers[FLOOR]["eer"],
        floor_mean_auc=scorers[FLOOR_MEAN]["auc"], smooth=smooth,
        floor_smoothed_auc=scorers[FLOOR_SMOOTHED]["auc"] if FLOOR_SMOOTHED in scorers else None, scorers=scorers, per_video=per_video,
        eval_seconds=round(time.perf_counter() - started, 2), plots=plot_paths, train=train,
    )
    write_json_atomic(out / "eval_frames.json", report.to_dict())
    (out / "eval_frames.md").write_text(report.to_markdown())
    return report


def _write_frame_scores(path: Path, rows: dict, scores: dict[str, list[np.ndarray]]) -> None:
    raw_keys = [k for k in rows if k not in _META]
    names = list(scores)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "frame", "anomalous", *(f"raw_{k}" for k in raw_keys), *names])
        for i, vid in enumerate(rows["video"]):
            for t in range(len(rows["labels"][i])):
                writer.writerow([vid, t, int(rows["labels"][i][t]),
                                 *(f"{rows[k][i][t]:.6g}" for k in raw_keys),
                                 *(f"{scores[k][i][t]:.6g}" for k in names)])


def evaluate(run_dir: Path | str, data: Path | str, *, split: str = "test", out_dir: Path | str | None = None,
             plots: bool = True, progress: bool = True):
    """The method table's entry (:mod:`avar.methods.table`): :func:`evaluate_autoencoder` on the
    test videos of a DATA_DIR (``split`` is always its test part)."""
    return evaluate_autoencoder(run_dir, data, out_dir, plots=plots, progress=progress)
