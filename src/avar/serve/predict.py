"""Explain media files second by second with a trained run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avar.features.cache import features_from_steps, write_json_atomic
from avar.media.decode import MediaError, decode_steps
from avar.report.plots import plot_score_curve
from avar.runs import load_run
from avar.training.run import FeatureRun


@dataclass
class StepRecord:
    """One time step of a file: ``time`` and ``end`` in seconds from the file's start."""

    time: float
    end: float
    predicted: str
    probabilities: dict[str, float]
    anomaly_score: float
    """``1 - P(normal)`` in [0, 1]."""


@dataclass
class Prediction:
    """Everything ``avar predict`` says about one file."""

    path: str
    clip_class: str
    clip_probabilities: dict[str, float]
    steps: list[StepRecord] = field(default_factory=list)
    audio_missing: bool = False
    plot: str | None = None

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "clip_class": self.clip_class,
            "clip_probabilities": self.clip_probabilities,
            "audio_missing": self.audio_missing,
            "plot": self.plot,
            "steps": [s.__dict__ for s in self.steps],
        }


def step_record(run: FeatureRun, time: float, end: float, probabilities: np.ndarray) -> StepRecord:
    """The record of one step scored by ``run`` (``probabilities [C]`` in ``run.classes`` order)."""
    return StepRecord(
        time=round(float(time), 3),
        end=round(float(end), 3),
        predicted=run.classes[int(probabilities.argmax())],
        probabilities={c: round(float(x), 5) for c, x in zip(run.classes, probabilities)},
        anomaly_score=round(float(run.anomaly_score(probabilities)), 5),
    )


class Predictor:
    """A run of any feature-scoring method plus the backbones it was trained on, loaded once
    for many files."""

    def __init__(self, run_dir: Path | str, device: str = "cpu", runtime: str = "torch"):
        self.run = load_run(run_dir)
        self.video, self.audio = self.run.build_extractors(device, runtime)

    def predict(self, path: Path | str) -> Prediction:
        steps = decode_steps(path, self.run.step, getattr(self.video, "input_size", None))
        video, audio = features_from_steps(steps, self.video, self.audio)
        step_p, clip_p = self.run.probabilities(video, audio)
        classes = self.run.classes
        return Prediction(
            path=str(path),
            clip_class=classes[int(clip_p.argmax())],
            clip_probabilities={c: round(float(x), 5) for c, x in zip(classes, clip_p)},
            steps=[step_record(self.run, t, min(t + steps.step, steps.duration), p) for t, p in zip(steps.times, step_p)],
            audio_missing=steps.audio_missing,
        )


def predict_files(
    run_dir: Path | str,
    paths: list[Path | str],
    out_dir: Path | str | None = None,
    *,
    intervals: dict[str, tuple[float, float]] | None = None,
    progress: bool = True,
    runtime: str = "torch",
) -> tuple[list[Prediction], list[dict]]:
    """Predict every file; a file that fails is reported in the second list, the rest go on.

    With ``out_dir``, each file gets ``<stem>.jsonl`` (one step record per line) and
    ``<stem>.png`` (the anomaly-score curve with the top classes), plus ``predictions.json``.
    ``intervals`` maps a path to a known anomaly interval to shade on its plot. ``runtime``
    says how the backbones run (``avar.features.runtime``).
    """
    predictor = Predictor(run_dir, runtime=runtime)
    out = Path(out_dir) if out_dir else None
    predictions, failures = [], []
    for path in tqdm(paths, desc="predict", unit="file", disable=not progress or len(paths) < 2):
        try:
            pred = predictor.predict(path)
        except MediaError as exc:
            failures.append({"path": str(path), "reason": exc.reason})
            continue
        if out is not None:
            stem = Path(path).stem
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{stem}.jsonl").write_text("".join(json.dumps(s.__dict__) + "\n" for s in pred.steps))
            times = np.array([s.time for s in pred.steps])
            anomalies = [c for c in predictor.run.classes if c != "normal"]
            curves = {c: np.array([s.probabilities[c] for s in pred.steps]) for c in anomalies}
            pred.plot = str(plot_score_curve(
                times,
                np.array([s.anomaly_score for s in pred.steps]),
                out / f"{stem}.png",
                class_probs=curves,
                interval=(intervals or {}).get(str(path)),
                title=f"{Path(path).name}: {pred.clip_class}",
            ))
        predictions.append(pred)
    if out is not None:
        write_json_atomic(out / "predictions.json", {
            "predictions": [p.to_dict() for p in predictions],
            "failures": failures,
        })
    return predictions, failures
