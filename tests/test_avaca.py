"""AVACA (MAVAD paper sec. IV): losses on hand-computed cases, the model's contracts, weak
training that localises an anomaly from video labels, and the CLI around it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avar.runs import run_method
from avar.cli import main
from avar.datasets.annotations import FrameTruth
from avar.methods.avaca.evaluate import evaluate_weak
from avar.features.cache import FeatureSet, StepFeatures
from avar.methods.avaca import (
    AVACA,
    AVACAConfig,
    avaca_loss,
    center_loss,
    dmil_loss,
    first_differences,
    top_k_count,
    top_k_mask,
)
from avar.methods.avarnet import AVARNetConfig
from avar.methods.avaca.mil import MILHead
from avar.methods.avarnet.run import Run
from avar.training.run import Normalization
from avar.methods.avaca.run import WeakRun
from avar.methods.avaca.train import (
    BalancedBatches,
    WeakTrainConfig,
    fit_normalization,
    segment_means,
    train_weak,
)

TINY = {"hidden": 16, "stage2_dim": 8, "ffn_dim": 16, "dropout": 0.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- losses


def test_dmil_loss_on_a_hand_computed_case():
    # Video 0 (anomalous, 4 real steps, alpha 2 -> k = 2): top scores .9 and .6.
    # Video 1 (normal, 3 real steps -> k = 1): top score .5; its padded step (.99) is never read.
    scores = torch.tensor([[0.9, 0.2, 0.6, 0.1], [0.3, 0.5, 0.2, 0.99]])
    loss = dmil_loss(scores, torch.tensor([1, 0]), torch.tensor([4, 3]), alpha=2)
    video0 = (-math.log(0.9) - math.log(0.6)) / 2
    video1 = -math.log(1 - 0.5)
    assert loss.item() == pytest.approx((video0 + video1) / 2, rel=1e-6)


def test_center_loss_on_a_hand_computed_case():
    # Normal videos: [.2 .4 .6] (centre .4, spread (.04 + 0 + .04) / 3) and [.5 .5] (spread 0).
    # The anomalous video and the padded steps do not count.
    scores = torch.tensor([[0.2, 0.4, 0.6], [0.5, 0.5, 0.9], [0.9, 0.1, 0.7]])
    loss = center_loss(scores, torch.tensor([0, 0, 1]), torch.tensor([3, 2, 3]))
    assert loss.item() == pytest.approx((0.08 / 3 + 0.0) / 2, rel=1e-6)
    assert center_loss(scores, torch.tensor([1, 1, 1]), torch.tensor([3, 3, 3])).item() == 0.0


def test_total_loss_is_theta_dmil_plus_lambda_center():
    scores = torch.rand(4, 9)
    labels, lengths = torch.tensor([0, 1, 0, 1]), torch.tensor([9, 7, 5, 9])
    parts = avaca_loss(scores, labels, lengths, theta=15.0, lam=0.5, alpha=3)
    assert parts.dmil.item() == pytest.approx(dmil_loss(scores, labels, lengths, 3).item())
    assert parts.center.item() == pytest.approx(center_loss(scores, labels, lengths).item())
    assert parts.total.item() == pytest.approx(15.0 * parts.dmil.item() + 0.5 * parts.center.item())


def test_top_k_follows_floor_t_over_alpha():
    lengths = torch.arange(0, 50)
    for alpha in (1, 3, 8, 16):
        expected = [max(1, t // alpha) for t in range(50)]
        assert top_k_count(lengths, alpha).tolist() == expected
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.random((5, 40)).astype(np.float32))
    lengths = torch.tensor([40, 33, 17, 8, 3])
    chosen = top_k_mask(scores, lengths, alpha=8)
    for row, t in enumerate(lengths.tolist()):
        k = max(1, t // 8)
        assert chosen[row].sum().item() == k
        assert not chosen[row, t:].any()  # never a padded step
        top = np.sort(scores[row, :t].numpy())[::-1][:k]
        assert np.allclose(np.sort(scores[row][chosen[row]].numpy())[::-1], top)


def test_the_loss_gradient_reaches_only_the_selected_and_normal_steps():
    scores = torch.tensor([[0.9, 0.2, 0.6, 0.1]], requires_grad=True)
    dmil_loss(scores, torch.tensor([1]), torch.tensor([4]), alpha=2).backward()
    assert (scores.grad[0] != 0).tolist() == [True, False, True, False]


# --------------------------------------------------------------------------- model


def test_first_differences_follow_the_paper_and_mask_the_last_real_step():
    p = torch.tensor([[[1.0], [3.0], [6.0], [0.0]], [[2.0], [2.5], [9.0], [9.0]]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    u, valid = first_differences(p, mask)
    assert u[0, :, 0].tolist() == [2.0, 3.0, 0.0, 0.0]
    assert valid[0].tolist() == [True, True, False, False]
    assert u[1, :, 0].tolist() == [0.5, 6.5, 0.0, 0.0]
    assert valid[1].tolist() == [True, True, True, False]


def _model(**overrides) -> AVACA:
    torch.manual_seed(0)
    return AVACA(AVACAConfig(video_dim=10, audio_dim=6, **TINY, **overrides)).eval()


def test_model_shapes_scores_and_defaults():
    assert AVACAConfig().num_heads == 4 and AVACAConfig().audio_path == "focused"
    model = _model()
    out = model(torch.randn(3, 7, 10), torch.randn(3, 7, 6), torch.ones(3, 7, dtype=torch.bool))
    assert out.scores.shape == (3, 7) and out.logits.shape == (3, 7)
    assert torch.all((out.scores > 0) & (out.scores < 1))
    assert torch.allclose(out.scores, torch.sigmoid(out.logits))
    assert model.vat.attention.num_heads == 4 and model.avt.attention.num_heads == 4
    with pytest.raises(ValueError, match="video features must be"):
        model(torch.randn(1, 7, 11), torch.randn(1, 7, 6), torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="audio_path"):
        AVACAConfig(audio_path="loud")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        AVACAConfig(hidden=18)


@pytest.mark.parametrize("audio_path", ["focused", "plain"])
def test_padding_never_changes_a_real_step(audio_path):
    model = _model(audio_path=audio_path)
    video, audio = torch.randn(2, 9, 10), torch.randn(2, 9, 6)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    base = model(video, audio, mask).scores
    video2, audio2 = video.clone(), audio.clone()
    video2[1, 5:] = 100.0
    audio2[1, 5:] = -50.0
    again = model(video2, audio2, mask).scores
    assert torch.allclose(base, again, atol=1e-6)
    assert torch.all(again[1, 5:] == 0)
    alone = model(video[1:, :5], audio[1:, :5], torch.ones(1, 5, dtype=torch.bool)).scores
    assert torch.allclose(alone[0], base[1, :5], atol=1e-5)


def test_audio_paths_differ_and_zero_audio_ignores_the_audio():
    video, audio, mask = torch.randn(2, 8, 10), torch.randn(2, 8, 6), torch.ones(2, 8, dtype=torch.bool)
    focused, plain = _model(audio_path="focused"), _model(audio_path="plain")
    plain.load_state_dict(focused.state_dict())
    assert not torch.allclose(focused(video, audio, mask).scores, plain(video, audio, mask).scores)
    # Focused reads only changes of the audio path: a constant offset on every step of the raw
    # audio changes P' but, through the ReLU convs, not necessarily U; a zeroed-audio model
    # must ignore the audio entirely.
    silent = _model(zero_audio=True)
    assert torch.equal(silent(video, audio, mask).scores, silent(video, torch.randn(2, 8, 6), mask).scores)
    assert not torch.equal(focused(video, audio, mask).scores, focused(video, torch.randn(2, 8, 6), mask).scores)


def test_one_step_clip_and_gradients_through_both_paths():
    model = _model()
    out = model(torch.randn(1, 1, 10), torch.randn(1, 1, 6), torch.ones(1, 1, dtype=torch.bool))
    assert torch.isfinite(out.scores).all()
    model.train()
    video, audio = torch.randn(2, 6, 10), torch.randn(2, 6, 6)
    loss = avaca_loss(model(video, audio, torch.ones(2, 6, dtype=torch.bool)).scores, torch.tensor([0, 1]),
                      torch.tensor([6, 6]), alpha=2).total
    loss.backward()
    for name in ("visual_stage1.conv1.weight", "audio_stage1.conv1.weight", "vat.attention.in_proj_weight",
                 "avt.attention.in_proj_weight", "audio_stage2.conv2.weight", "classifier.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_mil_head_scores_steps_with_the_mtcn_head():
    head = MILHead(AVARNetConfig(video_dim=10, audio_dim=6, num_classes=2, num_stages=2, num_layers=3,
                                 num_f_maps=8, attention=False))
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    out = head(torch.randn(2, 5, 10), torch.randn(2, 5, 6), mask)
    assert out.scores.shape == (2, 5) and len(out.stage_scores) == 2
    assert torch.all(out.scores[0, 3:] == 0) and torch.all((out.scores[mask] > 0) & (out.scores[mask] < 1))
    with pytest.raises(ValueError, match="num_classes=2"):
        MILHead(AVARNetConfig(video_dim=10, audio_dim=6, num_classes=3))


def test_balanced_batches_hold_as_many_normal_as_anomalous_videos():
    labels = np.array([0] * 11 + [1] * 4)
    batches = BalancedBatches(labels, 6, np.random.default_rng(0))
    seen = []
    for batch in batches:
        assert sorted(labels[batch].tolist()) == [0, 0, 0, 1, 1, 1]
        seen += batch
    assert len(batches) == 4  # ceil(11 / 3): the larger group once per epoch
    assert set(np.flatnonzero(labels == 0)) <= set(seen)
    with pytest.raises(ValueError, match="normal and anomalous"):
        BalancedBatches(np.zeros(5, int), 4, np.random.default_rng(0))


# --------------------------------------------------------------------------- weak training


STEPS = 24


def _toy_clip(rng, k: int, label: str, kind: str | None, split: str) -> tuple[StepFeatures, dict]:
    """Noise features; an anomaly shifts video dims (visual) or audio dims (audible) on 4-6 steps."""
    video = rng.normal(0, 1, (STEPS, 8)).astype(np.float32)
    audio = rng.normal(0, 1, (STEPS, 4)).astype(np.float32)
    ranges = ()
    if kind is not None:
        length = int(rng.integers(4, 7))
        start = int(rng.integers(0, STEPS - length))
        if kind == "visual":
            video[start : start + length, :4] += 4.0
        else:
            audio[start : start + length, :2] += 4.0
        ranges = ((start, start + length),)
    clip = StepFeatures(f"{label}_{k:02d}", label, split, video, audio, np.arange(STEPS, dtype=np.float64))
    return clip, {"truth": FrameTruth(1.0, ranges).to_dict()}


@pytest.fixture(scope="module")
def toy_features(tmp_path_factory):
    rng = np.random.default_rng(0)
    clips, records = [], {}
    plan = {"normal": (None, 48), "flash": ("visual", 24), "siren": ("audible", 24)}
    for label, (kind, n) in plan.items():
        for k in range(n):
            split = "train" if k < n * 0.6 else "val" if k < n * 0.8 else "test"
            clip, record = _toy_clip(rng, k, label, kind, split)
            clips.append(clip)
            records[clip.clip_id] = record
    root = tmp_path_factory.mktemp("toy_features")
    return FeatureSet.create(root, clips, video={"name": "toy-v", "version": "1", "dim": 8},
                             audio={"name": "toy-a", "version": "1", "dim": 4}, records=records)


def _train(features, out, **overrides):
    config = WeakTrainConfig(**{"epochs": 25, "lr": 3e-3, "batch_size": 16, "alpha": 6, "model": dict(TINY),
                                **overrides})
    return train_weak(features, out, config, progress=False)


def test_weak_training_localises_and_audio_beats_zero_audio(toy_features, tmp_path):
    _train(toy_features, tmp_path / "av")
    _train(toy_features, tmp_path / "zero", zero_audio=True)
    with_audio = evaluate_weak(tmp_path / "av", toy_features.root, "test", plots=False, write=False)
    without = evaluate_weak(tmp_path / "zero", toy_features.root, "test", plots=False, write=False)
    assert with_audio.frame_auc >= 0.9
    assert with_audio.frame_auc_anomalous >= 0.85
    # The audible anomaly cannot be seen: with zeroed audio its frames look normal.
    assert with_audio.per_class["siren"]["frame_auc"] >= 0.9
    assert without.per_class["siren"]["frame_auc"] < 0.7
    assert without.per_class["flash"]["frame_auc"] >= 0.85
    assert with_audio.truth.startswith("frame ranges") and with_audio.n_frames == with_audio.n_videos * STEPS


def test_weak_run_round_trip_and_the_supervised_loader_refuses_it(toy_features, tmp_path):
    run = _train(toy_features, tmp_path / "run", epochs=2)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["method"] == "avaca" and meta["model"]["audio_path"] == "focused" and run_method(tmp_path / "run") == "avaca"
    clip = toy_features.split("test")[0]
    loaded = WeakRun.load(tmp_path / "run")
    assert np.allclose(loaded.step_scores(clip.video, clip.audio), run.step_scores(clip.video, clip.audio))
    with pytest.raises(ValueError, match="not a supervised classifier"):
        (tmp_path / "run" / "labels.json").write_text("[]")
        Run.load(tmp_path / "run")


def test_streamed_normalisation_and_long_videos_averaged_down(toy_features):
    records = [c for c in toy_features.clips if c["split"] == "train"]
    clips = [toy_features.load(c) for c in records]
    streamed = fit_normalization(toy_features, records)
    direct = Normalization.fit([c.video for c in clips], [c.audio for c in clips])
    for name in ("video_mean", "video_std", "audio_mean", "audio_std"):
        assert np.allclose(getattr(streamed, name), getattr(direct, name), atol=1e-5)
    x = np.arange(10, dtype=np.float32)[:, None]
    assert segment_means(x, 4)[:, 0].tolist() == [0.5, 3.0, 6.0, 8.5]  # edges 0, 2, 5, 8, 10


def test_mil_training_of_the_mtcn_head(toy_features, tmp_path):
    run = train_weak(toy_features, tmp_path / "mil", WeakTrainConfig(
        method="mil", head_type="mtcn", epochs=2, batch_size=8,
        model={"num_stages": 2, "num_layers": 3, "num_f_maps": 8, "attention": False}), progress=False)
    assert isinstance(run.model, MILHead)
    report = evaluate_weak(tmp_path / "mil", toy_features.root, "test", plots=False, write=False)
    assert report.method == "mil" and 0.0 <= report.frame_auc <= 1.0
    assert WeakRun.load(tmp_path / "mil").model_config.num_classes == 2


def test_train_and_evaluate_commands(toy_features, tmp_path, capsys):
    run_dir = tmp_path / "cli_run"
    assert main(["train", str(toy_features.root), "--method", "avaca", "--out", str(run_dir), "--epochs", "2",
                 "--hidden", "16", "--audio-path", "plain", "-q", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "avaca" and info["n_train"] == {"normal": 29, "anomalous": 30}
    assert json.loads((run_dir / "config.json").read_text())["model"]["audio_path"] == "plain"
    assert main(["evaluate", str(run_dir), str(toy_features.root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"frame_auc", "frame_ap", "frame_ap_xd", "frame_auc_anomalous", "per_class"} <= set(report)
    assert (run_dir / "eval_weak_test.json").is_file() and any((run_dir / "weak_plots_test").glob("*.png"))
