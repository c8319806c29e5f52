import json
import sqlite3

import cv2
import numpy as np
import pytest

from avar.serve.predict import StepRecord
from avar.serve.events import Event, EventConfig, EventDetector, detect_events, save_thumbnail
from avar.cli import main
from avar.serve.store import EventStore, write_jsonl


def steps(scores, cls="fight", step=1.0, t0=0.0, other=None):
    """One-second steps whose anomaly mass goes to ``cls`` (or per-step classes from ``other``)."""
    out = []
    for i, s in enumerate(scores):
        c = other[i] if other else cls
        probs = {"normal": round(1 - s, 5), "fight": 0.0, "explosion": 0.0}
        probs[c] = s
        t = t0 + i * step
        out.append(StepRecord(time=t, end=t + step, predicted=c, probabilities=probs, anomaly_score=s))
    return out


def spans(events):
    return [(e.start, e.end) for e in events]


def test_hysteresis_dip_between_release_and_threshold_keeps_one_event():
    cfg = EventConfig(threshold=0.5, release=0.4, min_duration=1.0)
    # 0.45 is below the opening threshold but above release: the event carries on.
    assert spans(detect_events(steps([0.1, 0.8, 0.45, 0.7, 0.1]), cfg, "cam")) == [(1.0, 4.0)]
    # 0.3 is below release: two events, and a below-release step never belongs to one.
    assert spans(detect_events(steps([0.1, 0.8, 0.3, 0.7, 0.1]), cfg, "cam")) == [(1.0, 2.0), (3.0, 4.0)]
    # the event ends at the last above-release step, not at the opening-threshold crossing
    assert spans(detect_events(steps([0.9, 0.42, 0.41, 0.2]), cfg, "cam")) == [(0.0, 3.0)]


def test_min_duration_drops_short_blips():
    cfg = EventConfig(min_duration=2.0)
    assert spans(detect_events(steps([0.9, 0.1, 0.9, 0.9, 0.1]), cfg, "cam")) == [(2.0, 4.0)]


def test_class_threshold_overrides_opening_for_that_class_only():
    cfg = EventConfig(threshold=0.5, release=0.4, class_thresholds={"explosion": 0.9})
    seq = steps([0.7, 0.1, 0.7, 0.1, 0.95, 0.1], other=["explosion", "normal", "fight", "normal", "explosion", "normal"])
    events = detect_events(seq, cfg, "cam")
    assert [(e.start, e.end, e.label) for e in events] == [(2.0, 3.0, "fight"), (4.0, 5.0, "explosion")]


def test_max_gap_bridges_short_dips_only():
    cfg = EventConfig(max_gap=1.0)
    assert spans(detect_events(steps([0.9, 0.1, 0.9, 0.1, 0.1, 0.9]), cfg, "cam")) == [(0.0, 3.0), (5.0, 6.0)]
    # a hole in the stream (no steps from 3 s to 6 s) is a gap too
    seq = steps([0.9, 0.9]) + steps([0.9], t0=2.5) + steps([0.9], t0=6.0)
    assert spans(detect_events(seq, cfg, "cam")) == [(0.0, 3.5), (6.0, 7.0)]


def test_flush_closes_open_event_with_min_duration():
    det = EventDetector(EventConfig(min_duration=2.0), "cam")
    assert [e for s in steps([0.1, 0.9, 0.9]) for e in det.push(s)] == []
    assert spans(det.flush()) == [(1.0, 3.0)]
    assert det.flush() == []
    det = EventDetector(EventConfig(min_duration=2.0), "cam")
    det.push(steps([0.9])[0])
    assert det.flush() == []


def test_streaming_matches_offline_and_reports_events_when_they_close():
    cfg = EventConfig(max_gap=1.0)
    seq = steps([0.2, 0.8, 0.6, 0.3, 0.9, 0.1, 0.1, 0.7, 0.7, 0.2, 0.1, 0.1])
    det = EventDetector(cfg, "cam")
    closed_at = []
    streamed = []
    for s in seq:
        for e in det.push(s):
            closed_at.append(s.time)
            streamed.append(e)
    streamed += det.flush()
    assert streamed == detect_events(seq, cfg, "cam")
    assert spans(streamed) == [(1.0, 5.0), (7.0, 9.0)]
    assert closed_at == [6.0, 10.0]  # the first step past max_gap closes the event


def test_label_is_highest_summed_probability_and_peak():
    seq = steps([0.6, 0.6, 0.6, 0.95], other=["fight", "fight", "fight", "explosion"])
    (event,) = detect_events(seq, EventConfig(), "cam")
    assert event.label == "fight"  # 1.8 summed beats explosion's single 0.95 step
    assert (event.peak_score, event.peak_time) == (0.95, 3.0)
    assert event.source == "cam"


def test_bad_config_and_out_of_order_steps_are_errors():
    with pytest.raises(ValueError, match="release"):
        EventConfig(threshold=0.3, release=0.4)
    det = EventDetector(EventConfig(), "cam")
    a, b = steps([0.1, 0.1])
    det.push(b)
    with pytest.raises(ValueError, match="time order"):
        det.push(a)
    with pytest.raises(ValueError, match="normal_class"):
        EventDetector(EventConfig(), "cam", normal_class="calm").push(a)


def ev(source, start, label, score):
    return Event(source, start, start + 2.0, label, score, start + 1.0)


def test_store_round_trip_filters_and_reopen(tmp_path):
    db = tmp_path / "events.db"
    with EventStore(db) as store:
        a = store.add_source("rtsp://cam1", "stream")
        assert store.add_source("rtsp://cam1", "stream") == a
        ids = store.add_events([ev("rtsp://cam1", 0.0, "fight", 0.9), ev("rtsp://cam1", 10.0, "explosion", 0.6),
                                ev("file.mp4", 5.0, "fight", 0.7)])
        assert len(set(ids)) == 3
        assert [r["start"] for r in store.query()] == [0.0, 5.0, 10.0]
        assert [r["start"] for r in store.query(label="fight")] == [0.0, 5.0]
        assert [r["start"] for r in store.query(source="rtsp://cam1")] == [0.0, 10.0]
        assert [r["start"] for r in store.query(since=5.0)] == [5.0, 10.0]
        assert [r["start"] for r in store.query(since=1.0, until=10.0)] == [5.0]
        assert [r["start"] for r in store.query(min_score=0.7)] == [0.0, 5.0]
        assert [r["start"] for r in store.query(label="fight", min_score=0.8, limit=1)] == [0.0]
        store.record_gap("rtsp://cam1", 3.0, 7.5)
        store.record_gap("rtsp://cam1", 20.0, 21.0)
        with pytest.raises(ValueError, match="unknown source"):
            store.record_gap("rtsp://nowhere", 0.0, 1.0)
    with EventStore(db, create=False) as store:
        row = store.query(source="file.mp4")[0]
        assert (row["label"], row["end"], row["peak_score"], row["peak_time"]) == ("fight", 7.0, 0.7, 6.0)
        srcs = {s["uri"]: s for s in store.sources()}
        assert (srcs["rtsp://cam1"]["kind"], srcs["rtsp://cam1"]["gaps"]) == ("stream", 2)
        assert srcs["file.mp4"]["kind"] == "unknown"
        assert store.gaps("rtsp://cam1") == [(3.0, 7.5), (20.0, 21.0)]
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_rejects_files_that_are_not_event_stores(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("this is not a database, just some text that is long enough " * 20)
    with pytest.raises(ValueError, match="notes.db"):
        EventStore(junk)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="other.db.*not an avar event store"):
        EventStore(other)
    with pytest.raises(FileNotFoundError, match="missing.db"):
        EventStore(tmp_path / "missing.db", create=False)


def test_events_command_and_jsonl(tmp_path, capsys):
    db = tmp_path / "e.db"
    with EventStore(db) as store:
        store.add_events([ev("cam", 0.0, "fight", 0.9), ev("cam", 4.0, "explosion", 0.5)])
    assert main(["events", str(db), "--min-score", "0.8", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["label"] for line in lines] == ["fight"]

    out = tmp_path / "events.jsonl"
    write_jsonl([ev("cam", 0.0, "fight", 0.9)], out)
    write_jsonl([ev("cam", 4.0, "explosion", 0.5)], out)
    assert [Event(**json.loads(line)) for line in out.read_text().splitlines()] == [
        ev("cam", 0.0, "fight", 0.9), ev("cam", 4.0, "explosion", 0.5)]


def test_thumbnail_is_a_readable_jpeg_of_the_frame(tmp_path):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 0] = 255  # pure red in RGB
    path = save_thumbnail(frame, tmp_path / "thumbs" / "ev1.jpg")
    assert path.read_bytes()[:2] == b"\xff\xd8"
    bgr = cv2.imread(str(path))
    assert bgr.shape == (48, 64, 3)
    b, g, r = bgr[24, 32]
    assert r > 200 and b < 50 and g < 50  # channels were swapped to BGR on the way out
    assert sorted(p.name for p in path.parent.iterdir()) == ["ev1.jpg"]  # no temp file left behind
    with pytest.raises(ValueError, match="uint8"):
        save_thumbnail(frame.astype(np.float32), tmp_path / "bad.jpg")
