"""What every head config shares: a JSON round trip and the width of its input."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Self

from avar.methods.streams import check_stream_fields


class JsonConfig:
    """Mixin for config dataclasses saved as JSON next to safetensors weights."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(known)} "
                "(was the checkpoint written by a different avar version or model?)"
            )
        return cls(**data)


@dataclass
class StreamConfig(JsonConfig):
    """Base of the configs of heads that read ``video_dim`` / ``audio_dim`` streams per
    ``modality``: how the streams enter the head (:mod:`avar.methods.streams`)."""

    stream_fusion: str = "projected"
    """How the streams enter the head: 'projected' (default) normalises each stream and
    projects it to ``stream_width`` channels, with modality dropout in training; 'concat'
    is the paper's plain concatenation of the raw features (Eq. 6), kept for the fidelity
    tables (:mod:`avar.methods.streams`)."""
    stream_width: int = 64
    """'projected' only: channels each stream is projected to."""
    modality_dropout: float = 0.3
    """'projected' with both streams only: probability that a training window sees one
    stream alone (the other zeroed), so each stream's path learns on its own."""
    motion_dim: int = 0
    """Columns at the end of the video input that are the motion stream (optical flow,
    :mod:`avar.features.motion`; 0: none). 'projected' gives them their own normalisation and
    projection, a third stream beside appearance and sound; 'concat' reads them as video."""

    def __post_init__(self) -> None:
        check_stream_fields(self)

    def input_dim(self) -> int:
        """Width of the fused per-step feature that enters the head for ``modality``:
        ``stream_width`` per stream when projected, the raw widths concatenated otherwise."""
        if self.stream_fusion == "projected":
            return self.stream_width * (len(self.modality) + (1 if self.motion_dim and "v" in self.modality else 0))
        return {
            "av": self.video_dim + self.audio_dim,
            "a": self.audio_dim,
            "v": self.video_dim,
        }[self.modality]
