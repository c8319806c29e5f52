"""``avar dataset cut | check | stats | agree`` (issue 32) on generated long recordings whose
events are known: inside an event every frame is bright and the sound is a loud 1 kHz tone;
outside, frames are dark and the sound is faint noise. Clips are checked by decoding them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from avar.cli import main
from avar.datasets.agreement import agreement, cohen_kappa
from avar.datasets.check import check_dataset
from avar.datasets.folders import discover
from avar.datasets.recordings import cut_dataset, parse_time
from avar.datasets.stats import dataset_stats
from avar.media.cut import cut
from avar.media.files import read_audio, read_frames
from avar.media.synth import write_av_file

FPS, RATE, SECONDS = 10, 16_000, 40
EVENTS = {  # recording -> events (start, end, label); key frames every 2 s (write_av_file's GOP)
    "cam1/day.mp4": [(4.0, 8.0, "fight"), (13.3, 16.7, "scream"), (30.0, 33.0, "fight")],
    "cam2/day.mp4": [(2.0, 6.0, "scream"), (20.45, 24.15, "fight")],
    "cam3.mp4": [(10.0, 14.0, "fight"), (26.0, 29.5, "scream")],
}


def write_recording(path: Path, events: list[tuple[float, float, str]], rng: np.random.Generator) -> None:
    t = np.arange(SECONDS * FPS) / FPS
    inside = np.zeros(len(t), bool)
    sound = 0.01 * rng.standard_normal(SECONDS * RATE)
    for start, end, _ in events:
        inside |= (t >= start - 1e-9) & (t < end - 1e-9)
        lo, hi = int(start * RATE), int(end * RATE)
        sound[lo:hi] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(hi - lo) / RATE)
    frames = np.where(inside[:, None, None, None], 200, 30).astype(np.uint8) * np.ones((1, 48, 64, 3), np.uint8)
    write_av_file(path, frames, FPS, sound.astype(np.float32), RATE)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    rows = ["file,start,end,label"]
    for rel, events in EVENTS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_recording(root / rel, events, rng)
        rows += [f"{rel},{s:g},{e:g},{label}" for s, e, label in events]
    rows[1] = "cam1/day.mp4,00:04,0:00:08.000,fight"  # clock times read as seconds
    rows += ["cam3.mp4,38,45,fight",              # line 9: runs past the end
             "cam2/day.mp4,7,9,fight",            # lines 10, 11: overlap each other
             "cam2/day.mp4,8,10,scream",
             "gone.mp4,1,2,fight",                # line 12: no such recording
             "cam3.mp4,5,four,fight"]             # line 13: not a time
    (root / "events.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def cut_data(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "data"
    report = cut_dataset(raw, raw / "events.csv", out, margin=1.0, normal_length=3.0, fractions=(0.34, 0.33, 0.33),
                         progress=False)
    return out, report


def test_times_read_as_seconds_or_clock():
    assert parse_time("12.5") == 12.5 and parse_time("01:02.5") == 62.5 and parse_time("1:02:03.250") == 3723.25
    with pytest.raises(ValueError):
        parse_time("1:75")


def test_cut_copies_on_key_frames_and_re_encodes_accurate_to_a_frame(raw, tmp_path):
    copied = cut(raw / "cam1/day.mp4", 4.0, 8.0, tmp_path / "a.mp4")
    encoded = cut(raw / "cam1/day.mp4", 13.3, 16.7, tmp_path / "b.mp4")
    assert copied.copied and not encoded.copied
    for done, (start, end) in ((copied, (4.0, 8.0)), (encoded, (13.3, 16.7))):
        frames = read_frames(done.path)
        assert len(frames.frames) == round((end - start) * FPS) == done.frames
        assert frames.frames.reshape(len(frames.frames), -1).mean(1).min() > 150  # every frame inside the event
        audio = read_audio(done.path, RATE)
        assert abs(len(audio) / RATE - (end - start)) < 0.1
    with pytest.raises(ValueError, match="not on a key frame"):
        cut(raw / "cam1/day.mp4", 13.3, 16.7, tmp_path / "c.mp4", copy=True)


def test_each_event_is_a_clip_of_its_own_and_normal_clips_hold_none(cut_data):
    out, report = cut_data
    clips = {c["path"]: c for c in report.clips}
    events = [c for c in clips.values() if c["kind"] == "event"]
    assert len(events) == 7 and {c["line"] for c in events} == {2, 3, 4, 5, 6, 7, 8}
    assert {c["copied"] for c in events} == {True, False}  # key-frame cuts copied, the others re-encoded
    for c in clips.values():
        frames = read_frames(out / c["path"]).frames.reshape(-1, 64 * 48 * 3 // 3).mean(1)
        audio = read_audio(out / c["path"], RATE)
        spectrum = np.abs(np.fft.rfft(audio))
        tone = spectrum[int(1000 * len(audio) / RATE)] / (spectrum.mean() + 1e-12)
        if c["kind"] == "event":  # the marker frame and the tone throughout, nothing from outside
            assert frames.min() > 150 and np.sqrt(np.mean(audio[200:-200] ** 2)) > 0.2 and tone > 50, c
            assert c["end"] - c["start"] == pytest.approx(
                next(e - s for s, e, _ in EVENTS[c["source"]] if abs(s - c["start"]) < 0.06), abs=0.06)
        else:  # no marker frame, no tone, and at least the margin away from every event
            assert frames.max() < 80 and np.sqrt(np.mean(audio ** 2)) < 0.05, c
            assert all(c["end"] + 1.0 <= s or c["start"] >= e + 1.0 for s, e, _ in EVENTS[c["source"]]
                       + [(7, 9, ""), (8, 10, "")] * (c["source"] == "cam2/day.mp4"))
    assert sum(c["kind"] == "normal" for c in clips.values()) >= 5


def test_bad_rows_are_reported_by_line_and_the_rest_is_cut(cut_data):
    _, report = cut_data
    by_line = {p.line: p.reason for p in report.problems}
    assert set(by_line) == {9, 10, 11, 12, 13}
    assert "past the recording's end" in by_line[9] and "overlaps the event of line 11" in by_line[10]
    assert "no such recording" in by_line[12] and "not a time" in by_line[13]


def test_recordings_stay_in_one_split_and_avar_reads_the_layout(cut_data):
    out, report = cut_data
    entries = discover(out)
    assert len(entries) == len(report.clips) and all(e.group for e in entries)
    splits_of = {}
    for e in entries:
        splits_of.setdefault(e.group, set()).add(e.split)
    assert all(len(s) == 1 for s in splits_of.values()) and len(set().union(*splits_of.values())) == 3
    meta = json.loads((out / "metadata.json").read_text())
    assert {c["path"] for c in meta["clips"]} == {e.path.relative_to(out).as_posix() for e in entries}
    assert all(c["interval"] == [0.0, pytest.approx(c["end"] - c["start"])] for c in meta["clips"] if c["label"] != "normal")


def test_check_flags_silent_tracks_duplicates_and_overlaps_across_splits(cut_data, tmp_path, capsys):
    out, _ = cut_data
    assert check_dataset(out, progress=False).errors == []
    data = tmp_path / "data"
    shutil.copytree(out, data)
    write_av_file(data / "normal" / "quiet.mp4", np.full((20, 48, 64, 3), 30, np.uint8), FPS,
                  np.zeros(2 * RATE, np.float32), RATE)
    rows = (data / "splits.csv").read_text().splitlines()
    first = rows[1].split(",")
    shutil.copy(data / first[0], data / first[1] / "copy.mp4")
    moved = next(r for r in rows[2:] if r.split(",")[3] == first[3] and r.split(",")[2] == first[2])
    other = next(s for s in ("train", "val", "test") if s != first[2])
    rows = [r.replace(f",{first[2]},", f",{other},") if r == moved else r for r in rows]
    rows += ["normal/quiet.mp4,normal,train,q", f"{first[1]}/copy.mp4,{first[1]},{other},x"]
    (data / "splits.csv").write_text("\n".join(rows) + "\n")
    report = check_dataset(data, progress=False)
    kinds = {f.kind: f for f in report.findings}
    assert kinds["silent sound"].paths == ("normal/quiet.mp4",) and kinds["silent sound"].severity == "warning"
    assert kinds["duplicate across splits"].severity == "error"
    assert set(kinds["duplicate across splits"].paths) == {first[0], f"{first[1]}/copy.mp4"}
    assert kinds["source in several splits"].severity == "warning"
    assert main(["dataset", "check", str(data), "-q"]) == 1
    assert "errors (training would trip on these)" in capsys.readouterr().out


def test_check_flags_clips_of_one_moment_in_two_splits(cut_data, tmp_path):
    out, _ = cut_data
    data = tmp_path / "data"
    shutil.copytree(out, data)
    meta = json.loads((data / "metadata.json").read_text())
    a = next(c for c in meta["clips"] if c["kind"] == "event")
    twin = dict(a, path=f"{a['label']}/twin.mp4", start=a["start"] + 0.5, split="test" if a["split"] != "test" else "val")
    cut(Path(meta["settings"]["annotations"]).parent / a["source"], twin["start"], twin["end"], data / twin["path"])
    meta["clips"].append(twin)
    (data / "metadata.json").write_text(json.dumps(meta))
    with (data / "splits.csv").open("a") as handle:
        handle.write(f"{twin['path']},{a['label']},{twin['split']},{a['source']}\n")
    report = check_dataset(data, progress=False)
    overlap = [f for f in report.errors if f.kind == "overlap across splits"]
    assert overlap and set(overlap[0].paths) == {a["path"], twin["path"]}


def test_stats_describe_the_dataset_as_table_1_does(cut_data, tmp_path):
    out, report = cut_data
    stats = dataset_stats(out, plot=tmp_path / "balance.png", progress=False)
    assert stats.summary["classes"] == 3 and stats.summary["clips"] == len(report.clips)
    assert stats.summary["resolution"] == "64x48" and stats.summary["modality"] == f"audio + video ({len(report.clips)})"
    assert sum(c["clips"] for c in stats.classes.values()) == len(report.clips)
    assert (tmp_path / "balance.png").stat().st_size > 1000 and "| fight |" in stats.to_markdown()


def test_agreement_matches_events_and_reports_kappa_iou_and_disagreements(tmp_path):
    from sklearn.metrics import cohen_kappa_score

    (tmp_path / "a.csv").write_text("file,start,end,label\nr.mp4,0,10,fight\nr.mp4,20,30,fight\nr.mp4,40,50,scream\n"
                                    "r.mp4,60,70,scream\nr.mp4,80,90,fight\ns.mp4,0,5,fight\n")
    (tmp_path / "b.csv").write_text("file,start,end,label\nr.mp4,1,10,fight\nr.mp4,20,30,scream\nr.mp4,40,50,scream\n"
                                    "r.mp4,64,70,scream\nr.mp4,100,110,fight\ns.mp4,0,5,fight\n")
    report = agreement(tmp_path / "a.csv", tmp_path / "b.csv")
    first, second = ["fight", "fight", "scream", "scream", "fight"], ["fight", "scream", "scream", "scream", "fight"]
    assert report.matched == 5 and report.kappa == pytest.approx(cohen_kappa_score(first, second))
    assert report.mean_iou == pytest.approx((0.9 + 1 + 1 + 0.6 + 1) / 5)
    kinds = sorted(d["kind"] for d in report.disagreements)
    assert kinds == ["label", "only in first", "only in second"]  # IoU 0.6 is still >= 0.5
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert main(["dataset", "agree", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--min-iou", "0.7", "-q"]) == 0


def test_the_command_line_cuts_and_says_what_it_could_not(raw, tmp_path, capsys):
    assert main(["dataset", "cut", str(raw), str(raw / "events.csv"), "--out", str(tmp_path / "d"), "--normals", "0",
                 "-q"]) == 1
    text = capsys.readouterr().out
    assert "cut 7 clips" in text and "line 12" in text
    assert main(["dataset", "stats", str(tmp_path / "d"), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["clips"] == 7


FIGHT_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-dev"


@pytest.mark.skipif(not FIGHT_DEV.is_dir(), reason="needs ../shared/data/fight-dev")
def test_fight_dev_passes_the_check_with_its_known_gaps_as_warnings():
    report = check_dataset(FIGHT_DEV, progress=False)
    assert report.errors == [] and len(report.clips) == 151
    kinds = {f.kind for f in report.findings}
    assert kinds == {"no sound", "silent sound"}


def test_unreadable_annotations_are_one_line_naming_the_file(raw, tmp_path, capsys):
    (tmp_path / "latin1.csv").write_bytes("file,start,end,label\ncam3.mp4,1,2,bagarre é\n".encode("latin-1"))
    (tmp_path / "columns.csv").write_text("video,from,to,class\ncam3.mp4,1,2,fight\n")
    for name, said in (("latin1.csv", "not UTF-8 text"), ("columns.csv", "needs the columns file,start,end,label")):
        assert main(["dataset", "cut", str(raw), str(tmp_path / name), "--out", str(tmp_path / "d"), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / name}: {said}") and "Traceback" not in err
    assert not (tmp_path / "d").exists()
