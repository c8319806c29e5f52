"""Backbone runtimes (eager fp32, bfloat16, ONNX Runtime) and `avar bench`."""

import json

import numpy as np
import onnx
import pytest
import torch

from avar import cli
from avar.features import build_extractor
from avar.features import runtime as runtime_mod
from avar.media.synth import write_av_file, write_bench_clip
from avar.serve.bench import run_bench
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


@pytest.fixture(scope="module")
def media_files(tmp_path_factory):
    """Two small real media files (H.264 + AAC): the walkway scene, each with its own noise and siren."""
    folder = tmp_path_factory.mktemp("media")
    return [write_bench_clip(folder / f"cam{i}.mp4", seconds=3, size=(160, 120), seed=i) for i in range(2)]


def test_int8_features_match_eager_fp32_on_decoded_audio(tmp_path, media_files):
    weights = tiny_wav2vec2_dir(tmp_path / "w2")
    reference = build_extractor("wav2vec2-base", weights)
    calibration = runtime_mod.calibration_batch(reference, media_files[:1])
    assert calibration.shape == (3, 16000) and calibration.dtype == np.float32
    unseen = runtime_mod.calibration_batch(reference, media_files[1:])
    quantised = build_extractor("wav2vec2-base", weights).use_runtime("int8", calibration=calibration)
    assert quantised.runtime == "int8"
    out = quantised(unseen)
    assert out.shape == (3, reference.dim) and out.dtype == np.float32
    expected = reference(unseen)
    assert cosines(expected, out).min() >= 0.99
    assert np.abs(expected - out).max() > 1e-4  # int8 arithmetic, not the fp32 graph
    graph = onnx.load(str(quantised.int8_path(calibration)))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.graph.node}


def test_int8_model_is_cached_and_keyed_by_weights_and_calibration(tmp_path, media_files, monkeypatch):
    weights = tiny_wav2vec2_dir(tmp_path / "w2")
    backbone = build_extractor("wav2vec2-base", weights)
    calibration = runtime_mod.calibration_batch(backbone, media_files[:1])
    path = backbone.use_runtime("int8", calibration=calibration).int8_path(calibration)
    export = backbone.onnx_path()
    assert path.parent == export.parent == tmp_path / "w2" / "avar-onnx" and path.is_file() and export.is_file()
    assert path.name.startswith(export.stem + "-int8-")
    assert not list(path.parent.glob(".*"))  # no temporary files left behind
    stamp = path.stat().st_mtime_ns
    build_extractor("wav2vec2-base", weights).use_runtime("int8", calibration=calibration.copy())
    assert path.stat().st_mtime_ns == stamp  # reused, not calibrated again

    other_media = runtime_mod.calibration_batch(backbone, media_files[1:])
    assert backbone.int8_path(other_media) != path
    other_weights = build_extractor("wav2vec2-base", weights)
    with torch.no_grad():
        next(other_weights.net.parameters()).add_(0.5)
    assert other_weights.int8_path(calibration) != path

    # Without calibration data: the model already made for these weights (`avar export --int8`) ...
    assert build_extractor("wav2vec2-base", weights, runtime="int8").int8_model == path
    assert path.stat().st_mtime_ns == stamp
    # ... else the documented default media, decoded the same way.
    monkeypatch.setattr(runtime_mod, "default_calibration_media", lambda: media_files[1])
    fresh = tiny_wav2vec2_dir(tmp_path / "fresh")
    assert build_extractor("wav2vec2-base", fresh, runtime="int8").int8_model == \
        build_extractor("wav2vec2-base", fresh).int8_path(other_media)


def test_a_corrupt_int8_model_names_the_file_and_the_fix(tmp_path, media_files):
    weights = tiny_wav2vec2_dir(tmp_path / "w2")
    backbone = build_extractor("wav2vec2-base", weights)
    calibration = runtime_mod.calibration_batch(backbone, media_files[:1])
    path = backbone.int8_path(calibration)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a model")
    with pytest.raises(RuntimeError, match=f"{path.name}: cannot load this ONNX model .*delete the file and rerun"):
        backbone.use_runtime("int8", calibration=calibration)


def test_calibration_needs_the_stream_it_calibrates(tmp_path):
    silent = write_av_file(tmp_path / "silent.mp4", np.zeros((10, 64, 64, 3), np.uint8), 5, None, 16000)
    with pytest.raises(ValueError, match="silent.mp4: no sound to calibrate wav2vec2-base on"):
        runtime_mod.calibration_batch(build_extractor("wav2vec2-base", tiny_wav2vec2_dir(tmp_path / "w2")), [silent])


def test_random_weights_are_deterministic_and_alive(frames):
    a = build_extractor("efficientnet-lite0", random_weights=True)
    b = build_extractor("efficientnet-lite0", random_weights=True)
    fa, fb = a(frames), b(frames)
    np.testing.assert_array_equal(fa, fb)
    # Calibrated batch norm keeps activations at a trained network's scale, far from zero.
    assert fa.std() > 0.05 and np.abs(fa[0] - fa[1]).max() > 1e-2


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


def test_export_builds_the_int8_model_from_media(tmp_path, media_files, capsys):
    weights = tiny_wav2vec2_dir(tmp_path / "w2")
    args = ["export", "--audio", "wav2vec2-base", "--audio-weights", weights, "--int8", *map(str, media_files)]
    assert cli.main(args) == 0 and "int8, calibrated on 6 steps" in capsys.readouterr().out
    made = list((tmp_path / "w2" / "avar-onnx").glob("wav2vec2-base-*-int8-*.onnx"))
    assert len(made) == 1
    assert build_extractor("wav2vec2-base", weights, runtime="int8").int8_model == made[0]
    assert cli.main(args) == 0 and "already calibrated" in capsys.readouterr().out


def test_bench_streams_runs_copies_of_a_clip_live_in_one_process(tmp_path, capsys):
    from avar.serve.bench import run_streams

    clip = write_bench_clip(tmp_path / "bench.mp4", seconds=3, size=(320, 240))
    result = run_streams(3, media=clip, seconds=2)
    assert result["streams"] == 3 and [r["source"] for r in result["per_stream"]] == ["stream 1", "stream 2", "stream 3"]
    assert all(r["steps"] >= 2 and r["skipped"] == 0 and r["latency_p95_ms"] < 2000 for r in result["per_stream"])
    assert result["holds_realtime"] and result["steps"] == sum(r["steps"] for r in result["per_stream"])
    assert result["wall_s"] >= 2.0  # paced: two seconds of media take two seconds
    assert set(result["stage_busy_share"]) == {"decode", "video", "audio", "head"}
    assert 0 < result["process_cpu_share"] <= 1 and result["peak_rss_mb"] > 0
    assert cli.main(["bench", "--streams", "2", "--media", str(clip), "--seconds", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["streams"] == 2
    assert cli.main(["bench", "--streams", "2", "--max-streams"]) == 2
    assert "drop --streams" in capsys.readouterr().err


def test_max_streams_doubles_then_halves_to_the_largest_that_holds(monkeypatch):
    from avar.serve import bench

    tried = []

    def fake(n, *args, **kwargs):
        tried.append(n)
        return {"streams": n, "holds_realtime": n <= 5, "worst_stream_latency_p95_ms": 100.0 * n,
                "skipped": 0 if n <= 5 else 3, "steps_per_second": float(n), "process_cpu_share": 0.1 * n,
                "peak_rss_mb": 1.0}

    monkeypatch.setattr(bench, "bench_models", lambda *a, **k: None)
    monkeypatch.setattr(bench, "run_streams", fake)
    result = bench.max_streams(limit=64)
    assert result["max_streams"] == 5 and tried == [1, 2, 4, 8, 6, 5]
    assert result["at_max"]["streams"] == 5
    assert bench.max_streams(limit=3)["max_streams"] == 3  # every N up to the limit held
