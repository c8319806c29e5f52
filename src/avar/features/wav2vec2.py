"""wav2vec 2.0 (Baevski et al. 2020) audio features through transformers."""

from __future__ import annotations

import numpy as np
import torch

from avar.features.base import AUDIO_RATE
from avar.features.hf import load_pretrained, weights_available_offline

NORM_EPS = 1e-7
"""Variance floor of ``Wav2Vec2FeatureExtractor``'s normalisation; keeps silence finite."""


def encoder_receptive_field(kernels: list[int], strides: list[int]) -> int:
    """Samples the convolutional feature encoder needs for one output frame (400 for base)."""
    samples = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides)):
        samples = (samples - 1) * stride + kernel
    return samples


class Wav2Vec2Extractor:
    """Waveforms (16 kHz) -> last hidden state of wav2vec 2.0, mean-pooled over time.

    Each row is normalised to zero mean and unit variance, as ``Wav2Vec2FeatureExtractor``
    does for the base model (``do_normalize``). Output is ``[N, hidden_size]`` (768 for
    ``facebook/wav2vec2-base``).
    """

    name = "wav2vec2-base"
    modality = "audio"
    dim = 768
    version = "1"
    default_source = "facebook/wav2vec2-base"
    preprocessing = "16 kHz waveform, per-step zero mean / unit variance, mean over time"
    batch_size = 16

    @classmethod
    def available_offline(cls, weights: str | None = None) -> bool:
        """True when ``weights`` (default: the hub id) is a local model or in the HF cache."""
        return weights_available_offline(weights or cls.default_source)

    def __init__(self, weights: str | None = None, device: str = "cpu"):
        self.source = weights or self.default_source
        # Imported here: transformers takes seconds to import, which `avar extractors`
        # and the offline extractors should not pay.
        from transformers import Wav2Vec2Model

        self.model = load_pretrained(Wav2Vec2Model, self.name, self.source)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        config = self.model.config
        self.dim = config.hidden_size
        self.min_samples = encoder_receptive_field(config.conv_kernel, config.conv_stride)

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2:
            raise ValueError(
                f"extractor '{self.name}' expects mono waveforms float32 [N, S] at {AUDIO_RATE} Hz, "
                f"got shape {list(waveforms.shape)}"
            )
        if waveforms.shape[1] < self.min_samples:
            raise ValueError(
                f"extractor '{self.name}' needs at least {self.min_samples} samples per step "
                f"({self.min_samples / AUDIO_RATE * 1000:.0f} ms at {AUDIO_RATE} Hz), "
                f"got {waveforms.shape[1]}; use longer steps"
            )
        out = np.empty((len(waveforms), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(waveforms), self.batch_size):
                x = torch.from_numpy(waveforms[start : start + self.batch_size]).to(self.device)
                var = x.var(dim=1, correction=0, keepdim=True)
                x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(var + NORM_EPS)
                hidden = self.model(input_values=x).last_hidden_state
                out[start : start + len(x)] = hidden.mean(dim=1).float().cpu().numpy()
        return out
