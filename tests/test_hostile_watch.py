"""Watching hostile input: growing files, truncated files, HTTP without Content-Length, bad options, hostile names."""

import hashlib
import http.server
import json
import logging
import sqlite3
import threading
import time

import av
import numpy as np
import pytest

from avar.cli import main
from avar.serve.events import Event, EventConfig, thumbnail_path
from avar.serve.store import APPLICATION_ID, EventStore
from test_watch import _clip, tone_run
from avar.serve.sinks import Sinks
from avar.serve.watch import Watcher

EVERY_STEP = EventConfig(threshold=0.0, release=0.0, min_duration=0.0)
"""Thresholds at zero: every step is anomalous, so a source's steps make one event."""


def _remux(src, dst):
    """Stream-copy ``src`` into the container of ``dst``'s extension (e.g. MPEG-TS, as recorders write)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tone_run(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    mp4 = _clip(folder / "scene.mp4")
    return {"mp4": mp4, "ts": _remux(mp4, folder / "scene.ts")}


@pytest.fixture(scope="module")
def watcher(run_dir):
    """One causal watcher (its backbones are built once); tests give it their own store."""
    return Watcher(run_dir, causal=True)


@pytest.fixture(scope="module")
def reference(watcher, media):
    """The causal records of each whole local file, to compare other ways of reading it with."""
    watcher.sinks = Sinks()
    return {kind: list(watcher.watch(path)) for kind, path in media.items()}


@pytest.fixture
def fresh(watcher):
    """The shared watcher with no store, no events, no failures, default settings."""
    watcher.sinks = Sinks()
    watcher.events_config = EventConfig()
    watcher.events.clear()
    watcher.failures.clear()
    watcher.opener, watcher.max_retries = av.open, 5
    return watcher


def _same_records(got, expected):
    assert [(r.time, r.end) for r in got] == [(e.time, e.end) for e in expected]
    for r, e in zip(got, expected):
        for c in e.probabilities:
            assert abs(r.probabilities[c] - e.probabilities[c]) < 1e-4, (r.time, c)


# 1. A file still being written

def test_follow_reads_a_growing_recording_to_its_end_each_step_once(run_dir, media, reference, tmp_path, caplog,
                                                                     capsys):
    expected = reference["ts"]
    assert len(expected) == 6
    data = media["ts"].read_bytes()
    cut = len(data) * 2 // 5 + 101  # not on a 188-byte TS packet boundary: the recorder stopped mid-packet
    growing = tmp_path / "segment.ts"
    growing.write_bytes(data[:cut])

    def recorder():
        waiting.wait(60)  # the rest comes once the watch waits at the end of what is there
        with growing.open("ab") as f:
            for i in range(cut, len(data), 4000):
                f.write(data[i : i + 4000])
                f.flush()
                time.sleep(0.02)

    class AtTheEnd(logging.Handler):
        def emit(self, record):
            if "waiting for more" in record.getMessage():
                waiting.set()

    waiting = threading.Event()
    at_the_end = AtTheEnd()
    logging.getLogger("avar.serve").addHandler(at_the_end)
    caplog.set_level(logging.DEBUG, logger="avar.serve")
    writer = threading.Thread(target=recorder)
    writer.start()
    try:
        rc = main(["watch", str(run_dir), str(growing), "--causal", "--follow", "--idle-timeout", "3", "--json",
                   "--db", str(tmp_path / "events.db")])
    finally:
        writer.join()
        logging.getLogger("avar.serve").removeHandler(at_the_end)
    assert rc == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["time"] for r in records] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # nothing repeated, nothing skipped
    for r, e in zip(records, expected):
        for c in e.probabilities:
            assert abs(r["probabilities"][c] - e.probabilities[c]) < 1e-4
    messages = [r.getMessage() for r in caplog.records]
    assert waiting.is_set() and any("still being written; following it" in m for m in messages)
    assert not any("changed while it was read" in m for m in messages)
    with EventStore(tmp_path / "events.db") as store:
        (source,) = store.sources()
        assert (source["kind"], source["error"], source["gaps"]) == ("file", None, 0)


def test_without_follow_a_file_that_grows_while_read_is_warned_about(fresh, media, tmp_path, caplog):
    data = media["ts"].read_bytes()
    growing = tmp_path / "segment.ts"
    growing.write_bytes(data[: len(data) * 2 // 5])

    class Recorder:
        """Opens the file as FFmpeg would; the recorder writes the rest just after the reader hit the end."""

        def __init__(self, path):
            self.c = av.open(path)
            self.streams = self.c.streams

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.c.close()

        def demux(self, *streams):
            yield from self.c.demux(*streams)
            with growing.open("ab") as f:
                f.write(data[len(data) * 2 // 5 :])

    fresh.opener = Recorder
    records = list(fresh.watch(growing))
    assert 1 <= len(records) < 6  # only what was there when the end was reached
    (warning,) = [r for r in caplog.records if "changed while it was read" in r.getMessage()]
    assert warning.levelname == "WARNING"
    assert str(growing) in warning.getMessage() and "--follow" in warning.getMessage()
    assert f"{records[-1].end:g} s" in warning.getMessage()
    # a file that does not change is not warned about
    caplog.clear()
    fresh.opener = av.open
    assert len(list(fresh.watch(growing))) == 6
    assert not any("changed while it was read" in r.getMessage() for r in caplog.records)


# 2. Partly decoded files are errors of that source

def test_a_file_cut_part_way_is_an_error_of_that_source_with_its_decoded_part_kept(fresh, media, tmp_path):
    folder = tmp_path / "cams"
    folder.mkdir()
    data = media["mp4"].read_bytes()
    (folder / "a_cut.mp4").write_bytes(data[: len(data) // 2])  # a copy interrupted half-way
    _clip(folder / "b_whole.mp4", seconds=2, seed=3)
    fresh.events_config = EVERY_STEP
    with EventStore(tmp_path / "events.db") as store:
        fresh.sinks.store = store
        records = list(fresh.watch(folder))
        sources = {s["uri"].rsplit("/", 1)[-1]: s for s in store.sources()}
        events = {e["source"].rsplit("/", 1)[-1]: e for e in store.query()}
    decoded = len(records) - 2  # b_whole.mp4 has two steps
    assert 1 <= decoded < 6  # the part of the cut file that decoded came out, then the next file
    assert [r.time for r in records] == [float(t) for t in range(decoded)] + [0.0, 1.0]
    (failure,) = fresh.failures
    assert failure["source"] == str(folder / "a_cut.mp4")
    assert "decoding failed" in failure["reason"] and f"stopped at {records[decoded - 1].end:g} s" in failure["reason"]
    assert sources["a_cut.mp4"]["kind"] == "file" and sources["a_cut.mp4"]["error"] == failure["reason"]
    assert sources["b_whole.mp4"]["error"] is None
    # the event of the decoded part is kept, and ends where the decoding stopped
    assert (events["a_cut.mp4"]["start"], events["a_cut.mp4"]["end"]) == (0.0, records[decoded - 1].end)


def test_a_source_that_always_fails_at_the_same_point_is_not_replayed_forever(fresh, media, tmp_path, caplog):
    """A damaged file read as a stream (reconnecting): each connection fails at its damage, so
    after REPLAY_LIMIT such connections the source is an error, whatever max_retries allows."""
    from avar.serve.watch import REPLAY_LIMIT

    data = media["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    opened = []

    def counting(url):
        opened.append(url)
        return av.open(url)

    fresh.opener, fresh.max_retries = counting, 50
    with pytest.raises(Exception, match="connections in a row failed at the same point"):
        list(fresh.watch(str(cut), reconnect=True))
    assert len(opened) == REPLAY_LIMIT
    assert "a damaged file or response, not a dropped stream" in fresh.failures[0]["reason"]


def test_a_single_cut_file_fails_through_the_cli_and_is_marked_in_the_store(run_dir, media, tmp_path, capsys):
    data = media["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    db = tmp_path / "events.db"
    assert main(["watch", str(run_dir), str(cut), "--causal", "--json", "--db", str(db)]) == 2
    out, err = capsys.readouterr()
    assert len(out.splitlines()) >= 1  # the records of the decoded part were printed
    assert err.startswith(f"error: {cut}: decoding failed") and err.count("\n") == 1
    with EventStore(db) as store:
        (source,) = store.sources()
        assert source["error"] and "stopped at" in source["error"]
        # a later watch of it, once it starts, clears the error
        store.add_source(str(cut), "file")
        assert store.sources()[0]["error"] is None


def test_a_store_of_the_first_schema_is_upgraded_in_place(tmp_path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(f"""
        CREATE TABLE sources(id INTEGER PRIMARY KEY, uri TEXT UNIQUE NOT NULL, kind TEXT, first_seen REAL,
                             last_seen REAL, gaps INTEGER DEFAULT 0);
        CREATE TABLE events(id INTEGER PRIMARY KEY, source_id INTEGER NOT NULL REFERENCES sources(id),
                            "start" REAL, "end" REAL, label TEXT, peak_score REAL, peak_time REAL,
                            thumbnail TEXT, created REAL);
        CREATE TABLE gaps(source_id INTEGER NOT NULL REFERENCES sources(id), "start" REAL, "end" REAL);
        INSERT INTO sources(uri, kind, gaps) VALUES ('rtsp://cam', 'stream', 0);
        PRAGMA application_id = {APPLICATION_ID};
        PRAGMA user_version = 1;
    """)
    con.close()
    with EventStore(db, create=False) as store:
        assert [(s["uri"], s["kind"], s["error"]) for s in store.sources()] == [("rtsp://cam", "stream", None)]
        store.mark_error("rtsp://cam", "connection refused")
        assert store.sources()[0]["error"] == "connection refused"
        assert store.steps("rtsp://cam") == []  # schema 3's table of step records
        store.record_gap("rtsp://cam", 1.0, 2.0, "stall")  # schema 4's gap kinds and source states
        store.set_state("rtsp://cam", "stalled")
        assert store.query_gaps()[0]["kind"] == "stall" and store.sources()[0]["state"] == "stalled"
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 4


# 3. HTTP without Content-Length

class _Server:
    """Serves files of ``root`` on 127.0.0.1 the way ``mode`` says, counting requests.

    ``close``: no Content-Length, the end of the body is the server closing the connection;
    ``chunked``: chunked transfer encoding; ``cut-once``: Content-Length given, but the first
    response stops half-way (a real drop); later ones are whole. Requests after the second get
    404, so a watcher that would replay the file forever gives up instead.
    """

    def __init__(self, root, mode):
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests += 1
                if server.requests > 2:
                    self.send_error(404)
                    return
                data = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t" if self.path.endswith(".ts") else "video/mp4")
                if mode == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                elif mode == "cut-once":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "cut-once" and server.requests == 1:
                    data = data[: len(data) // 2]
                for i in range(0, len(data), 16384):
                    part = data[i : i + 16384]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if mode == "chunked" else part)
                if mode == "chunked":
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("kind, mode", [("mp4", "close"), ("ts", "close"), ("ts", "chunked")])
def test_an_http_file_without_content_length_ends_normally(fresh, media, reference, tmp_path, caplog, kind, mode):
    with _Server(media[kind].parent, mode) as server, EventStore(tmp_path / "events.db") as store:
        fresh.sinks.store, fresh.max_retries = store, 1
        url = server.url(media[kind].name)
        records = list(fresh.watch(url))
        assert store.gaps(url) == []
        (source,) = store.sources()
        requests = server.requests
    _same_records(records, reference[kind])  # every step, the last ones too, and no replay
    assert requests == 1  # no reconnection
    assert not any("reconnecting" in r.getMessage() for r in caplog.records)
    assert (source["kind"], source["error"], source["gaps"]) == ("stream", None, 0)
    assert fresh.failures == []


def test_an_http_response_shorter_than_its_content_length_is_a_drop_and_its_gap_is_listed(
        fresh, media, tmp_path, caplog, capsys):
    db = tmp_path / "events.db"
    with _Server(media["ts"].parent, "cut-once") as server, EventStore(db) as store:
        fresh.sinks.store, fresh.max_retries = store, 1
        url = server.url(media["ts"].name)
        records = list(fresh.watch(url))
        requests = server.requests
    assert requests == 2 and any("reconnecting in 0.5s" in r.getMessage() for r in caplog.records)
    times = [r.time for r in records]
    assert times == sorted(times) and len(times) > 6  # the first connection's part, then the whole file again

    # 4. `avar events DB --gaps` lists the gap the drop left
    capsys.readouterr()
    assert main(["events", str(db), "--gaps", "--json"]) == 0
    (gap,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert gap["source"] == url and gap["end"] - gap["start"] >= 0.5  # at least the back-off
    with EventStore(db) as store:
        assert store.gaps(url) == [(gap["start"], gap["end"])]
    assert main(["events", str(db), "--gaps"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["start", "end", "lost", "kind", "source"]
    assert row.split() == [f"{gap['start']:.2f}", f"{gap['end']:.2f}", f"{gap['end'] - gap['start']:.2f}", "drop", url]


# 4. `avar events --gaps`

def test_events_gaps_filters_by_source_and_time(tmp_path, capsys):
    db = tmp_path / "events.db"
    with EventStore(db) as store:
        for uri in ("rtsp://cam1", "rtsp://cam2"):
            store.add_source(uri, "stream")
        store.record_gap("rtsp://cam1", 20.0, 21.5)
        store.record_gap("rtsp://cam1", 3.0, 7.5)
        store.record_gap("rtsp://cam2", 10.0, 12.0, "skipped")
        assert store.query_gaps() == [{"source": "rtsp://cam1", "start": 3.0, "end": 7.5, "kind": "drop"},
                                      {"source": "rtsp://cam1", "start": 20.0, "end": 21.5, "kind": "drop"},
                                      {"source": "rtsp://cam2", "start": 10.0, "end": 12.0, "kind": "skipped"}]
        assert [(s["gaps"], s["skipped"]) for s in store.sources()] == [(2, 0), (0, 1)]
        with pytest.raises(ValueError, match="unknown gap kind 'lost'"):
            store.record_gap("rtsp://cam2", 1.0, 2.0, "lost")
    assert main(["events", str(db), "--gaps", "--source", "rtsp://cam1", "--since", "5", "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"source": "rtsp://cam1", "start": 20.0, "end": 21.5, "kind": "drop"}]
    assert main(["events", str(db), "--gaps", "--source", "rtsp://cam2"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["10.00", "12.00", "2.00", "skipped", "rtsp://cam2"]
    assert main(["events", str(db), "--gaps", "--source", "rtsp://nowhere"]) == 0
    assert capsys.readouterr().out.strip() == f"no gaps in {db} match"
    assert main(["events", str(db), "--gaps", "--label", "fight"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --label and --min-score filter events") and err.count("\n") == 1


# 5. Bad options are one line naming the option

@pytest.mark.parametrize("args, message", [
    (["--db", "{folder}"], "--db {folder} is a folder; pass the event store's file name, e.g. --db {folder}/events.db"),
    (["--class-threshold", "tone"], "--class-threshold 'tone': expected CLASS=P, e.g. --class-threshold tone=0.8"),
    (["--class-threshold", "tone=high"], "--class-threshold 'tone=high': P must be a probability in [0, 1]"),
    (["--class-threshold", "tone=1.5"], "--class-threshold 'tone=1.5': P must be a probability in [0, 1]"),
    (["--class-threshold", "tone=nan"], "--class-threshold 'tone=nan': P must be a probability in [0, 1]"),
    (["--class-threshold", "dog=0.8"], "'dog=0.8': 'dog' is not a class of this run; use one of tone"),
    (["--class-threshold", "normal=0.8"], "'normal' is the normal class, which never opens an event; use one of tone"),
    (["--class-threshold", "tone=0.1"], "it must lie in [release=0.4, 1]; adjust --threshold, --release"),
    (["--idle-timeout", "5"], "--idle-timeout only applies with --follow"),
    (["--follow", "--idle-timeout", "0"], "--idle-timeout 0.0: pass a positive number of seconds"),
])
def test_bad_watch_options_are_one_clear_line(run_dir, media, tmp_path, capsys, args, message):
    folder = tmp_path / "store"
    folder.mkdir()
    args = [a.replace("{folder}", str(folder)) for a in args]
    assert main(["watch", str(run_dir), str(media["mp4"]), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert message.replace("{folder}", str(folder)) in err


def test_an_event_store_that_is_a_folder_is_one_clear_line(tmp_path, capsys):
    assert main(["events", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path} is a folder; an event store is one SQLite file: pass a file name, " \
                  f"e.g. {tmp_path / 'events.db'}\n"


# 6. Thumbnails never leave their folder

def test_hostile_labels_and_source_names_cannot_write_outside_the_thumbnail_folder(fresh, media, tmp_path):
    thumbs = tmp_path / "a" / "thumbs"
    url = "rtsp://cam/../../../../escaped/cam.1?token=s3cret"

    def camera(uri):
        return av.open(str(media["mp4"]))  # the "camera" plays the test clip

    fresh.opener, fresh.sinks.thumbnails, fresh.events_config = camera, thumbs, EVERY_STEP
    classes = fresh.run.classes
    fresh.run.classes = [c if c == "normal" else "../../../escaped/..\\x" for c in classes]
    try:
        records = list(fresh.watch(url))
    finally:
        fresh.run.classes = classes
    assert len(records) == 6
    (event,) = fresh.events
    assert event.label == "../../../escaped/..\\x"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    digest = hashlib.sha1(url.encode()).hexdigest()[:8]
    assert written == [thumbs / f"cam-{digest}_00000.000_escaped_.._x.jpg"]  # no query, no slashes
    assert event.thumbnail == str(written[0]) and written[0].read_bytes()[:2] == b"\xff\xd8"


def test_thumbnail_names_are_safe_and_a_link_out_of_the_folder_is_refused(fresh, tmp_path, caplog):
    folder = tmp_path / "thumbs"
    folder.mkdir()
    for source, label in [("..", ".."), ("/", "/"), ("cams/../../x.ts", "../../../etc/passwd"), ("", "")]:
        path = thumbnail_path(folder, source, 1.5, label)
        assert path.parent == folder and not path.name.startswith(".") and "/" not in path.name
    # two cameras whose streams share a name keep their own thumbnails
    assert thumbnail_path(folder, "rtsp://a/live", 0, "x") != thumbnail_path(folder, "rtsp://b/live", 0, "x")
    # a symbolic link with the name a thumbnail would take, pointing outside: refused, nothing written there
    outside = tmp_path / "outside.jpg"
    event = Event("rtsp://cam/live", 0.0, 2.0, "tone", 0.9, 1.0)
    link = thumbnail_path(folder, event.source, event.start, event.label)
    link.symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        thumbnail_path(folder, event.source, event.start, event.label)
    Sinks(thumbnails=folder).closed([event], {1.0: np.zeros((32, 48, 3), np.uint8)})
    assert not outside.exists() and event.thumbnail is None
    assert any("no thumbnail" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
