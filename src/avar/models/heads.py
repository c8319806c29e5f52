"""Every sequence head by name, and the helpers that build one from a config or JSON.

The names are Table 2's rows (sec. 4.4.1) plus late fusion (sec. 4.4.2). All heads take
``head(video [B, T, dv] | None, audio [B, T, da] | None, mask [B, T]) -> HeadOutput`` and
train with :func:`~avar.models.avarnet.loss.avarnet_loss`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from avar.models.avarnet.config import AVARNetConfig
from avar.models.avarnet.torch_model import AVARNetHead
from avar.models.baselines.config import BaselineConfig
from avar.models.baselines.torch_model import RecurrentHead, TransformerHead
from avar.models.fusion import LateFusionConfig, LateFusionHead

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
probabilities fused (:mod:`avar.models.fusion`)."""

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
                                video_dim=video_dim, audio_dim=audio_dim, num_classes=num_classes)
    config_class = HEADS[kind].config_class
    values = dict(overrides, video_dim=video_dim, audio_dim=audio_dim,
                  num_classes=num_classes, modality=modality)
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
