"""Training objective of the AVAR-Net head: the MS-TCN multi-stage loss on clip labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avar.methods.avarnet.torch_model import HeadOutput, masked_mean


def avarnet_loss(
    output: HeadOutput,
    labels: Tensor,
    mask: Tensor,
    smoothing_weight: float = 0.15,
    tau: float = 4.0,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Scalar loss for ``output`` of a batch with clip labels ``labels [B]`` (class indices).

    Per stage ``s`` (the paper trains on clip-level labels, MS-TCN supervises every stage):

    - cross-entropy of the stage's clip logits (masked mean of its step logits over real
      steps), the quantity the classifier is scored on;
    - cross-entropy of every real step's logits against its clip's label, averaged over all
      real steps of the batch as MS-TCN averages over frames (so longer clips weigh more);
      a clip label is taken to hold at every step of the clip;
    - ``smoothing_weight`` x MS-TCN's truncated MSE: squared difference of log-softmax
      between neighbouring real steps, the earlier step detached, clamped at ``tau**2`` so
      real class changes are not over-penalised, averaged over classes and real pairs.

    ``label_smoothing`` softens both cross-entropy targets (0 is the paper's loss).

    The result is the mean over stages (MS-TCN sums; the mean keeps the scale independent
    of ``num_stages``). ``mask [B, T]`` is True at real steps; padded steps never count.
    """
    mask = mask if mask.dtype == torch.bool else mask != 0
    step_labels = labels.unsqueeze(1).expand_as(mask)
    pairs = mask[:, 1:] & mask[:, :-1]
    per_stage = []
    for logits in output.stage_logits:
        clip_ce = F.cross_entropy(masked_mean(logits, mask), labels, label_smoothing=label_smoothing)
        step_ce = F.cross_entropy(logits[mask], step_labels[mask], label_smoothing=label_smoothing)
        log_p = F.log_softmax(logits, dim=-1)
        sq = (log_p[:, 1:] - log_p[:, :-1].detach()).pow(2).clamp(max=tau**2).mean(dim=-1)
        tmse = (sq * pairs).sum() / pairs.sum().clamp(min=1)
        per_stage.append(clip_ce + step_ce + smoothing_weight * tmse)
    return torch.stack(per_stage).mean()
