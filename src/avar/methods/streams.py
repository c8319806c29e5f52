"""How the video and audio streams enter a sequence head: the paper's plain concatenation
(Eq. 6) or avar's robust default, each stream normalised and projected to a common width.

Plain concatenation lets the wider stream dominate: 1280-d EfficientNet features next to
192-d log-mel features make the first layer mostly a video layer, and on a few dozen clips
the head memorises the video and ignores the audio. ``projected`` gives each stream its own
LayerNorm and projection to ``stream_width`` channels, so both enter at the same width and
scale, and trains with modality dropout (a training window sometimes sees one stream only,
the other zeroed), so each stream's path learns to classify on its own and a stream that
carries no information cannot take the other down with it. A stream passed as ``None`` is
treated as missing (zeros after its projection), which is also how the fused model's
single-stream branches are scored (:func:`avar.methods.avarnet.train.branch_accuracies`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

STREAM_FUSIONS = ("projected", "concat")
"""'projected' (default): per-stream LayerNorm + projection to ``stream_width`` + modality
dropout, streams concatenated; 'concat': the paper's raw concatenation (Eq. 6)."""


def run_streams(modality: str, motion: bool) -> list[str]:
    """The streams a run reads, by name (``config.json``'s ``streams``): appearance ('video'),
    'motion' and 'audio', as ``modality`` and the motion choice leave them."""
    return [name for name, used in (("video", "v" in modality), ("motion", motion and "v" in modality),
                                    ("audio", "a" in modality)) if used]


def check_stream_fields(config) -> None:
    """Validate the fields every stream config shares (``stream_fusion``, ``stream_width``,
    ``modality_dropout``, ``motion_dim``); ``config``'s class name goes into the message."""
    name = type(config).__name__
    if not 0 <= config.motion_dim < config.video_dim:
        raise ValueError(f"{name}.motion_dim must be in [0, video_dim) (the motion columns of the video input), "
                         f"got {config.motion_dim} of {config.video_dim}")
    if config.stream_fusion not in STREAM_FUSIONS:
        raise ValueError(f"{name}.stream_fusion must be one of {STREAM_FUSIONS}, got {config.stream_fusion!r}")
    if config.stream_width < 1:
        raise ValueError(f"{name}.stream_width must be >= 1, got {config.stream_width}")
    if not 0.0 <= config.modality_dropout < 1.0:
        raise ValueError(f"{name}.modality_dropout must be in [0, 1), got {config.modality_dropout}")


def _checked(name: str, tensor: Tensor | None, dim: int) -> Tensor | None:
    if tensor is not None and (tensor.dim() != 3 or tensor.shape[-1] != dim):
        raise ValueError(
            f"{name} features must be [B, T, {dim}] (config.{name}_dim), "
            f"got {list(tensor.shape)}; was the cache built with another extractor?"
        )
    return tensor


class StreamFusion(nn.Module):
    """Per-step fusion of the streams ``config.modality`` names -> ``[B, T, out_dim]``.

    ``config`` is any head config with ``modality``, ``video_dim``, ``audio_dim``,
    ``motion_dim``, ``stream_fusion``, ``stream_width`` and ``modality_dropout`` (:class:`AVARNetConfig`,
    the baselines' config), so every head fuses the same way.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.streams = [(name, dim) for name, dim, wanted in (
            ("video", config.video_dim, "v" in config.modality),
            ("audio", config.audio_dim, "a" in config.modality),
        ) if wanted]
        self.projected = config.stream_fusion == "projected"
        # Projected, the motion columns of the video input are a stream of their own.
        self.motion_dim = config.motion_dim if self.projected and "v" in config.modality else 0
        if self.projected:
            widths = {name: dim for name, dim in self.streams}
            if self.motion_dim:
                widths = {"video": config.video_dim - self.motion_dim, "motion": self.motion_dim,
                          **{k: v for k, v in widths.items() if k != "video"}}
            self.project = nn.ModuleDict({
                name: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, config.stream_width), nn.GELU())
                for name, dim in widths.items()
            })
        self.out_dim = config.input_dim()

    def forward(self, video: Tensor | None, audio: Tensor | None) -> Tensor:
        """``video [B, T, video_dim]``, ``audio [B, T, audio_dim]``; a stream the modality does
        not name is ignored, one it names may be None only under 'projected' (missing: zeros)."""
        given = {"video": video, "audio": audio}
        tensors = {name: _checked(name, given[name], dim) for name, dim in self.streams}
        present = [t for t in tensors.values() if t is not None]
        if not present:
            raise ValueError(f"modality {self.config.modality!r} needs "
                             f"{' and '.join(n for n, _ in self.streams)} features, got None")
        shape = present[0].shape[:2]
        if any(t.shape[:2] != shape for t in present):
            raise ValueError(
                f"video {list(video.shape)} and audio {list(audio.shape)} must share "
                "[B, T]; align both streams on the same time steps before fusing"
            )
        if not self.projected:
            missing = [n for n, t in tensors.items() if t is None]
            if missing:
                raise ValueError(
                    f"modality {self.config.modality!r} needs {missing[0]} features, got None; "
                    f"pass {missing[0]} [B, T, dim] or choose a modality without it "
                    "(only stream_fusion='projected' accepts a missing stream)"
                )
            return torch.cat(list(tensors.values()), dim=-1)
        if self.motion_dim and "video" in tensors:
            video = tensors.pop("video")
            split = self.config.video_dim - self.motion_dim
            tensors = {"video": None if video is None else video[..., :split],
                       "motion": None if video is None else video[..., split:], **tensors}
        parts = []
        for name, tensor in tensors.items():
            if tensor is None:
                parts.append(present[0].new_zeros(*shape, self.config.stream_width))
            else:
                parts.append(self.project[name](tensor))
        if self.training and len(parts) >= 2 and self.config.modality_dropout > 0:
            # Two streams keep their own draw, so runs of two streams train as they always did.
            parts = self._drop_modality(parts) if len(parts) == 2 else self._drop_one(parts)
        return torch.cat(parts, dim=-1)

    def _drop_one(self, parts: list[Tensor]) -> list[Tensor]:
        """Three or more streams: zero one of a window's streams, drawn at random, with
        probability ``modality_dropout``."""
        batch = parts[0].shape[0]
        dropped = torch.rand(batch, device=parts[0].device) < self.config.modality_dropout
        which = torch.randint(len(parts), (batch,), device=parts[0].device)
        return [part * (~(dropped & (which == k)))[:, None, None].to(part.dtype) for k, part in enumerate(parts)]

    def _drop_modality(self, parts: list[Tensor]) -> list[Tensor]:
        """Zero one stream of a window with probability ``modality_dropout`` (which one at
        random), so each stream's path also learns alone."""
        batch = parts[0].shape[0]
        dropped = torch.rand(batch, device=parts[0].device) < self.config.modality_dropout
        which = torch.rand(batch, device=parts[0].device) < 0.5
        keep_first = ~(dropped & which)
        keep_second = ~(dropped & ~which)
        return [parts[0] * keep_first[:, None, None].to(parts[0].dtype),
                parts[1] * keep_second[:, None, None].to(parts[1].dtype)]


__all__ = ["STREAM_FUSIONS", "StreamFusion", "check_stream_fields", "run_streams"]
