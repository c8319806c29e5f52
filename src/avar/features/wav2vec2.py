"""wav2vec 2.0 (Baevski et al. 2020) audio features through transformers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from avar.features.base import AUDIO_RATE
from avar.features.hf import HubBackbone
from avar.features.runtime import TorchBackbone

NORM_EPS = 1e-7
"""Variance floor of ``Wav2Vec2FeatureExtractor``'s normalisation; keeps silence finite."""


def encoder_receptive_field(kernels: list[int], strides: list[int]) -> int:
    """Samples the convolutional feature encoder needs for one output frame (400 for base)."""
    samples = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides)):
        samples = (samples - 1) * stride + kernel
    return samples


class _MeanHidden(nn.Module):
    """Normalised waveforms ``[N, S]`` -> last hidden state averaged over time ``[N, hidden]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=waveforms).last_hidden_state.mean(dim=1)


class Wav2Vec2Extractor(HubBackbone, TorchBackbone):
    """Waveforms (16 kHz) -> last hidden state of wav2vec 2.0, mean-pooled over time.

    Each row is normalised to zero mean and unit variance, as ``Wav2Vec2FeatureExtractor``
    does for the base model (``do_normalize``). Output is ``[N, hidden_size]`` (768 for
    ``facebook/wav2vec2-base``). ``random_weights`` builds wav2vec2-base's architecture
    (transformers' default ``Wav2Vec2Config``) with random weights, for timing; its group and
    layer norms keep the activations at a trained network's scale without calibration.
    """

    name = "wav2vec2-base"
    modality = "audio"
    dim = 768
    version = "1"
    default_source = "facebook/wav2vec2-base"
    preprocessing = "16 kHz waveform, per-step zero mean / unit variance, mean over time"
    batch_size = 16
    fast_runtime = "bf16"

    def __init__(self, weights: str | None = None, device: str = "cpu", random_weights: bool = False):
        # Imported here: transformers takes seconds to import, which `avar extractors`
        # and the offline extractors should not pay.
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        model = self._hub_model(Wav2Vec2Model, Wav2Vec2Config, weights, random_weights)
        config = model.config
        self.dim = config.hidden_size
        self.min_samples = encoder_receptive_field(config.conv_kernel, config.conv_stride)
        self.net = _MeanHidden(model)
        self.device = torch.device(device)
        self.net.to(self.device).eval()

    @property
    def model(self) -> nn.Module:
        return self.net.model

    def preprocess(self, waveforms: np.ndarray) -> np.ndarray:
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
        centred = waveforms - waveforms.mean(axis=1, keepdims=True)
        return (centred / np.sqrt(centred.var(axis=1, keepdims=True) + NORM_EPS)).astype(np.float32)

    def export_example(self) -> tuple[np.ndarray, dict[int, str]]:
        return np.zeros((2, AUDIO_RATE), np.float32), {0: "batch", 1: "samples"}
