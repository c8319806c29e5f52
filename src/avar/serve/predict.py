"""Explain media files second by second with a trained run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avar.features.cache import features_from_steps, motion_sampling
from avar.files import atomic_path, safe_file_name, write_atomic, write_json_atomic
from avar.media.decode import MediaError, decode_steps
from avar.plots import plot_score_curve
from avar.metrics.events import detect_events
from avar.runs import load_run
from avar.training.events import run_event_config
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
    video_missing: bool = False
    plot: str | None = None
    records: str | None = None
    """With ``--out``: the file of its step records (``<name>.jsonl``)."""
    events: list[dict] = field(default_factory=list)
    """Events at the run's stored thresholds (``start``, ``end``, ``label``, ``peak_score``,
    ``peak_time``), as ``avar watch`` would open them on this file."""

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "clip_class": self.clip_class,
            "clip_probabilities": self.clip_probabilities,
            "audio_missing": self.audio_missing,
            "video_missing": self.video_missing,
            "plot": self.plot,
            "records": self.records,
            "events": self.events,
            "steps": [s.__dict__ for s in self.steps],
        }


def step_record(run: FeatureRun, time: float, end: float, probabilities: np.ndarray) -> StepRecord:
    """The record of one step scored by ``run`` (``probabilities [C]`` in ``run.classes`` order);
    non-finite probabilities are refused, so every record is valid JSON."""
    run.check_finite(probabilities)
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
        self.video, self.audio, self.motion = self.run.build_extractors(device, runtime)

    def predict(self, path: Path | str) -> Prediction:
        steps = decode_steps(path, self.run.step, getattr(self.video, "input_size", None), motion_sampling(self.motion))
        video, audio, motion = features_from_steps(steps, self.video, self.audio, self.motion)
        if not all(np.isfinite(x).all() for x in (video, audio, motion) if x is not None):
            raise MediaError(path, "the backbones gave NaN or infinite features for this file")
        step_p, clip_p = self.run.probabilities(self.run.visual(video, motion), audio)
        self.run.check_finite(step_p)
        self.run.check_finite(clip_p)
        classes = self.run.classes
        records = [step_record(self.run, t, min(t + steps.step, steps.duration), p) for t, p in zip(steps.times, step_p)]
        events = detect_events(records, run_event_config(self.run), str(path), self.run.normal_class)
        return Prediction(
            path=str(path),
            clip_class=classes[int(clip_p.argmax())],
            clip_probabilities={c: round(float(x), 5) for c, x in zip(classes, clip_p)},
            steps=records,
            audio_missing=steps.audio_missing,
            video_missing=steps.video_missing,
            events=[{k: getattr(e, k) for k in ("start", "end", "label", "peak_score", "peak_time")} for e in events],
        )


OUTPUT_NAME_CHARS = 80
"""Longest file-name stem of a file's outputs under ``--out``."""


def output_names(paths: list[Path | str]) -> list[str]:
    """A distinct file-name stem per input for its outputs (``<name>.jsonl``, ``<name>.png``):
    the input's stem as :func:`~avar.files.safe_file_name` reduces it, so no name
    can point outside the output directory; where stems coincide (``a/clip.mp4``,
    ``b/clip.mp4``; case-insensitively, for case-insensitive file systems) each gets a digest
    of its path, so the names depend on the inputs only, never on their order."""
    stems = [safe_file_name(Path(path).stem, OUTPUT_NAME_CHARS) for path in paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    names = [f"{stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:10]}" if counts[stem.lower()] > 1 else stem
             for stem, path in zip(stems, paths)]
    taken: dict[str, int] = {}
    for i, name in enumerate(names):  # the same path given twice
        key = name.lower()
        taken[key] = taken.get(key, 0) + 1
        if taken[key] > 1:
            names[i] = f"{name}-{taken[key]}"
    return names


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

    With ``out_dir``, each file gets ``<name>.jsonl`` (one step record per line) and
    ``<name>.png`` (the anomaly-score curve with the top classes), plus ``predictions.json``;
    ``<name>`` is the file's stem, made unique (:func:`output_names`), and every prediction
    records its two files. Nothing is written outside ``out_dir``.
    ``intervals`` maps a path to a known anomaly interval to shade on its plot. ``runtime``
    says how the backbones run (``avar.features.runtime``).
    """
    predictor = Predictor(run_dir, runtime=runtime)
    out = Path(out_dir) if out_dir else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"{out}: --out is an existing file; give a directory for the predictions")
    predictions, failures = [], []
    names = output_names(paths)
    for path, name in zip(tqdm(paths, desc="predict", unit="file", disable=not progress or len(paths) < 2), names):
        try:
            pred = predictor.predict(path)
        except MediaError as exc:
            failures.append({"path": str(path), "reason": exc.reason})
            continue
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            # Written by renames, so a link already at an output's name is replaced, never followed.
            records = out / f"{name}.jsonl"
            write_atomic(records, "".join(json.dumps(s.__dict__, allow_nan=False) + "\n" for s in pred.steps).encode())
            pred.records = str(records)
            times = np.array([s.time for s in pred.steps])
            anomalies = [c for c in predictor.run.classes if c != "normal"]
            curves = {c: np.array([s.probabilities[c] for s in pred.steps]) for c in anomalies}
            with atomic_path(out / f"{name}.png", suffix=".png") as drawn:
                plot_score_curve(
                    times,
                    np.array([s.anomaly_score for s in pred.steps]),
                    drawn,
                    class_probs=curves,
                    interval=(intervals or {}).get(str(path)),
                    # a '$' in a file name would start matplotlib's math text
                    title=f"{Path(path).name}: {pred.clip_class}".replace("$", r"\$"),
                )
            pred.plot = str(out / f"{name}.png")
        predictions.append(pred)
    if out is not None:
        write_json_atomic(out / "predictions.json", {
            "predictions": [p.to_dict() for p in predictions],
            "failures": failures,
        })
    return predictions, failures
