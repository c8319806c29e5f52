"""Table 2's baseline sequence heads (GRU, Bi-GRU, LSTM, Bi-LSTM, Transformer), with the
AVAR-Net head's interface."""

from avar.methods.baselines.config import KINDS, BaselineConfig
from avar.methods.baselines.torch_model import (
    RecurrentHead,
    TransformerHead,
    sinusoidal_positions,
)

__all__ = [
    "KINDS",
    "BaselineConfig",
    "RecurrentHead",
    "TransformerHead",
    "sinusoidal_positions",
]
