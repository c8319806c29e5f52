"""Hostile datasets: colliding names, paths that leave their folder, unreadable and sound-only
files, broken timestamps, a full disk. Every input file is accounted for and nothing is written
outside the output folder."""

import errno
import json
import os
import stat
import wave
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from avar.cli import main
from avar.media.clips import clip_id_for, clip_path_of
from avar.datasets.folders import discover, scan
from avar.features import build_extractor
from avar.features import cache as cache_mod
from avar.features.cache import FeatureSet, _clip_file, extract_dataset
from avar.media.decode import decode_steps
from avar.media.synth import write_av_file


@pytest.fixture(scope="module")
def extractors():
    return build_extractor("efficientnet-lite0"), build_extractor("logmel")


def write_clip(path: Path, seconds: float = 2.0, fps: int = 10, tone: float = 440.0, frame_times=None):
    rng = np.random.default_rng(len(str(path)))
    n = len(frame_times) if frame_times is not None else int(seconds * fps)
    frames = rng.integers(0, 255, (n, 32, 48, 3), dtype=np.uint8)
    t = np.arange(int(seconds * 16000)) / 16000
    write_av_file(path, frames, fps, (0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32), 16000,
                  frame_times_s=frame_times)
    return path


def write_wav(path: Path, seconds: float = 2.0, rate: int = 16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 880 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return path


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("relative", ["normal/dup.mp4", "a__b/c.mp4", "a/b__c.mp4", "_x_/y__.mkv",
                                      "odd%5F/100%_.mp4", "n/a___b.mp4", "__/x"])
def test_clip_ids_are_reversible(relative):
    clip_id = clip_id_for(relative)
    assert "/" not in clip_id
    assert clip_path_of(clip_id) == PurePosixPath(relative)


def test_colliding_names_stay_separate_clips(tmp_path, extractors):
    data = tmp_path / "data"
    for relative in ("normal/dup.mp4", "normal/dup.mkv", "normal/a__b/c.mp4", "normal/a/b__c.mp4"):
        write_clip(data / relative)
    entries = discover(data, val_fraction=0.0, test_fraction=0.0)
    assert len({e.clip_id for e in entries}) == 4
    summary = extract_dataset(entries, tmp_path / "feat", *extractors, progress=False)
    assert (summary.done, summary.skipped, summary.failures) == (4, 0, [])
    features = FeatureSet.open(tmp_path / "feat")
    assert sorted(c["path"] for c in features.clips) == sorted(str(e.path) for e in entries)
    assert len(list((tmp_path / "feat" / "clips").iterdir())) == 4


def test_an_old_cache_keeps_its_finished_clips(tmp_path, extractors):
    """Caches made when ids dropped the extension resume without extracting again."""
    data = tmp_path / "data"
    write_clip(data / "normal" / "c0.mp4")
    entries = discover(data, val_fraction=0.0, test_fraction=0.0)
    extract_dataset(entries, tmp_path / "feat", *extractors, progress=False)
    clips = tmp_path / "feat" / "clips"
    new = clips / "normal__c0.mp4.safetensors"
    record = cache_mod._read_record(new)
    arrays = cache_mod.load_file(str(new))
    cache_mod._save_clip(clips / "normal__c0.safetensors", {**record, "clip_id": "normal__c0"},
                         arrays["video"], arrays["audio"], arrays["times"])
    new.unlink()
    summary = extract_dataset(entries, tmp_path / "feat", *extractors, progress=False)
    assert (summary.done, summary.skipped) == (0, 1)
    assert [p.name for p in clips.iterdir()] == ["normal__c0.mp4.safetensors"]
    assert FeatureSet.open(tmp_path / "feat").clips[0]["clip_id"] == "normal__c0.mp4"


@pytest.mark.parametrize("row, message", [
    ("/etc/passwd,normal,train", "relative to the dataset folder"),
    ("../outside.mp4,normal,train", "relative to the dataset folder"),
    ("normal/c0.mp4,../../x,train", "not a plain name"),
    ("normal/c0.mp4,a/b,train", "not a plain name"),
    ("normal/c0.mp4,,train", "not a plain name"),
])
def test_splits_files_cannot_lead_outside(tmp_path, row, message):
    (tmp_path / "normal").mkdir()
    (tmp_path / "splits.csv").write_text(f"path,label,split\n{row}\n")
    with pytest.raises(ValueError, match=message) as info:
        discover(tmp_path)
    assert "splits.csv:2" in str(info.value)


def test_a_file_listed_twice_is_refused_with_both_lines(tmp_path):
    (tmp_path / "splits.csv").write_text("path,label,split\nn/c.mp4,n,train\nn/./c.mp4,n,test\n")
    with pytest.raises(ValueError, match=r"splits.csv:3: n/./c.mp4 is listed twice \(first on line 2\)"):
        discover(tmp_path)


@pytest.mark.parametrize("clip_id", ["../../escape", "/abs/path", "a/../../b", "..", "", ".hidden", "x" * 400])
def test_clip_files_stay_inside_the_cache(tmp_path, clip_id):
    path = _clip_file(tmp_path, clip_id)
    assert path.parent == tmp_path / "clips" and path.name not in (".safetensors", "..safetensors")
    assert len(path.name.encode()) < 255 and not path.name.startswith(".")


def test_hostile_ids_from_the_api_write_inside_the_cache(tmp_path):
    clips = [cache_mod.StepFeatures(clip_id, "normal", "train", np.zeros((2, 3), np.float32),
                                    np.zeros((2, 2), np.float32), np.arange(2.0))
             for clip_id in ("../../../escaped", "/tmp/abs")]
    FeatureSet.create(tmp_path / "feat", clips, video={"name": "v"}, audio={"name": "a"})
    outside = files_under(tmp_path) - files_under(tmp_path / "feat")
    assert outside == set()
    features = FeatureSet.open(tmp_path / "feat")
    assert sorted(c["clip_id"] for c in features.clips) == ["../../../escaped", "/tmp/abs"]
    assert features.load(features.clips[0]).video.shape == (2, 3)


def test_unreadable_and_non_media_files_are_reported(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_clip(data / "normal" / "good.mp4")
    (data / "normal" / "notes.txt").write_text("not a clip")
    (data / "normal" / ".DS_Store").write_bytes(b"\0")
    (data / "normal" / "locked").mkdir()
    write_clip(data / "normal" / "locked" / "inside.mp4")
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "locked":  # tests run as root, where chmod 000 does not stop reading
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    listing = scan(data, val_fraction=0.0, test_fraction=0.0)
    assert [e.path.name for e in listing.entries] == ["good.mp4"]
    reasons = {Path(row["path"]).name: row["reason"] for row in listing.skipped}
    assert set(reasons) == {"notes.txt", "locked"}
    assert "not a media file" in reasons["notes.txt"] and "cannot list the folder" in reasons["locked"]


def test_sound_only_files_get_black_frames_flagged(tmp_path, extractors):
    data = tmp_path / "data"
    write_clip(data / "siren" / "video.mp4")
    write_wav(data / "siren" / "sound.wav")
    entries = discover(data, val_fraction=0.0, test_fraction=0.0)
    summary = extract_dataset(entries, tmp_path / "feat", *extractors, progress=False)
    assert (summary.done, summary.failures) == (2, [])
    records = {Path(c["path"]).name: c for c in FeatureSet.open(tmp_path / "feat").clips}
    assert records["sound.wav"]["video_missing"] and not records["sound.wav"]["audio_missing"]
    assert records["sound.wav"]["n_steps"] == 2 and not records["video.mp4"]["video_missing"]


def test_one_timestamp_jump_does_not_explode_the_clip(tmp_path):
    times = np.concatenate([np.arange(20) / 10.0, [600.0]])  # the last frame stamped at 600 s
    path = write_clip(tmp_path / "jump.mp4", seconds=2.0, frame_times=times)
    with pytest.warns(UserWarning, match="timestamp_jump") as caught:
        steps = decode_steps(path, 1.0)
    assert steps.n_steps <= 3, steps.n_steps
    assert any("jump from 1.90 s to 600.00 s" in str(w.message) for w in caught)


def test_sound_that_stops_early_is_flagged_per_step(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (60, 32, 48, 3), dtype=np.uint8)
    t = np.arange(2 * 16000) / 16000
    path = write_av_file(tmp_path / "short-sound.mp4", frames, 10, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
                         16000)
    with pytest.warns(UserWarning, match="audio covers 2"):
        steps = decode_steps(path, 1.0)
    assert steps.n_steps == 6 and steps.audio_partial and not steps.audio_missing
    assert np.abs(steps.audio[3:]).max() == 0 and np.abs(steps.audio[:2]).max() > 0.1


def test_cache_files_follow_the_umask(tmp_path, extractors):
    data = tmp_path / "data"
    write_clip(data / "normal" / "c0.mp4")
    old = os.umask(0o027)
    try:
        extract_dataset(discover(data, val_fraction=0.0, test_fraction=0.0), tmp_path / "feat", *extractors,
                        progress=False)
    finally:
        os.umask(old)
    for path in files_under(tmp_path / "feat"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


@pytest.mark.parametrize("step", ["nan", "inf", "-1", "0"])
def test_extract_refuses_a_step_that_is_not_a_length(tmp_path, capsys, step):
    write_clip(tmp_path / "data" / "normal" / "c0.mp4")
    assert main(["extract", str(tmp_path / "data"), "--out", str(tmp_path / "feat"), f"--step={step}", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --step must be a positive number of seconds") and "Traceback" not in err
    assert not (tmp_path / "feat").exists()


def test_extract_into_an_existing_file_is_a_clear_error(tmp_path, capsys):
    write_clip(tmp_path / "data" / "normal" / "c0.mp4")
    (tmp_path / "feat").write_text("a file")
    assert main(["extract", str(tmp_path / "data"), "--out", str(tmp_path / "feat"), "-q"]) == 2
    assert "--out is an existing file" in capsys.readouterr().err


def test_a_full_disk_stops_extract_with_one_line_and_keeps_finished_clips(tmp_path, capsys, monkeypatch):
    for k in range(3):
        write_clip(tmp_path / "data" / "normal" / f"c{k}.mp4")
    real_save = cache_mod._save_clip
    calls = []

    def save(path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, *args)

    monkeypatch.setattr(cache_mod, "_save_clip", save)
    assert main(["extract", str(tmp_path / "data"), "--out", str(tmp_path / "feat"), "-q", "--runtime", "torch"]) == 2
    err = capsys.readouterr().err
    assert "disk full while writing" in err and "run the same command again" in err and "Traceback" not in err
    monkeypatch.setattr(cache_mod, "_save_clip", real_save)
    assert main(["extract", str(tmp_path / "data"), "--out", str(tmp_path / "feat"), "-q", "--json",
                 "--runtime", "torch"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["done"], summary["skipped"], summary["failures"]) == (2, 1, [])


def test_hostile_corpus_every_file_accounted_for_nothing_outside(tmp_path, capsys, monkeypatch):
    """A folder mixing bad inputs with good clips: extract finishes, accounts for every file,
    writes only inside --out and prints no traceback."""
    data = tmp_path / "data"
    good = [write_clip(data / "normal" / "good.mp4"), write_clip(data / "fight" / "good.mp4", tone=1200.0)]
    hostile = {
        "dup.mkv": write_clip(data / "normal" / "good.mkv"),  # same name, other container
        "collide": write_clip(data / "normal" / "a__b" / "c.mp4"),
        "collide2": write_clip(data / "normal" / "a" / "b__c.mp4"),
        "sound": write_wav(data / "fight" / "scream.wav"),
        "jump": write_clip(data / "fight" / "jump.mp4", frame_times=np.concatenate([np.arange(20) / 10.0, [900.0]])),
    }
    (data / "fight" / "empty.mp4").write_bytes(b"")
    (data / "fight" / "garbage.mp4").write_bytes(os.urandom(3000))
    truncated = data / "normal" / "truncated.mp4"
    truncated.write_bytes(good[0].read_bytes()[:1500])
    (data / "normal" / "readme.txt").write_text("hello")
    out = tmp_path / "out" / "feat"
    before = files_under(tmp_path)
    assert main(["extract", str(data), "--out", str(out), "-q", "--json", "--runtime", "torch"]) == 1  # failures
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    summary = json.loads(captured.out)
    failed = {Path(f["path"]).name for f in summary["failures"]}
    assert failed == {"empty.mp4", "garbage.mp4", "truncated.mp4", "readme.txt"}
    media = [p for p in before if p.suffix != ".txt"]
    assert summary["done"] + len(failed) - 1 == len(media)  # readme.txt is no media
    features = FeatureSet.open(out)
    assert sorted(c["path"] for c in features.clips) == sorted(str(p) for p in [*good, *hostile.values()])
    assert all(p.is_relative_to(out) for p in files_under(tmp_path) - before)
    jump = next(c for c in features.clips if c["path"].endswith("jump.mp4"))
    assert jump["n_steps"] <= 3

    # predict on every file of the corpus: valid JSON for each, or one line naming it.
    from avar.methods.avarnet.train import TrainConfig, train_head

    head = {"num_stages": 1, "num_layers": 2, "num_f_maps": 8, "attention": False}
    train_head(features, tmp_path / "run", TrainConfig(epochs=1, head=head, recipe="paper", select_streams=False),
               progress=False)
    inputs = sorted(str(p) for p in before if p.is_relative_to(data))
    code = main(["predict", str(tmp_path / "run"), *inputs, "--json", "-q", "--runtime", "torch"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    predicted = [json.loads(line) for line in captured.out.splitlines()]
    failed_lines = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(predicted) + len(failed_lines) == len(inputs)
    assert {Path(line.split(": ")[1]).name for line in failed_lines} == failed
    sound = next(p for p in predicted if p["path"].endswith("scream.wav"))
    assert sound["video_missing"] and not sound["audio_missing"]


def test_a_file_in_the_way_of_an_output_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    assert main(["synth", str(tmp_path / "taken" / "data"), "--clips-per-class", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'taken'}") and "a file is in the way of a folder" in err
    assert "Traceback" not in err


def test_thumbnails_follow_the_umask(tmp_path):
    from avar.serve.events import save_thumbnail

    old = os.umask(0o027)
    try:
        path = save_thumbnail(np.zeros((8, 8, 3), np.uint8), tmp_path / "t.jpg")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
