"""AVACA's training losses (sec. IV-E, after Wan et al.'s AR-Net): dynamic MIL plus center loss.

Every function takes per-step anomaly scores ``[B, T]`` in [0, 1], the video labels ``[B]``
(1 = the video contains an anomaly somewhere, 0 = normal) and each video's number of real
steps ``lengths [B]`` (steps at or beyond a video's length are padding and never read).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_ALPHA = 8
"""``k = floor(t / alpha)``: the paper leaves alpha open; 8 keeps ~12% of a video's steps,
below the shortest anomaly share of the synthetic benchmark (10%)."""


def top_k_count(lengths: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    """``k_i = floor(t_i / alpha)`` scores per video (sec. IV-E), at least 1.

    A video shorter than ``alpha`` steps would otherwise select nothing; it keeps its top score.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    lengths = torch.as_tensor(lengths)
    return torch.clamp(torch.div(lengths, alpha, rounding_mode="floor").long(), min=1)


def top_k_mask(scores: Tensor, lengths: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    """``bool [B, T]``: True at each video's ``k_i`` highest-scoring real steps (ties by position)."""
    lengths = torch.as_tensor(lengths, device=scores.device)
    steps = torch.arange(scores.shape[1], device=scores.device)
    real = steps.unsqueeze(0) < lengths.unsqueeze(1)
    ranked = torch.where(real, scores.detach(), -torch.inf)
    order = torch.argsort(ranked, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, steps.expand_as(order).contiguous())
    return (rank < top_k_count(lengths, alpha).to(scores.device).unsqueeze(1)) & real


def dmil_loss(scores: Tensor, labels: Tensor, lengths: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    """Dynamic multiple-instance loss (Eq. 1): the mean over videos of the binary cross-entropy
    between each of the video's top-``k_i`` scores and its label, averaged over the ``k_i``.

    (Eq. 1 as printed has ``+ (1 - y) log(1 - s)``; the cross-entropy the text describes, and
    AR-Net, has ``-``.)
    """
    labels = torch.as_tensor(labels, dtype=scores.dtype, device=scores.device)
    chosen = top_k_mask(scores, lengths, alpha)
    target = labels.unsqueeze(1).expand_as(scores)
    bce = F.binary_cross_entropy(scores.clamp(0.0, 1.0), target, reduction="none")
    per_video = torch.where(chosen, bce, 0.0).sum(1) / chosen.sum(1)
    return per_video.mean()


def center_loss(scores: Tensor, labels: Tensor, lengths: Tensor) -> Tensor:
    """Center loss (Eq. 2): for a normal video, the mean squared distance of its scores from
    their mean ``c_i``; 0 for an anomalous one. Averaged over the normal videos of the batch
    (0 when there are none), so its scale does not depend on the batch's mix.
    """
    labels = torch.as_tensor(labels, device=scores.device)
    lengths = torch.as_tensor(lengths, device=scores.device)
    real = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0) < lengths.unsqueeze(1)
    count = real.sum(1).clamp(min=1).to(scores.dtype)
    center = torch.where(real, scores, 0.0).sum(1) / count
    spread = torch.where(real, (scores - center.unsqueeze(1)) ** 2, 0.0).sum(1) / count
    normal = labels == 0
    if not normal.any():
        return scores.new_zeros(())
    return spread[normal].mean()


@dataclass
class AVACALoss:
    """The total ``theta * L_DMIL + lambda * L_C`` and its two parts (for logging)."""

    total: Tensor
    dmil: Tensor
    center: Tensor


def avaca_loss(
    scores: Tensor,
    labels: Tensor,
    lengths: Tensor,
    *,
    theta: float = 10.0,
    lam: float = 1.0,
    alpha: float = DEFAULT_ALPHA,
) -> AVACALoss:
    """``L = theta * L_DMIL + lambda * L_C`` (sec. IV-E; sec. V-B uses theta 10, lambda 1)."""
    dmil = dmil_loss(scores, labels, lengths, alpha)
    center = center_loss(scores, labels, lengths)
    return AVACALoss(total=theta * dmil + lam * center, dmil=dmil, center=center)
