"""Backbone runtimes (eager fp32, bfloat16, ONNX Runtime), the streaming prefetcher and `avar bench`."""

import json
import queue
import time

import numpy as np
import pytest
import torch

from avar import cli
from avar.features import build_extractor
from avar.features import runtime as runtime_mod
from avar.media.decode import MediaError, StepMedia
from avar.media.synth import write_bench_clip
from avar.serve.bench import run_bench
from avar.serve.watch import WatchStats, _Prefetch
from test_extractors import tiny_mobilevit_dir, tiny_wav2vec2_dir


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 48, 80, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def waves():
    rng = np.random.default_rng(1)
    return (0.3 * rng.standard_normal((5, 4000))).astype(np.float32)


@pytest.mark.parametrize("runtime", ["onnx", "bf16"])
def test_fast_runtimes_match_eager_fp32(tmp_path, frames, waves, runtime):
    cases = [("mobilevit-small", tiny_mobilevit_dir(tmp_path / "mv"), frames),
             ("wav2vec2-base", tiny_wav2vec2_dir(tmp_path / "w2"), waves)]
    for name, weights, data in cases:
        reference = build_extractor(name, weights)(data)
        fast = build_extractor(name, weights, runtime=runtime)
        assert fast.runtime == runtime
        out = fast(data)
        assert out.shape == reference.shape and out.dtype == np.float32
        assert cosines(reference, out).min() >= 0.999, name
        if runtime == "onnx":  # same fp32 arithmetic, reordered
            np.testing.assert_allclose(out, reference, rtol=1e-3, atol=1e-4)


def test_onnx_export_is_cached_next_to_the_weights_and_keyed_by_them(tmp_path, frames):
    weights = tiny_mobilevit_dir(tmp_path / "mv")
    first = build_extractor("mobilevit-small", weights, runtime="onnx")
    path = first.onnx_path()
    assert path.parent == tmp_path / "mv" / "avar-onnx" and path.is_file()
    stamp = path.stat().st_mtime_ns
    build_extractor("mobilevit-small", weights, runtime="onnx")
    assert path.stat().st_mtime_ns == stamp  # reused, not exported again

    other = build_extractor("mobilevit-small", weights)
    with torch.no_grad():
        next(other.net.parameters()).add_(0.5)
    assert other.onnx_path() != path  # other weights, other export
    other.use_runtime("onnx")
    assert cosines(other(frames), build_extractor("mobilevit-small", weights)(frames)).min() < 0.9999


def test_export_goes_to_the_user_cache_for_shipped_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("AVAR_CACHE", str(tmp_path / "cache"))
    extractor = build_extractor("efficientnet-lite0")
    assert extractor.onnx_path().parent == tmp_path / "cache" / "onnx"


def test_auto_picks_the_measured_runtime_and_falls_back_without_native_bf16(tmp_path, monkeypatch):
    weights = tiny_wav2vec2_dir(tmp_path / "w2")
    assert build_extractor("wav2vec2-base", weights, runtime="auto").runtime == ("bf16" if runtime_mod.bf16_native() else "onnx")
    monkeypatch.setattr(runtime_mod, "bf16_native", lambda: False)
    assert build_extractor("wav2vec2-base", weights, runtime="auto").runtime == "onnx"
    assert build_extractor("logmel", runtime="auto").name == "logmel"  # numpy: no runtime to choose
    with pytest.raises(ValueError, match="unknown runtime 'fast'"):
        build_extractor("wav2vec2-base", weights, runtime="fast")


def test_random_weights_are_deterministic_and_alive(frames):
    a = build_extractor("efficientnet-lite0", random_weights=True)
    b = build_extractor("efficientnet-lite0", random_weights=True)
    fa, fb = a(frames), b(frames)
    np.testing.assert_array_equal(fa, fb)
    # Calibrated batch norm keeps activations at a trained network's scale, far from zero.
    assert fa.std() > 0.05 and np.abs(fa[0] - fa[1]).max() > 1e-2


def _media(i, seconds=1.0):
    return StepMedia(i * seconds, (i + 1) * seconds, np.zeros((2, 2, 3), np.uint8), np.zeros(16, np.float32))


def test_prefetch_hands_over_decoded_steps_before_the_error():
    def steps():
        for i in range(3):
            yield _media(i)
        raise MediaError("cam.mp4", "decoding failed")

    got = []
    with pytest.raises(MediaError, match="decoding failed"):
        for group in _Prefetch(steps(), False, WatchStats()).batches(8):
            got.extend(m.time for m, _ in group)
    assert got == [0.0, 1.0, 2.0]


def test_batches_take_what_is_ready_and_never_wait_for_more():
    gate: queue.Queue = queue.Queue()

    def live():  # a step arrives only when the test lets it
        for i in range(3):
            gate.get()
            yield _media(i)

    sizes = []
    batches = _Prefetch(live(), False, WatchStats()).batches(8)
    for _ in range(3):
        gate.put(None)
        sizes.append(len(next(batches)))
    assert sizes == [1, 1, 1]

    fast = _Prefetch(iter([_media(i) for i in range(20)]), False, WatchStats())
    time.sleep(0.2)  # the decoder runs ahead
    assert [len(g) for g in fast.batches(8)] == [8, 8, 4]


def test_bench_reports_throughput_latency_and_memory(tmp_path):
    clip = write_bench_clip(tmp_path / "bench.mp4", seconds=3, size=(320, 240))
    result = run_bench(media=clip, live_steps=2)
    assert result["steps"] == 3 and result["steps_per_second"] > 0
    assert result["backbones"]["video"] == {"name": "efficientnet-lite0", "runtime": "onnx", "weights": "default"}
    assert result["backbones"]["audio"]["runtime"] == "numpy"
    assert 0 < result["latency_p50_ms"] <= result["latency_p95_ms"]
    assert result["live_steps"] == 2 and result["peak_rss_mb"] > 100
    for stage in ("decode", "video", "audio", "head"):
        assert result[f"{stage}_ms_per_step"] > 0


def test_bench_and_export_commands(tmp_path, capsys):
    clip = write_bench_clip(tmp_path / "bench.mp4", seconds=2, size=(160, 120))
    assert cli.main(["bench", "--media", str(clip), "--runtime", "torch", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"steps_per_second", "latency_p50_ms", "latency_p95_ms", "peak_rss_mb", "backbones", "runtime"} <= out.keys()
    assert out["backbones"]["video"]["runtime"] == "torch"

    weights = tiny_mobilevit_dir(tmp_path / "mv")
    assert cli.main(["export", "--video", "mobilevit-small", "--video-weights", weights, "--audio", "logmel"]) == 0
    printed = capsys.readouterr().out
    assert "logmel: plain numpy" in printed
    assert len(list((tmp_path / "mv" / "avar-onnx").glob("mobilevit-small-*.onnx"))) == 1
    assert cli.main(["export"]) == 2
