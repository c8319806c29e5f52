"""AVACA (MAVAD paper, sec. IV): audio-visual cross-attention trained from video-level labels."""

from avar.methods.avaca.config import AUDIO_PATHS, AVACAConfig
from avar.methods.avaca.loss import (
    DEFAULT_ALPHA,
    AVACALoss,
    avaca_loss,
    center_loss,
    dmil_loss,
    top_k_count,
    top_k_mask,
)
from avar.methods.avaca.torch_model import (
    AVACA,
    AVACAOutput,
    ConvStage,
    CrossModalTransformer,
    first_differences,
)

__all__ = [
    "AUDIO_PATHS",
    "AVACA",
    "AVACAConfig",
    "AVACALoss",
    "AVACAOutput",
    "ConvStage",
    "CrossModalTransformer",
    "DEFAULT_ALPHA",
    "avaca_loss",
    "center_loss",
    "dmil_loss",
    "first_differences",
    "top_k_count",
    "top_k_mask",
]
