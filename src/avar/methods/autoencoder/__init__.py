"""Audio-visual sequence-to-sequence autoencoder (Tariq et al., 2024): unsupervised detection."""

from avar.methods.autoencoder.config import AudioAEConfig, JointConfig, VideoAEConfig
from avar.methods.autoencoder.torch_model import (
    AudioSeq2SeqAE,
    ConvLSTM2D,
    ConvLSTM2DCell,
    JointFusionNet,
    SpaceToDepthConv2d,
    TimeDistributed,
    VideoSeq2SeqAE,
    count_parameters,
)

__all__ = [
    "AudioAEConfig",
    "AudioSeq2SeqAE",
    "ConvLSTM2D",
    "ConvLSTM2DCell",
    "JointConfig",
    "JointFusionNet",
    "SpaceToDepthConv2d",
    "TimeDistributed",
    "VideoAEConfig",
    "VideoSeq2SeqAE",
    "count_parameters",
]
