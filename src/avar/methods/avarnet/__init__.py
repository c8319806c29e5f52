"""AVAR-Net head (Ali et al.): early A/V fusion, temporal attention and a multi-stage TCN."""

from avar.methods.avarnet.config import AVARNetConfig
from avar.methods.avarnet.loss import avarnet_loss
from avar.methods.avarnet.torch_model import (
    AVARNetHead,
    DilatedResidualLayer,
    HeadOutput,
    MultiStageTCN,
    SingleStageModel,
    TemporalAttention,
    count_parameters,
    masked_mean,
)

__all__ = [
    "AVARNetConfig",
    "AVARNetHead",
    "DilatedResidualLayer",
    "HeadOutput",
    "MultiStageTCN",
    "SingleStageModel",
    "TemporalAttention",
    "avarnet_loss",
    "count_parameters",
    "masked_mean",
]
