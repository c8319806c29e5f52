"""The web dashboard over HTTP (issue 15): pages and filters, the token, files confined to their
folders, uploads that are checked and leave nothing behind, and pollers that lose no event.
The same pages in a real browser: test_dashboard_browser.py."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx
import pytest
from starlette.testclient import TestClient

from avar.cli import main
from avar.serve.dashboard.app import DashboardConfig, create_app, make_server
from avar.serve.events import Event
from avar.serve.store import APPLICATION_ID, EventStore
from avar.serve.watch import Watcher
from dashboard_helpers import ServerThread, generated_store
from test_watch import _clip, tone_run


@pytest.fixture
def store(tmp_path):
    return generated_store(tmp_path, cameras=3, per_camera=40)


def client(store, **options) -> TestClient:
    config = DashboardConfig(db=store["db"], media=[store["media"]], thumbnails=store["thumbnails"], **options)
    return local(create_app(config))


def local(app) -> TestClient:
    """A client that reaches ``app`` as a browser on this machine does (``Host: 127.0.0.1``)."""
    return TestClient(app, base_url="http://127.0.0.1")


def rows(html: str) -> int:
    return html.count("<tr data-id=")


def test_events_list_filters_and_pages(store):
    c = client(store, page_size=25)
    page = c.get("/events")
    assert page.status_code == 200 and rows(page.text) == 25 and "page 1 of 5" in page.text
    assert rows(c.get("/events?page=5").text) == 121 - 4 * 25
    assert rows(c.get("/events?label=explosion").text) == 1
    assert rows(c.get("/events?label=fight&source=2").text) == 14  # camera 0: events 0, 3, ..., 39
    assert rows(c.get("/events?min_score=0.95").text) == 13  # the file's event and 0.95 on every camera
    assert rows(c.get("/events?since=2000-01-01T00:00&until=2100-01-01T00:00&page=1").text) == 25
    assert rows(c.get("/events?until=2000-01-01T00:00").text) == 0
    newest = c.get("/api/events?limit=3").json()["events"]
    assert [e["id"] for e in newest] == [121, 120, 119] and newest[0]["source"] == "rtsp://cam2/live"
    assert [e["id"] for e in c.get("/api/events?after=118").json()["events"]] == [119, 120, 121]
    for bad in ("/events?min_score=x", "/events?since=yesterday", "/events?page=0", "/events?source=-"):
        answer = c.get(bad)
        assert answer.status_code == 400 and 'id="error"' in answer.text, bad
    assert c.get("/api/events?after=x").status_code == 400


def test_sources_event_and_source_pages(store):
    c = client(store)
    sources = c.get("/api/sources").json()["sources"]
    assert [s["kind"] for s in sources] == ["file", "stream", "stream", "stream"]
    assert sources[0]["events"] == 1 and sources[0]["watched_to"] == 20.0
    with EventStore(store["db"]) as writer:
        writer.mark_error("rtsp://cam1/live", "connection refused")
        writer.add_source("rtsp://cam2/live", "stream", name="gate")  # what watch --sources stores
        writer.set_state("rtsp://cam2/live", "stalled")
        writer.record_gap("rtsp://cam2/live", 5.0, 6.0, "skipped")
    listing = c.get("/sources").text
    assert "connection refused" in listing and 'class="state error"' in listing
    assert 'class="state stalled"' in listing and ">gate</a>" in listing
    (cam2,) = [s for s in c.get("/api/sources").json()["sources"] if s["uri"] == "rtsp://cam2/live"]
    assert (cam2["state"], cam2["name"], cam2["skipped"]) == ("stalled", "gate", 1)
    page = c.get("/events/1")
    data = json.loads(page.text.split('id="timeline-data">')[1].split("</script>")[0])
    start, end = store["event"]
    shown = [t for t in range(20) if t + 1 > start - 10 and t < end + 10]  # the event and 10 s either side
    assert data["focus"]["label"] == "explosion" and data["events"][0]["id"] == 1
    assert [s["time"] for s in data["steps"]] == shown and len(shown) < 20
    assert 'src="/media/1"' in page.text
    camera = c.get("/sources/2").text
    assert "<video" not in camera and "No playable file" in camera
    assert c.get("/sources/99").status_code == 404 and c.get("/events/999").status_code == 404
    steps = c.get("/api/sources/1/steps?after=17").json()["steps"]
    assert [s["time"] for s in steps] == [18.0, 19.0] and set(steps[0]["probabilities"]) == {"normal", "explosion", "crash"}


def test_media_is_served_with_ranges_and_only_from_its_folders(store, tmp_path):
    c = client(store)
    whole = c.get("/media/1")
    assert whole.status_code == 200 and whole.content == store["clip"].read_bytes()
    part = c.get("/media/1", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert c.get("/thumbnails/1").headers["content-type"] == "image/jpeg"

    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "private.mp4").write_bytes(b"not for the web")
    (store["media"] / "link.mp4").symlink_to(outside / "private.mp4")
    (store["media"] / "notes.txt").write_text("a text file in the media folder")
    with EventStore(store["db"]) as writer:
        for uri in (str(outside / "private.mp4"), str(store["media"] / "link.mp4"), "../secret/private.mp4",
                    str(store["media"] / "notes.txt"), "/etc/passwd"):
            writer.add_source(uri, "file")
            writer.add_events([Event(uri, 0.0, 1.0, "x", 0.9, 0.5, thumbnail=str(outside / "private.mp4"))])
    for source_id in range(5, 10):
        assert c.get(f"/media/{source_id}").status_code == 404
    for event_id in range(122, 127):
        assert c.get(f"/thumbnails/{event_id}").status_code == 404
    assert c.get("/media/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert c.get("/static/..%2F..%2Fapp.py").status_code == 404


def test_relative_names_resolve_from_the_working_folder_and_stay_confined(store, monkeypatch):
    monkeypatch.chdir(store["media"].parent)  # where `avar watch media/scene.mp4 --thumbnails thumbnails` ran
    with EventStore(store["db"]) as writer:
        writer.add_source("media/scene.mp4", "file")
        writer.add_events([Event("media/scene.mp4", 0.0, 1.0, "x", 0.9, 0.5, thumbnail="thumbnails/scene.jpg")])
        writer.add_source("other.mp4", "file")  # media in the working folder but in no served folder
    c = client(store)
    sources = {s["uri"]: s["id"] for s in c.get("/api/sources").json()["sources"]}
    assert c.get(f"/media/{sources['media/scene.mp4']}").content == store["clip"].read_bytes()
    assert c.get("/thumbnails/122").status_code == 200
    (store["media"].parent / "other.mp4").write_bytes(store["clip"].read_bytes())
    assert c.get(f"/media/{sources['other.mp4']}").status_code == 404


def test_a_token_guards_every_request(store):
    config = dict(db=store["db"], media=[store["media"]])
    with pytest.raises(ValueError, match="token"):
        make_server(DashboardConfig(**config, host="0.0.0.0"), 0)
    c = local(create_app(DashboardConfig(**config, token="s3cret")))
    for url in ("/events", "/api/events", "/media/1", "/static/dashboard.js", "/api/live"):
        answer = c.get(url)
        assert answer.status_code == 401 and "token" in answer.text, url
    assert c.get("/events?token=wrong").status_code == 401
    assert c.get("/api/events", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = c.get("/events?token=s3cret")
    assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
    assert c.get("/media/1").status_code == 200  # the cookie from the first visit
    assert main(["serve", "--db", str(store["db"]), "--host", "0.0.0.0"]) == 2


def test_store_from_before_steps_is_upgraded(tmp_path):
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript("""CREATE TABLE sources(id INTEGER PRIMARY KEY, uri TEXT UNIQUE NOT NULL, kind TEXT,
        first_seen REAL, last_seen REAL, gaps INTEGER DEFAULT 0, error TEXT);
        CREATE TABLE events(id INTEGER PRIMARY KEY, source_id INTEGER NOT NULL REFERENCES sources(id), "start" REAL,
        "end" REAL, label TEXT, peak_score REAL, peak_time REAL, thumbnail TEXT, created REAL);
        CREATE TABLE gaps(source_id INTEGER NOT NULL REFERENCES sources(id), "start" REAL, "end" REAL);
        INSERT INTO sources VALUES (1, 'cam', 'stream', 0, 0, 0, NULL);
        INSERT INTO events VALUES (1, 1, 0, 2, 'fight', 0.9, 1, NULL, 0);
        PRAGMA user_version = 2;""")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.close()
    c = local(create_app(DashboardConfig(db=tmp_path / "old.db")))
    assert rows(c.get("/events").text) == 1
    assert c.get("/api/sources/1/steps").json() == {"steps": []}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-runs")
    run = tone_run(root)
    folder = root / "runs"
    folder.mkdir()
    (folder / "tone").symlink_to(run, target_is_directory=True)
    return folder


def wait_job(c, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_uploads_are_checked_and_leave_nothing_behind(tmp_path, runs):
    db = tmp_path / "events.db"
    c = local(create_app(DashboardConfig(db=db, runs=runs, max_upload_mb=1)))
    uploads = tmp_path / "uploads"
    assert "tone" in c.get("/analyse").text

    def upload(name, body, run="tone", **kw):
        return c.post("/api/uploads", params={"name": name, "run": run}, content=body,
                      headers={"Origin": "http://127.0.0.1"}, **kw)

    junk = upload("junk.mp4", b"\x00garbage" * 1000)
    assert junk.status_code == 400 and "junk.mp4" in junk.json()["error"] and "Nothing was kept" in junk.json()["error"]
    assert upload("notes.txt", b"hello").status_code == 415
    assert upload("clip.mp4", b"x", run="../../etc").status_code == 400
    assert upload("empty.mp4", b"").status_code == 400
    big = upload("big.mp4", b"\x00" * (2 * 2**20))
    assert big.status_code == 413 and "max-upload-mb" in big.json()["error"]
    streamed = upload("big.mp4", iter([b"\x00" * 2**16] * 40))  # no Content-Length: counted as it arrives
    assert streamed.status_code == 413
    assert not uploads.exists() or not list(uploads.iterdir())

    clip = _clip(tmp_path / "a b.mp4", seconds=6, tone=(2, 4))
    answer = upload("../../a b.mp4", clip.read_bytes())
    assert answer.status_code == 201, answer.text
    job = wait_job(c, answer.json()["id"])
    assert job["state"] == "done" and job["progress"] == 1.0, job
    kept = [p for p in uploads.iterdir()]
    assert len(kept) == 1 and kept[0].parent == uploads and kept[0].name.endswith("-a_b.mp4")
    with EventStore(db) as store:
        source = store.sources()[0]
        assert source["kind"] == "upload" and source["uri"] == str(kept[0].resolve())
        assert [s["time"] for s in store.steps(source["uri"])] == [float(t) for t in range(6)]
    assert c.get(f"/media/{job['source_id']}").content == clip.read_bytes()
    assert c.get(f"/sources/{job['source_id']}").status_code == 200

    # Decodes at first, then fails half way (damaged) or ends early (truncated): the job fails
    # with the reason and nothing of it stays.
    whole = _clip(tmp_path / "long.mkv", seconds=20).read_bytes()
    damaged = whole[: len(whole) // 2] + b"\xff" * 5000 + whole[len(whole) // 2 + 5000:]
    for name, body, reason in (("damaged.mkv", damaged, "decoding failed"),
                               ("cut.mkv", whole[: len(whole) // 2], "truncated")):
        answer = upload(name, body)
        assert answer.status_code == 201, answer.text
        job = wait_job(c, answer.json()["id"])
        assert job["state"] == "failed" and name in job["error"] and reason in job["error"], job
        assert "are kept" not in job["error"] and "Nothing was stored" in job["error"]  # one story, not two
        assert [p.name for p in uploads.iterdir()] == [kept[0].name]
        with EventStore(db) as store:
            assert len(store.sources()) == 1


def test_ten_pollers_and_a_live_stream_lose_no_event_while_a_watcher_writes(tmp_path):
    store = generated_store(tmp_path)
    config = DashboardConfig(db=store["db"], poll_seconds=0.05)
    written: list[int] = []
    batches = 60
    total = sum(i % 5 + 1 for i in range(batches))
    done = threading.Event()

    def writer():
        with EventStore(store["db"]) as w:
            w.add_source("rtsp://yard/live", "stream")
            for i in range(batches):
                written.extend(w.add_events([Event("rtsp://yard/live", float(j), float(j + 1), "fight", 0.8, float(j))
                                             for j in range(i % 5 + 1)]))
                time.sleep(0.01)
        done.set()

    def poller(url, seen):
        after = 1
        with httpx.Client(base_url=url, timeout=10) as http:
            while True:
                finished = done.is_set()
                batch = http.get("/api/events", params={"after": after}).json()["events"]
                seen.extend(e["id"] for e in batch)
                after = batch[-1]["id"] if batch else after
                if finished and not batch:
                    return

    def listener(url, seen):
        with httpx.Client(base_url=url, timeout=10) as http, http.stream("GET", "/api/live?after=1") as live:
            for line in live.iter_lines():
                if line.startswith("data: "):
                    seen.extend(e["id"] for e in json.loads(line[6:]))
                # All of them: waiting for done as well could outlast the read timeout when the
                # last batch came before it was set (the stream stays silent for 15 s).
                if len(seen) >= total:
                    return

    with ServerThread(config) as server:
        seen = [[] for _ in range(11)]
        threads = [threading.Thread(target=poller, args=(server.url, s)) for s in seen[:10]]
        threads.append(threading.Thread(target=listener, args=(server.url, seen[10])))
        for t in threads:
            t.start()
        writer()
        for t in threads:
            t.join(timeout=60)
    assert len(written) == total == 180
    for ids in seen:
        assert ids == written  # every event, once, in order


def test_watch_stores_its_step_records(tmp_path, runs):
    clip = _clip(tmp_path / "scene.mp4", seconds=6, tone=(2, 4))
    with EventStore(tmp_path / "events.db") as store:
        records = list(Watcher(runs / "tone", store=store).watch(clip))
        stored = store.steps(str(clip))
        list(Watcher(runs / "tone", store=store).watch(clip))  # again: replaced, not doubled
        assert len(store.steps(str(clip))) == 6
    assert [(s["time"], s["predicted"]) for s in stored] == [(r.time, r.predicted) for r in records]
    assert [s["anomaly_score"] for s in stored] == pytest.approx([r.anomaly_score for r in records])
