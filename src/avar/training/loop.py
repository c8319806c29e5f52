"""Supervised training of the AVAR-Net head on a feature cache (paper sec. 4.1).

Defaults follow the paper: initial learning rate 1e-2, reduced on validation-loss plateaus
down to 1e-5, up to 50 epochs. The checkpoint kept is the one with the best validation
clip accuracy, ties going to the lower validation loss: the loss also scores every step
against the clip label, including the normal-looking steps outside the anomaly, so alone it
is a poor guide to which epoch classifies clips best.
"""

from __future__ import annotations

import copy
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avar.features.cache import FeatureSet, StepFeatures, write_json_atomic
from avar.models.avarnet import avarnet_loss, count_parameters
from avar.models.heads import build_head, head_config
from avar.training.run import Normalization, Run
from avar.training.sequences import SequenceBatch, make_sequences


@dataclass
class TrainConfig:
    """Training settings; every field is recorded in the run's ``config.json``."""

    head_type: str = "mtcn"
    """A key of ``avar.models.heads.HEADS``: the AVAR-Net head or a Table 2 baseline."""
    modality: str = "av"
    """'av' fused, 'a' audio only, 'v' video only."""
    fusion: str = "early"
    """'early' concatenates the streams (Eq. 6); 'late' trains one head per stream and
    fuses their probabilities."""
    late_mode: str = "mean"
    """With late fusion: 'mean' averages the probabilities, 'learned' weights them per class."""
    seq_len: int = 10
    """Steps per sequence (the paper's T = 10)."""
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-2
    min_lr: float = 1e-5
    warmup_epochs: int = 3
    """Epochs of linear learning-rate warm-up from ~0 to ``lr``: the usual guard for
    attention layers trained with Adam, so the paper's 1e-2 can stay the peak rate."""
    plateau_patience: int = 3
    """Epochs without a better validation loss before the learning rate drops tenfold."""
    early_stop: int = 12
    """Epochs without a better checkpoint before training stops."""
    optimizer: str = "adam"
    """'adam' or 'sgd' (momentum 0.9); the paper gives the learning rates, not the optimizer."""
    weight_decay: float = 1e-4
    seed: int = 0
    head: dict = field(default_factory=dict)
    """Overrides of the head config's fields (stages, layers, maps, attention, hidden...)."""


OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "sgd": lambda params, **kw: torch.optim.SGD(params, momentum=0.9, nesterov=True, **kw),
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _sequences(clips: list[StepFeatures], classes: list[str], norm: Normalization, seq_len: int, stride: int) -> SequenceBatch:
    pairs = [norm.apply(c.video, c.audio) for c in clips]
    return make_sequences([v for v, _ in pairs], [a for _, a in pairs], [classes.index(c.label) for c in clips], seq_len, stride)


@torch.no_grad()
def _evaluate(head: torch.nn.Module, data: SequenceBatch, batch_size: int) -> tuple[float, float]:
    head.eval()
    losses, correct = [], 0
    for i in range(0, len(data), batch_size):
        part = data.subset(np.arange(i, min(i + batch_size, len(data))))
        out = head(part.video, part.audio, part.mask)
        losses.append(avarnet_loss(out, part.labels, part.mask).item() * len(part))
        correct += (out.clip_logits.argmax(-1) == part.labels).sum().item()
    return sum(losses) / len(data), correct / len(data)


def train_head(features: FeatureSet, out_dir: Path | str, config: TrainConfig | None = None, *, progress: bool = True) -> Run:
    """Train a sequence head on the cache's ``train`` split, select on ``val``, save the run."""
    config = config or TrainConfig()
    seed_everything(config.seed)
    classes = features.classes
    train = features.split("train")
    val = features.split("val")
    if not train:
        raise ValueError(f"{features.root}: no clips in the train split; check the dataset's splits")
    if not val:
        warnings.warn(f"{features.root}: no val clips; selecting the checkpoint on training loss", stacklevel=2)
    norm = Normalization.fit([c.video for c in train], [c.audio for c in train])
    config_of_head = head_config(
        config.head_type,
        video_dim=train[0].video.shape[1],
        audio_dim=train[0].audio.shape[1],
        num_classes=len(classes),
        modality=config.modality,
        fusion=config.fusion,
        late_mode=config.late_mode,
        **config.head,
    )
    head = build_head(config_of_head)
    train_seq = _sequences(train, classes, norm, config.seq_len, stride=config.seq_len)
    val_seq = _sequences(val, classes, norm, config.seq_len, stride=config.seq_len) if val else train_seq

    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {config.optimizer!r}")
    optimizer = OPTIMIZERS[config.optimizer](head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.1, patience=config.plateau_patience, min_lr=config.min_lr
    )
    generator = torch.Generator().manual_seed(config.seed)
    best_key, best_state, best_epoch, history = None, None, -1, []
    started = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=f"train {config.head_type} {config.modality} {config.fusion}", unit="epoch", disable=not progress)
    batches_per_epoch = -(-len(train_seq) // config.batch_size)
    warmup_steps, step = config.warmup_epochs * batches_per_epoch, 0
    for epoch in bar:
        head.train()
        order = torch.randperm(len(train_seq), generator=generator).numpy()
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            step += 1
            if step <= warmup_steps:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * step / warmup_steps
            part = train_seq.subset(order[i : i + config.batch_size])
            loss = avarnet_loss(head(part.video, part.audio, part.mask), part.labels, part.mask)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            optimizer.step()
            total += loss.item() * len(part)
        val_loss, val_acc = _evaluate(head, val_seq, config.batch_size)
        if step >= warmup_steps:
            scheduler.step(val_loss)
        lr = optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch + 1, "train_loss": total / len(order), "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr})
        bar.set_postfix(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.2f}", lr=f"{lr:.0e}")
        key = (val_acc, -val_loss)
        if best_key is None or key > best_key:
            best_key, best_state, best_epoch = key, copy.deepcopy(head.state_dict()), epoch + 1
        elif epoch + 1 - best_epoch >= config.early_stop:
            break
    head.load_state_dict(best_state)
    head.eval()
    steps = features.manifest["step"]
    run = Run(
        head=head,
        config=config_of_head,
        classes=classes,
        norm=norm,
        seq_len=config.seq_len,
        step=steps,
        extractors={"video": features.manifest["video"], "audio": features.manifest["audio"]},
        extra={
            "train": {**config.__dict__},
            "features_dir": str(features.root),
            "best_epoch": best_epoch,
            "params": count_parameters(head),
            "train_seconds": round(time.perf_counter() - started, 2),
        },
    )
    out_dir = Path(out_dir)
    run.save(out_dir)
    write_json_atomic(out_dir / "history.json", history)
    return run
