"""What every feature extractor provides, and the offline-weights error they share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

AUDIO_RATE = 16_000
"""Sample rate (Hz) of every waveform handed to an audio extractor."""

Modality = Literal["video", "audio", "motion"]


class Extractor(Protocol):
    """A frozen backbone that turns one step's media into one feature vector.

    Video extractors take RGB frames ``uint8 [N, H, W, 3]`` (any size; they resize
    themselves). Audio extractors take mono waveforms ``float32 [N, S]`` at
    ``AUDIO_RATE`` Hz, one row per step. Motion extractors take ``MotionPairs`` (gray frame
    pairs per step, as their ``sampling`` asks the decoder for). All return ``float32 [N, dim]``.
    """

    name: str
    modality: Modality
    dim: int
    version: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ExtractorInfo:
    """One row of ``avar extractors``."""

    name: str
    modality: Modality
    dim: int
    source: str
    offline: bool
    """True when the weights are on this machine (no network needed)."""
    preprocessing: str


OFFLINE_EXTRACTORS = ("efficientnet-lite0", "logmel", "flow-hist")


class WeightsUnavailableError(RuntimeError):
    """Weights are neither on disk nor reachable; raised at once, never retried."""

    def __init__(self, name: str, source: str, reason: str):
        super().__init__(
            f"cannot load weights for extractor '{name}' from '{source}': {reason}\n"
            f"  fix: download the weights elsewhere (e.g. `huggingface-cli download {source}`)"
            f" and pass the local directory with --video-weights / --audio-weights DIR,\n"
            f"  or use the offline extractors that ship with avar: "
            f"{', '.join(OFFLINE_EXTRACTORS)} (--video efficientnet-lite0 --audio logmel)."
        )


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
