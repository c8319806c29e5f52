"""Score a trained run on one split of a feature cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from avar.features.cache import FeatureSet
from avar.files import write_json_atomic
from avar.metrics.classification import ClassificationReport, classification_report
from avar.plots import plot_confusion
from avar.methods.heads import has_branches
from avar.methods.avarnet.train import fusion_warning
from avar.methods.avarnet.run import Run
from avar.training.events import event_report

log = logging.getLogger(__name__)


def check_compatible(run: Run, features: FeatureSet) -> None:
    """Refuse features made by other extractors or step than the run was trained on."""
    for modality in ("video", "audio", "motion"):
        want, have = run.extractors.get(modality), features.manifest.get(modality)
        if want is None:
            continue
        if have is None:
            raise ValueError(f"{features.root}: no {modality} stream, and the run reads one ({want['name']}); "
                             f"extract with --{modality} {want['name']}")
        if (want["name"], want["version"]) != (have["name"], have["version"]):
            raise ValueError(
                f"{features.root}: {modality} features are {have['name']} v{have['version']} but the run "
                f"was trained on {want['name']} v{want['version']}; extract with --{modality} {want['name']}"
            )
    if abs(features.manifest["step"] - run.step) > 1e-9:
        raise ValueError(f"{features.root}: step {features.manifest['step']} s, run trained on {run.step} s")


def evaluate_run(
    run_dir: Path | str, features_dir: Path | str, split: str = "test", out_dir: Path | str | None = None
) -> ClassificationReport:
    """Clip-level metrics of ``run_dir`` on ``split``; writes JSON, Markdown and the confusion PNG."""
    run = Run.load(run_dir)
    features = FeatureSet.open(features_dir)
    check_compatible(run, features)
    clips = run.read(features.split(split))
    if not clips:
        raise ValueError(f"{features.root}: no clips in split '{split}'")
    unknown = sorted({c.label for c in clips} - set(run.classes))
    if unknown:
        raise ValueError(f"{features.root}: classes {unknown} in '{split}' were not in training: {run.classes}")
    probs = np.stack([run.clip_probabilities(c.video, c.audio) for c in clips])
    y = np.array([run.classes.index(c.label) for c in clips])
    report = classification_report(y, probs, run.classes)
    if has_branches(run.config):
        report.branch_accuracy = {"av": report.accuracy} | {
            modality: float(np.mean([run.clip_probabilities(c.video, c.audio, drop).argmax() == label
                                     for c, label in zip(clips, y)]))
            for modality, drop in (("a", "video"), ("v", "audio"))}
        report.fusion_warning = fusion_warning(report.branch_accuracy, f"{run_dir} on {features.root} '{split}'")
        if report.fusion_warning:
            log.warning(report.fusion_warning)
    report.events = event_report(run, clips)
    out = Path(out_dir) if out_dir else Path(run_dir)
    write_json_atomic(out / f"eval_{split}.json", report.to_dict())
    (out / f"eval_{split}.md").write_text(report.to_markdown())
    plot_confusion(np.array(report.confusion), run.classes, out / f"confusion_{split}.png", title=f"{split} confusion")
    return report


def evaluate(run_dir: Path | str, data: Path | str, *, split: str = "test", out_dir: Path | str | None = None,
             plots: bool = True, progress: bool = True) -> ClassificationReport:
    """The method table's entry (:mod:`avar.methods.table`): :func:`evaluate_run`."""
    return evaluate_run(run_dir, data, split, out_dir)
