"""The weakly supervised run: a step scorer trained from video labels (AVACA, or a head
under the MIL losses), with its feature normalisation.

A run directory holds ``model.safetensors`` (weights and the feature normalisation,
``norm.*``), ``config.json`` (``"method": "avaca"`` or ``"mil"``, the model config, the
training settings) and ``history.json``; no pickle anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avar.methods.avaca import AVACA, DEFAULT_ALPHA, AVACAConfig, top_k_mask
from avar.methods.avaca.mil import MILHead
from avar.methods.heads import config_from_dict, head_type
from avar.training.run import (CONFIG_FILE, HISTORY_FILE, MODEL_FILE, WEIGHTS_KEY, FeatureRun, Normalization,
                               TrainingRecord, check_extractors, check_window, load_state, load_weights,
                               read_run_config, reading_config, save_run, typed)


WEAK_METHODS = ("avaca", "mil")
"""``avaca``: the cross-attention model; ``mil``: a ``HEADS`` head trained with the same losses."""


NORMAL = "normal"
"""The one label that marks a clip as normal; every other label is an anomaly."""


WINDOW = 32
"""Steps per scoring window of a weak run on a file or stream (``seq_len``): long enough for
the cross-attention to see a whole event of the synthetic benchmark and its surroundings;
runs saved before windows were recorded get this."""


def top_k_video_scores(scores: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """A video's score: the mean of its top-``k`` step scores (what the MIL loss reads)."""
    chosen = top_k_mask(scores, lengths, alpha)
    return torch.where(chosen, scores, 0.0).sum(1) / chosen.sum(1)


WEAK_CLASSES = [NORMAL, "anomaly"]
"""A weak run's two outputs: its step score ``s`` is ``P(anomaly)``, ``1 - s`` ``P(normal)``."""


@dataclass
class WeakRecord(TrainingRecord):
    """What training recorded about a weak run (:class:`TrainingRecord` and the fields below)."""

    splits: str | None = None
    """``cache``: the cache's own splits; ``given``: a split assignment passed to training."""
    n_train: dict | None = None
    """Training videos: ``{"normal": n, "anomalous": n}``."""

    @classmethod
    def train_config(cls, values: dict, path: Path | str):
        from avar.methods.avaca.train import WeakTrainConfig

        return typed(WeakTrainConfig, values, path, "train config")


@dataclass
class WeakRun(FeatureRun):
    """A weakly trained step scorer with everything needed to apply it to new features."""

    model: torch.nn.Module
    method: str
    model_config: object
    norm: Normalization
    step: float
    extractors: dict
    """``{"video": {name, version, dim, weights}, "audio": {...}}`` as in the feature cache."""
    alpha: float = DEFAULT_ALPHA
    seq_len: int = WINDOW
    record: WeakRecord = field(default_factory=WeakRecord)

    learning = "weak"
    classes = WEAK_CLASSES

    def save(self, root: Path | str, *, history: list[dict] | None = None, keep: bool = False) -> Path:
        """Write the run directory whole (:func:`avar.training.run.save_run`); ``history``
        goes to ``history.json``, ``keep`` keeps the other files of a run re-saved in place."""
        tensors = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()} | self.norm.to_tensors()
        kind = "avaca" if self.method == "avaca" else head_type(self.model_config)
        config = {
            "method": self.method,
            "learning": self.learning,
            "model_type": kind,
            "model": self.model_config.to_dict(),
            "step": self.step,
            "alpha": self.alpha,
            "seq_len": self.seq_len,
            "extractors": self.extractors,
            **self.record.to_dict(),
        }
        return save_run(root, weights={MODEL_FILE: tensors}, config=config,
                        files=None if history is None else {HISTORY_FILE: history}, keep=keep)

    @classmethod
    def load(cls, root: Path | str) -> "WeakRun":
        root = Path(root)
        meta = read_run_config(root)
        method = meta.pop("method", None)
        if method not in WEAK_METHODS:
            raise ValueError(f"{root}: a '{method}' run, not a weakly supervised one ({', '.join(WEAK_METHODS)})")
        meta.pop("learning", None)
        with reading_config(root, "weakly supervised run"):
            kind = meta.pop("model_type")
            if method == "avaca":
                config = AVACAConfig.from_dict(meta.pop("model"))
                model = AVACA(config)
            else:
                config = config_from_dict(kind, meta.pop("model"))
                model = MILHead(config)
            step, extractors = meta.pop("step"), meta.pop("extractors")
            alpha, seq_len = meta.pop("alpha", DEFAULT_ALPHA), meta.pop("seq_len", WINDOW)
        check_window(root, seq_len, step)
        check_extractors(root, extractors)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"{root / CONFIG_FILE}: alpha must be a finite number > 0, got {alpha!r}; retrain "
                             "the run or restore the run directory from a backup")
        tensors = load_weights(root, MODEL_FILE, meta.pop(WEIGHTS_KEY, None))
        with reading_config(root, "weakly supervised run"):
            record = WeakRecord.from_dict(meta, root / CONFIG_FILE)
        norm = Normalization.pop_tensors(tensors, root / MODEL_FILE, config.video_dim, config.audio_dim)
        load_state(model, tensors, root / MODEL_FILE)
        run = cls(model=model, method=method, model_config=config, norm=norm, step=step, extractors=extractors,
                  alpha=alpha, seq_len=seq_len, record=record)
        run.root = root
        return run

    @torch.inference_mode()
    def step_scores(self, video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Anomaly score in [0, 1] of every step of one clip, ``float [T]``, from the whole clip."""
        self.model.eval()
        self.check_features(video, audio)
        v, a = self.norm.apply(video, audio)
        out = self.model(torch.from_numpy(v)[None], torch.from_numpy(a)[None], torch.ones(1, len(v), dtype=torch.bool))
        return self.check_finite(out.scores[0].double().numpy())

    @torch.inference_mode()
    def window_probabilities(self, video: np.ndarray, audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.model.eval()
        scores = self.model(torch.from_numpy(video), torch.from_numpy(audio), torch.from_numpy(mask)).scores
        scores = scores.double().numpy()
        return np.stack([1.0 - scores, scores], -1)

    def probabilities(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per step, and the clip's ``[P(normal), P(anomaly)]``: its top-``k`` step scores' mean
        (the score the MIL loss trains)."""
        steps = self.step_probabilities(video, audio)
        scores = torch.from_numpy(steps[:, 1])
        score = float(top_k_video_scores(scores[None], torch.tensor([len(scores)]), self.alpha)[0])
        return steps, np.array([1.0 - score, score])

    def clip_probabilities(self, video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return self.probabilities(video, audio)[1]
