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

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from avar.features.cache import write_json_atomic
from avar.models.heads import HeadConfig, build_head, config_from_dict, head_type
from avar.training.sequences import make_sequences

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


@dataclass
class Run:
    """A trained sequence head with everything needed to apply it to new features."""

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

    @property
    def normal_index(self) -> int | None:
        return self.classes.index("normal") if "normal" in self.classes else None

    def save(self, root: Path | str) -> Path:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()} | self.norm.to_tensors()
        save_file(tensors, str(root / MODEL_FILE))
        write_json_atomic(root / CONFIG_FILE, {
            "method": "avarnet",
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
            raise ValueError(f"{root}: a '{meta['method']}' run, not a supervised classifier; it scores anomalies "
                             f"without classes: use `avar evaluate {root} FEATURES_DIR` for its frame-level metrics")
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
            extra={k: v for k, v in meta.items() if k != "method"},
        )

    @torch.inference_mode()
    def probabilities(self, video: np.ndarray, audio: np.ndarray, drop: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities of one clip's steps ``[T, C]`` and of the whole clip ``[C]``.

        The clip is cut into windows of ``seq_len`` at half-window stride; a step's
        probabilities are the mean over the windows that contain it, and the clip's are the
        mean of the windows' clip predictions weighted by their real steps. ``drop``
        ('video' or 'audio') scores a fused head with that stream missing: its other branch.
        """
        self.head.eval()
        v, a = self.norm.apply(video, audio)
        batch = make_sequences([v], [a], [0], self.seq_len, stride=max(1, self.seq_len // 2))
        out = self.head(None if drop == "video" else batch.video, None if drop == "audio" else batch.audio, batch.mask)
        step_p = torch.softmax(out.step_logits, -1).numpy()
        clip_p = torch.softmax(out.clip_logits, -1).numpy()
        n_real = batch.mask.sum(1).numpy()
        total = np.zeros((len(video), len(self.classes)))
        count = np.zeros(len(video))
        for row, start in enumerate(batch.start):
            n = n_real[row]
            total[start : start + n] += step_p[row, :n]
            count[start : start + n] += 1
        clip = (clip_p * n_real[:, None]).sum(0) / n_real.sum()
        return total / count[:, None], clip

    def anomaly_score(self, step_probs: np.ndarray) -> np.ndarray:
        """``1 - P(normal)`` per step; without a ``normal`` class, the top anomaly probability."""
        if self.normal_index is None:
            return step_probs.max(-1)
        return 1.0 - step_probs[..., self.normal_index]
