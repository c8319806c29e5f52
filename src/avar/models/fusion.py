"""Late (decision-level) fusion: one head per modality, their per-step class probabilities
combined (sec. 4.4.2 compares it with AVAR-Net's early fusion: 88.20% vs 89.29% on VAAR).

Either branch can be any head of :data:`avar.models.heads.HEADS`; the fused head speaks the
same interface as :class:`~avar.models.avarnet.torch_model.AVARNetHead`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from avar.models.avarnet.torch_model import HeadOutput, masked_mean
from avar.models.config_base import JsonConfig

LATE_MODES = ("mean", "learned")

# Clamp before the log: a probability of exactly 0 would give -inf logits and NaN losses.
_MIN_PROB = 1e-8


@dataclass
class LateFusionConfig(JsonConfig):
    """Configuration of :class:`LateFusionHead`: a video branch and an audio branch of the same
    kind, fused at the decision level. ``modality`` is always 'av'."""

    head: str = "mtcn"
    """Kind of both branches: any key of :data:`avar.models.heads.HEADS`."""
    mode: str = "mean"
    """'mean': ``p = (p_v + p_a) / 2``. 'learned': per-class weights
    ``w_c = sigmoid(weight_gain * theta_c)`` (``theta`` starts at 0, so ``w`` starts at 0.5,
    i.e. 'mean'), ``p ∝ w p_v + (1 - w) p_a`` renormalised over classes (per-class weights
    alone need not sum to 1)."""
    branch: dict[str, Any] = field(default_factory=dict)
    """Config fields shared by both branches (e.g. ``{"num_f_maps": 32}`` or
    ``{"hidden": 64}``); ``video_dim`` / ``audio_dim`` / ``num_classes`` / ``modality`` are
    set from this config, not here."""
    video_dim: int = 640
    """Width of one video step's feature (MobileViT-small, globally pooled)."""
    audio_dim: int = 768
    """Width of one audio step's feature (wav2vec2-base hidden size)."""
    num_classes: int = 10
    """Anomaly classes (VAAR has 10, including 'normal')."""
    weight_gain: float = 10.0
    """'learned' only: multiplies ``theta`` inside the sigmoid, i.e. the fusion weights'
    learning rate under Adam, which moves each parameter by about ``lr`` per step whatever
    its gradient. At gain 1 and lr 1e-3, 150 steps move ``w`` from 0.5 to at most ~0.54, so
    the fusion stays 'mean' while the branches learn; at 10 the weights find the useful
    modality before the useless branch has memorised the training set (see
    ``tests/test_heads.py``)."""

    def __post_init__(self) -> None:
        # heads.py imports this module for its table, so the table is read at call time
        from avar.models.heads import HEADS

        if self.head not in HEADS:
            raise ValueError(
                f"LateFusionConfig.head must be one of {sorted(HEADS)}, got {self.head!r}"
            )
        if self.mode not in LATE_MODES:
            raise ValueError(
                f"LateFusionConfig.mode must be one of {LATE_MODES}, got {self.mode!r}"
            )
        reserved = sorted(
            {"kind", "modality", "video_dim", "audio_dim", "num_classes"} & set(self.branch)
        )
        if reserved:
            raise ValueError(
                f"LateFusionConfig.branch must not set {reserved}: the branch kind comes from "
                "'head', the modality is 'v' / 'a' per branch, and the dims and classes from "
                "the LateFusionConfig itself"
            )
        # explicit, so a saved config keeps meaning the same fusion when the default changes
        self.branch = {"stream_fusion": "projected", **self.branch}
        for name in ("video_dim", "audio_dim", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"LateFusionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.weight_gain > 0:
            raise ValueError(f"LateFusionConfig.weight_gain must be > 0, got {self.weight_gain}")

    @property
    def modality(self) -> str:
        """Always 'av': late fusion reads both streams."""
        return "av"

    def branch_config(self, modality: str):
        """The config of the ``modality`` ('v' or 'a') branch."""
        from avar.models.heads import head_config

        return head_config(
            self.head,
            video_dim=self.video_dim,
            audio_dim=self.audio_dim,
            num_classes=self.num_classes,
            modality=modality,
            **self.branch,
        )


class LateFusionHead(nn.Module):
    """Video-only and audio-only branch heads whose per-step softmax outputs are averaged
    ('mean') or weighed per class ('learned').

    Outputs are log-probabilities: ``step_logits = log p`` (so ``softmax(step_logits) == p``
    and cross-entropy on them is the NLL of the fused probability), and ``clip_logits`` is
    the log of the mean over real steps of ``p`` — the fused clip probability, not a mean
    of logits as in the other heads, because a mean of log-probabilities would no longer
    sum to one. (``avarnet_loss``'s clip term still averages the fused step logits, i.e. a
    geometric mean of ``p``: close to ``clip_logits``, not equal.) ``stage_logits`` lists
    both branches' stages and then the fused step logits, so
    :func:`~avar.models.avarnet.loss.avarnet_loss` trains each branch on its own and the
    fusion jointly.
    """

    config_class = LateFusionConfig

    def __init__(self, config: LateFusionConfig):
        super().__init__()
        from avar.models.heads import build_head

        self.config = config
        self.video_branch = build_head(config.branch_config("v"))
        self.audio_branch = build_head(config.branch_config("a"))
        self.weight_logit: nn.Parameter | None = None
        if config.mode == "learned":
            self.weight_logit = nn.Parameter(torch.zeros(config.num_classes))

    def video_weight(self) -> Tensor:
        """``[C]`` weight of the video branch per class (0.5 everywhere in 'mean' mode)."""
        if self.weight_logit is None:
            return torch.full((self.config.num_classes,), 0.5)
        return torch.sigmoid(self.config.weight_gain * self.weight_logit)

    def forward(self, video: Tensor | None, audio: Tensor | None, mask: Tensor) -> HeadOutput:
        """``video [B, T, video_dim]``, ``audio [B, T, audio_dim]``, ``mask [B, T]``
        (True = real step; non-bool masks are read as ``mask != 0``). A stream passed as
        None is missing: the other branch's output is returned as it is."""
        mask = mask if mask.dtype == torch.bool else mask != 0
        if video is None or audio is None:
            # one stream missing: the other branch alone (how its accuracy is reported)
            branch = self.audio_branch if video is None else self.video_branch
            return branch(video, audio, mask)
        out_v = self.video_branch(video, audio, mask)
        out_a = self.audio_branch(video, audio, mask)
        p_v = torch.softmax(out_v.step_logits, dim=-1)
        p_a = torch.softmax(out_a.step_logits, dim=-1)
        if self.weight_logit is None:
            p = (p_v + p_a) / 2
        else:
            w = self.video_weight()
            p = w * p_v + (1 - w) * p_a
            p = p / p.sum(dim=-1, keepdim=True)
        keep = mask.unsqueeze(-1)
        step_logits = torch.where(keep, torch.log(p.clamp(min=_MIN_PROB)), 0.0)
        clip_p = masked_mean(p, mask)
        return HeadOutput(
            step_logits=step_logits,
            stage_logits=out_v.stage_logits + out_a.stage_logits + [step_logits],
            clip_logits=torch.log(clip_p.clamp(min=_MIN_PROB)),
        )
