"""Every sequence head by name, late fusion, and the helpers that build one from a config or JSON.

The names are Table 2's rows (sec. 4.4.1) plus late fusion (sec. 4.4.2: one head per
modality, their per-step class probabilities combined; the paper compares it with AVAR-Net's
early fusion, 88.20% vs 89.29% on VAAR). All heads take
``head(video [B, T, dv] | None, audio [B, T, da] | None, mask [B, T]) -> HeadOutput`` and
train with :func:`~avar.methods.avarnet.loss.avarnet_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from avar.methods.avarnet.config import AVARNetConfig
from avar.methods.avarnet.torch_model import AVARNetHead, HeadOutput, masked_mean
from avar.methods.baselines.config import BaselineConfig
from avar.methods.baselines.torch_model import RecurrentHead, TransformerHead
from avar.methods.config_base import JsonConfig

HEADS: dict[str, type[nn.Module]] = {
    "mtcn": AVARNetHead,
    "gru": RecurrentHead,
    "bigru": RecurrentHead,
    "lstm": RecurrentHead,
    "bilstm": RecurrentHead,
    "transformer": TransformerHead,
}
"""Head kind -> class; each class's ``config_class`` is the dataclass that configures it."""

FUSIONS = ("early", "late")
"""'early': one head on the concatenated streams (Eq. 6); 'late': one head per stream,
probabilities fused (:class:`LateFusionHead`)."""

LATE_MODES = ("mean", "learned")

# Clamp before the log: a probability of exactly 0 would give -inf logits and NaN losses.
_MIN_PROB = 1e-8


@dataclass
class LateFusionConfig(JsonConfig):
    """Configuration of :class:`LateFusionHead`: a video branch and an audio branch of the same
    kind, fused at the decision level. ``modality`` is always 'av'."""

    head: str = "mtcn"
    """Kind of both branches: any key of :data:`avar.methods.heads.HEADS`."""
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
    motion_dim: int = 0
    """Motion columns at the end of the video input, the video branch's third stream
    (:attr:`avar.methods.config_base.StreamConfig.motion_dim`)."""
    weight_gain: float = 10.0
    """'learned' only: multiplies ``theta`` inside the sigmoid, i.e. the fusion weights'
    learning rate under Adam, which moves each parameter by about ``lr`` per step whatever
    its gradient. At gain 1 and lr 1e-3, 150 steps move ``w`` from 0.5 to at most ~0.54, so
    the fusion stays 'mean' while the branches learn; at 10 the weights find the useful
    modality before the useless branch has memorised the training set (see
    ``tests/test_heads.py``)."""

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(
                f"LateFusionConfig.head must be one of {sorted(HEADS)}, got {self.head!r}"
            )
        if self.mode not in LATE_MODES:
            raise ValueError(
                f"LateFusionConfig.mode must be one of {LATE_MODES}, got {self.mode!r}"
            )
        reserved = sorted(
            {"kind", "modality", "video_dim", "audio_dim", "num_classes", "motion_dim"} & set(self.branch)
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
        return head_config(
            self.head,
            video_dim=self.video_dim,
            audio_dim=self.audio_dim,
            num_classes=self.num_classes,
            modality=modality,
            motion_dim=self.motion_dim,
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
    :func:`~avar.methods.avarnet.loss.avarnet_loss` trains each branch on its own and the
    fusion jointly.
    """

    config_class = LateFusionConfig

    def __init__(self, config: LateFusionConfig):
        super().__init__()
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


HeadConfig = AVARNetConfig | BaselineConfig | LateFusionConfig


def head_config(
    kind: str,
    *,
    video_dim: int,
    audio_dim: int,
    num_classes: int,
    modality: str = "av",
    fusion: str = "early",
    late_mode: str = "mean",
    motion_dim: int = 0,
    **overrides: Any,
) -> HeadConfig:
    """The config for head ``kind`` on these features; ``overrides`` set the kind's own
    fields (``num_f_maps`` for 'mtcn', ``hidden`` for the baselines, ...).

    With ``fusion='late'`` the result is a :class:`LateFusionConfig` whose branches are
    ``kind`` heads built from ``overrides``; ``modality`` must then be 'av'.
    """
    if kind not in HEADS:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {sorted(HEADS)}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
    if fusion == "late":
        if modality != "av":
            raise ValueError(
                f"late fusion reads both streams, so modality must be 'av', got {modality!r}; "
                "use fusion='early' for a single-stream head"
            )
        return LateFusionConfig(head=kind, mode=late_mode, branch=dict(overrides),
                                video_dim=video_dim, audio_dim=audio_dim, num_classes=num_classes,
                                motion_dim=motion_dim)
    config_class = HEADS[kind].config_class
    values = dict(overrides, video_dim=video_dim, audio_dim=audio_dim,
                  num_classes=num_classes, modality=modality, motion_dim=motion_dim)
    if config_class is BaselineConfig:
        if "kind" in overrides:
            raise ValueError("pass the baseline kind as head_config's first argument, not kind=")
        values["kind"] = kind
    return config_class.from_dict(values)


def build_head(config: HeadConfig) -> nn.Module:
    """The head ``config`` describes, with fresh weights."""
    if isinstance(config, LateFusionConfig):
        return LateFusionHead(config)
    if isinstance(config, BaselineConfig):
        return HEADS[config.kind](config)
    if isinstance(config, AVARNetConfig):
        return AVARNetHead(config)
    raise TypeError(
        f"build_head takes an AVARNetConfig, BaselineConfig or LateFusionConfig, "
        f"got {type(config).__name__}"
    )


def has_branches(config: HeadConfig) -> bool:
    """True when a fused head can also run with one stream missing (its single-stream
    branches): projected early fusion and late fusion, not the paper's concatenation."""
    # late fusion has no stream_fusion of its own: each branch reads one stream anyway
    return config.modality == "av" and getattr(config, "stream_fusion", "projected") != "concat"


def head_type(config: HeadConfig) -> str:
    """Name to store next to ``config.to_dict()``: a key of :data:`HEADS`, or 'late'."""
    if isinstance(config, LateFusionConfig):
        return "late"
    if isinstance(config, BaselineConfig):
        return config.kind
    if isinstance(config, AVARNetConfig):
        return "mtcn"
    raise TypeError(f"not a head config: {type(config).__name__}")


def config_from_dict(head_type: str, data: dict[str, Any]) -> HeadConfig:
    """Inverse of ``(head_type(c), c.to_dict())``, for loading a run's JSON.

    Configs saved before ``stream_fusion`` existed concatenated the raw streams, so a
    missing key reads as 'concat', not as today's default."""
    if head_type == "late":
        branch = data.get("branch", {})
        return LateFusionConfig.from_dict({**data, "branch": {"stream_fusion": "concat", **branch}})
    if head_type not in HEADS:
        raise ValueError(
            f"unknown head type {head_type!r}; choose one of {sorted(HEADS) + ['late']}"
        )
    config_class = HEADS[head_type].config_class
    if config_class is BaselineConfig and data.get("kind", head_type) != head_type:
        raise ValueError(
            f"head type {head_type!r} does not match the config's kind {data['kind']!r}"
        )
    values = {"stream_fusion": "concat", **data}
    if config_class is BaselineConfig:
        values["kind"] = head_type
    return config_class.from_dict(values)
