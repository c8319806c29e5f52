"""Hyper-parameters of the sequence-model baselines AVAR-Net compares against (Table 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from avar.methods.avarnet.config import MODALITIES
from avar.methods.config_base import StreamConfig, option

KINDS = ("gru", "bigru", "lstm", "bilstm", "transformer")
"""Baselines of the paper's Table 2 besides its own MTCN."""


@dataclass
class BaselineConfig(StreamConfig):
    """Configuration of :class:`~avar.methods.baselines.torch_model.RecurrentHead` (GRU / LSTM,
    one or two directions) and :class:`~avar.methods.baselines.torch_model.TransformerHead`.

    The paper gives no widths for its baselines; the defaults keep them small next to the
    default MTCN head (2.03M at 1408-d fused input): 0.38M (GRU), 0.68M (Bi-GRU), 0.45M
    (LSTM), 0.84M (Bi-LSTM), 0.45M (Transformer), most of it the 1408 x 128 input projection.
    """

    kind: str = "bilstm"
    """One of :data:`KINDS`: 'gru', 'bigru', 'lstm', 'bilstm' or 'transformer'."""
    video_dim: int = 640
    """Width of one video step's feature (MobileViT-small, globally pooled)."""
    audio_dim: int = 768
    """Width of one audio step's feature (wav2vec2-base hidden size)."""
    num_classes: int = 10
    """Anomaly classes (VAAR has 10, including 'normal')."""
    modality: str = "av"
    """'av' fuses video and audio (early fusion, see ``stream_fusion``); 'a' / 'v' use one stream."""
    hidden: int = field(default=128, metadata=option("baselines: hidden width"))
    """Width of the input projection and of the recurrent state / transformer model (per
    direction for bidirectional RNNs). Projecting 1408-d inputs first keeps an LSTM's input
    weights at 1408 x 128 per gate instead of 1408 x hidden for every layer."""
    num_layers: int = field(default=2, metadata=option("baselines: recurrent/encoder layers", flag="--layers"))
    """Stacked recurrent layers, or transformer encoder layers."""
    dropout: float = 0.3
    """Dropout between recurrent layers and before the classifier; inside each transformer
    layer (attention and feed-forward)."""
    input_dropout: float = 0.1
    """Dropout on the raw per-step features, before the input projection."""
    nhead: int = 4
    """Transformer only: attention heads; ``hidden`` must be a multiple of it."""
    ff_dim: int = 256
    """Transformer only: width of each layer's feed-forward sub-layer."""
    max_len: int = 512
    """Transformer only: longest sequence the sinusoidal position table covers (steps)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in KINDS:
            raise ValueError(f"BaselineConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.modality not in MODALITIES:
            raise ValueError(
                f"BaselineConfig.modality must be one of {MODALITIES}, got {self.modality!r}"
            )
        for name in ("video_dim", "audio_dim", "num_classes", "hidden", "num_layers",
                     "nhead", "ff_dim", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"BaselineConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"BaselineConfig.{name} must be in [0, 1), got {getattr(self, name)}"
                )
        if self.kind == "transformer" and self.hidden % self.nhead:
            raise ValueError(
                f"BaselineConfig.hidden ({self.hidden}) must be a multiple of nhead "
                f"({self.nhead}) for the transformer; change one of them"
            )

