"""Supervised training of a sequence head on a feature cache (paper sec. 4.1).

Two recipes. ``paper`` follows the paper: Adam at 1e-2, reduced on validation-loss plateaus
down to 1e-5, up to 50 epochs, the checkpoint with the best validation clip accuracy. On the
demo's 24 clips per class it works; on fewer clips, or when one stream carries no
information, it overfits and its checkpoint hinges on a handful of validation clips.
``robust`` (the default) is made not to need tuning from a few clips per class to
thousands: AdamW at 1e-3 with weight decay, label smoothing, class-balanced sampling, at
least ``min_steps`` optimiser steps whatever the data size, a cosine schedule, and the
checkpoint with the lowest validation loss *smoothed over epochs*, so one lucky epoch on
six validation clips does not decide it.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avar.features.cache import FeatureSet, StepFeatures, visual_clips
from avar.methods.avarnet import avarnet_loss, count_parameters
from avar.methods.config_base import (BATCH_SIZE, EPOCHS, FALSE_EVENTS_OPTION, LR, MODALITY, MOTION, SEED,
                                      option)
from avar.methods.heads import FUSIONS, HEADS, build_head, has_branches, head_config
from avar.methods.streams import run_streams
from avar.methods.avarnet.run import Run, SupervisedRecord, check_motion, with_motion
from avar.metrics.events import FALSE_EVENTS_PER_HOUR
from avar.training.events import calibrate_events
from avar.training.loop import Fitted, Step, train_loop
from avar.training.run import Normalization, check_options, check_run_dir
from avar.training.seeding import numerics, seed_everything
from avar.training.sequences import SequenceBatch, make_sequences
from avar.methods.avarnet.clip_blend import PooledLinear
from avar.methods.avarnet.stream_selection import select_motion, select_streams

log = logging.getLogger(__name__)

RECIPES: dict[str, dict] = {
    "robust": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine",
               "warmup_epochs": 3, "label_smoothing": 0.1, "balanced": True, "select": "smoothed_loss",
               "min_steps": 300, "early_stop": None, "refit": True, "select_streams": True, "clip_blend": 0.5},
    "paper": {"optimizer": "adam", "lr": 1e-2, "weight_decay": 1e-4, "schedule": "plateau",
              "warmup_epochs": 3, "label_smoothing": 0.0, "balanced": False, "select": "accuracy",
              "min_steps": 0, "early_stop": 12, "refit": False, "select_streams": False, "clip_blend": 1.0},
}
"""Training recipes by name; a :class:`TrainConfig` field left at ``None`` takes its recipe's value."""
COMPACT_MTCN = {"num_stages": 2, "num_f_maps": 32}
"""The AVAR-Net head under the robust recipe (its other fields as :class:`AVARNetConfig`; the
layers from :func:`recipe_head`). Against the paper's 4 stages x 10 layers x 64 maps (1.1M
parameters) its clip accuracy alone at 12 clips per class is 0.87 +- 0.03 over three seeds
against 0.80 +- 0.07, level at 6, but 0.89 against 0.94 at 24 (docs/fusion.md); it trains 2-3x
faster."""


def recipe_head(config: "TrainConfig") -> dict:
    """The head config fields of ``config``: its recipe's, then ``config.head`` over them.

    Under the robust recipe the AVAR-Net head is :data:`COMPACT_MTCN` with as many dilated
    layers per stage as dilations that reach inside a window (``(seq_len - 1).bit_length()``:
    4 for the paper's 10 steps); a layer of dilation 16 over 10 steps reads only padding.
    """
    if config.recipe != "robust" or config.head_type != "mtcn":
        return dict(config.head)
    return {**COMPACT_MTCN, "num_layers": max(1, (config.seq_len - 1).bit_length()), **config.head}


@dataclass
class TrainConfig:
    """Training settings; every field is recorded in the run's ``config.json``. Fields left
    at ``None`` take the value of ``recipe`` (:data:`RECIPES`)."""

    head_type: str = field(default="mtcn", metadata=option(
        "mtcn = AVAR-Net; the rest are Table 2's baselines", flag="--head", choices=tuple(HEADS)))
    """A key of ``avar.methods.heads.HEADS``: the AVAR-Net head or a Table 2 baseline."""
    modality: str = field(default="av", metadata=MODALITY)
    """'av' fused, 'a' audio only, 'v' video only."""
    fusion: str = field(default="early", metadata=option(
        "early: fuse the streams per step before one head; late: one head per stream, probabilities fused",
        choices=FUSIONS))
    """'early' fuses the streams per step before one head (robust projection by default;
    the head's ``stream_fusion='concat'`` is the paper's Eq. 6); 'late' trains one head per
    stream and fuses their probabilities."""
    late_mode: str = field(default="mean", metadata=option("late fusion: mean or learned weights",
                                                           choices=("mean", "learned")))
    """With late fusion: 'mean' averages the probabilities, 'learned' weights them per class."""
    seq_len: int = field(default=10, metadata=option("steps per window (the paper's T)"))
    """Steps per sequence (the paper's T = 10)."""
    recipe: str = field(default="robust", metadata=option(
        "robust (AdamW, label smoothing, balanced classes, smoothed-loss checkpoint, refit on train + val) or paper "
        "(Adam 1e-2, plateau schedule, best validation accuracy)", choices=tuple(sorted(RECIPES))))
    """'robust' (default) or 'paper'; see the module docstring."""
    epochs: int = field(default=50, metadata=EPOCHS)
    """Epochs at most; 'robust' raises it so that training takes at least ``min_steps`` steps."""
    batch_size: int = field(default=32, metadata=BATCH_SIZE)
    lr: float | None = field(default=None, metadata=LR)
    """Peak learning rate (after warm-up)."""
    min_lr: float = 1e-5
    warmup_epochs: int | None = None
    """Epochs of linear learning-rate warm-up from ~0 to ``lr``: the usual guard for
    attention layers trained with Adam."""
    schedule: str | None = None
    """'cosine': from ``lr`` down to ``min_lr`` over the training; 'plateau': tenfold drop
    after ``plateau_patience`` epochs without a better validation loss."""
    plateau_patience: int = 3
    early_stop: int | None = None
    """Epochs without a better checkpoint before training stops (``None``: never)."""
    optimizer: str | None = None
    """'adamw', 'adam' or 'sgd' (momentum 0.9); the paper gives the learning rates, not the optimizer."""
    weight_decay: float | None = None
    label_smoothing: float | None = None
    balanced: bool | None = None
    """Draw training windows with probability inversely proportional to their class's count."""
    select: str | None = None
    """Which epoch's weights are kept: 'accuracy' (best validation clip accuracy, ties to the
    lower loss), 'smoothed_loss' (lowest exponential average over epochs of the validation
    clip loss) or 'last'."""
    min_steps: int | None = None
    """Optimiser steps at least: on a few clips an epoch is one or two steps."""
    refit: bool | None = None
    """After the run on ``train`` (which gives the validation figures), train again from
    scratch on ``train`` + ``val`` for the epochs the first run selected, and keep that:
    on a small dataset the validation clips are a fifth of the labelled data."""
    select_streams: bool | None = field(default=None, metadata=option(
        "--modality av: fuse both streams even when cross-validation on the labelled clips says one carries no class "
        "information (the robust recipe checks by default; --recipe paper never does)", flag="--no-stream-selection"))
    """With ``modality='av'``: cross-validate on train + val whether both streams help and
    train on one alone when the other carries no class information or makes both worse
    (:mod:`avar.methods.avarnet.stream_selection`); the choice is recorded in the run."""
    clip_blend: float | None = field(default=None, metadata=option(
        "weight of the head's clip prediction against a pooled-feature logistic regression's (1 = the head alone); "
        "per-step scores stay the head's", metavar="W"))
    """Weight of the head's clip probabilities against a pooled-feature logistic regression's
    (1: the head alone); the per-step scores stay the head's (:mod:`avar.methods.avarnet.clip_blend`)."""
    motion: bool = field(default=True, metadata=MOTION)
    """Read the cache's motion stream (optical flow, ``avar extract --motion``) where it has one,
    as a third stream on the visual side (its own projection in the head, its own share in the
    pooled regression); with ``select_streams`` it is left out when it carries no class
    information or makes appearance worse (:func:`~avar.methods.avarnet.stream_selection.select_motion`)."""
    false_events_per_hour: float = field(default=FALSE_EVENTS_PER_HOUR, metadata=FALSE_EVENTS_OPTION)
    """Target of the event threshold the run stores, chosen on the validation clips: at most this
    many false events per hour of normal footage (:func:`avar.metrics.events.calibrate_threshold`);
    ``predict``, ``watch`` and the dashboard open events at it unless told otherwise."""
    video_motion: int = field(default=0, metadata=option(
        "read the video stream as motion over the last K steps (the mean of their features and their mean absolute "
        "change; 0 = off, the default): for short clips extracted at fine steps, e.g. --step 0.125 with K = 4 "
        "(docs/fusion.md)", metavar="K"))
    """Steps (>= 2; 0 = off) over which the video stream is read as motion: each step's video
    feature becomes the mean of the last ``video_motion`` steps' features and their mean
    absolute change (:func:`avar.features.pooling.motion_steps`), before normalisation, for
    the head and the clip blend's regression alike; the run applies it to the features it
    scores. For short clips extracted at fine steps, where one frame per step shows what a
    scene looks like but not how it moves (docs/fusion.md: fight-dev at 0.125-s steps, 4)."""
    seed: int = field(default=0, metadata=SEED)
    head: dict = field(default_factory=dict)
    """Overrides of the head config's fields (stages, layers, maps, attention, hidden,
    stream_fusion, stream_width, modality_dropout...), over the recipe's (:func:`recipe_head`)."""

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "plateau"):
            raise ValueError(f"schedule must be 'cosine' or 'plateau', got {self.schedule!r}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        check_options(self, at_least={"seq_len": 1, "epochs": 1, "batch_size": 1}, rates=("lr",))
        if isinstance(self.clip_blend, bool) or not isinstance(self.clip_blend, (int, float)) \
                or not 0 <= self.clip_blend <= 1:
            raise ValueError(f"--clip-blend (clip_blend) must be a weight in [0, 1], got {self.clip_blend!r}")
        check_motion(self.video_motion)
        if isinstance(self.false_events_per_hour, bool) or not isinstance(self.false_events_per_hour, (int, float)) \
                or not self.false_events_per_hour >= 0:
            raise ValueError("--false-events-per-hour (false_events_per_hour) must be a number >= 0, got "
                             f"{self.false_events_per_hour!r}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SELECTIONS = ("accuracy", "smoothed_loss", "last")
SMOOTHING = 0.3
"""Weight of the newest epoch in the smoothed validation loss (``select='smoothed_loss'``)."""

OPTIMIZERS = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": lambda params, **kw: torch.optim.SGD(params, momentum=0.9, nesterov=True, **kw),
}


def _sequences(clips: list[StepFeatures], classes: list[str], norm: Normalization, seq_len: int, stride: int) -> SequenceBatch:
    pairs = [norm.apply(c.video, c.audio) for c in clips]
    return make_sequences([v for v, _ in pairs], [a for _, a in pairs], [classes.index(c.label) for c in clips], seq_len, stride)


@torch.no_grad()
def _evaluate(head: torch.nn.Module, data: SequenceBatch, batch_size: int,
              drop: str | None = None) -> tuple[float, float, float]:
    """The training loss (what the plateau schedule watches), the clip-level cross-entropy
    (what ``smoothed_loss`` watches) and the accuracy of ``head`` on ``data``'s windows;
    ``drop`` ('video' or 'audio') scores the fused head with that stream missing."""
    head.eval()
    loss, clip_loss, correct = 0.0, 0.0, 0
    for i in range(0, len(data), batch_size):
        part = data.subset(np.arange(i, min(i + batch_size, len(data))))
        out = head(None if drop == "video" else part.video, None if drop == "audio" else part.audio, part.mask)
        loss += avarnet_loss(out, part.labels, part.mask).item() * len(part)
        clip_loss += F.cross_entropy(out.clip_logits, part.labels, reduction="sum").item()
        correct += (out.clip_logits.argmax(-1) == part.labels).sum().item()
    return loss / len(data), clip_loss / len(data), correct / len(data)


def branch_accuracies(head: torch.nn.Module, data: SequenceBatch, batch_size: int = 64) -> dict[str, float] | None:
    """Accuracy of a fused head on ``data`` with both streams ('av') and with each alone
    ('a': video missing, 'v': audio missing); ``None`` for a single-stream head or one whose
    fusion cannot run with a stream missing (the paper's concatenation)."""
    if not has_branches(head.config):
        return None
    return {name: _evaluate(head, data, batch_size, drop)[2] for name, drop in (("av", None), ("a", "video"), ("v", "audio"))}


def fusion_warning(accuracies: dict[str, float] | None, where: str) -> str | None:
    """A sentence when the fused accuracy is below the best single stream's, else ``None``."""
    if not accuracies:
        return None
    best = max(("a", "v"), key=lambda m: accuracies[m])
    if accuracies["av"] >= accuracies[best]:
        return None
    name = {"a": "audio", "v": "video"}[best]
    return (f"{where}: fusion does not help here: audio + video {accuracies['av']:.3f} < {name} alone "
            f"{accuracies[best]:.3f}; compare with `avar train avarnet --modality {best}`, and check the other "
            "stream (silent microphone, dark or frozen camera, features from the wrong extractor)")


def _balanced_order(labels: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    """``len(labels)`` window indices drawn with replacement, each class equally likely."""
    counts = torch.bincount(labels)
    weights = 1.0 / counts[labels].double()
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator).numpy()


def _learning_rate(config: TrainConfig, step: int, warmup_steps: int, total_steps: int) -> float | None:
    """The scheduled learning rate at optimiser ``step`` (1-based), ``None`` where the plateau
    scheduler decides."""
    if step <= warmup_steps:
        return config.lr * step / warmup_steps
    if config.schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
    return None


def _fit(head: torch.nn.Module, train_seq: SequenceBatch, val_seq: SequenceBatch | None, config: TrainConfig,
         epochs: int, desc: str, progress: bool) -> Fitted:
    """Train ``head`` in place for ``epochs`` (:func:`avar.training.loop.train_loop`); with
    ``val_seq``, leave it at the epoch ``config.select`` picks."""
    optimizer = OPTIMIZERS[config.optimizer](head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.1, patience=config.plateau_patience, min_lr=config.min_lr
    )
    generator = torch.Generator().manual_seed(config.seed)
    batches_per_epoch = -(-len(train_seq) // config.batch_size)
    warmup_steps, total_steps = min(config.warmup_epochs, epochs - 1) * batches_per_epoch, epochs * batches_per_epoch
    steps, smoothed = [0], [None]

    def batches(epoch: int):
        if config.balanced:
            order = _balanced_order(train_seq.labels, generator)
        else:
            order = torch.randperm(len(train_seq), generator=generator).numpy()
        return [train_seq.subset(order[i : i + config.batch_size]) for i in range(0, len(order), config.batch_size)]

    def before_step(step: int) -> None:
        steps[0] = step
        lr = _learning_rate(config, step, warmup_steps, total_steps)
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def loss(part: SequenceBatch) -> Step:
        return Step(avarnet_loss(head(part.video, part.audio, part.mask), part.labels, part.mask,
                                 label_smoothing=config.label_smoothing), len(part))

    def validate(record: dict) -> dict:
        val_loss, val_clip_loss, val_acc = _evaluate(head, val_seq, config.batch_size)
        if config.schedule == "plateau" and steps[0] >= warmup_steps:
            scheduler.step(val_loss)
        previous = smoothed[0]
        smoothed[0] = val_clip_loss if previous is None else SMOOTHING * val_clip_loss + (1 - SMOOTHING) * previous
        return {"val_loss": val_loss, "val_clip_loss": val_clip_loss, "val_loss_smoothed": smoothed[0],
                "val_accuracy": val_acc}

    def select(record: dict) -> tuple:
        return {"accuracy": (record["val_accuracy"], -record["val_loss"]),
                "smoothed_loss": (-record["val_loss_smoothed"],), "last": (record["epoch"],)}[config.select]

    return train_loop(head, optimizer, batches, loss, epochs, validate=validate if val_seq is not None else None,
                      select=select, early_stop=config.early_stop, clip_grad=5.0, before_step=before_step,
                      desc=desc, progress=progress)


def train_head(features: FeatureSet, out_dir: Path | str, config: TrainConfig | None = None, *, progress: bool = True) -> Run:
    """Train a sequence head on the cache's ``train`` split, select on ``val`` (and with
    ``config.refit`` train again on both), save the run."""
    config = config or TrainConfig()
    check_run_dir(out_dir)
    seed_everything(config.seed)
    classes = features.classes
    train, val = features.split("train"), features.split("val")
    if not train:
        raise ValueError(f"{features.root}: no clips in the train split; check the dataset's splits")
    if not val:
        warnings.warn(f"{features.root}: no val clips; selecting the checkpoint on training loss", stacklevel=2)
    use_motion, motion_choice = config.motion and features.has_motion and "v" in config.modality, None
    if use_motion and config.video_motion:
        # video_motion doubles the visual side's columns ([mean, change] of appearance and flow together),
        # so the flow's columns would no longer be the last motion_dim ones the heads split off.
        raise ValueError(f"{features.root} has a motion stream (optical flow) and --video-motion "
                         f"{config.video_motion} was asked for; choose one: add --no-motion, or drop --video-motion")
    if use_motion and config.select_streams:
        motion_choice = select_motion(train + val, config.seed)
        use_motion = motion_choice.modality == "vm"
        log.log(logging.INFO if use_motion else logging.WARNING, "%s: visual side: %s", out_dir, motion_choice.reason)
    motion_dim = train[0].motion.shape[1] if use_motion else 0
    train, val = visual_clips(train, use_motion), visual_clips(val, use_motion)
    train, val = with_motion(train, config.video_motion), with_motion(val, config.video_motion)
    norm = Normalization.fit([c.video for c in train], [c.audio for c in train])
    modality, fusion, selection = config.modality, config.fusion, None
    if config.select_streams and modality == "av":
        selection = select_streams(train + val, config.seed, motion_dim)
        if selection.modality != "av":
            log.warning("%s: training on %s; pass --no-stream-selection to fuse both anyway",
                        out_dir, selection.reason)
            modality, fusion = selection.modality, "early"
    config_of_head = head_config(
        config.head_type,
        video_dim=train[0].video.shape[1],
        audio_dim=train[0].audio.shape[1],
        num_classes=len(classes),
        modality=modality,
        fusion=fusion,
        late_mode=config.late_mode,
        motion_dim=motion_dim if "v" in modality else 0,
        **recipe_head(config),
    )
    head = build_head(config_of_head)
    train_seq = _sequences(train, classes, norm, config.seq_len, stride=config.seq_len)
    val_seq = _sequences(val, classes, norm, config.seq_len, stride=config.seq_len) if val else train_seq
    batches_per_epoch = -(-len(train_seq) // config.batch_size)
    epochs = max(config.epochs, -(-config.min_steps // batches_per_epoch))
    started = time.perf_counter()
    desc = f"train {config.head_type} {modality} {fusion}"
    fitted = _fit(head, train_seq, val_seq, config, epochs, desc, progress)
    best_epoch, history = fitted.best_epoch, fitted.history
    branches = branch_accuracies(head, val_seq, config.batch_size)
    warning = fusion_warning(branches, f"{out_dir}: validation")
    if warning:
        log.warning(warning)
    steps = features.manifest["step"]
    extractors = {"video": features.manifest["video"], "audio": features.manifest["audio"]}
    if config_of_head.motion_dim:
        extractors["motion"] = features.manifest["motion"]
    # The threshold is chosen with the head that has not seen the validation clips (before the refit);
    # ``val`` is read as the run reads it already (visual side, video motion), hence no video_motion here.
    events = calibrate_events(Run(head=head, config=config_of_head, classes=classes, norm=norm, seq_len=config.seq_len,
                                  step=steps, extractors=extractors), val, config.false_events_per_hour) if val else {}
    refit_epochs = None
    if config.refit and val:
        seed_everything(config.seed)
        everything = train + val
        norm = Normalization.fit([c.video for c in everything], [c.audio for c in everything])
        head = build_head(config_of_head)
        refit_epochs = best_epoch
        refit = _fit(head, _sequences(everything, classes, norm, config.seq_len, stride=config.seq_len),
                     None, config, refit_epochs, desc + " (train + val)", progress)
        history += [{**record, "refit": True} for record in refit.history]
    blend = None
    if config.clip_blend < 1:
        blend = PooledLinear.fit(train + val if refit_epochs else train, classes, config_of_head.modality, config.seed,
                                 motion_dim=config_of_head.motion_dim)
    run = Run(
        head=head,
        config=config_of_head,
        classes=classes,
        norm=norm,
        seq_len=config.seq_len,
        step=steps,
        extractors=extractors,
        blend=blend,
        record=SupervisedRecord(
            train=config,
            features_dir=str(features.root),
            feature_runtimes=features.manifest.get("runtimes"),
            best_epoch=best_epoch,
            refit_epochs=refit_epochs,
            params=count_parameters(head),
            train_seconds=round(time.perf_counter() - started, 2),
            numerics=numerics(),
            val_branch_accuracy=branches,
            fusion_warning=warning,
            stream_selection=selection.to_dict() if selection else None,
            motion_selection=motion_choice.to_dict() if motion_choice else None,
            streams=run_streams(modality, bool(config_of_head.motion_dim)),
            clip_blend=None if blend is None else {"head_weight": config.clip_blend, "pooling": list(blend.stats)},
            video_motion=config.video_motion,
            **events,
        ),
    )
    run.save(out_dir, history=history)
    return run


def fit(data, out_dir: Path | str, config: TrainConfig | None = None, *, progress: bool = True) -> Run:
    """The method table's entry (:mod:`avar.methods.table`): :func:`train_head` on a FEATURES_DIR
    (or an open ``FeatureSet``)."""
    return train_head(data if isinstance(data, FeatureSet) else FeatureSet.open(data), out_dir, config,
                      progress=progress)
