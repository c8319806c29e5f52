"""Events a run raises on cached clips: the threshold it stores (chosen on its validation clips
for a false-event rate) and the event-level figures ``avar evaluate`` reports, for every method."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from avar.features.cache import StepFeatures
from avar.metrics.events import (FALSE_EVENTS_PER_HOUR, EventConfig, ScoredClip, calibrate_threshold, event_figures,
                                 scored_steps)
from avar.training.run import FeatureRun


def score_clips(run: FeatureRun, clips: list[StepFeatures],
                intervals: dict[str, list[tuple[float, float]]] | None = None) -> list[ScoredClip]:
    """Each clip (as the run reads it, :meth:`FeatureRun.read`) scored step by step, with its
    known anomalous intervals in seconds by clip id where given (else an anomalous clip counts
    whole). A clip is anomalous when its label is not the run's normal class."""
    out = []
    for clip in clips:
        probabilities = run.step_probabilities(clip.video, clip.audio)
        duration = float(clip.times[-1] + run.step) if len(clip.times) else 0.0
        ends = np.minimum(clip.times + run.step, duration)
        steps = scored_steps(clip.times, ends, probabilities, run.classes, run.anomaly_score(probabilities))
        out.append(ScoredClip(steps, clip.label != run.normal_class, (intervals or {}).get(clip.clip_id), duration))
    return out


def run_event_config(run: FeatureRun) -> EventConfig:
    """The event settings a run stores (``thresholds`` in its ``config.json``), else the defaults."""
    return EventConfig(**(run.record.thresholds or {}))


def calibrate_events(run: FeatureRun, val: list[StepFeatures], rate: float = FALSE_EVENTS_PER_HOUR) -> dict:
    """``{"thresholds": ..., "event_calibration": ...}`` for the run's record: the event
    threshold chosen on ``val`` for at most ``rate`` false events per hour of normal footage
    (:func:`avar.metrics.events.calibrate_threshold`) and the record of that choice."""
    config, record = calibrate_threshold(score_clips(run, val), rate, run_event_config(run), run.normal_class)
    thresholds = {k: v for k, v in asdict(config).items() if k != "class_thresholds"}
    return {"thresholds": thresholds, "event_calibration": record}


def event_report(run: FeatureRun, clips: list[StepFeatures],
                 intervals: dict[str, list[tuple[float, float]]] | None = None) -> dict:
    """Event-level figures of the run's stored thresholds on ``clips`` (``avar evaluate``)."""
    return event_figures(score_clips(run, clips, intervals), run_event_config(run), run.normal_class)
