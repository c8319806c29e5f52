"""The feature cache: bad files in a batch, atomic writes and resume after a kill."""

import json
import logging

import numpy as np
import pytest

from avar.media.clips import ClipEntry

from avar.datasets.folders import discover
from avar.features import build_extractor
from avar.features.cache import FeatureSet, extract_dataset
from avar.media.synth import write_av_file


@pytest.fixture(scope="module")
def extractors():
    return build_extractor("efficientnet-lite0"), build_extractor("logmel")


def make_dataset(root, n_per_class=2, seconds=2.0):
    rng = np.random.default_rng(0)
    for label, freq in (("normal", 300.0), ("siren", 1200.0)):
        for k in range(n_per_class):
            frames = rng.integers(0, 255, (int(seconds * 10), 48, 64, 3), dtype=np.uint8)
            t = np.arange(int(seconds * 48000)) / 48000
            write_av_file(root / label / f"{label}{k}.mp4", frames, 10, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 48000)
    return root


def test_batch_survives_a_corrupt_file(tmp_path, extractors, caplog):
    data = make_dataset(tmp_path / "data")
    (data / "siren" / "broken.mp4").write_bytes(b"\x00garbage" * 50)
    entries = discover(data, test_fraction=0.0, val_fraction=0.0)
    with caplog.at_level(logging.INFO, logger="avar.features.cache"):
        summary = extract_dataset(entries, tmp_path / "feat", *extractors, progress=False)
    # The long-running command logs what it does and each failure as it happens.
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "avar.features.cache"]
    assert logged[0] == ("INFO", f"5 clips to extract, 0 already done -> {tmp_path / 'feat'}")
    assert [m for level, m in logged if level == "ERROR"] == [f"{data / 'siren' / 'broken.mp4'}: {summary.failures[0]['reason']}"]
    assert summary.done == 4
    assert [f["path"] for f in summary.failures] == [str(data / "siren" / "broken.mp4")]
    assert "corrupt" in summary.failures[0]["reason"] or "cannot open" in summary.failures[0]["reason"]
    features = FeatureSet.open(tmp_path / "feat")
    assert len(features.clips) == 4
    assert json.loads((tmp_path / "feat" / "failures.json").read_text()) == summary.failures
    clip = features.load(features.clips[0])
    assert clip.video.shape == (2, 1280) and clip.audio.shape == (2, extractors[1].dim)
    np.testing.assert_allclose(clip.times, [0.0, 1.0])


class Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C in the middle of a clip."""


def test_killed_extract_resumes_without_corrupt_entries(tmp_path, extractors):
    data = make_dataset(tmp_path / "data", n_per_class=3)
    entries = discover(data, test_fraction=0.0, val_fraction=0.0)
    video, audio = extractors
    calls = {"n": 0}

    def dying_audio(batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed()
        return audio(batch)

    class Dying:
        name, modality, dim, version = audio.name, audio.modality, audio.dim, audio.version
        __call__ = staticmethod(dying_audio)

    with pytest.raises(Killed):
        extract_dataset(entries, tmp_path / "feat", video, Dying(), progress=False)
    written = sorted((tmp_path / "feat" / "clips").glob("*.safetensors"))
    assert len(written) == 3  # clips 1-3 finished; clip 4 was killed before its file existed

    # a rerun skips the finished clips and completes the rest
    summary = extract_dataset(entries, tmp_path / "feat", video, audio, progress=False)
    assert (summary.skipped, summary.done, summary.failures) == (3, 3, [])
    features = FeatureSet.open(tmp_path / "feat")
    assert [c["clip_id"] for c in features.clips] == [e.clip_id for e in entries]
    for clip in features.clips:
        loaded = features.load(clip)
        assert np.isfinite(loaded.video).all() and len(loaded.video) == clip["n_steps"]


def test_damaged_clip_file_is_extracted_again(tmp_path, extractors):
    data = make_dataset(tmp_path / "data", n_per_class=1)
    entries = discover(data, test_fraction=0.0, val_fraction=0.0)
    extract_dataset(entries, tmp_path / "feat", *extractors, progress=False)
    damaged = tmp_path / "feat" / "clips" / f"{entries[0].clip_id}.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:50])
    summary = extract_dataset(entries, tmp_path / "feat", *extractors, progress=False)
    assert (summary.skipped, summary.done) == (1, 1)
    assert FeatureSet.open(tmp_path / "feat").load({"clip_id": entries[0].clip_id, "label": "x", "split": "train"}).video.shape == (2, 1280)


def test_other_settings_need_a_new_directory(tmp_path, extractors):
    data = make_dataset(tmp_path / "data", n_per_class=1)
    entries = discover(data, test_fraction=0.0, val_fraction=0.0)
    extract_dataset(entries, tmp_path / "feat", *extractors, progress=False)
    with pytest.raises(ValueError, match="new --out"):
        extract_dataset(entries, tmp_path / "feat", *extractors, step=0.5, progress=False)


def test_split_is_stratified_seeded_and_csv_overrides(tmp_path):
    for label in ("normal", "crash"):
        for k in range(8):
            (tmp_path / label).mkdir(exist_ok=True)
            (tmp_path / label / f"c{k}.mp4").write_bytes(b"")
    entries = discover(tmp_path, seed=3)
    for label in ("normal", "crash"):
        splits = [e.split for e in entries if e.label == label]
        assert (splits.count("test"), splits.count("val"), splits.count("train")) == (2, 1, 5)
    assert entries == discover(tmp_path, seed=3)
    assert [e.split for e in entries] != [e.split for e in discover(tmp_path, seed=4)]

    (tmp_path / "splits.csv").write_text("path,label,split\nnormal/c0.mp4,normal,test\ncrash/c1.mp4,crash,train\n")
    assert discover(tmp_path) == [
        ClipEntry("crash__c1.mp4", tmp_path / "crash/c1.mp4", "crash", "train"),
        ClipEntry("normal__c0.mp4", tmp_path / "normal/c0.mp4", "normal", "test"),
    ]
    (tmp_path / "splits.csv").write_text("path,label,split\nnormal/c0.mp4,normal,holdout\n")
    with pytest.raises(ValueError, match="holdout"):
        discover(tmp_path)
