"""Hyper-parameters of AVACA, the audio-visual cross-attention detector (MAVAD paper, sec. IV)."""

from __future__ import annotations

from dataclasses import dataclass, field

from avar.methods.config_base import JsonConfig, option

AUDIO_PATHS = ("focused", "plain")


@dataclass
class AVACAConfig(JsonConfig):
    """Configuration of :class:`~avar.methods.avaca.torch_model.AVACA`.

    The paper gives the layout (two paths, two stages of two layers each, a cross-attention
    transformer per path between the stages, 4 heads) but no widths; the widths below are
    avar's and are recorded with every run. Defaults read XD-Violence's published features
    (I3D RGB 1024-d, VGGish 128-d); ``avar train`` sets both dims from the feature cache.
    """

    video_dim: int = 1024
    """Width of one visual step's feature (the paper: SlowFast-R50; XD-Violence: I3D RGB)."""
    audio_dim: int = 128
    """Width of one audio step's feature (VGGish embedding)."""
    hidden: int = field(default=128, metadata=option("path width", only=("avaca",)))
    """Channels of both paths after stage 1, the transformers' model width."""
    stage2_dim: int = 64
    """Channels of each path after stage 2; the concatenation is ``2 * stage2_dim`` wide."""
    kernel_size: int = 3
    """Temporal kernel of every stage convolution (odd: centred, non-causal)."""
    num_heads: int = 4
    """Attention heads in each transformer (sec. V-B: 4)."""
    ffn_dim: int = 256
    """Hidden width of each transformer's feed-forward sub-layer."""
    dropout: float = 0.3
    """Dropout after the stage convolutions and inside the transformers."""
    audio_path: str = "focused"
    """'focused': the VAT reads first differences ``u_i = p'_{i+1} - p'_i`` of the audio path as
    keys and values; 'plain': it reads the audio path ``P'`` itself (sec. IV-D)."""
    zero_audio: bool = False
    """Replace the audio input by zeros (sec. V-A's zeroed-audio baseline): same architecture,
    the audio path carries no information."""

    def __post_init__(self) -> None:
        if self.audio_path not in AUDIO_PATHS:
            raise ValueError(f"AVACAConfig.audio_path must be one of {AUDIO_PATHS}, got {self.audio_path!r}")
        for name in ("video_dim", "audio_dim", "hidden", "stage2_dim", "kernel_size", "num_heads", "ffn_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"AVACAConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"AVACAConfig.kernel_size must be odd (a centred window), got {self.kernel_size}")
        if self.hidden % self.num_heads:
            raise ValueError(
                f"AVACAConfig.hidden ({self.hidden}) must be a multiple of num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AVACAConfig.dropout must be in [0, 1), got {self.dropout}")
