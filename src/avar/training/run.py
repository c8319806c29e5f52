"""The run format every method shares, and the one scoring interface of a trained run.

A run directory holds no pickle anywhere::

    RUN_DIR/model.safetensors    weights + the feature normalisation (``norm.*``)
    RUN_DIR/config.json          method, learning type, model config, sequence length, step,
                                 extractors (or frame inputs), thresholds, training args
    RUN_DIR/labels.json          class names in output order (supervised runs)
    RUN_DIR/history.json         per-epoch losses and metrics

Each method's run class lives with the method (``avar.methods.<method>.run``); ``avar.runs``
loads any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from avar.training.sequences import centred_start, pad_windows

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"


_NORM_FIELDS = ("video_mean", "video_std", "audio_mean", "audio_std")


@dataclass
class Normalization:
    """Per-dimension mean and std of the training steps, one pair per modality."""

    video_mean: np.ndarray
    video_std: np.ndarray
    audio_mean: np.ndarray
    audio_std: np.ndarray

    @classmethod
    def fit(cls, videos: list[np.ndarray], audios: list[np.ndarray]) -> "Normalization":
        v, a = np.concatenate(videos), np.concatenate(audios)
        # The floor keeps constant dimensions (e.g. a zeroed modality) at zero, not inf.
        return cls(v.mean(0), np.maximum(v.std(0), 1e-4), a.mean(0), np.maximum(a.std(0), 1e-4))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The statistics as ``norm.<name>`` float32 tensors, saved beside a model's weights."""
        return {f"norm.{n}": torch.from_numpy(np.ascontiguousarray(getattr(self, n), np.float32)) for n in _NORM_FIELDS}

    @classmethod
    def pop_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Normalization":
        """Take the ``norm.*`` entries out of ``tensors`` (leaving the model's weights)."""
        return cls(*(tensors.pop(f"norm.{n}").numpy() for n in _NORM_FIELDS))

    def apply(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            ((video - self.video_mean) / self.video_std).astype(np.float32),
            ((audio - self.audio_mean) / self.audio_std).astype(np.float32),
        )


class FeatureRun:
    """The one scoring interface every trained run has: the supervised heads (``avar.methods.avarnet.run.Run``), the
    weakly supervised models (``avar.methods.avaca.run.WeakRun``) and the visual autoencoder
    (``avar.methods.autoencoder.run.AERun``, whose per-step "features" are gray frames).
    ``avar.runs.load_run`` loads any of them.

    Attributes every run has: ``classes`` (output order; weak and unsupervised runs' are
    ``["normal", "anomaly"]``), ``norm`` (:class:`Normalization`), ``step`` (seconds per step),
    ``seq_len`` (steps per scoring window), ``extractors`` (``{"video": {name, version, dim,
    weights}, "audio": {...}}`` as in the feature cache) and ``extra`` (training record).
    Subclasses give :meth:`window_probabilities` and :meth:`clip_probabilities`; per-step
    scores are cut into windows here, once, the same way for ``avar predict`` and ``avar watch``
    (:func:`avar.training.sequences.centred_start`).
    """

    method: str
    """The run's method, as in its ``config.json``."""
    learning: str
    """'supervised', 'weak' (video-level labels) or 'unsupervised'."""
    window_batch = 256
    """Windows scored at once by :meth:`step_probabilities` (bounds its memory on long clips)."""

    def window_probabilities(self, video: np.ndarray, audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, L, C]`` of every step of ``N`` windows of normalised
        features ``video [N, L, dv]``, ``audio [N, L, da]``, ``mask [N, L]`` (True on real steps)."""
        raise NotImplementedError

    def clip_probabilities(self, video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Class probabilities ``[C]`` of one whole clip from its raw ``[T, d]`` features."""
        raise NotImplementedError

    def probabilities(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both at once: per step ``[T, C]`` (:meth:`step_probabilities`) and clip ``[C]``;
        runs whose clip score is made of their step scores compute the steps once."""
        return self.step_probabilities(video, audio), self.clip_probabilities(video, audio)

    def normalise(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``[T, d]`` features as the model reads them (the training split's statistics)."""
        return self.norm.apply(video, audio)

    def centred_windows(self, video: np.ndarray, audio: np.ndarray) -> Iterator[tuple]:
        """The window centred on every step of one clip's ``[T, d]`` features, in batches of
        ``window_batch``: ``(video [N, L, dv], audio [N, L, da], mask [N, L], at [N])``, ``at``
        being each scored step's position in its window."""
        n, L = len(video), self.seq_len
        for lo in range(0, n, self.window_batch):
            steps = range(lo, min(n, lo + self.window_batch))
            spans = [(start, min(n, start + L)) for start in (centred_start(t, n, L) for t in steps)]
            (vw, aw), mask = pad_windows([video, audio], spans, L)
            yield vw, aw, mask, np.array([t - start for t, (start, _) in zip(steps, spans)])

    def step_probabilities(self, video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Class probabilities ``[T, C]`` of every step of one clip's raw ``[T, d]`` features,
        each from the window centred on it."""
        v, a = self.normalise(video, audio)
        return np.concatenate([self.window_probabilities(vw, aw, mask)[np.arange(len(at)), at]
                               for vw, aw, mask, at in self.centred_windows(v, a)])

    @property
    def normal_index(self) -> int | None:
        return self.classes.index("normal") if "normal" in self.classes else None

    def anomaly_score(self, step_probs: np.ndarray) -> np.ndarray:
        """``1 - P(normal)`` per step; without a ``normal`` class, the top anomaly probability."""
        if self.normal_index is None:
            return step_probs.max(-1)
        return 1.0 - step_probs[..., self.normal_index]

    def build_extractors(self, device: str = "cpu", runtime: str = "torch") -> tuple:
        """The (video, audio) backbones with the weights this run was trained on. ``auto``
        takes the runtime the training features were extracted under where the run recorded
        it (``feature_runtimes``), so predictions see the features the head was trained on."""
        from avar.features import build_extractor
        from avar.features.runtime import RUNTIMES

        recorded = self.extra.get("feature_runtimes") or {}

        def chosen(modality: str) -> str:
            if runtime == "auto" and recorded.get(modality) in RUNTIMES and device == "cpu":
                return recorded[modality]
            return runtime

        return tuple(build_extractor(self.extractors[m]["name"], self.extractors[m].get("weights"), device,
                                     runtime=chosen(m)) for m in ("video", "audio"))
