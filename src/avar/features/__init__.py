"""Feature extractors: every choice is in ``EXTRACTORS`` below."""

from __future__ import annotations

import torch

from avar.features.base import AUDIO_RATE, Extractor, ExtractorInfo, WeightsUnavailableError
from avar.features.efficientnet_lite import EfficientNetLite0Extractor
from avar.features.logmel import LogMelExtractor
from avar.features.mobilevit import MobileViTExtractor
from avar.features.motion import FlowHistExtractor
from avar.features.runtime import TorchBackbone
from avar.features.vggish import VGGishExtractor
from avar.features.wav2vec2 import Wav2Vec2Extractor

EXTRACTORS: dict[str, type] = {
    EfficientNetLite0Extractor.name: EfficientNetLite0Extractor,
    MobileViTExtractor.name: MobileViTExtractor,
    Wav2Vec2Extractor.name: Wav2Vec2Extractor,
    LogMelExtractor.name: LogMelExtractor,
    VGGishExtractor.name: VGGishExtractor,
    FlowHistExtractor.name: FlowHistExtractor,
}

DEFAULT_VIDEO = EfficientNetLite0Extractor.name
DEFAULT_AUDIO = LogMelExtractor.name
DEFAULT_MOTION = FlowHistExtractor.name

__all__ = [
    "AUDIO_RATE",
    "DEFAULT_AUDIO",
    "DEFAULT_MOTION",
    "DEFAULT_VIDEO",
    "EXTRACTORS",
    "Extractor",
    "ExtractorInfo",
    "WeightsUnavailableError",
    "build_extractor",
    "extractor_infos",
]


def build_extractor(
    name: str, weights: str | None = None, device: str = "cpu", *, runtime: str = "torch",
    random_weights: bool = False,
) -> Extractor:
    """The extractor called ``name``, with its default weights unless ``weights`` is given.

    ``weights`` is a local directory or Hugging Face id for the transformers backbones, a
    ``.pth`` state dict for EfficientNet-Lite0, a ``.pth`` or ``.safetensors`` state dict for
    ``vggish`` (required: none is bundled), and must be None for ``logmel`` and the motion
    extractors (``flow-hist``). Raises
    ``WeightsUnavailableError`` at once when the weights are not on this machine and
    cannot be fetched. ``runtime`` (``auto`` or one of ``avar.features.runtime.RUNTIMES``)
    says how a neural backbone runs; ``random_weights`` builds the architecture untrained,
    for timing. Neither applies to ``logmel``, which is plain numpy.
    """
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor '{name}'; choose one of: {', '.join(EXTRACTORS)}")
    cls = EXTRACTORS[name]
    if not issubclass(cls, TorchBackbone):
        return cls(weights=weights, device=device)
    # Fixed random weights: the same architecture gives the same model (and reuses its export).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        extractor = cls(weights=weights, device=device, random_weights=random_weights)
    return extractor.use_runtime(runtime)


def extractor_infos() -> list[ExtractorInfo]:
    """One row per extractor for ``avar extractors``; checks the disk, never the network."""
    return [
        ExtractorInfo(
            name=cls.name,
            modality=cls.modality,
            dim=cls.dim,
            source=cls.default_source,
            offline=cls.available_offline(),
            preprocessing=cls.preprocessing,
        )
        for cls in EXTRACTORS.values()
    ]
