"""Table 2's baseline sequence heads: GRU / LSTM (one or two directions) and a Transformer.

They speak exactly :class:`~avar.methods.avarnet.torch_model.AVARNetHead`'s interface
(``head(video, audio, mask) -> HeadOutput``), fuse streams with the same
:class:`~avar.methods.streams.StreamFusion`, and keep the same padding contract:
a step whose mask is False never influences a real step or the clip logits, and holds
zeros in every step tensor. Masks must be right-padded (real steps first), as the cache's
batches are.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from avar.methods.avarnet.torch_model import HeadOutput, masked_mean
from avar.methods.baselines.config import BaselineConfig
from avar.methods.streams import StreamFusion


def _prepare(streams: StreamFusion, video: Tensor | None, audio: Tensor | None,
             mask: Tensor) -> tuple[Tensor, Tensor]:
    """Fuse the streams and check the mask -> (``x [B, T, input_dim]`` zero where padded,
    ``mask [B, T]`` bool)."""
    x = streams(video, audio)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must be [B, T] = {list(x.shape[:2])}, got {list(mask.shape)}")
    mask = mask if mask.dtype == torch.bool else mask != 0
    # zero, not multiply: NaN in padding times 0 is still NaN
    return torch.where(mask.unsqueeze(-1), x, 0.0), mask


def _output(step_logits: Tensor, mask: Tensor) -> HeadOutput:
    step_logits = torch.where(mask.unsqueeze(-1), step_logits, 0.0)
    return HeadOutput(
        step_logits=step_logits,
        stage_logits=[step_logits],
        clip_logits=masked_mean(step_logits, mask),
    )


class RecurrentHead(nn.Module):
    """GRU / LSTM baseline (Table 2's GRU, Bi-GRU, LSTM, Bi-LSTM rows).

    Early fusion (:mod:`avar.methods.streams`) -> dropout -> Linear to ``hidden`` + ReLU -> stacked (Bi)GRU/LSTM
    -> dropout -> per-step Linear to class logits.
    """

    config_class = BaselineConfig

    def __init__(self, config: BaselineConfig):
        super().__init__()
        if config.kind not in ("gru", "bigru", "lstm", "bilstm"):
            raise ValueError(
                f"RecurrentHead runs 'gru', 'bigru', 'lstm' or 'bilstm', got kind={config.kind!r}; "
                "use TransformerHead for 'transformer'"
            )
        self.config = config
        self.streams = StreamFusion(config)
        rnn_class = nn.LSTM if config.kind.endswith("lstm") else nn.GRU
        bidirectional = config.kind.startswith("bi")
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.project = nn.Linear(config.input_dim(), config.hidden)
        self.rnn = rnn_class(
            config.hidden,
            config.hidden,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            # PyTorch warns (and does nothing) for dropout with a single layer
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden * (2 if bidirectional else 1), config.num_classes)

    def forward(self, video: Tensor | None, audio: Tensor | None, mask: Tensor) -> HeadOutput:
        """``video [B, T, video_dim]``, ``audio [B, T, audio_dim]``, ``mask [B, T]`` right-padded
        (True = real step; non-bool masks are read as ``mask != 0``)."""
        x, mask = _prepare(self.streams, video, audio, mask)
        steps = x.shape[1]
        lengths = mask.sum(dim=1)
        if not torch.equal(mask, torch.arange(steps, device=mask.device) < lengths[:, None]):
            raise ValueError(
                "RecurrentHead needs right-padded masks (each row's real steps first, then "
                "padding); reorder the steps or pad at the end"
            )
        h = torch.relu(self.project(self.input_dropout(x)))
        # Packing stops each direction at the clip's last real step: the backward pass of a
        # bidirectional RNN would otherwise start in the padding and carry it into every real
        # step. An all-padded row gets length 1 (packing refuses 0); its output is zeroed.
        packed = pack_padded_sequence(
            h, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
        return _output(self.classifier(self.dropout(out)), mask)


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """``[length, dim]`` sine/cosine position table of Vaswani et al. (2017), sec. 3.5."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim + dim % 2)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table[:, :dim]


class TransformerHead(nn.Module):
    """Transformer-encoder baseline (Table 2's 'Trans' row).

    Early fusion (:mod:`avar.methods.streams`) -> dropout -> Linear to ``hidden`` + sinusoidal positions ->
    ``num_layers`` pre-norm encoder layers (padding never used as keys) -> LayerNorm ->
    per-step Linear to class logits.
    """

    config_class = BaselineConfig

    def __init__(self, config: BaselineConfig):
        super().__init__()
        if config.kind != "transformer":
            raise ValueError(
                f"TransformerHead runs kind='transformer', got {config.kind!r}; "
                "use RecurrentHead for GRU / LSTM kinds"
            )
        self.config = config
        self.streams = StreamFusion(config)
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.project = nn.Linear(config.input_dim(), config.hidden)
        # not persistent: derived from the config, so checkpoints stay independent of max_len
        self.register_buffer(
            "positions", sinusoidal_positions(config.max_len, config.hidden), persistent=False
        )
        layer = nn.TransformerEncoderLayer(
            config.hidden,
            config.nhead,
            dim_feedforward=config.ff_dim,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        # pre-norm layers cannot take the nested-tensor fast path; asking for it only warns
        self.encoder = nn.TransformerEncoder(
            layer, config.num_layers, enable_nested_tensor=False
        )
        # pre-norm layers leave the residual stream unnormalised; normalise once at the end
        self.norm = nn.LayerNorm(config.hidden)
        self.classifier = nn.Linear(config.hidden, config.num_classes)

    def forward(self, video: Tensor | None, audio: Tensor | None, mask: Tensor) -> HeadOutput:
        """``video [B, T, video_dim]``, ``audio [B, T, audio_dim]``, ``mask [B, T]``
        (True = real step; non-bool masks are read as ``mask != 0``)."""
        x, mask = _prepare(self.streams, video, audio, mask)
        steps = x.shape[1]
        if steps > self.config.max_len:
            raise ValueError(
                f"sequence has {steps} steps but the transformer's position table covers "
                f"max_len={self.config.max_len}; raise BaselineConfig.max_len or cut the clip"
            )
        h = self.project(self.input_dropout(x)) + self.positions[:steps]
        # A row with no real step would mask every key and turn the softmax into NaN;
        # let such rows attend freely, their outputs are zeroed below anyway.
        key_padding_mask = ~mask & mask.any(dim=1, keepdim=True)
        h = self.encoder(h, src_key_padding_mask=key_padding_mask)
        return _output(self.classifier(self.norm(h)), mask)
