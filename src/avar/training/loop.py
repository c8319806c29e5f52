"""The one training loop every method plugs its batches, loss and validation into.

It owns what the three methods used to write three times: epochs over a method's batches,
the optimiser step (with gradient clipping where asked), a learning-rate hook per step,
validation after each epoch, the checkpoint choice (the epoch whose validation record gives
the highest ``select`` key, restored at the end), early stopping, and the history, one
shape for every method: a list of per-epoch records ``{"epoch", "train_loss", "lr",
"samples", "seconds", ...}`` (a method training several models tags each record with its
``"model"``).

Seeding stays with the caller (:func:`avar.training.seeding.seed_everything` before the
model is built, and the method's own generator for its batch order), so the loop draws no
random numbers of its own and a run repeats from its seed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm


@dataclass
class Step:
    """What a method's ``loss`` gives for one batch: the ``loss`` to minimise, the batch's
    ``size`` (records weight their means by it) and ``parts``, other per-batch floats recorded
    as ``train_<name>`` (a method's loss terms)."""

    loss: torch.Tensor
    size: int
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class Fitted:
    """What :func:`train_loop` did: the epoch whose weights the model holds (``best_epoch``,
    1-based) and the per-epoch ``history`` (one record per epoch trained)."""

    best_epoch: int
    history: list[dict]


def train_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], Iterable],
    loss: Callable[[object], Step],
    epochs: int,
    *,
    validate: Callable[[dict], dict] | None = None,
    select: Callable[[dict], tuple] | None = None,
    early_stop: int | None = None,
    clip_grad: float | None = None,
    before_step: Callable[[int], None] | None = None,
    desc: str = "train",
    progress: bool = True,
    batch_progress: bool = False,
) -> Fitted:
    """Train ``model`` for up to ``epochs`` epochs and leave it in eval mode at the chosen epoch.

    ``batches(epoch)`` gives epoch ``epoch``'s (1-based) batches and ``loss(batch)`` their
    :class:`Step`. ``before_step(n)`` runs before optimiser step ``n`` (1-based over the whole
    training: a warm-up or cosine schedule sets the rate there). ``validate(record)`` runs after
    each epoch and returns what to add to its record (``val_loss`` ...); it may read the record
    (a plateau scheduler watches it). ``select(record)`` is the key of an epoch's weights, the
    highest kept (ties to the earlier epoch); without it, or without ``validate``, the last
    epoch's weights are kept. ``early_stop``: stop after that many epochs without a better key.
    ``clip_grad``: the gradient norm is clipped to it. ``batch_progress`` shows a bar per epoch
    over its batches (long epochs) instead of one bar over the epochs.
    """
    history: list[dict] = []
    best_key, best_state, best_epoch, step_number = None, None, 0, 0
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress or batch_progress)
    for epoch in bar:
        model.train()
        started, total, seen, parts = time.perf_counter(), 0.0, 0, {}
        inner = tqdm(batches(epoch), desc=f"{desc} epoch {epoch}/{epochs}", disable=not (progress and batch_progress),
                     leave=False)
        for batch in inner:
            step_number += 1
            if before_step is not None:
                before_step(step_number)
            out = loss(batch)
            optimizer.zero_grad()
            out.loss.backward()
            if clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            total += out.loss.item() * out.size
            seen += out.size
            for name, value in out.parts.items():
                parts[name] = parts.get(name, 0.0) + value * out.size
            inner.set_postfix(loss=f"{total / seen:.5f}")
        record = {"epoch": epoch, "train_loss": total / max(seen, 1),
                  **{f"train_{name}": value / max(seen, 1) for name, value in parts.items()},
                  "lr": optimizer.param_groups[0]["lr"], "samples": seen,
                  "seconds": round(time.perf_counter() - started, 2)}
        history.append(record)
        if validate is None:
            best_epoch = epoch
            continue
        record.update(validate(record))
        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.startswith("val_") and isinstance(v, float)})
        key = select(record) if select is not None else (epoch,)
        if best_key is None or key > best_key:
            best_key, best_state, best_epoch = key, copy.deepcopy(model.state_dict()), epoch
        elif early_stop is not None and epoch - best_epoch >= early_stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return Fitted(best_epoch=best_epoch, history=history)
