"""AVAR-Net head: the paper's parameter counts, shapes, padding invariance, learning, config."""

from __future__ import annotations

import json

import pytest
import torch

from avar.methods.avarnet import (
    AVARNetConfig,
    AVARNetHead,
    TemporalAttention,
    avarnet_loss,
    count_parameters,
)
from head_checks import assert_head_learns


def small_config(**overrides) -> AVARNetConfig:
    # 7 + 6 = 13 is not a multiple of 4 heads, so the attention's projection is exercised
    values = dict(video_dim=7, audio_dim=6, num_classes=3, num_stages=4, num_layers=4,
                  num_f_maps=16, attention=True, attention_dim=None, attention_heads=4, dropout=0.5)
    values.update(overrides)
    return AVARNetConfig(**values)


def features(cfg: AVARNetConfig, batch: int, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, steps, cfg.video_dim, generator=g),
            torch.randn(batch, steps, cfg.audio_dim, generator=g))


@pytest.mark.parametrize(("f_maps", "expected"), [(64, 255_881), (32, 86_985)])
def test_parameter_count_matches_paper(f_maps, expected):
    # the paper's layout: raw streams concatenated (Eq. 6), no projection
    cfg = AVARNetConfig(num_classes=9, num_stages=1, num_layers=10, num_f_maps=f_maps,
                        attention=False, modality="av", stream_fusion="concat")
    assert cfg.input_dim() == 1408
    head = AVARNetHead(cfg)
    assert count_parameters(head) == expected

    # at the input's own width the attention adds exactly its own parameters
    full = AVARNetHead(AVARNetConfig(**{**cfg.to_dict(), "attention": True, "attention_dim": None}))
    assert count_parameters(full) - expected == count_parameters(TemporalAttention(1408, 4, 3)) > 0
    # projected to 256 channels, the TCN's input conv shrinks from 1408 to 256 inputs
    narrow = AVARNetHead(AVARNetConfig(**{**cfg.to_dict(), "attention": True, "attention_dim": 256}))
    attention = count_parameters(TemporalAttention(1408, 4, 3, dim=256))
    assert count_parameters(narrow) == expected + attention - (1408 - 256) * f_maps


def test_attention_rounds_width_up_to_head_multiple():
    attention = TemporalAttention(13, num_heads=4)
    assert attention.out_dim == 16
    out = attention(torch.randn(2, 5, 13), torch.ones(2, 5, dtype=torch.bool))
    assert out.shape == (2, 5, 16)


@pytest.mark.parametrize("modality", ["av", "a", "v"])
def test_output_shapes(modality):
    cfg = small_config(modality=modality)
    video, audio = features(cfg, batch=2, steps=11)
    mask = torch.ones(2, 11, dtype=torch.bool)
    out = AVARNetHead(cfg).eval()(video, audio, mask)
    assert out.step_logits.shape == (2, 11, 3)
    assert out.clip_logits.shape == (2, 3)
    assert len(out.stage_logits) == 4
    assert all(s.shape == (2, 11, 3) for s in out.stage_logits)
    assert out.step_logits is out.stage_logits[-1]


@pytest.mark.parametrize("attention", [True, False])
def test_padding_leaves_real_steps_unchanged(attention):
    torch.manual_seed(0)
    cfg = small_config(attention=attention)
    head = AVARNetHead(cfg).eval()
    lengths = [20, 13]
    video, audio = features(cfg, batch=2, steps=20)
    mask = torch.arange(20)[None] < torch.tensor(lengths)[:, None]

    # pad to 37 steps with large garbage and NaN: it must be ignored, not merely be small
    extra = 17
    video_p = torch.cat([video, 100 * torch.randn(2, extra, cfg.video_dim)], dim=1)
    audio_p = torch.cat([audio, 100 * torch.randn(2, extra, cfg.audio_dim)], dim=1)
    mask_p = torch.cat([mask, torch.zeros(2, extra, dtype=torch.bool)], dim=1)
    video_p[1, 13:20] = 100.0
    audio_p[1, 13:20] = -100.0
    video_p[0, -1] = float("nan")

    with torch.no_grad():
        ref = head(video, audio, mask)
        padded = head(video_p, audio_p, mask_p)
        alone = head(video[1:, :13], audio[1:, :13], torch.ones(1, 13, dtype=torch.bool))

    for b, n in enumerate(lengths):
        torch.testing.assert_close(padded.step_logits[b, :n], ref.step_logits[b, :n],
                                   atol=1e-5, rtol=0)
        for s_ref, s_pad in zip(ref.stage_logits, padded.stage_logits):
            torch.testing.assert_close(s_pad[b, :n], s_ref[b, :n], atol=1e-5, rtol=0)
        assert torch.all(padded.step_logits[b, n:] == 0)
    torch.testing.assert_close(padded.clip_logits, ref.clip_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.step_logits[1, :13], alone.step_logits[0],
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.clip_logits[1], alone.clip_logits[0], atol=1e-5, rtol=0)


def test_video_only_head_ignores_audio():
    cfg = small_config(modality="v")
    head = AVARNetHead(cfg).eval()
    video, audio = features(cfg, batch=2, steps=9)
    mask = torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        a = head(video, audio, mask).step_logits
        b = head(video, audio + 5 * torch.randn_like(audio), mask).step_logits
        c = head(video, None, mask).step_logits
        d = head(video + torch.randn_like(video), audio, mask).step_logits
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.allclose(a, d)


def test_missing_or_misshaped_stream_is_a_clear_error():
    cfg = small_config(stream_fusion="concat")
    head = AVARNetHead(cfg)
    video, audio = features(cfg, batch=1, steps=4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="needs audio"):
        head(video, None, mask)
    with pytest.raises(ValueError, match=r"video features must be \[B, T, 7\]"):
        head(audio, audio, mask)
    with pytest.raises(ValueError, match="needs video and audio"):
        AVARNetHead(small_config())(None, None, mask)


def test_projected_fusion_reads_a_missing_stream_as_its_branch_alone():
    head = AVARNetHead(small_config()).eval()
    video, audio = features(head.config, batch=2, steps=6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    assert head.streams.out_dim == head.config.input_dim() == 2 * head.config.stream_width
    with torch.no_grad():
        alone = head(None, audio, mask).step_logits
        both = head(video, audio, mask).step_logits
        # the audio branch alone ignores whatever video would have been
        assert torch.equal(alone, head(None, audio, mask).step_logits)
        assert not torch.allclose(alone, both)
        projected = head.streams.project["audio"](audio)
        assert torch.equal(head.streams(None, audio), torch.cat([torch.zeros_like(projected), projected], -1))


def test_modality_dropout_drops_one_stream_per_window_in_training_only():
    torch.manual_seed(0)
    head = AVARNetHead(small_config(modality_dropout=0.5))
    video, audio = features(head.config, batch=400, steps=3)
    width = head.config.stream_width
    with torch.no_grad():
        fused = head.streams(video, audio)
        zero_v = (fused[..., :width] == 0).all(-1).all(-1)
        zero_a = (fused[..., width:] == 0).all(-1).all(-1)
        assert not (zero_v & zero_a).any()  # never both
        assert 0.15 < zero_v.float().mean() < 0.35 and 0.15 < zero_a.float().mean() < 0.35
        head.eval()
        fused = head.streams(video, audio)
        assert not (fused[..., :width] == 0).all(-1).all(-1).any()


def test_learns_separable_toy_set():
    torch.manual_seed(0)
    cfg = small_config(num_stages=2, num_layers=3, dropout=0.1)
    classes, per_class, steps = 3, 16, 24
    centres = 1.5 * torch.randn(classes, cfg.video_dim + cfg.audio_dim)
    labels = torch.arange(classes).repeat_interleave(per_class)
    x = centres[labels][:, None, :] + torch.randn(len(labels), steps, centres.shape[1])
    video, audio = x[..., :cfg.video_dim], x[..., cfg.video_dim:]
    lengths = torch.randint(12, steps + 1, (len(labels),))
    mask = torch.arange(steps)[None] < lengths[:, None]

    assert_head_learns(AVARNetHead(cfg), video, audio, mask, labels, lr=3e-3, iterations=100)


def test_loss_ignores_padded_steps():
    cfg = small_config(num_stages=2)
    head = AVARNetHead(cfg).eval()
    video, audio = features(cfg, batch=2, steps=10)
    mask = torch.arange(10)[None] < torch.tensor([10, 6])[:, None]
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        out = head(video, audio, mask)
        loss = avarnet_loss(out, labels, mask)
        out.stage_logits = [s.clone() for s in out.stage_logits]
        for s in out.stage_logits:
            s[1, 6:] = 50.0
        assert torch.isfinite(loss)
        torch.testing.assert_close(avarnet_loss(out, labels, mask), loss)


def test_config_json_round_trip():
    cfg = AVARNetConfig(num_classes=7, num_f_maps=32, modality="a", attention=False, stream_fusion="concat")
    restored = AVARNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    assert restored.input_dim() == 768
    assert AVARNetConfig(modality="a", stream_width=48).input_dim() == 48
    with pytest.raises(ValueError, match="unknown AVARNetConfig key.*'num_maps'"):
        AVARNetConfig.from_dict({**cfg.to_dict(), "num_maps": 3})
    with pytest.raises(ValueError, match="modality"):
        AVARNetConfig(modality="audio")
    with pytest.raises(ValueError, match="stream_fusion must be one of"):
        AVARNetConfig(stream_fusion="sum")
    with pytest.raises(ValueError, match="modality_dropout must be in"):
        AVARNetConfig(modality_dropout=1.0)
