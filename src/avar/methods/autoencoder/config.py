"""Hyper-parameters of the audio-visual sequence-to-sequence autoencoder (Tariq et al., 2024).

Three configs, one per sub-model of the paper's Fig. 1: the acoustic model (Table 2), the
visual model (Table 3) and the joint late-fusion network (Table 4). Every default is the
paper's where it gives one; the rest are marked as readings in ``README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avar.methods.autoencoder.frame_difference import DEFAULT_GRID
from avar.methods.config_base import BATCH_SIZE, EPOCHS, LR, MODALITY, SEED, THREADS, JsonConfig, option

LEAKY_SLOPE = 0.3
"""Negative slope of LeakyReLU: the paper builds on Keras, whose LeakyReLU default is 0.3."""


def _check_positive(owner: str, **values: int | tuple[int, ...]) -> None:
    for name, value in values.items():
        items = value if isinstance(value, tuple) else (value,)
        if not items or any(int(v) < 1 for v in items):
            raise ValueError(f"{owner}.{name} must hold integers >= 1, got {value!r}")


@dataclass
class VideoAEConfig(JsonConfig):
    """Visual model of paper Table 3: Conv2D encoder -> ConvLSTM2D x3 -> Conv2D decoder -> sigmoid.

    Input is ``[B, T, 1, frame_size, frame_size]`` grayscale in [0, 1]. With the defaults the
    spatial encoder takes 240 px to 60 (stride 4) then 30 (stride 2), the three ConvLSTM2D
    layers run at 30 x 30, and the decoder mirrors the encoder back to 240 x 240.
    """

    frame_size: int = 240
    """Side of the square input frames in pixels (sec. 3.2.1: resized to 240 x 240)."""
    seq_len: int = 10
    """Frames per sequence (sec. 3.2.3: sequences of 10 frames)."""
    encoder_channels: tuple[int, ...] = (32, 64)
    """Table 3 layers 1-2 (time-distributed Conv2D)."""
    encoder_kernels: tuple[int, ...] = (5, 5)
    encoder_strides: tuple[int, ...] = (4, 2)
    lstm_channels: tuple[int, ...] = (64, 32, 64)
    """Table 3 layers 3-5 (ConvLSTM2D encoder-decoder), hidden channels of each layer."""
    lstm_kernel: int = 3
    decoder_channels: tuple[int, ...] = (64, 32)
    """Table 3 layers 6-7 (time-distributed transposed Conv2D), mirroring the encoder."""
    decoder_kernels: tuple[int, ...] = (5, 5)
    decoder_strides: tuple[int, ...] = (2, 4)
    prediction_kernel: int = 7
    """Table 3 layer 8: one 7 x 7 filter with a sigmoid."""
    leaky_slope: float = LEAKY_SLOPE

    def __post_init__(self) -> None:
        for name in ("encoder_channels", "encoder_kernels", "encoder_strides", "lstm_channels",
                     "decoder_channels", "decoder_kernels", "decoder_strides"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        _check_positive("VideoAEConfig", frame_size=self.frame_size, seq_len=self.seq_len,
                        encoder_channels=self.encoder_channels, encoder_kernels=self.encoder_kernels,
                        encoder_strides=self.encoder_strides, lstm_channels=self.lstm_channels,
                        lstm_kernel=self.lstm_kernel, decoder_channels=self.decoder_channels,
                        decoder_kernels=self.decoder_kernels, decoder_strides=self.decoder_strides,
                        prediction_kernel=self.prediction_kernel)
        if not len(self.encoder_channels) == len(self.encoder_kernels) == len(self.encoder_strides):
            raise ValueError("VideoAEConfig: encoder_channels, encoder_kernels and encoder_strides need one entry per layer")
        if not len(self.decoder_channels) == len(self.decoder_kernels) == len(self.decoder_strides):
            raise ValueError("VideoAEConfig: decoder_channels, decoder_kernels and decoder_strides need one entry per layer")
        down = _product(self.encoder_strides)
        if _product(self.decoder_strides) != down:
            raise ValueError(
                f"VideoAEConfig: the decoder strides {self.decoder_strides} must undo the encoder strides "
                f"{self.encoder_strides} (products {_product(self.decoder_strides)} vs {down})"
            )
        if self.frame_size % down:
            raise ValueError(
                f"VideoAEConfig.frame_size {self.frame_size} must be a multiple of the encoder's total stride {down}"
            )


@dataclass
class AudioAEConfig(JsonConfig):
    """Acoustic model of paper Table 2: Conv1D encoder -> LSTM encoder -> repeat -> LSTM
    decoder -> transposed Conv1D decoder -> Conv1D sigmoid prediction.

    Input is ``[B, T, n_features]``: ``T`` frames of the eight spectral features, min-max
    normalised into [0, 1]. The convolutions run over time with the features as channels.
    """

    n_features: int = 160
    """Width of one frame's features: the paper's prediction layer has 160 filters, which is
    exactly 1 + 1 + 1 + 1 + 20 + 128 + 1 + 7 (flatness, ZCR, centroid, bandwidth, 20 MFCC,
    128 mel bands, roll-off, 7 contrast bands); see ``avar.features.spectral``."""
    seq_len: int = 10
    """Frames per sequence: one audio frame per video frame, so both models see the same time."""
    encoder_channels: tuple[int, ...] = (32, 64, 128)
    """Table 2 layers 1-3 (Conv1D, LeakyReLU, batch norm)."""
    encoder_strides: tuple[int, ...] = (2, 2, 1)
    """Strided encoder (sec. 3.1.2: 'stride sizes ... to build smaller feature maps')."""
    kernel: int = 5
    """Every Conv1D and transposed Conv1D (sec. 3.1.2: 'each layer has a kernel size of 5')."""
    lstm_encoder: tuple[int, ...] = (128, 64)
    """Table 2 layers 4-5; the last layer's final state is the sequence code."""
    lstm_decoder: tuple[int, ...] = (64, 128)
    """Table 2 layers 6-7, started from the encoder's final states (mirrored layer by layer)."""
    decoder_channels: tuple[int, ...] = (128, 64, 32)
    """Table 2 layers 8-10 (transposed Conv1D); strides mirror the encoder's."""
    prediction_kernel: int = 9
    """Table 2 layer 11: ``n_features`` filters of width 9 with a sigmoid."""
    leaky_slope: float = LEAKY_SLOPE

    def __post_init__(self) -> None:
        for name in ("encoder_channels", "encoder_strides", "lstm_encoder", "lstm_decoder", "decoder_channels"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        _check_positive("AudioAEConfig", n_features=self.n_features, seq_len=self.seq_len,
                        encoder_channels=self.encoder_channels, encoder_strides=self.encoder_strides,
                        kernel=self.kernel, lstm_encoder=self.lstm_encoder, lstm_decoder=self.lstm_decoder,
                        decoder_channels=self.decoder_channels, prediction_kernel=self.prediction_kernel)
        if len(self.encoder_channels) != len(self.encoder_strides):
            raise ValueError("AudioAEConfig: encoder_channels and encoder_strides need one entry per layer")
        if len(self.decoder_channels) != len(self.encoder_channels):
            raise ValueError("AudioAEConfig: the decoder mirrors the encoder, so it needs as many layers")
        if len(self.lstm_encoder) != len(self.lstm_decoder) or tuple(reversed(self.lstm_encoder)) != self.lstm_decoder:
            raise ValueError(
                f"AudioAEConfig: lstm_decoder {self.lstm_decoder} must mirror lstm_encoder {self.lstm_encoder} "
                "because each decoder layer starts from the matching encoder layer's final state"
            )

    @property
    def total_stride(self) -> int:
        return _product(self.encoder_strides)


@dataclass
class JointConfig(JsonConfig):
    """Joint model of paper Table 4: dense layers 8 -> 1024 units, LeakyReLU, batch norm, sigmoid."""

    n_inputs: int = 2
    """Scores fused per frame: the audio and the video anomaly score."""
    units: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    """Table 4 layers 1-8; layer 9 is one sigmoid unit."""
    leaky_slope: float = LEAKY_SLOPE

    def __post_init__(self) -> None:
        self.units = tuple(int(v) for v in self.units)
        _check_positive("JointConfig", n_inputs=self.n_inputs, units=self.units)


def _product(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


MODALITIES = ("v", "a", "av")


SCORERS = ("frame", "patch", "motion")
"""How a frame's error becomes one number: ``frame`` is the paper's Euclidean norm over the whole
frame (Eq. 3); ``patch`` the Euclidean norm of the worst cell of a grid (local evidence);
``motion`` the worst cell's Euclidean error of the frame-to-frame change, i.e. how far the
reconstruction's motion ``r_t - r_{t-1}`` is from the input's ``x_t - x_{t-1}``."""


@dataclass
class AETrainConfig:
    """Training settings; every field is recorded in the run's ``config.json``."""

    modality: str = field(default="v", metadata=MODALITY)
    """'v' visual model only, 'a' acoustic only, 'av' both (fused at evaluation)."""
    epochs: int = field(default=6, metadata=EPOCHS)
    """Passes over the training sequences. The paper trains Ped2's visual model for 300 epochs on
    a GPU; 6 keep the Ped2 run inside 30 minutes on 2 CPU cores (25 min measured,
    docs/autoencoder.md)."""
    audio_epochs: int = 50
    """Epochs of the acoustic model (paper Table 6: 50 on Ped2); it is small and cheap."""
    batch_size: int = field(default=10, metadata=BATCH_SIZE)
    """Sequences per batch (sec. 4.3: batch size 10)."""
    lr: float = field(default=1e-3, metadata=LR)
    """Adam's learning rate (the paper names Adam, not the rate; 1e-3 is Keras' default)."""
    strides: tuple[int, ...] = (1, 2, 3)
    """Frame strides of the training sequences (sec. 4.3)."""
    window_hop: int | None = None
    """Frames between the starts of consecutive training sequences of one stride (default
    ``seq_len``); each epoch shifts the starts by a random offset so every frame is used."""
    test_stride: int | None = None
    """Frames between the starts of test windows (default ``seq_len // 2``); a frame's error is
    averaged over the windows that contain it."""
    score: str = field(default="motion", metadata=option(
        "frame error (paper Eq. 3), worst grid patch, or worst patch of the frame-to-frame change", choices=SCORERS))
    """Default scorer at evaluation (``SCORERS``); all are always reported. ``motion`` scored
    best on UCSD Ped2 (docs/autoencoder.md); ``frame`` is the paper's."""
    smooth: int = 10
    """Frames over which evaluation averages each frame's error, centred on it (1 = none): the
    paper scores 10-frame sequences (sec. 3.2.3), so a frame's evidence spans its sequence."""
    patch_grid: tuple[int, int] = DEFAULT_GRID
    """Rows x columns of the ``patch`` scorer's grid over the frame."""
    precision: str = field(default="auto", metadata=option("arithmetic", choices=("auto", "bf16", "fp32")))
    """'bf16' (CPU or GPU autocast), 'fp32', or 'auto': bf16 where the hardware runs it natively."""
    calibration_fraction: float = field(default=0.2, metadata=option(
        "share of the normal training videos held out to calibrate scores for files and streams"))
    """Share of the normal training videos held out of training to calibrate the scores on
    files and streams (at least one video; with fewer than three training videos the
    calibration uses the training videos themselves and the run says so)."""
    seed: int = field(default=0, metadata=SEED)
    threads: int | None = field(default=None, metadata=THREADS)
    """Torch CPU threads; None leaves torch's default (one per core)."""
    video: dict = field(default_factory=dict)
    """Overrides of :class:`VideoAEConfig` fields."""
    audio: dict = field(default_factory=dict)
    """Overrides of :class:`AudioAEConfig` fields."""

    def __post_init__(self) -> None:
        self.strides = tuple(int(s) for s in self.strides)
        self.patch_grid = tuple(int(g) for g in self.patch_grid)
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.score not in SCORERS:
            raise ValueError(f"score must be one of {SCORERS}, got {self.score!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.smooth < 1:
            raise ValueError(f"smooth must be >= 1 frame, got {self.smooth}")
        if self.epochs < 0 or self.audio_epochs < 0 or self.batch_size < 1 or not self.strides or min(self.strides) < 1:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and strides a non-empty list of integers >= 1")
