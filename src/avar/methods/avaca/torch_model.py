"""AVACA: two paths (visual, audio), two convolutional stages each, cross-attention between them.

Layout (MAVAD paper sec. IV-D, Fig. 4)::

    V [B, T, dv] -> stage 1 (2 convs) -> V' -> VAT: V' attends the audio ----> stage 2 (2 convs) -+
    P [B, T, da] -> stage 1 (2 convs) -> P' -> AVT: P' attends V' ----------> stage 2 (2 convs) -+-> concat
                                          |                                                         -> linear
                                          +-> focused: U = first differences of P' (VAT keys/values)  -> sigmoid

One anomaly score per step. Shapes are ``[B, T, C]`` outside, channels-first inside the convs.

Padding contract (as in the AVAR-Net head): a step whose mask is False never influences a real
step. Padded inputs are zeroed, every conv sees zeros there, attention never uses them as
keys, and their scores are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avar.methods.avaca.config import AVACAConfig


class ConvStage(nn.Module):
    """A stage of one path: two 1D convolutions over time, each followed by ReLU and dropout."""

    def __init__(self, in_dim: int, mid_dim: int, out_dim: int, kernel_size: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(in_dim, mid_dim, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(mid_dim, out_dim, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """``x [B, T, in_dim]``, ``keep [B, T, 1]`` float -> ``[B, T, out_dim]``, zero where padded."""
        h = x.transpose(1, 2)
        keep_t = keep.transpose(1, 2)
        h = self.dropout(F.relu(self.conv1(h))) * keep_t
        h = self.dropout(F.relu(self.conv2(h))) * keep_t
        return h.transpose(1, 2)


class CrossModalTransformer(nn.Module):
    """One cross-attention transformer layer: the ``query`` sequence attends ``context``.

    Pre-norm (``x + MHA(LN(x), LN(y), LN(y))``, then ``x + FFN(LN(x))``), the form that trains
    stably with Adam; the residual keeps the query path's own content, so the output is that
    path *enhanced* with the other modality (sec. IV-D).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, context: Tensor, query_mask: Tensor, context_mask: Tensor) -> Tensor:
        """``query [B, Tq, dim]`` attends ``context [B, Tk, dim]``; masks are bool, True = real.

        Returns ``[B, Tq, dim]``, zero at padded query steps. A row whose context has no real
        step gets no attention term (only its residual and feed-forward).
        """
        has_context = context_mask.any(dim=1)
        # A row with every key masked would turn the softmax into NaN: let it attend freely
        # and drop the result below.
        key_padding_mask = ~context_mask & has_context.unsqueeze(1)
        ctx = self.norm_context(context)
        attended, _ = self.attention(
            self.norm_query(query), ctx, ctx, key_padding_mask=key_padding_mask, need_weights=False
        )
        attended = torch.where(has_context[:, None, None], attended, 0.0)
        x = query + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.norm_ffn(x)))
        # where, not multiply: padded query rows may come back as NaN from the fused kernel
        return torch.where(query_mask.unsqueeze(-1), x, 0.0)


def first_differences(p: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The focused audio sequence ``u_i = p_{i+1} - p_i`` (sec. IV-D) and where it is defined.

    ``p [B, T, C]``, ``mask [B, T]`` bool -> ``u [B, T, C]`` with ``u`` at step ``i`` the change
    from step ``i`` to ``i + 1`` (the paper's indexing), and ``valid [B, T]``: True where both
    steps are real. The last real step has no successor; it is zero and masked, so the
    sequence has ``T - 1`` usable items as in the paper.
    """
    u = torch.zeros_like(p)
    u[:, :-1] = p[:, 1:] - p[:, :-1]
    valid = torch.zeros_like(mask)
    valid[:, :-1] = mask[:, 1:] & mask[:, :-1]
    return torch.where(valid.unsqueeze(-1), u, 0.0), valid


@dataclass
class AVACAOutput:
    """What :class:`AVACA` returns; padded steps hold zeros."""

    logits: Tensor
    """``[B, T]`` pre-sigmoid score of every step."""
    scores: Tensor
    """``[B, T]`` anomaly score in [0, 1] of every step, ``sigmoid(logits)`` (0 where padded)."""

    @property
    def stage_scores(self) -> list[Tensor]:
        """The scores the losses read, one tensor per output stage (AVACA has one)."""
        return [self.scores]


class AVACA(nn.Module):
    """Audio-visual cross-attention anomaly detector over cached per-step features.

    ``forward(video [B, T, video_dim], audio [B, T, audio_dim], mask [B, T]) -> AVACAOutput``.
    Both streams must share the time steps (the feature cache guarantees it).
    """

    config_class = AVACAConfig

    def __init__(self, config: AVACAConfig):
        super().__init__()
        self.config = config
        c = config
        self.visual_stage1 = ConvStage(c.video_dim, c.hidden, c.hidden, c.kernel_size, c.dropout)
        self.audio_stage1 = ConvStage(c.audio_dim, c.hidden, c.hidden, c.kernel_size, c.dropout)
        self.vat = CrossModalTransformer(c.hidden, c.num_heads, c.ffn_dim, c.dropout)
        self.avt = CrossModalTransformer(c.hidden, c.num_heads, c.ffn_dim, c.dropout)
        self.visual_stage2 = ConvStage(c.hidden, c.hidden, c.stage2_dim, c.kernel_size, c.dropout)
        self.audio_stage2 = ConvStage(c.hidden, c.hidden, c.stage2_dim, c.kernel_size, c.dropout)
        self.classifier = nn.Linear(2 * c.stage2_dim, 1)

    def forward(self, video: Tensor, audio: Tensor, mask: Tensor) -> AVACAOutput:
        """``mask`` is True on real steps (non-bool masks are read as ``mask != 0``)."""
        c = self.config
        for name, tensor, dim in (("video", video, c.video_dim), ("audio", audio, c.audio_dim)):
            if tensor.dim() != 3 or tensor.shape[-1] != dim:
                raise ValueError(
                    f"{name} features must be [B, T, {dim}] (config.{name}_dim), got {list(tensor.shape)}; "
                    "was the cache built with another extractor?"
                )
        if video.shape[:2] != audio.shape[:2] or mask.shape != video.shape[:2]:
            raise ValueError(
                f"video {list(video.shape)}, audio {list(audio.shape)} and mask {list(mask.shape)} must share "
                "[B, T]; align both streams on the same time steps"
            )
        mask = mask if mask.dtype == torch.bool else mask != 0
        keep = mask.unsqueeze(-1).to(video.dtype)
        if c.zero_audio:
            audio = torch.zeros_like(audio)
        v = self.visual_stage1(torch.where(mask.unsqueeze(-1), video, 0.0), keep)
        p = self.audio_stage1(torch.where(mask.unsqueeze(-1), audio, 0.0), keep)
        if c.audio_path == "focused":
            heard, heard_mask = first_differences(p, mask)
        else:
            heard, heard_mask = p, mask
        # VAT: the visual path enhanced with the (focused or plain) audio; AVT: the audio path
        # enhanced with the visual one.
        tau_vat = self.vat(v, heard, mask, heard_mask)
        tau_avt = self.avt(p, v, mask, mask)
        fused = torch.cat([self.visual_stage2(tau_vat, keep), self.audio_stage2(tau_avt, keep)], dim=-1)
        logits = self.classifier(fused).squeeze(-1)
        logits = torch.where(mask, logits, 0.0)
        return AVACAOutput(logits=logits, scores=torch.where(mask, torch.sigmoid(logits), 0.0))
