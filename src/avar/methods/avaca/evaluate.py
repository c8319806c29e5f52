"""Frame-level evaluation of a weakly supervised run (AVACA or a MIL head) on a feature cache.

Every clip of the split is scored step by step from its whole length; the step scores are
expanded to frames (:func:`~avar.metrics.detection.expand_to_frames`) and compared with the
clip's frame truth (:mod:`avar.datasets.annotations`), pooling the frames of all clips:

* ``frame_auc``: ROC AUC over every frame;
* ``frame_ap``: step-wise average precision (scikit-learn's ``average_precision_score``);
* ``frame_ap_xd``: the XD-Violence protocol, trapezoidal area under the precision-recall curve;
* ``frame_auc_anomalous``: ROC AUC over the frames of anomalous videos only (how well the
  interval is found inside a video known to hold one);
* ``video_auc``: video-level ROC AUC of the mean top-``k`` score;
* per class (that class's videos plus every normal video) and, for ``avar synth`` data, per
  class group (audio-only, video-only, joint).

Writes ``eval_weak_<split>.json`` / ``.md`` and, unless turned off, a score plot per
anomalous video (truth shaded) into ``weak_plots_<split>/``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np
import torch

from avar.datasets.annotations import FrameTruth, clip_truths, find_synth_metadata
from avar.methods.avarnet.evaluate import check_compatible
from avar.features.cache import FeatureSet
from avar.files import write_json_atomic
from avar.metrics.classification import _json_ready, _table, roc_auc
from avar.metrics.events import event_figures, event_rows
from avar.training.events import run_event_config, score_clips
from avar.metrics.detection import average_precision, expand_to_frames, xd_average_precision
from avar.plots import plot_frame_scores
from avar.methods.avaca.run import NORMAL, WeakRun, top_k_video_scores


@dataclass
class ClipFrames:
    """One evaluated clip: its per-frame scores and truth."""

    clip_id: str
    label: str
    anomalous: bool
    scores: np.ndarray
    """``float [F]`` anomaly score of every frame."""
    truth: np.ndarray
    """``bool [F]`` True on anomalous frames."""
    video_score: float
    has_truth: bool
    """False when no frame truth was found and every frame took the video label."""


def clip_frames(step_scores: np.ndarray, step_s: float, truth: FrameTruth | None, anomalous: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(frame scores, frame labels)`` of one clip.

    With a truth the clip is cut into frames at its ``fps`` (``step_s * fps`` frames per step,
    16 for XD-Violence snippets); without one every step is one "frame" carrying the video label.
    """
    if truth is None:
        return np.asarray(step_scores, np.float64), np.full(len(step_scores), anomalous)
    frames = expand_to_frames(step_scores, step_s * truth.fps)
    return frames, truth.labels(len(frames))


def pooled_metrics(clips: list[ClipFrames]) -> dict[str, float | int | None]:
    """Frame AUC, AP (both ways), AUC on anomalous videos only, video AUC, counts."""
    scores = np.concatenate([c.scores for c in clips])
    truth = np.concatenate([c.truth for c in clips])
    out: dict[str, float | int | None] = {
        "n_videos": len(clips),
        "n_anomalous_videos": sum(c.anomalous for c in clips),
        "n_frames": int(truth.size),
        "n_anomalous_frames": int(truth.sum()),
        "frame_auc": None, "frame_ap": None, "frame_ap_xd": None, "frame_auc_anomalous": None, "video_auc": None,
    }
    if 0 < truth.sum() < truth.size:
        out["frame_auc"] = roc_auc(truth, scores)
    if truth.sum() > 0:
        out["frame_ap"] = average_precision(truth, scores)
        out["frame_ap_xd"] = xd_average_precision(truth, scores)
    inside = [c for c in clips if c.anomalous]
    if inside:
        s_in = np.concatenate([c.scores for c in inside])
        t_in = np.concatenate([c.truth for c in inside])
        if 0 < t_in.sum() < t_in.size:
            out["frame_auc_anomalous"] = roc_auc(t_in, s_in)
    videos = np.array([c.anomalous for c in clips])
    if 0 < videos.sum() < videos.size:
        out["video_auc"] = roc_auc(videos, np.array([c.video_score for c in clips]))
    return out


@dataclass
class WeakDetectionReport:
    """Frame-level results of one weak run on one split."""

    run_dir: str
    features_dir: str
    method: str
    model: dict
    split: str
    truth: str
    """Where the frame truth came from, and how many clips had none."""
    frame_auc: float | None
    frame_ap: float | None
    """Step-wise average precision (``sklearn.metrics.average_precision_score``)."""
    frame_ap_xd: float | None
    """XD-Violence protocol: ``auc(recall, precision)`` on ``precision_recall_curve``."""
    frame_auc_anomalous: float | None
    video_auc: float | None
    n_videos: int
    n_anomalous_videos: int
    n_frames: int
    n_anomalous_frames: int
    per_class: dict[str, dict] = field(default_factory=dict)
    """Class -> metrics over that class's videos plus every normal video."""
    per_group: dict[str, dict] = field(default_factory=dict)
    """Synthetic class group (audio_only, video_only, joint) -> metrics, likewise."""
    events: dict | None = None
    """Event-level figures of the run's stored thresholds (:func:`avar.metrics.events.event_figures`)."""

    def to_dict(self) -> dict:
        return _json_ready(asdict(self))

    def to_markdown(self) -> str:
        def fmt(v):
            return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

        lines = [f"Weakly supervised run `{self.run_dir}` ({self.method}) on split `{self.split}`: "
                 f"{self.n_videos} videos ({self.n_anomalous_videos} anomalous), {self.n_frames} frames "
                 f"({self.n_anomalous_frames} anomalous). Truth: {self.truth}.", ""]
        keys = ("frame_auc", "frame_ap", "frame_ap_xd", "frame_auc_anomalous", "video_auc")
        lines += _table(["metric", "value"], [[k, fmt(getattr(self, k))] for k in keys]
                        + [list(row) for row in (event_rows(self.events) if self.events else [])])
        for title, table in (("class group", self.per_group), ("class", self.per_class)):
            if table:
                lines += ["", *_table([title, "videos", *keys], [
                    [name, str(m["n_videos"]), *(fmt(m[k]) for k in keys)] for name, m in table.items()])]
        return "\n".join(lines) + "\n"


def _subset(clips: list[ClipFrames], labels: set[str]) -> dict:
    return pooled_metrics([c for c in clips if c.label in labels or not c.anomalous])


def evaluate_weak(
    run_dir: Path | str,
    features_dir: Path | str,
    split: str = "test",
    out_dir: Path | str | None = None,
    *,
    annotations: Path | str | None = None,
    splits: dict[str, str] | None = None,
    plots: bool = True,
    max_plots: int = 30,
    write: bool = True,
) -> WeakDetectionReport:
    """Frame-level metrics of a weak run on ``split`` of ``features_dir`` (see module docstring).

    ``annotations`` is a frame-truth file for caches that carry none (see
    :mod:`avar.datasets.annotations`); ``splits`` (clip id -> split) overrides the cache's split.
    ``write`` saves the report (and, with ``plots``, up to ``max_plots`` score plots of
    anomalous clips, spread over the classes) into ``out_dir`` (default ``run_dir``).
    """
    run = WeakRun.load(run_dir)
    features = FeatureSet.open(features_dir)
    check_compatible(run, features)
    records = [dict(c, split=splits.get(c["clip_id"], "unused")) if splits else c for c in features.clips]
    records = [c for c in records if c["split"] == split]
    if not records:
        raise ValueError(f"{features.root}: no clips in split '{split}'")
    truths = clip_truths(records, annotations)
    clips: list[ClipFrames] = []
    scored = []
    for record in records:
        data = run.read([features.load(record)])[0]
        steps = run.step_scores(data.video, data.audio)
        anomalous = data.label != NORMAL
        truth = truths[record["clip_id"]]
        if truth is None and not anomalous:
            truth = FrameTruth(1.0 / run.step)
        scores, labels = clip_frames(steps, run.step, truth, anomalous)
        video_score = float(top_k_video_scores(torch.from_numpy(steps)[None], torch.tensor([len(steps)]), run.alpha)[0])
        clips.append(ClipFrames(record["clip_id"], data.label, anomalous, scores, labels, video_score, truth is not None))
        # Events are scored as `avar watch` raises them (centred windows), not from the whole-clip scores above.
        known = None if truth is None else [(s / truth.fps, e / truth.fps) for s, e in truth.ranges]
        scored += score_clips(run, [data], {data.clip_id: known} if known else None)
    missing = sum(not c.has_truth for c in clips)
    truth_note = (f"frame ranges for all {len(clips)} clips" if not missing else
                  f"frame ranges for {len(clips) - missing} clips; {missing} anomalous clips without ranges "
                  f"count every step as anomalous (video label)")
    pooled = pooled_metrics(clips)
    per_class = {label: _subset(clips, {label}) for label in sorted({c.label for c in clips if c.anomalous})}
    per_group = {}
    metadata = find_synth_metadata(records)
    if metadata is not None:
        groups = json.loads(metadata.read_text()).get("groups", {})
        for group, labels in groups.items():
            if group != NORMAL and any(c.label in labels for c in clips):
                per_group[group] = _subset(clips, set(labels))
    meta = json.loads((Path(run_dir) / "config.json").read_text())
    report = WeakDetectionReport(
        run_dir=str(run_dir), features_dir=str(features_dir), method=run.method, model=meta.get("model", {}),
        split=split, truth=truth_note, per_class=per_class, per_group=per_group,
        **{k: pooled[k] for k in ("frame_auc", "frame_ap", "frame_ap_xd", "frame_auc_anomalous", "video_auc",
                                  "n_videos", "n_anomalous_videos", "n_frames", "n_anomalous_frames")},
        events=event_figures(scored, run_event_config(run), run.normal_class),
    )
    if write:
        out = Path(out_dir) if out_dir else Path(run_dir)
        write_json_atomic(out / f"eval_weak_{split}.json", report.to_dict())
        (out / f"eval_weak_{split}.md").write_text(report.to_markdown())
        if plots:
            shown = [c for c in clips if c.anomalous and c.has_truth]
            # Round-robin over the classes, so a capped set still shows every class.
            by_class = [[c for c in shown if c.label == label] for label in sorted({c.label for c in shown})]
            ordered = [c for row in zip_longest(*by_class) for c in row if c is not None]
            for c in ordered[:max_plots]:
                plot_frame_scores({"anomaly score": c.scores}, c.truth, out / f"weak_plots_{split}" / f"{c.clip_id}.png",
                                  title=f"{c.clip_id} ({c.label})")
    return report


def evaluate(run_dir: Path | str, data: Path | str, *, split: str = "test", out_dir: Path | str | None = None,
             plots: bool = True, progress: bool = True):
    """The method table's entry (:mod:`avar.methods.table`): :func:`evaluate_weak`."""
    return evaluate_weak(run_dir, data, split, out_dir, plots=plots)
