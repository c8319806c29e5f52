"""Feature extractors: the EfficientNet-Lite0 port, tiny transformers backbones, logmel."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_image
from transformers import MobileViTConfig, MobileViTModel, Wav2Vec2Config, Wav2Vec2Model

from avar.features import (
    AUDIO_RATE,
    DEFAULT_AUDIO,
    DEFAULT_VIDEO,
    EXTRACTORS,
    WeightsUnavailableError,
    build_extractor,
    extractor_infos,
)
from avar.features import hf
from avar.features.hf import weights_available_offline

DAISY, MONASTERY, PALACE, STUPA = 985, 663, 698, 832
NOT_CACHED = "avar-tests/model-that-is-not-cached"


@pytest.fixture(scope="module")
def sample_images() -> np.ndarray:
    """scikit-learn's two sample photos (427x640 RGB): a dahlia and the Summer Palace."""
    return np.stack([load_sample_image("flower.jpg"), load_sample_image("china.jpg")])


@pytest.fixture(scope="module")
def efficientnet():
    return build_extractor("efficientnet-lite0")


def test_efficientnet_lite0_port_classifies_natural_images(efficientnet, sample_images):
    features = efficientnet(sample_images)
    assert features.shape == (2, 1280) and features.dtype == np.float32
    assert np.isfinite(features).all()
    # The features are the input of the ImageNet classifier, so wrong padding,
    # normalisation or block wiring would show up as nonsense classes here.
    top5 = efficientnet.model._fc(torch.from_numpy(features)).topk(5).indices.tolist()
    assert top5[0][0] == DAISY, top5[0]
    assert {MONASTERY, PALACE, STUPA} & set(top5[1]), top5[1]


def test_efficientnet_lite0_batches_do_not_change_features(efficientnet, sample_images):
    together = efficientnet(sample_images)
    efficientnet.batch_size = 1
    try:
        one_by_one = efficientnet(sample_images)
    finally:
        efficientnet.batch_size = type(efficientnet).batch_size
    np.testing.assert_allclose(one_by_one, together, atol=1e-4)


def test_video_extractor_rejects_non_uint8_frames(efficientnet):
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        efficientnet(np.zeros((1, 32, 32, 3), dtype=np.float32))


def tiny_mobilevit_dir(path) -> str:
    torch.manual_seed(0)
    config = MobileViTConfig(
        image_size=64,
        hidden_sizes=[16, 16, 16],
        neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 24],
        num_attention_heads=2,
        expand_ratio=2.0,
    )
    model = MobileViTModel(config)
    # transformers 5 initialises BatchNorm and conv weights with std 0.02, so in eval mode
    # activations shrink ~50x per layer and collapse to zero; unit BatchNorm weights and
    # Kaiming convs keep the random network's features alive and image-dependent.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
        elif isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    model.save_pretrained(path)
    return str(path)


def test_mobilevit_from_local_directory(tmp_path, sample_images):
    extractor = build_extractor("mobilevit-small", weights=tiny_mobilevit_dir(tmp_path))
    assert extractor.dim == 24 and extractor.input_size == (64, 64)
    features = extractor(sample_images)
    assert features.shape == (2, 24) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert np.abs(features[0] - features[1]).max() > 1e-3


def tiny_wav2vec2_dir(path) -> str:
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(path)
    return str(path)


def test_wav2vec2_from_local_directory(tmp_path):
    extractor = build_extractor("wav2vec2-base", weights=tiny_wav2vec2_dir(tmp_path))
    assert extractor.dim == 32
    assert extractor.min_samples == (8 - 1) * 5 + 10
    rng = np.random.default_rng(0)
    waves = np.stack([np.zeros(4000), rng.normal(0, 0.1, 4000), rng.normal(0, 0.5, 4000) ** 3])
    features = extractor(waves.astype(np.float32))
    assert features.shape == (3, 32) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert np.abs(features[1] - features[2]).max() > 1e-3
    with pytest.raises(ValueError, match="at least 45 samples"):
        extractor(np.zeros((1, 44), dtype=np.float32))


def assert_points_to_offline_extractors(err: WeightsUnavailableError) -> None:
    message = str(err)
    assert "efficientnet-lite0" in message and "logmel" in message


@pytest.mark.parametrize("name", ["mobilevit-small", "wav2vec2-base"])
def test_uncached_hub_id_fails_fast_when_offline(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE") as caught:
        build_extractor(name, weights=NOT_CACHED)
    assert time.monotonic() - start < 5
    assert f"'{name}'" in str(caught.value) and NOT_CACHED in str(caught.value)
    assert_points_to_offline_extractors(caught.value)


def test_unreachable_hub_is_probed_once_then_fails(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def unreachable(url, timeout):
        calls.append(timeout)
        raise ConnectionError("no route to host")

    monkeypatch.setattr(hf, "get_hf_file_metadata", unreachable)
    with pytest.raises(WeightsUnavailableError, match="did not answer") as caught:
        build_extractor("wav2vec2-base", weights=NOT_CACHED)
    assert calls == [hf.PROBE_TIMEOUT_S]
    assert_points_to_offline_extractors(caught.value)


def test_missing_local_directory_is_reported(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(WeightsUnavailableError, match="no such directory"):
        build_extractor("mobilevit-small", weights=str(missing))
    assert not weights_available_offline(str(missing))
    assert weights_available_offline(tiny_wav2vec2_dir(tmp_path / "w2v"))


def waveforms() -> np.ndarray:
    """One second each of silence, a 1 kHz tone and white noise at 16 kHz."""
    t = np.arange(AUDIO_RATE) / AUDIO_RATE
    noise = np.random.default_rng(0).normal(0, 0.3, AUDIO_RATE)
    return np.stack([np.zeros(AUDIO_RATE), 0.5 * np.sin(2 * np.pi * 1000 * t), noise]).astype(np.float32)


def test_logmel_separates_tone_from_noise_and_survives_silence():
    extractor = build_extractor("logmel")
    silence, tone, noise = extractor(waveforms())
    assert extractor.dim == silence.shape[0] == 192
    assert np.isfinite(silence).all()
    flatness, centroid_khz = 128, 130
    assert tone[flatness] < 0.05 < 0.3 < noise[flatness]
    assert tone[centroid_khz] == pytest.approx(1.0, abs=0.1)
    assert noise[centroid_khz] == pytest.approx(4.0, abs=0.5)


def test_logmel_step_does_not_depend_on_its_batch():
    extractor = build_extractor("logmel")
    waves = waveforms()
    np.testing.assert_allclose(extractor(waves[1:2])[0], extractor(waves)[1], rtol=1e-5, atol=1e-5)


def test_build_extractor_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown extractor 'resnet'") as caught:
        build_extractor("resnet")
    for name in EXTRACTORS:
        assert name in str(caught.value)


def test_extractor_infos_mark_shipped_extractors_offline():
    infos = {info.name: info for info in extractor_infos()}
    assert set(infos) == set(EXTRACTORS)
    assert infos[DEFAULT_VIDEO].offline and infos[DEFAULT_VIDEO].dim == 1280
    assert infos[DEFAULT_AUDIO].offline and infos[DEFAULT_AUDIO].dim == 192
    assert infos["mobilevit-small"].modality == "video" and infos["wav2vec2-base"].modality == "audio"
