"""The VGGish extractor: its log-mel front end, the architecture with random weights, local weight
files (safetensors or a state dict read without unpickling), and failing fast without weights."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from avar.features import EXTRACTORS, WeightsUnavailableError, build_extractor
from avar.features.vggish import (
    EXAMPLE_SAMPLES,
    LOG_OFFSET,
    MEL_HIGH_HZ,
    MEL_LOW_HZ,
    VGGishExtractor,
    hertz_to_mel,
    log_mel_examples,
    mel_matrix,
)

RATE = 16_000


class NotAStateDict:
    """An arbitrary object: unpickling it would run code, which weights_only refuses."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vggish():
    return build_extractor("vggish", random_weights=True)


def test_log_mel_front_end_examples_bands_and_floor():
    weights = mel_matrix()
    assert weights.shape == (257, 64) and not weights[0].any()  # DC bin dropped
    # Band centres are evenly spaced on the HTK mel scale between 125 and 7500 Hz.
    centres_hz = np.linspace(0, 8000, 257)[weights.argmax(0)]
    edges = np.linspace(hertz_to_mel(MEL_LOW_HZ), hertz_to_mel(MEL_HIGH_HZ), 66)[1:-1]
    assert np.all(np.abs(hertz_to_mel(centres_hz) - edges) < 40)
    t = np.arange(RATE) / RATE
    tone = log_mel_examples(0.5 * np.sin(2 * np.pi * 1000 * t))
    assert tone.shape == (1, 96, 64)  # 1 s -> one 0.96 s example
    band = int(tone[0].mean(0).argmax())
    assert band == int(np.argmin(np.abs(hertz_to_mel(1000.0) - edges)))
    assert np.allclose(log_mel_examples(np.zeros(RATE)), np.log(LOG_OFFSET))  # silence sits on the floor
    assert log_mel_examples(np.zeros(int(2.5 * RATE))).shape == (2, 96, 64)
    assert log_mel_examples(np.zeros(4000)).shape == (1, 96, 64)  # short steps are padded
    assert EXAMPLE_SAMPLES == 15600


def test_architecture_with_random_weights(vggish):
    assert "vggish" in EXTRACTORS and vggish.dim == 128 and vggish.modality == "audio"
    assert sum(p.numel() for p in vggish.net.parameters()) == 72_141_184  # VGGish's published size
    rng = np.random.default_rng(0)
    waves = rng.normal(0, 0.1, (3, RATE)).astype(np.float32)
    out = vggish(waves)
    assert out.shape == (3, 128) and out.dtype == np.float32 and np.isfinite(out).all()
    # A 2 s step is the mean of its two examples' embeddings.
    long = rng.normal(0, 0.1, (1, 2 * RATE)).astype(np.float32)
    examples = torch.from_numpy(log_mel_examples(long[0]))[:, None]
    with torch.inference_mode():
        expected = vggish.model(examples).mean(0).numpy()
    assert np.allclose(vggish(long)[0], expected, atol=1e-5)


def test_weights_from_local_files_load_without_unpickling(vggish, tmp_path):
    wave = np.random.default_rng(1).normal(0, 0.1, (2, RATE)).astype(np.float32)
    expected = vggish(wave)
    state = {k: v.contiguous() for k, v in vggish.model.state_dict().items()}
    pth, safe = tmp_path / "vggish.pth", tmp_path / "vggish.safetensors"
    torch.save(state, pth)
    save_file(state, str(safe))
    for path in (pth, safe):
        loaded = build_extractor("vggish", str(path))
        assert VGGishExtractor.available_offline(str(path))
        assert np.allclose(loaded(wave), expected, atol=1e-5)


def test_no_weights_fails_fast_with_a_fix(tmp_path):
    started = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="--audio-weights FILE"):
        build_extractor("vggish")
    assert time.perf_counter() - started < 1.0
    with pytest.raises(WeightsUnavailableError, match="is not a file"):
        build_extractor("vggish", str(tmp_path / "missing.pth"))
    assert not VGGishExtractor.available_offline()
    torch.save({"model": NotAStateDict()}, tmp_path / "pickled.pth")
    with pytest.raises(WeightsUnavailableError, match="not a readable state dict"):
        build_extractor("vggish", str(tmp_path / "pickled.pth"))
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsUnavailableError, match="does not match the VGGish layout"):
        build_extractor("vggish", str(tmp_path / "wrong.pth"))
