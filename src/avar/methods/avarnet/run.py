"""The supervised run: a trained AVAR-Net head (or a baseline, or late fusion) with its
feature normalisation, saved as a run directory (layout in ``avar.training.run``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from avar.features.cache import write_json_atomic
from avar.methods.heads import HeadConfig, build_head, config_from_dict, head_type
from avar.training.run import CONFIG_FILE, LABELS_FILE, MODEL_FILE, FeatureRun, Normalization
from avar.training.sequences import make_sequences


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
