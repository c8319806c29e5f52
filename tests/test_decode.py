"""Decoding by timestamp: real files written with PyAV, checked sample by sample."""

import warnings
from fractions import Fraction

import av
import numpy as np
import pytest

from avar.media.decode import AUDIO_RATE, DecodeStats, MediaError, decode_steps, iter_steps, n_steps_for
from avar.media.synth import write_av_file


def solid_frames(values, size=(64, 48)):
    w, h = size
    return np.stack([np.full((h, w, 3), v, np.uint8) for v in values])


def tone(seconds, rate, freq=1000.0, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_variable_frame_rate_picks_frame_on_screen_at_step_centre(tmp_path):
    times = np.array([0.0, 0.1, 0.15, 0.9, 1.2, 1.7, 2.3, 2.9])
    values = [20 + 25 * i for i in range(len(times))]
    path = write_av_file(tmp_path / "vfr.mp4", solid_frames(values), 10, tone(3.0, 48000), 48000,
                         frame_times_s=times)
    clip = decode_steps(path, step=1.0)
    assert clip.n_steps == 3
    # centres 0.5, 1.5, 2.5 s show the frames that started at 0.15, 1.2 and 2.3 s
    shown = clip.frames.reshape(3, -1).mean(1)
    np.testing.assert_allclose(shown, [values[2], values[4], values[6]], atol=4)
    np.testing.assert_allclose(clip.times, [0.0, 1.0, 2.0])


def test_half_second_steps_follow_timestamps(tmp_path):
    values = [10 * i for i in range(25)]  # 25 frames at 12.5 fps = 2 s
    path = write_av_file(tmp_path / "cfr.mp4", solid_frames(values), 12.5, tone(2.0, 48000), 48000)
    clip = decode_steps(path, step=0.5)
    assert clip.n_steps == 4
    # centre 0.25 s -> frame 3 (0.24 s); 0.75 -> frame 9 (0.72 s); 1.25 -> 15; 1.75 -> 21
    np.testing.assert_allclose(clip.frames.reshape(4, -1).mean(1), [30, 90, 150, 210], atol=4)
    assert clip.audio.shape == (4, AUDIO_RATE // 2)


def test_audio_that_starts_late_stays_in_sync(tmp_path):
    path = write_av_file(tmp_path / "late.mp4", solid_frames([128] * 100), 25, tone(2.5, 48000), 48000,
                         audio_start_s=1.5)
    clip = decode_steps(path, step=1.0)
    assert clip.n_steps == 4 and not clip.audio_missing
    assert np.abs(clip.audio[0]).max() < 1e-3
    onset = np.argmax(np.abs(clip.audio[1]) > 0.05)
    assert abs(onset - AUDIO_RATE // 2) < 0.03 * AUDIO_RATE  # the tone begins at 1.5 s
    assert np.sqrt(np.mean(clip.audio[2] ** 2)) > 0.25


def test_other_audio_rates_are_resampled_to_16k(tmp_path):
    path = write_av_file(tmp_path / "rate.mp4", solid_frames([50] * 50), 25, tone(2.0, 22050, freq=1000), 22050)
    clip = decode_steps(path, step=1.0)
    spectrum = np.abs(np.fft.rfft(clip.audio[1]))
    peak_hz = np.argmax(spectrum) * AUDIO_RATE / clip.audio.shape[1]
    assert abs(peak_hz - 1000) <= 2


def test_file_without_audio_gets_zero_audio_and_flag(tmp_path):
    path = write_av_file(tmp_path / "mute.mp4", solid_frames([90] * 50), 25, None, 48000)
    with pytest.warns(UserWarning, match="audio_missing"):
        clip = decode_steps(path, step=1.0)
    assert clip.audio_missing and not clip.video_missing
    assert clip.audio.shape == (2, AUDIO_RATE) and not clip.audio.any()


def test_frames_are_resized_when_asked(tmp_path):
    path = write_av_file(tmp_path / "size.mp4", solid_frames([90] * 25, (128, 96)), 25, tone(1.0, 48000), 48000)
    clip = decode_steps(path, frame_size=(32, 24))
    assert clip.frames.shape == (1, 24, 32, 3) and clip.frames.dtype == np.uint8


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_undecodable_file_names_the_file(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    with pytest.raises(MediaError, match="broken.mp4"):
        decode_steps(bad)


def test_truncated_file_is_a_media_error(tmp_path):
    good = write_av_file(tmp_path / "good.mp4", solid_frames([90] * 50), 25, tone(2.0, 48000), 48000)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MediaError, match="cut.mp4"):
            decode_steps(cut)


def test_missing_file_and_bad_step(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        decode_steps(tmp_path / "nope.mp4")
    with pytest.raises(ValueError, match="step"):
        decode_steps(tmp_path / "nope.mp4", step=0)


def test_step_count_rounds_partial_tail():
    assert n_steps_for(8.0, 1.0) == 8
    assert n_steps_for(8.4, 1.0) == 8
    assert n_steps_for(8.6, 1.0) == 9
    assert n_steps_for(0.2, 1.0) == 1


def write_bframe_clip(path, frame_times, size=(96, 64), seconds_audio=None):
    """H.264 with a fixed B-frame pyramid (x264: 3 B-frames, the middle one a reference, so
    half the frames are non-reference) and a keyframe every 25 frames, at ``frame_times``
    seconds; every frame differs (a moving bar over a ramp). AAC audio when asked."""
    w, h = size
    ticks = 90_000
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, ticks)
        video.codec_context.gop_size = 25
        video.options = {"preset": "veryfast", "x264-params": "bframes=3:b-adapt=0:b-pyramid=normal:scenecut=0"}
        video.codec_context.thread_count = 1
        sound = container.add_stream("aac", rate=48_000, layout="mono") if seconds_audio else None
        for i, t in enumerate(frame_times):
            picture = np.tile(np.linspace(0, 200, w, dtype=np.uint8)[None, :, None], (h, 1, 3))
            picture[:, (3 * i) % w: (3 * i) % w + 3] = 255
            picture[: h // 4] = (37 * i) % 256
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = int(round(t * ticks))
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            wave = tone(seconds_audio, 48_000)[None]
            for s in range(0, wave.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s: s + 1024]), format="fltp",
                                                   layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48_000, s, Fraction(1, 48_000)
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return path


def non_reference_frames(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.codec_context.skip_frame = "NONREF"
        return video.frames - sum(1 for _ in container.decode(video))


def decoded(path, step, decode_all, frame_size=None):
    stats = DecodeStats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timestamp_jump is expected on the jump clip
        steps = list(iter_steps(path, step, frame_size, decode_all=decode_all, stats=stats))
    return steps, stats


def assert_same_steps(reference, steps):
    assert len(steps) == len(reference)
    for ref, got in zip(reference, steps):
        assert (got.time, got.end, got.audio_missing, got.video_missing) == (
            ref.time, ref.end, ref.audio_missing, ref.video_missing)
        np.testing.assert_array_equal(got.frame, ref.frame)
        np.testing.assert_array_equal(got.audio, ref.audio)


@pytest.mark.parametrize("step", [1.0, 0.5])
def test_skipping_unused_b_frames_gives_the_steps_of_decoding_every_frame(tmp_path, step):
    path = write_bframe_clip(tmp_path / "b.mp4", np.arange(150) / 25, seconds_audio=6.0)
    reference, every = decoded(path, step, decode_all=True)
    steps, fewer = decoded(path, step, decode_all=False)
    assert_same_steps(reference, steps)
    assert len(steps) == 6 / step
    assert every.frames_decoded == 150 and every.frames_skipped == 0
    # Every non-reference frame is skipped but those near a step centre (one or two each) and
    # the few read before the first frame comes out of the decoder's threads.
    assert fewer.frames_decoded + fewer.frames_skipped == 150
    non_reference = non_reference_frames(path)
    assert non_reference >= 70  # the pyramid: about half the frames
    assert non_reference - fewer.frames_skipped <= 2 * len(steps) + 6
    # and the frames shown are the ones on screen at each centre: frame k carries the bar at 3k
    for s in steps:
        k = int(np.floor((s.time + step / 2) * 25 + 1e-9))
        assert s.frame[-1, (3 * k) % 96].min() > 240


def test_skipping_keeps_steps_when_resizing(tmp_path):
    path = write_bframe_clip(tmp_path / "b.mp4", np.arange(75) / 25)
    reference, _ = decoded(path, 0.5, True, (48, 32))
    steps, stats = decoded(path, 0.5, False, (48, 32))
    assert_same_steps(reference, steps)
    assert stats.frames_skipped > 0


@pytest.mark.parametrize("step", [1.0, 0.5])
def test_variable_frame_rate_with_b_frames_matches_decoding_every_frame(tmp_path, step):
    rng = np.random.default_rng(0)
    gaps = rng.choice([0.02, 0.04, 0.04, 0.1, 0.33], size=120)
    path = write_bframe_clip(tmp_path / "vfr.mp4", np.concatenate([[0.0], np.cumsum(gaps)[:-1]]),
                             seconds_audio=float(gaps.sum()))
    reference, _ = decoded(path, step, True)
    steps, stats = decoded(path, step, False)
    assert_same_steps(reference, steps)
    # where neighbouring frames are about one nominal interval apart, frames are still skipped
    assert stats.frames_skipped > 0 and stats.frames_decoded + stats.frames_skipped == 120


@pytest.mark.parametrize("step", [1.0, 0.5])
def test_timestamp_jump_with_b_frames_matches_decoding_every_frame(tmp_path, step):
    times = np.concatenate([np.arange(60) / 25, 40.0 + np.arange(60) / 25])
    path = write_bframe_clip(tmp_path / "jump.mp4", times)
    reference, _ = decoded(path, step, True)
    steps, stats = decoded(path, step, False)
    assert_same_steps(reference, steps)
    assert len(steps) == n_steps_for(4.8, step)  # the 37.6 s gap was closed in both
    # frames after the jump are all decoded: skipping stops at the first jump
    assert 0 < stats.frames_skipped < 30
