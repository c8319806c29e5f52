"""Any sequence head of ``HEADS`` read as a per-step anomaly scorer, for weak (MIL) training.

``avar train mil --head mtcn`` trains the AVAR-Net head with AVACA's losses
(:mod:`avar.methods.avaca.loss`), so the two families compare on the same features, labels and
objective. The head is built with two outputs, ``(normal, anomalous)``; a step's anomaly score
is the softmax probability of the second. Multi-stage heads (MS-TCN) give one score tensor per
stage and the loss is averaged over them, as the supervised loss is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avar.methods.heads import HeadConfig, build_head

MIL_CLASSES = ("normal", "anomalous")
"""What the two outputs of a MIL-trained head mean."""


@dataclass
class MILOutput:
    """Per-step anomaly scores of a MIL head; padded steps hold zeros."""

    scores: Tensor
    """``[B, T]`` the last stage's ``P(anomalous)`` per step."""
    stage_scores: list[Tensor]
    """One ``[B, T]`` per stage, first to last (the losses average over them)."""


class MILHead(nn.Module):
    """Wraps a head built from ``config`` (which must have ``num_classes == 2``)."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        if getattr(config, "num_classes", None) != len(MIL_CLASSES):
            raise ValueError(
                f"a MIL head scores (normal, anomalous): build its config with num_classes=2, "
                f"got {getattr(config, 'num_classes', None)}"
            )
        self.config = config
        self.head = build_head(config)

    def forward(self, video: Tensor | None, audio: Tensor | None, mask: Tensor) -> MILOutput:
        out = self.head(video, audio, mask)
        mask = mask if mask.dtype == torch.bool else mask != 0
        stages = getattr(out, "stage_logits", None) or [out.step_logits]
        scores = [torch.where(mask, torch.softmax(s, dim=-1)[..., 1], 0.0) for s in stages]
        return MILOutput(scores=scores[-1], stage_scores=scores)
