"""Windows of T steps (the paper's T = 10) and their padding: written once, used by training,
evaluation, ``avar predict`` and ``avar watch``.

Two ways to cut a clip of ``n`` steps:

* **tiling** (:func:`window_starts`, training and clip-level evaluation): windows at a stride;
  the last window is aligned to the clip's end so no step is left out.
* **one window per step** (:func:`centred_start`, per-step scores): step ``t`` is scored in the
  window of T steps starting at ``t - (T - 1) // 2``, shifted to stay inside the clip. A live
  stream knows that window once step ``t + T // 2`` has arrived, so ``avar watch`` and
  ``avar predict`` give the same per-step scores for the same file, whatever its length.

Either way a window shorter than T (a clip of fewer steps) is right-padded with zeros and
masked (:func:`pad_windows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def window_starts(n_steps: int, seq_len: int, stride: int) -> list[int]:
    """Start indices of windows of ``seq_len`` that together cover ``n_steps`` steps."""
    if n_steps <= seq_len:
        return [0]
    starts = list(range(0, n_steps - seq_len + 1, stride))
    if starts[-1] != n_steps - seq_len:
        starts.append(n_steps - seq_len)
    return starts


def centred_start(t: int, n_steps: int, seq_len: int) -> int:
    """First step of the window that scores step ``t`` of ``n_steps`` (see the module docstring)."""
    return max(0, min(t - (seq_len - 1) // 2, n_steps - seq_len))


def causal_start(t: int, seq_len: int) -> int:
    """First step of the window that ends at step ``t`` (``avar watch --causal``)."""
    return max(0, t - seq_len + 1)


def step_windows(steps: range, n_steps: int, seq_len: int, *, causal: bool = False,
                 final: bool = True) -> list[tuple[int, int, int]]:
    """``(t, start, stop)``: the window that scores each step ``t`` of ``steps`` among the
    ``n_steps`` known so far, the one place both files (``avar predict``, evaluation) and
    streams (``avar watch``) place them. Centred (default) or ``causal``; with ``final=False``
    (a stream that goes on) only the leading steps whose centred window is complete already,
    which is the window they get once the stream ends too."""
    out = []
    for t in steps:
        if causal:
            start, stop = causal_start(t, seq_len), t + 1
        elif final:
            start = centred_start(t, n_steps, seq_len)
            stop = min(n_steps, start + seq_len)
        else:
            start = centred_start(t, t + seq_len, seq_len)
            stop = start + seq_len
            if stop > n_steps:
                break
        out.append((t, start, stop))
    return out


def pad_windows(streams: list, spans: list[tuple[int, int]], seq_len: int,
                offset: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Windows ``[start, stop)`` of each stream (a ``[T, d]`` array or a list of ``[d]`` rows
    whose first row is step ``offset``), right-padded to ``seq_len`` with zeros:
    ``([N, seq_len, d] per stream, mask [N, seq_len])``, the mask True on real steps."""
    mask = np.zeros((len(spans), seq_len), bool)
    out = [np.zeros((len(spans), seq_len, len(s[0])), np.float32) for s in streams]
    for row, (start, stop) in enumerate(spans):
        n = min(seq_len, stop - start)
        for array, stream in zip(out, streams):
            array[row, :n] = stream[start - offset : start - offset + n]
        mask[row, :n] = True
    return out, mask


@dataclass
class SequenceBatch:
    """Windows ready for a head: ``video [N, T, dv]``, ``audio [N, T, da]``, ``mask [N, T]``
    (True on real steps), ``labels [N]`` class indices, and for each window the clip index
    and first step it came from (``clip [N]``, ``start [N]``)."""

    video: torch.Tensor
    audio: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    clip: np.ndarray
    start: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "SequenceBatch":
        index_t = torch.as_tensor(index)
        return SequenceBatch(
            self.video[index_t], self.audio[index_t], self.mask[index_t], self.labels[index_t],
            self.clip[index], self.start[index],
        )


def make_sequences(
    videos: list[np.ndarray], audios: list[np.ndarray], labels: list[int], seq_len: int, stride: int
) -> SequenceBatch:
    """Cut each clip's ``[T_i, d]`` features into windows of ``seq_len`` steps."""
    starts = [window_starts(len(v), seq_len, stride) for v in videos]
    parts = [pad_windows([v, a], [(s, min(s + seq_len, len(v))) for s in st], seq_len) for v, a, st in zip(videos, audios, starts)]
    video = np.concatenate([p[0][0] for p in parts])
    audio = np.concatenate([p[0][1] for p in parts])
    mask = np.concatenate([p[1] for p in parts])
    clip = np.repeat(np.arange(len(videos), dtype=np.int64), [len(st) for st in starts])
    return SequenceBatch(
        torch.from_numpy(video),
        torch.from_numpy(audio),
        torch.from_numpy(mask),
        torch.as_tensor([labels[i] for i in clip], dtype=torch.long),
        clip,
        np.array([s for st in starts for s in st], dtype=np.int64),
    )
