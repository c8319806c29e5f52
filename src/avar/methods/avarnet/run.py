"""The supervised run: a trained AVAR-Net head (or a baseline, or late fusion) with its
feature normalisation, saved as a run directory (layout in ``avar.training.run``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from avar.features.cache import StepFeatures
from avar.features.pooling import motion_steps
from avar.methods.avarnet.clip_blend import PooledLinear
from avar.methods.avarnet.stream_selection import LEGACY_POOLING
from avar.methods.heads import HeadConfig, build_head, config_from_dict, head_type
from avar.training.run import (CONFIG_FILE, HISTORY_FILE, MODEL_FILE, WEIGHTS_KEY, FeatureRun, Normalization,
                               TrainingRecord, check_extractors, check_window, load_state, load_weights, read_labels,
                               read_run_config, reading_config, save_run, typed)
from avar.training.sequences import make_sequences


def check_motion(steps) -> int:
    """``steps`` if it is a valid ``video_motion`` (0 = off, or an integer >= 2), else a ``ValueError``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or steps == 1:
        raise ValueError(f"--video-motion (video_motion) must be 0 (off) or a number of steps >= 2, got {steps!r}")
    return steps


def with_motion(clips: list[StepFeatures], steps: int) -> list[StepFeatures]:
    """``clips`` with their video read as motion over ``steps`` steps (:func:`motion_steps`);
    as they are when ``steps`` is 0."""
    if not steps:
        return clips
    return [replace(c, video=motion_steps(c.video, steps)) for c in clips]


@dataclass
class SupervisedRecord(TrainingRecord):
    """What training recorded about a supervised run (:class:`TrainingRecord` and the fields below)."""

    refit_epochs: int | None = None
    """Epochs of the second training on train + val (``TrainConfig.refit``), None without."""
    val_branch_accuracy: dict | None = None
    """Validation accuracy of a fused head with both streams and each alone (``av``, ``a``, ``v``)."""
    fusion_warning: str | None = None
    stream_selection: dict | None = None
    motion_selection: dict | None = None
    clip_blend: dict | None = None
    """``{"head_weight", "pooling"}`` where the run blends in a pooled-feature regression."""
    video_motion: int = 0
    """Steps over which the run reads the video as motion (0: off)."""

    @classmethod
    def train_config(cls, values: dict, path: Path | str):
        from avar.methods.avarnet.train import TrainConfig

        return typed(TrainConfig, values, path, "train config")


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
    record: SupervisedRecord = field(default_factory=SupervisedRecord)
    """What training recorded: its config, epochs, choices, thresholds."""
    blend: PooledLinear | None = None
    """With the robust recipe on a small dataset: the pooled-feature regression whose clip
    probabilities are mixed with the head's (weight ``record.clip_blend['head_weight']``;
    :mod:`avar.methods.avarnet.clip_blend`)."""

    def save(self, root: Path | str, *, history: list[dict] | None = None, keep: bool = False) -> Path:
        """Write the run directory whole (:func:`avar.training.run.save_run`); ``history``
        goes to ``history.json``, ``keep`` keeps the other files of a run re-saved in place."""
        tensors = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()} | self.norm.to_tensors()
        if self.blend is not None:
            tensors |= self.blend.to_tensors()
        config = {
            "method": "avarnet",
            "learning": self.learning,
            "head_type": head_type(self.config),
            "head": self.config.to_dict(),
            "seq_len": self.seq_len,
            "step": self.step,
            "extractors": self.extractors,
            **self.record.to_dict(),
        }
        return save_run(root, weights={MODEL_FILE: tensors}, config=config, labels=self.classes,
                        files=None if history is None else {HISTORY_FILE: history}, keep=keep)

    @classmethod
    def load(cls, root: Path | str) -> "Run":
        root = Path(root)
        meta = read_run_config(root)
        digests = meta.pop(WEIGHTS_KEY, None)
        if meta.get("method", "avarnet") != "avarnet":
            raise ValueError(f"{root}: a '{meta['method']}' run, not a supervised classifier; load any run with "
                             "avar.runs.load_run")
        with reading_config(root, "supervised run"):
            config = config_from_dict(meta.pop("head_type", "mtcn"), meta.pop("head"))
            seq_len, step, extractors = meta.pop("seq_len"), meta.pop("step"), meta.pop("extractors")
            head = build_head(config)
            meta.pop("method", None), meta.pop("learning", None)
            record = SupervisedRecord.from_dict(meta, root / CONFIG_FILE)
            record.video_motion = check_motion(record.video_motion or 0)
        check_window(root, seq_len, step)
        check_extractors(root, extractors)
        classes = read_labels(root, config.num_classes)
        tensors = load_weights(root, MODEL_FILE, digests)
        norm = Normalization.pop_tensors(tensors, root / MODEL_FILE, config.video_dim, config.audio_dim)
        blend = PooledLinear.pop_tensors(tensors, config.modality,
                                         (record.clip_blend or {}).get("pooling", LEGACY_POOLING))
        load_state(head, tensors, root / MODEL_FILE)
        run = cls(
            head=head,
            config=config,
            classes=classes,
            norm=norm,
            seq_len=seq_len,
            step=step,
            extractors=extractors,
            record=record,
            blend=blend,
        )
        run.root = root
        return run

    @torch.inference_mode()
    def window_probabilities(self, video: np.ndarray, audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.head.eval()
        out = self.head(torch.from_numpy(video), torch.from_numpy(audio), torch.from_numpy(mask))
        return torch.softmax(out.step_logits, -1).numpy().astype(np.float64)

    @property
    def video_motion(self) -> int:
        """Steps over which the run reads the video stream as motion (0: off; runs saved before
        it existed record none). See :attr:`avar.methods.avarnet.train.TrainConfig.video_motion`."""
        return int(self.record.video_motion or 0)

    @property
    def context_steps(self) -> int:
        return max(0, self.video_motion - 1)

    def normalise(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``[T, d]`` features as the head reads them: the video read as motion where the
        run does (:attr:`video_motion`), then the training split's statistics."""
        return self.norm.apply(self._video(video), audio)

    def _video(self, video: np.ndarray) -> np.ndarray:
        return motion_steps(video, self.video_motion) if self.video_motion else video

    @torch.inference_mode()
    def clip_probabilities(self, video: np.ndarray, audio: np.ndarray, drop: str | None = None) -> np.ndarray:
        """Class probabilities ``[C]`` of one clip: the clip predictions of its windows (tiled
        at half-window stride) averaged, weighted by their real steps, then blended with the
        pooled-feature regression where the run has one (:attr:`blend`). ``drop`` ('video' or
        'audio') scores a fused head with that stream missing: its other branch, unblended."""
        self.head.eval()
        video = self._video(video)
        v, a = self.norm.apply(video, audio)
        batch = make_sequences([v], [a], [0], self.seq_len, stride=max(1, self.seq_len // 2))
        out = self.head(None if drop == "video" else batch.video, None if drop == "audio" else batch.audio, batch.mask)
        clip_p = torch.softmax(out.clip_logits, -1).numpy().astype(np.float64)
        n_real = batch.mask.sum(1).numpy()
        p = (clip_p * n_real[:, None]).sum(0) / n_real.sum()
        if self.blend is not None and drop is None:
            weight = self.record.clip_blend["head_weight"]
            p = weight * p + (1 - weight) * self.blend.probabilities(video, audio)
        return self.check_finite(p)
