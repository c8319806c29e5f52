"""Clips become fixed-length sequences of T steps (the paper's T = 10).

A clip longer than T is cut into windows; the last window is aligned to the clip's end so
no step is left out. A clip shorter than T is one window, right-padded and masked.
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
    dv, da = videos[0].shape[1], audios[0].shape[1]
    rows = [(i, s) for i, v in enumerate(videos) for s in window_starts(len(v), seq_len, stride)]
    video = np.zeros((len(rows), seq_len, dv), np.float32)
    audio = np.zeros((len(rows), seq_len, da), np.float32)
    mask = np.zeros((len(rows), seq_len), bool)
    for r, (i, s) in enumerate(rows):
        n = min(seq_len, len(videos[i]) - s)
        video[r, :n] = videos[i][s : s + n]
        audio[r, :n] = audios[i][s : s + n]
        mask[r, :n] = True
    clip = np.array([i for i, _ in rows], dtype=np.int64)
    return SequenceBatch(
        torch.from_numpy(video),
        torch.from_numpy(audio),
        torch.from_numpy(mask),
        torch.as_tensor([labels[i] for i in clip], dtype=torch.long),
        clip,
        np.array([s for _, s in rows], dtype=np.int64),
    )
