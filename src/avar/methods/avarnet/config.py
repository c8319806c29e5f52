"""Hyper-parameters of the AVAR-Net sequence head (attention + multi-stage dilated TCN)."""

from __future__ import annotations

from dataclasses import dataclass, field

from avar.methods.config_base import StreamConfig, option

MODALITIES = ("av", "a", "v")


@dataclass
class AVARNetConfig(StreamConfig):
    """Configuration of :class:`~avar.methods.avarnet.torch_model.AVARNetHead`.

    Defaults follow the AVAR-Net paper on VAAR (10 classes, MobileViT-small video features,
    wav2vec2-base audio features, early fusion). With ``attention=False``, ``num_stages=1``,
    ``num_classes=9`` the head has exactly the 255,881 (64 maps) / 86,985 (32 maps)
    parameters the paper reports (sec. 4.4).
    """

    video_dim: int = 640
    """Width of one video step's feature (MobileViT-small, globally pooled)."""
    audio_dim: int = 768
    """Width of one audio step's feature (wav2vec2-base hidden size, mean over the step)."""
    num_classes: int = 10
    """Anomaly classes (VAAR has 10, including 'normal')."""
    num_stages: int = field(default=4, metadata=option("mtcn: MS-TCN stages", flag="--stages"))
    """MS-TCN stages; later stages refine the softmax of the previous one. 1 for the
    parameter-count check."""
    num_layers: int = field(default=10, metadata=option("mtcn: dilated layers per stage", flag="--layers"))
    """Dilated residual layers per stage; layer ``l`` has dilation ``2**l`` (Eq. 7)."""
    num_f_maps: int = field(default=64, metadata=option("mtcn: feature maps", flag="--f-maps"))
    """Channels inside every stage (the paper's 'fixed dimension')."""
    attention: bool = field(default=True, metadata=option("mtcn: drop the attention module", flag="--no-attention"))
    """Run the temporal attention module (1D conv + multi-head self-attention, sec. 3.5)
    before the MTCN. Off adds no parameters."""
    attention_dim: int | None = 256
    """Channels the attention's 1D conv projects to (the paper gives no width). ``None``
    keeps the input width: for 1472-d fused features that is ~15M parameters, which
    overfits and trains slowly on small datasets; 256 gives ~1.4M."""
    attention_heads: int = 4
    """Heads of the self-attention; the input width is rounded up to a multiple of this."""
    attention_kernel: int = 3
    """Kernel of the 1D conv in front of the self-attention (local context)."""
    dropout: float = 0.5
    """Dropout inside each dilated residual layer (MS-TCN's ``nn.Dropout()`` default)."""
    modality: str = "av"
    """'av' fuses video and audio (early fusion, see ``stream_fusion``); 'a' / 'v' use one stream."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modality not in MODALITIES:
            raise ValueError(
                f"AVARNetConfig.modality must be one of {MODALITIES}, got {self.modality!r}"
            )
        for name in ("video_dim", "audio_dim", "num_classes", "num_stages", "num_layers",
                     "num_f_maps", "attention_heads", "attention_kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"AVARNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.attention_dim is not None and self.attention_dim < 1:
            raise ValueError(f"AVARNetConfig.attention_dim must be >= 1 or None, got {self.attention_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AVARNetConfig.dropout must be in [0, 1), got {self.dropout}")

