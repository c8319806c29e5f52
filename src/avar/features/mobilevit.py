"""MobileViT (Mehta & Rastegari 2022) image features through transformers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from avar.features.frames import check_frames, resize_frames
from avar.features.hf import HubBackbone
from avar.features.runtime import TorchBackbone, calibrated_random_init


class _Pooled(nn.Module):
    """Pixels ``[N, 3, H, W]`` (BGR, [0, 1]) -> ``pooler_output`` ``[N, dim]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).pooler_output


class MobileViTExtractor(HubBackbone, TorchBackbone):
    """Frames -> MobileViT ``pooler_output`` (640-d for ``apple/mobilevit-small``).

    Preprocessing follows ``MobileViTImageProcessor`` except for its shortest-edge resize
    and centre crop: the whole frame is resized to the model's input size (256x256 for
    mobilevit-small; ``INTER_AREA``) so events at the edges survive, scaled to [0, 1], and
    flipped RGB -> BGR, the channel order the Apple checkpoints were trained on
    (``do_flip_channel_order``). No mean/std normalisation, as in the processor.

    ``random_weights`` builds mobilevit-small's architecture (transformers' default
    ``MobileViTConfig``) with random weights, for timing without the checkpoint.
    """

    name = "mobilevit-small"
    modality = "video"
    dim = 640
    version = "1"
    default_source = "apple/mobilevit-small"
    preprocessing = "whole RGB frame resized to 256x256 (INTER_AREA), [0, 1], RGB -> BGR"
    input_size = (256, 256)
    """(width, height) of mobilevit-small; an instance takes its own from the loaded config."""
    batch_size = 32
    fast_runtime = "onnx"

    def __init__(self, weights: str | None = None, device: str = "cpu", random_weights: bool = False):
        # Imported here: transformers takes seconds to import, which `avar extractors`
        # and the offline extractors should not pay.
        from transformers import MobileViTConfig, MobileViTModel

        model = self._hub_model(MobileViTModel, MobileViTConfig, weights, random_weights)
        config = model.config
        self.dim = config.neck_hidden_sizes[-1]
        side = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        self.input_size = (side, side)
        self.net = _Pooled(model)
        if random_weights:
            calibrated_random_init(self.net, lambda: torch.rand(8, 3, side, side))
        self.device = torch.device(device)
        self.net.to(self.device).eval()

    @property
    def model(self) -> nn.Module:
        return self.net.model

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        frames = resize_frames(check_frames(frames, self.name), self.input_size)
        # NHWC RGB uint8 -> NCHW BGR float in [0, 1]
        return np.ascontiguousarray(frames[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)

    def export_example(self) -> tuple[np.ndarray, dict[int, str]]:
        w, h = self.input_size
        return np.zeros((2, 3, h, w), np.float32), {0: "batch"}
