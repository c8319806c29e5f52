"""What every head config shares: a JSON round trip and the width of its input."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Self


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


class StreamConfig(JsonConfig):
    """Mixin for heads that read ``video_dim`` / ``audio_dim`` streams per ``modality``."""

    def input_dim(self) -> int:
        """Width of the fused per-step feature that enters the head for ``modality``."""
        return {
            "av": self.video_dim + self.audio_dim,
            "a": self.audio_dim,
            "v": self.video_dim,
        }[self.modality]
