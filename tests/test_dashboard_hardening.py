"""The dashboard and watch as an attacker and a careless user meet them (issue 30): numbers too
large for SQLite, Host and cross-site requests, the token in logs, hard links, abandoned and
unanalysed uploads, idle live streams, and missing files given to ``avar watch``; then a table
of edge values thrown at every route and query parameter of a real server."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import pytest

from avar.cli import main
from avar.serve.dashboard.app import DashboardConfig, create_app
from avar.serve.events import Event
from avar.serve.store import EventStore
from dashboard_helpers import ServerThread, generated_store
from test_dashboard import local, runs, wait_job  # noqa: F401 - runs is a fixture
from test_watch import _clip

HUGE = "99999999999999999999999"
ORIGIN = {"Origin": "http://127.0.0.1"}


@pytest.fixture
def store(tmp_path):
    return generated_store(tmp_path, cameras=1, per_camera=3)


def client(store, **options):
    return local(create_app(DashboardConfig(db=store["db"], media=[store["media"]], thumbnails=store["thumbnails"],
                                            **options)))


@contextmanager
def server_log():
    """Every line the server logs (uvicorn's and avar's), as formatted text, with tracebacks."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error", "avar")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


def test_numbers_sqlite_cannot_hold_are_400_or_404_with_one_line(store):
    c = client(store)
    for url in (f"/events/{HUGE}", f"/sources/{HUGE}", f"/media/{HUGE}", f"/thumbnails/{HUGE}",
                f"/api/sources/{HUGE}/steps", f"/events?source={HUGE}", f"/api/events?after={HUGE}",
                f"/api/events?source={HUGE}", "/events?page=9223372036854775807", f"/api/live?after={HUGE}",
                f"/api/live?source={HUGE}", "/events/9223372036854775808"):
        answer = c.get(url)
        assert answer.status_code in (400, 404), (url, answer.status_code)
        if url.startswith(("/events", "/sources")):
            assert 'id="error"' in answer.text, url
        else:
            text = answer.json()["error"] if url.startswith("/api/") else answer.text
            assert len(text.splitlines()) == 1, url
    assert c.get("/events?page=184467440737095516").status_code == 200  # the last page the offset allows
    message = c.get("/api/sources/1/steps?after=1e999").json()["error"]
    assert "None" not in message and "finite number" in message


def test_a_resumed_live_stream_with_a_huge_id_starts_afresh_and_an_idle_one_sends_heartbeats(store):
    config = DashboardConfig(db=store["db"], poll_seconds=0.05, heartbeat_seconds=0.3)
    with ServerThread(config) as server, server_log() as log_lines, \
            httpx.Client(base_url=server.url, timeout=10) as http, \
            http.stream("GET", "/api/live", headers={"Last-Event-ID": f"{HUGE}/1e999"}) as live:
        assert live.status_code == 200
        started, seen, heartbeats = time.monotonic(), [], []
        for line in live.iter_lines():
            if line.startswith(":"):
                heartbeats.append(time.monotonic() - started)
                if len(heartbeats) == 2:
                    with EventStore(store["db"]) as writer:
                        writer.add_events([Event("rtsp://cam0/live", 9.0, 10.0, "fight", 0.9, 9.5)])
            if line.startswith("data: "):
                seen.append(line)
                break
    assert heartbeats[0] < 1.0 and len(heartbeats) >= 2  # silence never outlasts the heartbeat much
    assert '"start": 9.0' in seen[0]  # the new event, not everything since id 0, not an abort
    assert not [line for line in log_lines if "Traceback" in line or "ERROR" in line]


def test_only_this_dashboards_host_names_are_answered(store):
    c = client(store)
    assert c.get("/events", headers={"Host": "evil.example"}).status_code == 400
    assert "--allowed-host" in c.get("/api/events", headers={"Host": "evil.example:8080"}).text
    for host in ("127.0.0.1:8080", "localhost", "LOCALHOST:1", "[::1]:8080"):
        assert c.get("/events", headers={"Host": host}).status_code == 200, host
    assert c.get("/events", headers={"Host": ""}).status_code == 400
    named = client(store, allowed_hosts=["cams.example"])
    assert named.get("/events", headers={"Host": "cams.example:8080"}).status_code == 200
    assert named.get("/events", headers={"Host": "other.example"}).status_code == 400
    # Bound to every address (a token is then required): any IP literal, no unlisted name.
    wide = client(store, host="0.0.0.0", token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    assert wide.get("/api/events", headers={**auth, "Host": "10.1.2.3:8080"}).status_code == 200
    assert wide.get("/api/events", headers={**auth, "Host": "rebind.example:8080"}).status_code == 400


def test_state_changing_requests_from_other_sites_are_refused(store, tmp_path, runs):  # noqa: F811
    c = client(store, runs=runs)
    clip = _clip(tmp_path / "clip.mp4", seconds=3).read_bytes()
    uploads = store["db"].parent / "uploads"

    def post(headers, name="clip.mp4"):
        return c.post("/api/uploads", params={"name": name, "run": "tone"}, content=clip,
                      headers={"Content-Type": "text/plain", **headers})

    for headers in ({"Origin": "http://evil.example"}, {}, {"Origin": "null"},
                    {"Referer": "http://evil.example/page"}, {"Origin": "http://127.0.0.1.evil.example"}):
        answer = post(headers)
        assert answer.status_code == 403 and "another site" in answer.text, headers
    assert not uploads.exists() or not list(uploads.iterdir())
    assert post({"Referer": "http://127.0.0.1/analyse"}, name="x.txt").status_code == 415  # reached the page
    answer = post(ORIGIN)
    assert answer.status_code == 201, answer.text
    assert wait_job(c, answer.json()["id"])["state"] == "done"
    # With a token: its Authorization header is no browser's doing, so no Origin is needed;
    # the cookie a browser sends by itself is, so it still is.
    guarded = client(store, runs=runs, token="s3cret")
    assert guarded.post("/api/uploads?name=a.txt&run=tone", content=b"x",
                        headers={"Authorization": "Bearer s3cret"}).status_code == 415
    guarded.get("/events?token=s3cret")
    assert guarded.post("/api/uploads?name=a.txt&run=tone", content=b"x",
                        headers={"Origin": "http://evil.example"}).status_code == 403


def test_the_token_never_reaches_the_log_or_a_page(store):
    config = DashboardConfig(db=store["db"], media=[store["media"]], token="s3cret-t0ken")
    with ServerThread(config, log_level="info") as server, server_log() as lines, \
            httpx.Client(base_url=server.url, timeout=10) as http:
        pages = [http.get("/?token=s3cret-t0ken", follow_redirects=True),
                 http.get("/events?label=x&token=wr0ng-guess"), http.get("/api/events?token=s3cret-t0ken&after=1"),
                 http.get(f"/media/{HUGE}?token=s3cret-t0ken")]
    assert [p.status_code for p in pages] == [200, 401, 200, 404]
    assert any("token=[hidden]" in line for line in lines), lines
    for text in [*lines, *(p.text for p in pages)]:
        assert "s3cret-t0ken" not in text and "wr0ng-guess" not in text, text


def test_a_hard_link_to_a_file_outside_the_media_folder_is_not_served(store, tmp_path):
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(store["clip"].read_bytes())
    (outside / "secret.jpg").write_bytes(b"\xff\xd8 not for the web")
    os.link(outside / "secret.mp4", store["media"] / "linked.mp4")
    os.link(outside / "secret.jpg", store["thumbnails"] / "linked.jpg")
    with EventStore(store["db"]) as writer:
        uri = str(store["media"] / "linked.mp4")
        source = writer.add_source(uri, "file")
        (event,) = writer.add_events([Event(uri, 0.0, 1.0, "x", 0.9, 0.5, str(store["thumbnails"] / "linked.jpg"))])
    c = client(store)
    assert c.get(f"/media/{source}").status_code == 404 and c.get(f"/thumbnails/{event}").status_code == 404
    assert "No playable file" in c.get(f"/sources/{source}").text
    assert c.get("/media/1").status_code == 200  # the folder's own file (one link) still plays


def test_uploads_leave_no_trace_of_the_server_behind(tmp_path, runs):  # noqa: F811
    config = DashboardConfig(db=tmp_path / "events.db", runs=runs)
    uploads = tmp_path / "uploads"
    app = create_app(config)
    with local(app) as c:  # the with block runs the app's startup and shutdown
        junk = c.post("/api/uploads?name=junk.mp4&run=tone", content=b"\x00garbage" * 100, headers=ORIGIN).json()
        assert "junk.mp4" in junk["error"] and str(uploads) not in junk["error"] and ".part" not in junk["error"]
        # Queued behind a job that does not end before the server stops: removed at the stop.
        release = threading.Event()
        app.app.state.uploads._executor.submit(release.wait)
        clip = _clip(tmp_path / "clip.mp4", seconds=3).read_bytes()
        queued = c.post("/api/uploads?name=clip.mp4&run=tone", content=clip, headers=ORIGIN).json()
        assert queued["state"] == "queued" and len(list(uploads.iterdir())) == 1
    release.set()
    assert not list(uploads.iterdir())
    assert app.app.state.uploads.jobs[queued["id"]].state == "failed"

    # A killed server leaves uploads (arriving, queued or running): the next one removes them,
    # and keeps analysed uploads and files it did not name.
    with local(create_app(config)) as c:
        done = c.post("/api/uploads?name=done.mp4&run=tone", content=clip, headers=ORIGIN).json()
        assert wait_job(c, done["id"])["state"] == "done"
    analysed = {p.name for p in uploads.iterdir()}
    for name in ("0123456789ab-left.mp4", ".0123456789ab.part"):
        (uploads / name).write_bytes(clip)
    (uploads / "notes.txt").write_text("the operator's own file")
    create_app(config)
    assert {p.name for p in uploads.iterdir()} == analysed | {"notes.txt"}


def test_an_abandoned_upload_is_one_quiet_line_and_leaves_nothing(tmp_path, runs):  # noqa: F811
    config = DashboardConfig(db=tmp_path / "events.db", runs=runs)
    with ServerThread(config, log_level="info") as server, server_log() as lines:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /api/uploads?name=big.mp4&run=tone HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Origin: http://127.0.0.1\r\nContent-Length: 1000000\r\n\r\n" + b"\x00" * 70000)
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while not any("abandoned" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert any("abandoned" in line for line in lines), lines
    assert not [line for line in lines if "Traceback" in line or "ClientDisconnect" in line], lines
    assert not list((tmp_path / "uploads").iterdir())


def test_a_missing_file_fails_at_once_and_is_stored_as_the_file_it_should_be(tmp_path, runs, monkeypatch,  # noqa: F811
                                                                           capsys):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    assert main(["watch", str(runs / "tone"), "missing.mp4", "--db", "events.db", "--quiet"]) == 2
    assert time.monotonic() - started < 10  # not retried like a stream (21 s)
    assert "missing.mp4" in capsys.readouterr().err
    _clip(tmp_path / "there.mp4", seconds=3)
    assert main(["watch", str(runs / "tone"), "gone.mp4", "there.mp4", "--db", "events.db", "--quiet"]) == 1
    with EventStore(tmp_path / "events.db") as store:
        sources = {s["uri"]: s for s in store.sources()}
    for name in ("missing.mp4", "gone.mp4"):
        source = sources[str(tmp_path / name)]
        assert source["kind"] == "file" and "no such file" in source["error"]
    assert sources[str(tmp_path / "there.mp4")]["kind"] == "file"


EDGES = ["0", "-1", "2147483648", "9223372036854775807", "9223372036854775808", "18446744073709551616", "1" + "0" * 30,
         "nan", "inf", "-inf", "1e999", "", "ünïcødé ☃", "\x00", "0001-01-01T00:00-14:00", "9999-12-31T23:59+14:00",
         "%", "' OR 1=1 --"]
FILTERS = ["label", "source", "since", "until", "min_score", "after"]
ROUTES = {"/events": [*FILTERS, "page"], "/api/events": [*FILTERS, "limit"], "/api/sources/1/steps": ["after"],
          "/sources": [], "/analyse": [], "/api/sources": [], "/api/jobs/x": [],
          **{f"{prefix}/{{}}": [] for prefix in ("/events", "/sources", "/media", "/thumbnails", "/api/jobs")},
          "/api/sources/{}/steps": ["after"]}


def test_edge_values_at_every_route_and_parameter_give_no_500_and_no_traceback(tmp_path):
    store = generated_store(tmp_path)
    config = DashboardConfig(db=store["db"], media=[store["media"]], thumbnails=store["thumbnails"],
                             poll_seconds=0.01, heartbeat_seconds=0.02)
    answers = []
    with ServerThread(config, log_level="info") as server, server_log() as lines, \
            httpx.Client(base_url=server.url, timeout=10) as http:
        for route, params in ROUTES.items():
            paths = [route.format(quote(v, safe="")) for v in EDGES if v] if "{}" in route else [route]
            for path in paths:
                answers.append((path, http.get(path).status_code))
                for name in params:
                    for value in EDGES:
                        answers.append((f"{path}?{name}={value!r}", http.get(path, params={name: value}).status_code))
        live = [({name: value, **({} if name == "source" else {"source": "1"})}, {})
                for name in [*FILTERS, "steps_after"] for value in EDGES]
        live += [({"source": "1"}, {"Last-Event-ID": f"{value}/{value}".encode()}) for value in EDGES if value != "\x00"]
        for params, headers in live:
            with http.stream("GET", "/api/live", params=params, headers=headers) as stream:
                seen = []
                if stream.status_code == 200:  # alive past its first poll: a heartbeat (no events come)
                    for line in stream.iter_lines():
                        seen.append(line)
                        if line.startswith(":"):
                            break
                    assert seen[-1].startswith(":"), (params, headers, seen)
                answers.append((f"/api/live {params} {headers}", stream.status_code))
        for value in EDGES:
            answer = http.post("/api/uploads", params={"name": value, "run": value}, content=b"x",
                               headers={"Origin": server.url})
            answers.append((f"POST /api/uploads?name={value!r}", answer.status_code))
    assert len(answers) > 500
    assert not [a for a in answers if a[1] >= 500], [a for a in answers if a[1] >= 500][:10]
    assert not [line for line in lines if "Traceback" in line or " ERROR " in line], lines[:5]
    assert {status for _, status in answers} <= {200, 400, 404, 415}
