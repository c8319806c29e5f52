"""MobileViT (Mehta & Rastegari 2022) image features through transformers."""

from __future__ import annotations

import numpy as np
import torch

from avar.features.frames import check_frames, resize_frames
from avar.features.hf import load_pretrained, weights_available_offline


class MobileViTExtractor:
    """Frames -> MobileViT ``pooler_output`` (640-d for ``apple/mobilevit-small``).

    Preprocessing follows ``MobileViTImageProcessor`` except for its shortest-edge resize
    and centre crop: the whole frame is resized to the model's input size (256x256 for
    mobilevit-small; ``INTER_AREA``) so events at the edges survive, scaled to [0, 1], and
    flipped RGB -> BGR, the channel order the Apple checkpoints were trained on
    (``do_flip_channel_order``). No mean/std normalisation, as in the processor.
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

    @classmethod
    def available_offline(cls, weights: str | None = None) -> bool:
        """True when ``weights`` (default: the hub id) is a local model or in the HF cache."""
        return weights_available_offline(weights or cls.default_source)

    def __init__(self, weights: str | None = None, device: str = "cpu"):
        self.source = weights or self.default_source
        # Imported here: transformers takes seconds to import, which `avar extractors`
        # and the offline extractors should not pay.
        from transformers import MobileViTModel

        self.model = load_pretrained(MobileViTModel, self.name, self.source)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        config = self.model.config
        self.dim = config.neck_hidden_sizes[-1]
        side = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        self.input_size = (side, side)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames, self.name)
        out = np.empty((len(frames), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                batch = resize_frames(frames[start : start + self.batch_size], self.input_size)
                x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).flip(1).float() / 255.0
                pooled = self.model(pixel_values=x).pooler_output
                out[start : start + len(batch)] = pooled.float().cpu().numpy()
        return out
