"""On small datasets, the head's clip prediction averaged with a pooled-feature linear classifier.

With a few clips per class a linear classifier on each clip's pooled features (mean, max and
mean change from step to step: :func:`~avar.methods.avarnet.stream_selection.pooled_features`)
is hard to beat: the head's clip score is the mean of its step scores, an anomaly fills part of
a clip, and a head of 0.5-1M parameters learns from a few dozen labels (issue 11, on the built-in
benchmark at 6 / 12 / 24 clips per class: the compact head alone 0.75 / 0.87 / 0.89, the
regression with its streams balanced 0.95 / 0.99 / 1.00, their average 0.98 / 1.00 / 1.00).
The robust recipe therefore averages them at a fixed weight (``TrainConfig.clip_blend``, 0.5):
a weight chosen on the validation split would hinge on a handful of clips (choosing it by
validation log-loss gave the regression alone at 24 clips per class and lost 0.03; see
docs/fusion.md). The regression is fitted on the clips the head's final fit saw.

Only the clip prediction is blended (``Run.clip_probabilities``: ``avar evaluate``, the clip
class of ``avar predict``); the per-step scores that ``predict``, ``watch`` and the events use
remain the head's. The regression is stored as plain tensors beside the head's weights, its
pooling in the run's ``config.json`` (``clip_blend.pooling``; runs saved before it was recorded
pooled mean and max).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avar.features.cache import StepFeatures
from avar.methods.avarnet.stream_selection import (LEGACY_POOLING, POOLING, pooled_design, pooled_features,
                                                   pooled_regression)

PREFIX = "clip_blend."
"""Name prefix of the regression's tensors in the run's weights file."""
_ABSENT = -30.0
"""Logit of a class the regression never saw (no labelled clip): probability ~0."""


@dataclass
class PooledLinear:
    """A multinomial logistic regression on standardised pooled features, each stream given an
    equal share (:func:`~avar.methods.avarnet.stream_selection.stream_balance`, folded into
    ``scale``), as arrays: ``softmax(((x - mean) / scale) @ coef.T + intercept)`` over the run's
    classes."""

    modality: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    """``[C, D]`` over the run's classes, in the run's order."""
    intercept: np.ndarray
    stats: tuple[str, ...] = POOLING
    """The pooled statistics the regression reads (:data:`~avar.methods.avarnet.stream_selection.POOLING`)."""

    @classmethod
    def fit(cls, clips: list[StepFeatures], classes: list[str], modality: str, seed: int = 0,
            stats: tuple[str, ...] = POOLING, motion_dim: int = 0) -> "PooledLinear":
        """Fit on ``clips`` (their video the run's visual side, its last ``motion_dim`` columns the
        motion stream, balanced as a stream of its own)."""
        x, balance = pooled_design(clips, modality, stats, motion_dim)
        model = pooled_regression(seed, balance).fit(x, [c.label for c in clips])
        scaler, regression = model[0], model[-1]
        seen = list(regression.classes_)
        coef, intercept = regression.coef_, regression.intercept_
        if len(seen) == 2:  # sklearn keeps one logit for two classes: softmax([-z/2, z/2]) = sigmoid(z)
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.hstack([-intercept / 2, intercept / 2])
        full_coef = np.zeros((len(classes), x.shape[1]))
        full_intercept = np.full(len(classes), _ABSENT)
        for row, label in enumerate(seen):
            full_coef[classes.index(label)], full_intercept[classes.index(label)] = coef[row], intercept[row]
        # ((x - mean) / scale) * balance = (x - mean) / (scale / balance): the balance is kept in the scale
        return cls(modality, scaler.mean_.copy(), scaler.scale_ / balance, full_coef, full_intercept, tuple(stats))

    def probabilities(self, video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Class probabilities ``[C]`` of one clip's raw (not normalised) features."""
        x = pooled_features(video, audio, self.modality, self.stats)
        z = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        z = np.exp(z - z.max())
        return z / z.sum()

    def to_tensors(self) -> dict:
        import torch

        return {PREFIX + k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float64))
                for k in ("mean", "scale", "coef", "intercept")}

    @classmethod
    def pop_tensors(cls, tensors: dict, modality: str, stats=LEGACY_POOLING) -> "PooledLinear | None":
        """The regression stored in a run's ``tensors`` (removed from the dict), or None;
        ``stats`` as recorded in the run."""
        names = [PREFIX + k for k in ("mean", "scale", "coef", "intercept")]
        if not all(n in tensors for n in names):
            return None
        mean, scale, coef, intercept = (tensors.pop(n).double().numpy() for n in names)
        return cls(modality, mean, scale, coef, intercept, tuple(stats))

