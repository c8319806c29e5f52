"""Sequence-to-sequence autoencoders of Tariq et al. (2024): acoustic, visual and joint models.

Layouts: the visual model speaks ``[B, T, C, H, W]`` (batch, time, channels, pixels), the
acoustic model ``[B, T, F]`` (batch, frames, features); both return a reconstruction of the
same shape in [0, 1]. PyTorch has no ConvLSTM, so :class:`ConvLSTM2DCell` and
:class:`ConvLSTM2D` are written here after Keras' ``ConvLSTM2D`` (Shi et al., 2015, without
peepholes), the layer the paper uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avar.methods.autoencoder.config import AudioAEConfig, JointConfig, VideoAEConfig


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters())


class ConvLSTM2DCell(nn.Module):
    """One step of a convolutional LSTM: every gate is a convolution of the input and the state.

    ``i, f, g, o = W_x * x_t + W_h * h_{t-1} + b``; ``c_t = σ(f) c_{t-1} + σ(i) tanh(g)``;
    ``h_t = σ(o) tanh(c_t)``. Shapes: ``x [B, C_in, H, W]``, ``h`` and ``c`` ``[B, C_h, H, W]``.
    The input and the recurrent convolutions are kept apart (bias only on the input one, as
    in Keras) so that :class:`ConvLSTM2D` can run the input convolution for every time step
    in one call and loop only over the recurrent one.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvLSTM2DCell needs an odd kernel_size for 'same' padding, got {kernel_size}")
        self.hidden_channels = hidden_channels
        pad = kernel_size // 2
        self.input_conv = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, padding=pad)
        self.hidden_conv = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=False)
        with torch.no_grad():
            # Keras' unit_forget_bias: a forget bias of 1 keeps the cell state early in training.
            self.input_conv.bias.zero_()
            self.input_conv.bias[hidden_channels : 2 * hidden_channels] = 1.0

    def initial_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Zero ``(h, c)`` matching the batch and spatial size of ``x [B, C_in, H, W]``."""
        zeros = x.new_zeros(x.shape[0], self.hidden_channels, x.shape[-2], x.shape[-1])
        return zeros, zeros.clone()

    def step(self, x_gates: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Advance one step from the input's gate pre-activations ``input_conv(x_t)``."""
        h, c = state
        i, f, g, o = (x_gates + self.hidden_conv(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``x [B, C_in, H, W]`` and the previous ``(h, c)`` (zeros if None) -> the new ``(h, c)``."""
        if state is None:
            state = self.initial_state(x)
        return self.step(self.input_conv(x), state)


class ConvLSTM2D(nn.Module):
    """A ConvLSTM2D layer over a sequence, returning every step (Keras ``return_sequences=True``).

    ``[B, T, C_in, H, W] -> [B, T, C_h, H, W]``, starting from zero state.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        self.cell = ConvLSTM2DCell(in_channels, hidden_channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        # One convolution over all B*T frames is far cheaper than T small ones.
        gates = self.cell.input_conv(x.flatten(0, 1)).unflatten(0, (b, t))
        state = self.cell.initial_state(x[:, 0])
        outputs = []
        for step in range(t):
            state = self.cell.step(gates[:, step], state)
            outputs.append(state[0])
        return torch.stack(outputs, dim=1)


class TimeDistributed(nn.Module):
    """Apply a per-frame module to every step of ``[B, T, ...]`` (Keras ``TimeDistributed``)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        return self.module(x.flatten(0, 1)).unflatten(0, (b, t))


class SpaceToDepthConv2d(nn.Conv2d):
    """A stride-1 'same' convolution computed on ``block`` x ``block`` pixel blocks.

    Mathematically the plain ``nn.Conv2d`` with the same parameters (and the same state-dict
    keys). The visual model's prediction layer maps 32 channels to 1 with a 7 x 7 kernel at
    240 x 240, a shape for which CPU convolution kernels are memory-bound (about half of a
    training step). Rearranged as a convolution over the 4 x 4 pixel blocks (``pixel_unshuffle``)
    with a kernel gathered from the 7 x 7 one, it becomes a dense matrix product at 60 x 60
    and the whole training step runs about 16 % faster. Inputs whose size does not divide by
    ``block`` fall back to the plain convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, block: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if kernel_size % 2 != 1:
            raise ValueError(f"SpaceToDepthConv2d needs an odd kernel, got {kernel_size}")
        self.block = block
        r, k, half = block, kernel_size, kernel_size // 2
        radius = -(-half // r)  # block offsets a kernel tap can reach
        n = 2 * radius + 1
        # Output pixel (r*P + d) reads input pixel (r*(P + K) + s) through tap r*K + s - d + half.
        tap = (r * torch.arange(-radius, radius + 1).view(1, 1, n) + torch.arange(r).view(1, r, 1)
               - torch.arange(r).view(r, 1, 1) + half)
        self.register_buffer("_tap", tap.clamp(0, k - 1), persistent=False)
        self.register_buffer("_valid", (tap >= 0) & (tap < k), persistent=False)
        self._radius = radius

    def block_weight(self) -> Tensor:
        """``[out * r * r, in * r * r, n, n]`` kernel acting on ``pixel_unshuffle(x, r)``."""
        r, n = self.block, 2 * self._radius + 1
        out_c, in_c = self.weight.shape[:2]
        w = self.weight[:, :, self._tap][..., self._tap]  # [o, c, dy, sy, Ky, dx, sx, Kx]
        mask = self._valid.view(1, 1, r, r, n, 1, 1, 1) & self._valid.view(1, 1, 1, 1, 1, r, r, n)
        w = w * mask
        return w.permute(0, 2, 5, 1, 3, 6, 4, 7).reshape(out_c * r * r, in_c * r * r, n, n)

    def forward(self, x: Tensor) -> Tensor:
        r = self.block
        if r == 1 or x.shape[-2] % r or x.shape[-1] % r:
            return super().forward(x)
        blocks = F.conv2d(F.pixel_unshuffle(x, r), self.block_weight().to(x.dtype), padding=self._radius)
        out = F.pixel_shuffle(blocks, r)
        return out + self.bias.view(1, -1, 1, 1).to(out.dtype)


def same_transposed_padding(kernel: int, stride: int) -> tuple[int, int]:
    """``(padding, output_padding)`` so a transposed conv maps ``n`` to ``n * stride`` (Keras 'same')."""
    padding = max(0, -(-(kernel - stride) // 2))
    return padding, 2 * padding - (kernel - stride)


def _frame_block(conv: nn.Module, channels: int, activation: bool, slope: float) -> nn.Sequential:
    layers = [conv]
    if activation:
        layers.append(nn.LeakyReLU(slope))
    layers.append(nn.BatchNorm2d(channels))
    return nn.Sequential(*layers)


class VideoSeq2SeqAE(nn.Module):
    """Visual model of paper Table 3 (sec. 3.2.2).

    Spatial encoder: time-distributed Conv2D 32 (5x5, stride 4, LeakyReLU) and 64 (5x5,
    stride 2); temporal encoder-decoder: ConvLSTM2D 64, 32, 64 (3x3); spatial decoder:
    time-distributed transposed Conv2D 64 (5x5, stride 2) and 32 (5x5, stride 4, LeakyReLU);
    prediction: Conv2D 1 (7x7, sigmoid). Batch normalisation follows every layer but the last.
    ``[B, T, 1, S, S]`` in [0, 1] -> the same shape in [0, 1].
    """

    def __init__(self, config: VideoAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or VideoAEConfig()
        n_dec = len(cfg.decoder_channels)
        encoder, channels = [], 1
        for k, (out, kernel, stride) in enumerate(zip(cfg.encoder_channels, cfg.encoder_kernels, cfg.encoder_strides)):
            conv = nn.Conv2d(channels, out, kernel, stride=stride, padding=kernel // 2)
            # Table 3 puts LeakyReLU on the first encoder layer only.
            encoder.append(TimeDistributed(_frame_block(conv, out, k == 0, cfg.leaky_slope)))
            channels = out
        self.encoder = nn.Sequential(*encoder)
        temporal = []
        for hidden in cfg.lstm_channels:
            temporal += [ConvLSTM2D(channels, hidden, cfg.lstm_kernel), TimeDistributed(nn.BatchNorm2d(hidden))]
            channels = hidden
        self.temporal = nn.Sequential(*temporal)
        decoder = []
        for k, (out, kernel, stride) in enumerate(zip(cfg.decoder_channels, cfg.decoder_kernels, cfg.decoder_strides)):
            padding, output_padding = same_transposed_padding(kernel, stride)
            conv = nn.ConvTranspose2d(channels, out, kernel, stride=stride, padding=padding, output_padding=output_padding)
            # ... and on the last decoder layer only.
            decoder.append(TimeDistributed(_frame_block(conv, out, k == n_dec - 1, cfg.leaky_slope)))
            channels = out
        self.decoder = nn.Sequential(*decoder)
        self.prediction = TimeDistributed(SpaceToDepthConv2d(channels, 1, cfg.prediction_kernel, cfg.decoder_strides[-1]))

    def forward(self, frames: Tensor) -> Tensor:
        """``frames [B, T, 1, S, S]`` in [0, 1] -> reconstruction, same shape, in [0, 1]."""
        size = self.config.frame_size
        if frames.dim() != 5 or frames.shape[2] != 1 or frames.shape[-2:] != (size, size):
            raise ValueError(
                f"VideoSeq2SeqAE expects grayscale sequences [B, T, 1, {size}, {size}], got {list(frames.shape)}; "
                f"resize frames to {size} x {size} (config.frame_size)"
            )
        x = self.encoder(frames)
        x = self.temporal(x)
        x = self.decoder(x)
        return torch.sigmoid(self.prediction(x))


class AudioSeq2SeqAE(nn.Module):
    """Acoustic model of paper Table 2 (sec. 3.1.2).

    Conv1D encoder 32, 64, 128 (kernel 5, strided, LeakyReLU, batch norm) -> LSTM encoder
    128, 64 -> the last encoder state repeated over the encoded length (Keras
    ``RepeatVector``) -> LSTM decoder 64, 128, each layer started from the matching encoder
    layer's final state -> transposed Conv1D decoder 128, 64, 32 (LeakyReLU, batch norm) ->
    Conv1D ``n_features`` (kernel 9, sigmoid). ``[B, T, F]`` in [0, 1] -> same shape; ``T``
    need not divide by the total stride: the sequence is padded by repetition and cropped.
    """

    def __init__(self, config: AudioAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or AudioAEConfig()
        pad = cfg.kernel // 2
        encoder, channels = [], cfg.n_features
        for out, stride in zip(cfg.encoder_channels, cfg.encoder_strides):
            encoder += [nn.Conv1d(channels, out, cfg.kernel, stride=stride, padding=pad),
                        nn.LeakyReLU(cfg.leaky_slope), nn.BatchNorm1d(out)]
            channels = out
        self.encoder = nn.Sequential(*encoder)
        self.lstm_encoder = nn.ModuleList()
        for hidden in cfg.lstm_encoder:
            self.lstm_encoder.append(nn.LSTM(channels, hidden, batch_first=True))
            channels = hidden
        self.lstm_decoder = nn.ModuleList()
        for hidden in cfg.lstm_decoder:
            self.lstm_decoder.append(nn.LSTM(channels, hidden, batch_first=True))
            channels = hidden
        decoder = []
        for out, stride in zip(cfg.decoder_channels, reversed(cfg.encoder_strides)):
            padding, output_padding = same_transposed_padding(cfg.kernel, stride)
            decoder += [nn.ConvTranspose1d(channels, out, cfg.kernel, stride=stride, padding=padding,
                                           output_padding=output_padding),
                        nn.LeakyReLU(cfg.leaky_slope), nn.BatchNorm1d(out)]
            channels = out
        self.decoder = nn.Sequential(*decoder)
        self.prediction = nn.Conv1d(channels, cfg.n_features, cfg.prediction_kernel, padding=cfg.prediction_kernel // 2)

    def forward(self, features: Tensor) -> Tensor:
        """``features [B, T, n_features]`` in [0, 1] -> reconstruction, same shape, in [0, 1]."""
        cfg = self.config
        if features.dim() != 3 or features.shape[-1] != cfg.n_features:
            raise ValueError(
                f"AudioSeq2SeqAE expects [B, T, {cfg.n_features}] spectral features, got {list(features.shape)}"
            )
        t = features.shape[1]
        padded_t = -(-t // cfg.total_stride) * cfg.total_stride
        x = features.transpose(1, 2)
        if padded_t != t:
            # Replicate the last frame rather than zero-pad: zeros are a loud, unusual input.
            x = F.pad(x, (0, padded_t - t), mode="replicate")
        x = self.encoder(x).transpose(1, 2)
        states = []
        for lstm in self.lstm_encoder:
            x, state = lstm(x)
            states.append(state)
        code = x[:, -1:].expand(-1, x.shape[1], -1)
        y = code
        for lstm, state in zip(self.lstm_decoder, reversed(states)):
            y, _ = lstm(y, state)
        y = self.decoder(y.transpose(1, 2))
        y = torch.sigmoid(self.prediction(y))
        return y[:, :, :t].transpose(1, 2)


class JointFusionNet(nn.Module):
    """Joint model of paper Table 4 (sec. 3.3): late fusion of per-frame modality scores.

    Dense layers of 8, 16, ..., 1024 units, each with LeakyReLU and batch normalisation, then
    one sigmoid unit. ``[N, n_inputs]`` scores -> ``[N]`` probability that the frame is
    anomalous (the paper's Eq. 2 predicts 'normal'; avar keeps anomaly as the positive class
    everywhere so that higher always means more anomalous).
    """

    def __init__(self, config: JointConfig | None = None):
        super().__init__()
        self.config = cfg = config or JointConfig()
        layers, width = [], cfg.n_inputs
        for units in cfg.units:
            layers += [nn.Linear(width, units), nn.LeakyReLU(cfg.leaky_slope), nn.BatchNorm1d(units)]
            width = units
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)

    def forward(self, scores: Tensor) -> Tensor:
        """Logits ``[N]``; apply ``torch.sigmoid`` for probabilities (BCE-with-logits in training)."""
        if scores.dim() != 2 or scores.shape[1] != self.config.n_inputs:
            raise ValueError(f"JointFusionNet expects scores [N, {self.config.n_inputs}], got {list(scores.shape)}")
        return self.out(self.body(scores)).squeeze(-1)
