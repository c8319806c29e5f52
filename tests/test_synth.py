"""The synthetic benchmark and the A/V writer: real MP4 files decoded back with PyAV."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from scipy import signal

from avar.media.synth import AUDIO_RATE, CLASSES, DESIGN, synthesize, write_av_file

SECONDS = 4.0


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synthesize(out, seed=0, clips_per_class=2, seconds=SECONDS, progress=False)
    return summary, json.loads(summary.metadata.read_text())


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``uint8 [T, H, W, 3]``, their times (s), and mono audio from t = 0 at AUDIO_RATE."""
    frames, times, audio = [], [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0, audio=0):
            if isinstance(frame, av.VideoFrame):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(frame.time)
            else:
                audio.append(frame.to_ndarray()[0])
    return np.stack(frames), np.array(times), np.concatenate(audio)


def _clip(meta: dict, name: str, k: int = 0) -> dict:
    return next(c for c in meta["clips"] if c["class"] == name and c["path"].endswith(f"_{k:03d}.mp4"))


def test_benchmark_is_decodable_h264_aac_with_intervals_inside(bench):
    summary, meta = bench
    assert summary.n_clips == 20 and summary.classes == CLASSES == meta["classes"]
    assert CLASSES[0] == "normal" and len(CLASSES) == 10
    files = sorted(p.relative_to(summary.out_dir).as_posix() for p in summary.out_dir.glob("*/*.mp4"))
    assert files == sorted(c["path"] for c in meta["clips"])
    assert meta["groups"] == {
        "normal": ["normal"],
        "audio_only": ["baby_cry", "police_siren", "pain"],
        "video_only": ["intruder", "vandalism"],
        "joint": ["brawling", "abuse", "crash", "explosion"],
    }
    for clip in meta["clips"]:
        assert clip["path"].split("/")[0] == clip["class"] == CLASSES[clip["label"]]
        assert (clip["visual"], clip["audio"]) == (DESIGN[clip["class"]].visual, DESIGN[clip["class"]].audio)
        with av.open(str(summary.out_dir / clip["path"])) as container:
            (video,), (audio,) = container.streams.video, container.streams.audio
            assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
            assert (video.width, video.height, audio.sample_rate) == (320, 240, AUDIO_RATE)
            for stream in (video, audio):
                assert float(stream.duration * stream.time_base) == pytest.approx(SECONDS, abs=0.2)
        if clip["class"] == "normal":
            assert clip["interval"] is None
        else:
            start, end = clip["interval"]
            assert 0 < start and end < clip["duration"] == SECONDS and 2.5 <= end - start <= 4.0


def test_same_seed_same_content_whatever_the_count_or_workers(bench, tmp_path):
    _, big = bench
    runs = {}
    for name, seed, workers in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        summary = synthesize(
            tmp_path / name, seed=seed, clips_per_class=1, seconds=SECONDS, size=(160, 120),
            progress=False, workers=workers,
        )
        meta = json.loads(summary.metadata.read_text())
        firsts = [_first_frame(summary.out_dir / c["path"]) for c in meta["clips"]]
        runs[name] = meta, firsts
    (meta_a, first_a), (meta_b, first_b), (meta_c, first_c) = runs["a"], runs["b"], runs["c"]
    assert meta_a == meta_b
    assert all(np.array_equal(x, y) for x, y in zip(first_a, first_b))
    # Clip 0 of each class is the same clip when two per class were made.
    key = [(c["seed"], c["interval"]) for c in meta_a["clips"]]
    assert key == [(c["seed"], c["interval"]) for c in big["clips"] if c["path"].endswith("_000.mp4")]
    assert [c["seed"] for c in meta_c["clips"]] != [c["seed"] for c in meta_a["clips"]]
    assert [c["interval"] for c in meta_c["clips"]] != [c["interval"] for c in meta_a["clips"]]
    assert all(np.abs(x.astype(int) - y).mean() > 5 for x, y in zip(first_a, first_c))


def _first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _band_power(audio: np.ndarray, start: float, end: float, low: float, high: float) -> float:
    freqs, power = signal.welch(audio[int(start * AUDIO_RATE) : int(end * AUDIO_RATE)], AUDIO_RATE, nperseg=2048)
    return float(power[(freqs >= low) & (freqs <= high)].mean())


def test_siren_is_in_the_spectrum_during_its_interval_only(bench):
    summary, meta = bench
    siren = _clip(meta, "police_siren")
    start, end = siren["interval"]
    _, _, siren_audio = _decode(summary.out_dir / siren["path"])
    _, _, normal_audio = _decode(summary.out_dir / _clip(meta, "normal")["path"])
    during = _band_power(siren_audio, start, end, 650, 1500)
    assert during > 100 * _band_power(normal_audio, start, end, 650, 1500)
    assert during > 100 * _band_power(siren_audio, 0.0, start, 650, 1500)


def _changed(frames: np.ndarray, times: np.ndarray, start: float, end: float) -> float:
    """Share of pixels, in frames inside [start, end), far from the mean frame before start."""
    before = frames[times < start].astype(np.float32).mean(axis=0)
    inside = frames[(times >= start) & (times < end)].astype(np.float32)
    return float((np.abs(inside - before).max(axis=-1) > 40).mean())


def test_intruder_changes_the_picture_much_more_than_a_normal_scene(bench):
    summary, meta = bench
    intruder = _clip(meta, "intruder")
    start, end = intruder["interval"]
    intruder_changed = _changed(*_decode(summary.out_dir / intruder["path"])[:2], start, end)
    normal_changed = _changed(*_decode(summary.out_dir / _clip(meta, "normal")["path"])[:2], start, end)
    assert intruder_changed > 0.03
    assert intruder_changed > 5 * normal_changed


def _gradient_frames(n: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frames whose brightness encodes their index, so decoded order can be checked."""
    ramp = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
    return np.stack([np.broadcast_to(20 + 15 * i + ramp, (height, width, 3)) for i in range(n)]).astype(np.uint8)


def test_variable_frame_times_round_trip_and_no_audio_means_no_stream(tmp_path):
    times = np.array([0.0, 0.04, 0.1, 0.25, 0.26, 0.5, 0.9, 0.95, 1.3, 1.333])
    frames = _gradient_frames(len(times))
    path = write_av_file(tmp_path / "vfr.mp4", frames, 10.0, None, AUDIO_RATE, frame_times_s=times)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 0
        decoded = list(container.decode(video=0))
    np.testing.assert_allclose([f.time for f in decoded], times, atol=1e-3)
    brightness = [f.to_ndarray(format="rgb24").mean() for f in decoded]
    assert np.all(np.diff(brightness) > 10)


def test_late_audio_starts_at_its_offset(tmp_path):
    rate, fps = AUDIO_RATE, 10.0
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    path = write_av_file(tmp_path / "late.mp4", _gradient_frames(20), fps, tone, rate, audio_start_s=1.5)
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        assert float(audio.start_time * audio.time_base) == pytest.approx(1.5, abs=0.05)
        assert float(container.streams.video[0].start_time) == 0
        frames = list(container.decode(audio=0))
    assert frames[0].time == pytest.approx(1.5, abs=0.05)
    samples = np.concatenate([f.to_ndarray()[0] for f in frames])
    onset = frames[0].time + np.argmax(np.abs(samples) > 0.25) / rate
    assert onset == pytest.approx(1.5, abs=0.01)


def test_late_video_and_bad_frames(tmp_path):
    path = write_av_file(tmp_path / "late.mkv", _gradient_frames(5), 5.0, None, AUDIO_RATE, video_start_s=0.5)
    with av.open(str(path)) as container:
        times = [f.time for f in container.decode(video=0)]
    assert times == pytest.approx([0.5, 0.7, 0.9, 1.1, 1.3], abs=1e-3)
    with pytest.raises(ValueError, match="even height and width"):
        write_av_file(tmp_path / "odd.mp4", _gradient_frames(3, width=63), 5.0, None, AUDIO_RATE)
    with pytest.raises(ValueError, match="strictly increasing"):
        write_av_file(tmp_path / "x.mp4", _gradient_frames(3), 5.0, None, AUDIO_RATE, frame_times_s=[0, 0.2, 0.2])
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "odd.mp4").exists()
