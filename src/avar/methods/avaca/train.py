"""Weakly supervised training from video-level labels: AVACA, or any head under the MIL losses.

A clip's label says only whether it contains an anomaly somewhere (``normal`` vs any other
class). The model scores every step; the losses (:mod:`avar.methods.avaca.loss`) read each
video's top-``k`` scores against its label (dynamic MIL) and keep a normal video's scores
together (center loss). Every batch holds as many normal as anomalous videos, drawn from
two separately shuffled queues; an epoch ends when the larger group has been seen once.

The checkpoint kept is the epoch with the best video-level ROC AUC on the ``val`` split (a
video's score is the mean of its top-``k`` step scores), ties going to the lower validation
loss: selection uses video labels only, never frame annotations.

The run it saves is a :class:`~avar.methods.avaca.run.WeakRun`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from avar.features.cache import FeatureSet, StepFeatures
from avar.metrics.classification import roc_auc
from avar.methods.avaca import AVACA, DEFAULT_ALPHA, AVACAConfig, avaca_loss
from avar.methods.avaca.mil import MIL_CLASSES, MILHead
from avar.methods.avaca.run import NORMAL, WEAK_METHODS, WINDOW, WeakRecord, WeakRun, top_k_video_scores
from avar.methods.avarnet import count_parameters
from avar.methods.config_base import (BATCH_SIZE, EPOCHS, FALSE_EVENTS_OPTION, LR, MODALITY, MOTION, SEED, THREADS,
                                      option)
from avar.methods.heads import HEADS, head_config
from avar.methods.streams import run_streams
from avar.metrics.events import FALSE_EVENTS_PER_HOUR
from avar.training.events import calibrate_events
from avar.training.loop import Step, train_loop
from avar.training.run import Normalization, check_options, check_run_dir
from avar.training.seeding import numerics, seed_everything


@dataclass
class WeakTrainConfig:
    """Weak-training settings; every field is recorded in the run's ``config.json``.

    The paper trains 100 epochs at learning rate 1e-5 with theta 10 and lambda 1 (sec. V-B) on
    a few hundred long videos. avar keeps the epochs and loss weights; its default learning
    rate is 1e-4 because at 1e-5 the synthetic benchmark's ~130 training videos give too few
    updates in 100 epochs (docs/avaca.md has the measurements).
    """

    method: str = "avaca"
    """'avaca' or 'mil' (``head_type`` trained with the same losses)."""
    head_type: str = field(default="mtcn", metadata=option(
        "the supervised head trained with the MIL losses", flag="--head", choices=tuple(HEADS), only=("mil",)))
    """With ``method='mil'``: a key of ``avar.methods.heads.HEADS``."""
    modality: str = field(default="av", metadata=MODALITY)
    """With ``method='mil'``: 'av', 'a' or 'v'."""
    audio_path: str = field(default="focused", metadata=option(
        "the VAT reads audio first differences (focused) or the audio itself (plain)", choices=("focused", "plain"),
        only=("avaca",)))
    """With ``method='avaca'``: 'focused' (first differences) or 'plain'."""
    zero_audio: bool = field(default=False, metadata=option("zero the audio input (the paper's baseline)",
                                                            only=("avaca",)))
    """With ``method='avaca'``: zero the audio input (the paper's visual-only baseline)."""
    epochs: int = field(default=100, metadata=EPOCHS)
    batch_size: int = field(default=16, metadata=BATCH_SIZE)
    """Videos per batch, half normal and half anomalous."""
    lr: float = field(default=1e-4, metadata=LR)
    weight_decay: float = 1e-3
    theta: float = field(default=10.0, metadata=option("weight of the dynamic MIL loss"))
    """Weight of the dynamic MIL loss."""
    lam: float = field(default=1.0, metadata=option("weight of the center loss", flag="--lambda"))
    """Weight of the center loss."""
    alpha: float = field(default=DEFAULT_ALPHA, metadata=option("top k = floor(steps / alpha) per video"))
    """``k = floor(t / alpha)`` top scores per video in the MIL loss."""
    max_steps: int = field(default=200, metadata=option(
        "longer training videos are averaged to this many steps"))
    """Training videos longer than this are averaged down to this many segments (as the
    XD-Violence reference code does); scoring always reads every step."""
    window: int = field(default=WINDOW, metadata=option("steps per scoring window on files and streams"))
    """Steps per scoring window on files and streams (the run's ``seq_len``)."""
    false_events_per_hour: float = field(default=FALSE_EVENTS_PER_HOUR, metadata=FALSE_EVENTS_OPTION)
    """Target of the event threshold the run stores, chosen on the validation clips
    (:func:`avar.metrics.events.calibrate_threshold`)."""
    motion: bool = field(default=True, metadata=MOTION)
    """Read the cache's motion stream (optical flow) where it has one: it joins the visual side
    of the cross-attention (the model's video input is appearance then motion)."""
    seed: int = field(default=0, metadata=SEED)
    threads: int | None = field(default=None, metadata=THREADS)
    """Torch CPU threads; None leaves torch's default (one per core)."""
    model: dict = field(default_factory=dict)
    """Overrides of the model config's fields (AVACA: ``hidden``, ``dropout``...; MIL heads:
    ``num_stages``, ``num_f_maps``...)."""

    def __post_init__(self) -> None:
        if self.method not in WEAK_METHODS:
            raise ValueError(f"weak training method must be one of {WEAK_METHODS}, got {self.method!r}")
        # two videos a batch at least: one normal and one anomalous
        check_options(self, at_least={"epochs": 1, "batch_size": 2, "window": 1, "max_steps": 1}, rates=("lr", "alpha"))


def video_labels(clips: list[StepFeatures] | list[dict]) -> np.ndarray:
    """``int [N]``: 1 for a clip whose label is anything but ``normal`` (the weak label)."""
    return np.array([int((c["label"] if isinstance(c, dict) else c.label) != NORMAL) for c in clips])


def segment_means(x: np.ndarray, n: int) -> np.ndarray:
    """``x [T, d]`` averaged over ``n`` contiguous, near-equal segments -> ``[n, d]`` (T >= n)."""
    edges = np.linspace(0, len(x), n + 1).round().astype(int)
    return np.stack([x[a:b].mean(0) for a, b in zip(edges[:-1], edges[1:])])


class BalancedBatches:
    """Index batches with ``batch_size // 2`` normal and as many anomalous videos each.

    Each group is a queue reshuffled whenever it runs out, so the smaller group repeats within
    an epoch rather than leaving batches unbalanced; ``len()`` batches cover the larger group.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, generator: np.random.Generator):
        self.groups = [np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)]
        if any(len(g) == 0 for g in self.groups):
            raise ValueError(
                f"weak training needs normal and anomalous training videos, got {len(self.groups[0])} normal and "
                f"{len(self.groups[1])} anomalous; a clip is normal when its label is '{NORMAL}'"
            )
        self.half = batch_size // 2
        self.rng = generator
        self.queues: list[list[int]] = [[], []]

    def __len__(self) -> int:
        return -(-max(len(g) for g in self.groups) // self.half)

    def _take(self, which: int) -> list[int]:
        out = []
        while len(out) < self.half:
            if not self.queues[which]:
                self.queues[which] = list(self.rng.permutation(self.groups[which]))
            out.append(int(self.queues[which].pop()))
        return out

    def __iter__(self):
        for _ in range(len(self)):
            yield self._take(0) + self._take(1)


def pad_batch(videos: list[np.ndarray], audios: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad clips to the longest: ``video [B, T, dv]``, ``audio [B, T, da]``, ``mask [B, T]``."""
    t = max(len(v) for v in videos)
    video = np.zeros((len(videos), t, videos[0].shape[1]), np.float32)
    audio = np.zeros((len(videos), t, audios[0].shape[1]), np.float32)
    mask = np.zeros((len(videos), t), bool)
    for i, (v, a) in enumerate(zip(videos, audios)):
        video[i, : len(v)], audio[i, : len(a)], mask[i, : len(v)] = v, a, True
    return torch.from_numpy(video), torch.from_numpy(audio), torch.from_numpy(mask)


def build_weak_model(config: WeakTrainConfig, video_dim: int, audio_dim: int):
    """The model ``config`` names, with fresh weights, and its config object."""
    if config.method == "avaca":
        model_config = AVACAConfig.from_dict({
            "video_dim": video_dim, "audio_dim": audio_dim, "audio_path": config.audio_path,
            "zero_audio": config.zero_audio, **config.model,
        })
        return AVACA(model_config), model_config
    model_config = head_config(config.head_type, video_dim=video_dim, audio_dim=audio_dim,
                               num_classes=len(MIL_CLASSES), modality=config.modality, **config.model)
    return MILHead(model_config), model_config


def _loss(out, labels: torch.Tensor, lengths: torch.Tensor, config: WeakTrainConfig):
    parts = [avaca_loss(s, labels, lengths, theta=config.theta, lam=config.lam, alpha=config.alpha)
             for s in out.stage_scores]
    return (sum(p.total for p in parts) / len(parts), sum(p.dmil for p in parts) / len(parts),
            sum(p.center for p in parts) / len(parts))


def _load(features: FeatureSet, record: dict, motion: bool):
    """One clip as the weak model reads it: its visual side with motion where ``motion``."""
    clip = features.load(record)
    return clip.visual(motion), clip.audio


def fit_normalization(features: FeatureSet, records: list[dict], motion: bool = False) -> Normalization:
    """Per-dimension mean and std of every step of ``records``, one clip in memory at a time.

    Equals ``Normalization.fit`` on the same clips (float64 sums), without holding a large
    training split (XD-Violence's is gigabytes) in memory twice.
    """
    sums: dict[str, list] = {}
    for record in records:
        for name, x in zip(("video", "audio"), _load(features, record, motion)):
            x = x.astype(np.float64)
            total = sums.setdefault(name, [0, 0.0, 0.0])
            total[0] += len(x)
            total[1] = total[1] + x.sum(0)
            total[2] = total[2] + (x * x).sum(0)
    stats = []
    for name in ("video", "audio"):
        n, s1, s2 = sums[name]
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        # The floor keeps constant dimensions (e.g. a zeroed modality) at zero, not inf.
        stats += [mean.astype(np.float32), np.maximum(std, 1e-4).astype(np.float32)]
    return Normalization(*stats)


def _prepare(features: FeatureSet, records: list[dict], norm: Normalization,
             max_steps: int, motion: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalised ``(video, audio)`` of each clip, averaged down to ``max_steps`` when longer."""
    out = []
    for record in records:
        v, a = norm.apply(*_load(features, record, motion))
        if len(v) > max_steps:
            v, a = segment_means(v, max_steps), segment_means(a, max_steps)
        out.append((v, a))
    return out


@torch.no_grad()
def _validate(model, data, labels: np.ndarray, config: WeakTrainConfig) -> tuple[float, float | None]:
    """Validation loss and video-level ROC AUC (None when val lacks one of the two labels)."""
    model.eval()
    losses, scores = [], []
    for i in range(0, len(data), config.batch_size):
        part = data[i : i + config.batch_size]
        video, audio, mask = pad_batch([v for v, _ in part], [a for _, a in part])
        y = torch.as_tensor(labels[i : i + len(part)], dtype=torch.float32)
        lengths = mask.sum(1)
        out = model(video, audio, mask)
        losses.append(_loss(out, y, lengths, config)[0].item() * len(part))
        scores.append(top_k_video_scores(out.scores, lengths, config.alpha).numpy())
    auc = roc_auc(labels, np.concatenate(scores)) if 0 < labels.sum() < len(labels) else None
    return sum(losses) / len(data), auc


def train_weak(
    features: FeatureSet,
    out_dir: Path | str,
    config: WeakTrainConfig | None = None,
    *,
    splits: dict[str, str] | None = None,
    progress: bool = True,
) -> WeakRun:
    """Train on the cache's ``train`` split from video labels, select on ``val``, save the run.

    ``splits`` (clip id -> split) overrides the cache's own split assignment, so repeated
    random splits of one cache (the MAVAD protocol) need no re-extraction.
    """
    config = config or WeakTrainConfig()
    check_run_dir(out_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    records = [dict(c, split=splits.get(c["clip_id"], "unused")) if splits else c for c in features.clips]
    train_rec = [c for c in records if c["split"] == "train"]
    val_rec = [c for c in records if c["split"] == "val"]
    if not train_rec:
        raise ValueError(f"{features.root}: no clips in the train split; check the dataset's splits")
    if not val_rec:
        warnings.warn(f"{features.root}: no val clips; keeping the last epoch", stacklevel=2)
    motion = config.motion and features.has_motion and "v" in config.modality
    norm = fit_normalization(features, train_rec, motion)
    train_data = _prepare(features, train_rec, norm, config.max_steps, motion)
    val_data = _prepare(features, val_rec, norm, config.max_steps, motion)
    y_train, y_val = video_labels(train_rec), video_labels(val_rec)
    model, model_config = build_weak_model(config, train_data[0][0].shape[1], train_data[0][1].shape[1])
    batches = BalancedBatches(y_train, config.batch_size, np.random.default_rng(config.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    started = time.perf_counter()

    def loss(index: list[int]) -> Step:
        part = [train_data[i] for i in index]
        video, audio, mask = pad_batch([v for v, _ in part], [a for _, a in part])
        y = torch.as_tensor(y_train[index], dtype=torch.float32)
        total, dmil, center = _loss(model(video, audio, mask), y, mask.sum(1), config)
        return Step(total, len(index), {"dmil": dmil.item(), "center": center.item()})

    def validate(record: dict) -> dict:
        val_loss, val_auc = _validate(model, val_data, y_val, config)
        return {"val_loss": val_loss, "val_video_auc": val_auc}

    name = config.method if config.method == "avaca" else f"mil {config.head_type}"
    fitted = train_loop(model, optimizer, lambda epoch: batches, loss, config.epochs,
                        validate=validate if val_data else None,
                        select=lambda r: (r["val_video_auc"] if r["val_video_auc"] is not None else 0.0,
                                          -r["val_loss"]),
                        clip_grad=5.0, desc=f"train {name}", progress=progress)
    run = WeakRun(
        model=model, method=config.method, model_config=model_config, norm=norm, step=features.manifest["step"],
        extractors={"video": features.manifest["video"], "audio": features.manifest["audio"],
                    **({"motion": features.manifest["motion"]} if motion else {})}, alpha=config.alpha,
        seq_len=config.window, record=WeakRecord(
            train=config,
            features_dir=str(features.root),
            splits="given" if splits else "cache",
            best_epoch=fitted.best_epoch,
            params=count_parameters(model),
            train_seconds=round(time.perf_counter() - started, 2),
            torch_threads=torch.get_num_threads(),
            numerics=numerics(),
            n_train={"normal": int((y_train == 0).sum()), "anomalous": int(y_train.sum())},
            streams=run_streams(config.modality, motion),
        ),
    )
    if val_rec:
        run.record = replace(run.record, **calibrate_events(run, run.read([features.load(r) for r in val_rec]),
                                                            config.false_events_per_hour))
    run.save(out_dir, history=fitted.history)
    return run


def fit(data, out_dir: Path | str, config: WeakTrainConfig | None = None, *, progress: bool = True) -> WeakRun:
    """The method table's entry (:mod:`avar.methods.table`): :func:`train_weak` on a FEATURES_DIR
    (or an open ``FeatureSet``)."""
    return train_weak(data if isinstance(data, FeatureSet) else FeatureSet.open(data), out_dir, config,
                      progress=progress)
