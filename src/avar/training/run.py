"""A run directory: a trained head that can be reloaded and applied, with no pickle anywhere.

Layout::

    RUN_DIR/model.safetensors    head weights + the feature normalisation (``norm.*``)
    RUN_DIR/config.json          head config, sequence length, step, extractors, training args
    RUN_DIR/labels.json          class names in output order
    RUN_DIR/history.json         per-epoch losses, accuracy and learning rate (refit epochs marked)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from avar.features.cache import write_json_atomic
from avar.models.heads import HeadConfig, build_head, config_from_dict, head_type
from avar.training.sequences import centred_start, make_sequences, pad_windows

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
    """The one scoring interface every trained run has: the supervised heads (:class:`Run`), the
    weakly supervised models (``avar.training.weak.WeakRun``) and the visual autoencoder
    (``avar.training.autoencoder.AERun``, whose per-step "features" are gray frames).
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


@dataclass
class Run(FeatureRun):
    """A trained sequence head with everything needed to apply it to new features."""

    method = "avarnet"
    learning = "supervised"

    head: torch.nn.Module
    config: HeadConfig
    classes: list[str]
    norm: Normalization
    seq_len: int
    step: float
    extractors: dict
    """``{"video": {name, version, dim, weights}, "audio": {...}}`` as in the feature cache."""
    extra: dict = field(default_factory=dict)
    """Training arguments and anything else worth recording."""

    def save(self, root: Path | str) -> Path:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()} | self.norm.to_tensors()
        save_file(tensors, str(root / MODEL_FILE))
        write_json_atomic(root / CONFIG_FILE, {
            "method": "avarnet",
            "learning": self.learning,
            "head_type": head_type(self.config),
            "head": self.config.to_dict(),
            "seq_len": self.seq_len,
            "step": self.step,
            "extractors": self.extractors,
            **self.extra,
        })
        write_json_atomic(root / LABELS_FILE, self.classes)
        return root

    @classmethod
    def load(cls, root: Path | str) -> "Run":
        root = Path(root)
        for name in (MODEL_FILE, CONFIG_FILE, LABELS_FILE):
            if not (root / name).is_file():
                raise FileNotFoundError(f"{root}: missing {name}; is this a run directory made by `avar train`?")
        meta = json.loads((root / CONFIG_FILE).read_text())
        if meta.get("method", "avarnet") != "avarnet":
            raise ValueError(f"{root}: a '{meta['method']}' run, not a supervised classifier; load any run with "
                             "avar.runs.load_run")
        tensors = load_file(str(root / MODEL_FILE))
        norm = Normalization.pop_tensors(tensors)
        config = config_from_dict(meta.pop("head_type", "mtcn"), meta.pop("head"))
        head = build_head(config)
        head.load_state_dict(tensors)
        head.eval()
        return cls(
            head=head,
            config=config,
            classes=json.loads((root / LABELS_FILE).read_text()),
            norm=norm,
            seq_len=meta.pop("seq_len"),
            step=meta.pop("step"),
            extractors=meta.pop("extractors"),
            extra={k: v for k, v in meta.items() if k not in ("method", "learning")},
        )

    @torch.inference_mode()
    def window_probabilities(self, video: np.ndarray, audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.head.eval()
        out = self.head(torch.from_numpy(video), torch.from_numpy(audio), torch.from_numpy(mask))
        return torch.softmax(out.step_logits, -1).numpy().astype(np.float64)

    @torch.inference_mode()
    def clip_probabilities(self, video: np.ndarray, audio: np.ndarray, drop: str | None = None) -> np.ndarray:
        """Class probabilities ``[C]`` of one clip: the clip predictions of its windows (tiled
        at half-window stride) averaged, weighted by their real steps. ``drop`` ('video' or
        'audio') scores a fused head with that stream missing: its other branch."""
        self.head.eval()
        v, a = self.norm.apply(video, audio)
        batch = make_sequences([v], [a], [0], self.seq_len, stride=max(1, self.seq_len // 2))
        out = self.head(None if drop == "video" else batch.video, None if drop == "audio" else batch.audio, batch.mask)
        clip_p = torch.softmax(out.clip_logits, -1).numpy().astype(np.float64)
        n_real = batch.mask.sum(1).numpy()
        return (clip_p * n_real[:, None]).sum(0) / n_real.sum()
