"""Decoding by timestamp: real files written with PyAV, checked sample by sample."""

import warnings

import numpy as np
import pytest

from avar.media.decode import AUDIO_RATE, MediaError, decode_steps, n_steps_for
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
