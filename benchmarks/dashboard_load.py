"""How fast the dashboard answers on a big store, and whether viewers polling during writes lose events (issue 15).

    .venv/bin/python benchmarks/dashboard_load.py --events 100000 --json

Builds an event store with ``--events`` events over 20 camera sources (5 classes) plus a file
source with an hour of steps, starts ``avar serve`` on it in its own process (127.0.0.1), and
times the events page as a browser asks for it (first page, a deep page, each filter) over
``--repeats`` requests: p50 / p95 / max milliseconds, HTML included. Then a watcher writes
``--write`` more events in small transactions while ten pollers read ``/api/events?after=ID``
and one browser-like client listens to ``/api/live``; every reader must see every written
event exactly once, in order (``lost`` and ``duplicated`` count the misses). Last, the size of
a store holding a day of one camera's steps (``day_of_steps_mib``). Prints JSON.

``--baseline REV`` also serves the same store with the code of git revision ``REV`` (a
temporary worktree) and times both servers in one loop, request by request in turn, so the
``baseline_ratio`` of each page's p50 (this code / REV's) compares them under the same load:

    .venv/bin/python benchmarks/dashboard_load.py --events 100000 --baseline HEAD~1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from avar.serve.events import Event
from avar.serve.predict import StepRecord
from avar.serve.store import EventStore

LABELS = ("fight", "explosion", "scream", "gunshot", "crash")


def build_store(path: Path, n_events: int, seed_steps: int = 3600) -> None:
    with EventStore(path) as store:
        store.add_source("/footage/yard.mp4", "file")
        store.add_steps("/footage/yard.mp4", [StepRecord(float(t), float(t + 1), "normal",
                                                         {"normal": 0.9, "fight": 0.1}, 0.1) for t in range(seed_steps)])
        for cam in range(20):
            store.add_source(f"rtsp://cam{cam:02d}/live", "stream")
        batch = []
        for i in range(n_events):
            batch.append(Event(f"rtsp://cam{i % 20:02d}/live", float(i), float(i + 4), LABELS[i % 5],
                               0.5 + 0.5 * ((i * 7919) % 1000) / 1000, float(i + 2), None))
            if len(batch) == 10_000:
                store.add_events(batch)
                batch = []
        store.add_events(batch)


def day_of_steps_mib(folder: Path) -> float:
    """Size of a store holding one camera's day at one step per second, ten classes."""
    rng = np.random.default_rng(0)
    classes = [f"class{i}" for i in range(10)]
    db = folder / "day.db"
    with EventStore(db) as store:
        store.add_source("rtsp://cam/live", "stream")
        for k in range(0, 86_400, 8):  # the watcher's default batch
            records = []
            for t in range(k, k + 8):
                p = rng.dirichlet(np.ones(10))
                records.append(StepRecord(float(t), float(t + 1), classes[int(p.argmax())],
                                          {c: round(float(x), 5) for c, x in zip(classes, p)}, float(1 - p[0])))
            store.add_steps("rtsp://cam/live", records)
    return round(sum(f.stat().st_size for f in folder.glob("day.db*")) / 2**20, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int, src: Path | None = None) -> subprocess.Popen:
    """``avar serve`` on ``db`` in its own process; ``src``: the ``avar`` package to import instead of this one."""
    code = f"from avar.cli import main; main(['serve', '--db', {str(db)!r}, '--port', '{port}', '-q'])"
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/sources", timeout=2)
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("avar serve did not start")


def time_pages(bases: dict[str, str], repeats: int, since: str) -> dict:
    """Each page's p50 / p95 / max ms on each server of ``bases`` ({name: URL}), asked in turn."""
    pages = {
        "first page": "/events",
        "page 1000 (events 49,951-50,000)": "/events?page=1000",
        "class filter": "/events?label=scream",
        "source filter": "/events?source=7",
        "min score 0.9": "/events?min_score=0.9",
        "time range": f"/events?since={since}",
        "all filters": f"/events?label=fight&source=2&min_score=0.6&since={since}",
        "source page (1 h of steps)": "/sources/1",
        "poll for new events": "/api/events?after=99990",
    }
    out = {server: {} for server in bases}
    clients = {server: httpx.Client(base_url=base, timeout=30) for server, base in bases.items()}
    try:
        for name, url in pages.items():
            ms = {server: [] for server in bases}
            for http in clients.values():
                http.get(url).raise_for_status()  # warm
            for _ in range(repeats):
                for server, http in clients.items():
                    t0 = time.perf_counter()
                    http.get(url).raise_for_status()
                    ms[server].append(1000 * (time.perf_counter() - t0))
            for server, times in ms.items():
                times.sort()
                out[server][name] = {"url": url, "p50_ms": round(statistics.median(times), 1),
                                     "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
                                     "max_ms": round(times[-1], 1)}
    finally:
        for http in clients.values():
            http.close()
    return out


@contextlib.contextmanager
def worktree(rev: str):
    """The ``src`` folder of a temporary git worktree at ``rev``."""
    repo = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp(prefix="avar-baseline-"))
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(folder / "tree"), rev], check=True,
                   capture_output=True)
    try:
        yield folder / "tree" / "src"
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(folder / "tree")],
                       capture_output=True)


def pollers_while_writing(base: str, db: Path, n_write: int, n_pollers: int = 10) -> dict:
    with httpx.Client(base_url=base) as http:
        start = http.get("/api/events?limit=1").json()["events"][0]["id"]
    written: list[int] = []
    done = threading.Event()
    seen = [[] for _ in range(n_pollers + 1)]
    polls = [0] * n_pollers

    def poller(k):
        after = start
        with httpx.Client(base_url=base, timeout=30) as http:
            while True:
                finished = done.is_set()
                batch = http.get("/api/events", params={"after": after, "limit": 1000}).json()["events"]
                polls[k] += 1
                seen[k].extend(e["id"] for e in batch)
                after = batch[-1]["id"] if batch else after
                if finished and not batch:
                    return
                time.sleep(0.05)

    def listener():
        with httpx.Client(base_url=base, timeout=30) as http, \
                http.stream("GET", "/api/live", params={"after": start}) as live:
            for line in live.iter_lines():
                if line.startswith("data: "):
                    seen[-1].extend(e["id"] for e in json.loads(line[6:]))
                if done.is_set() and len(seen[-1]) >= len(written):
                    return

    threads = [threading.Thread(target=poller, args=(k,)) for k in range(n_pollers)] + [threading.Thread(target=listener)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    with EventStore(db) as store:
        i = 0
        while i < n_write:
            k = min(1 + i % 7, n_write - i)  # transactions of 1-7 events, as a watcher closes them
            written.extend(store.add_events([Event("rtsp://cam00/live", float(j), float(j + 1), "fight", 0.9, float(j))
                                             for j in range(i, i + k)]))
            i += k
            time.sleep(0.002)
    write_s = time.perf_counter() - t0
    done.set()
    for t in threads:
        t.join(timeout=120)
    readers = []
    for ids in seen:
        readers.append({"seen": len(ids), "lost": len(set(written) - set(ids)), "duplicated": len(ids) - len(set(ids)),
                        "in_order": ids == sorted(ids)})
    return {"written": len(written), "write_seconds": round(write_s, 2),
            "events_per_second": round(len(written) / write_s, 1), "pollers": readers[:-1], "live_stream": readers[-1],
            "polls": sum(polls), "lost_total": sum(r["lost"] for r in readers),
            "duplicated_total": sum(r["duplicated"] for r in readers)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--write", type=int, default=2000, help="events written while the pollers read")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also time the pages served by git revision REV")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        db = Path(tmp) / "events.db"
        t0 = time.perf_counter()
        build_store(db, args.events)
        build_s = time.perf_counter() - t0
        since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
        servers = {"this": start_server(db, port := free_port())}
        bases = {"this": f"http://127.0.0.1:{port}"}
        if args.baseline:
            servers["baseline"] = start_server(db, port := free_port(), stack.enter_context(worktree(args.baseline)))
            bases["baseline"] = f"http://127.0.0.1:{port}"
        try:
            timed = time_pages(bases, args.repeats, since)
            load = pollers_while_writing(bases["this"], db, args.write)
        finally:
            for server in servers.values():
                server.terminate()
                server.wait(timeout=30)
        day_mib = day_of_steps_mib(Path(tmp))
    pages = timed["this"]
    result = {"events": args.events, "build_seconds": round(build_s, 1), "cpus": os.cpu_count(),
              "day_of_steps_mib": day_mib,
              "pages": pages, "slowest_p95_ms": max(p["p95_ms"] for p in pages.values()),
              "concurrent": load}
    if args.baseline:
        result["baseline"] = {"rev": args.baseline, "pages": timed["baseline"],
                              "baseline_ratio": {name: round(page["p50_ms"] / timed["baseline"][name]["p50_ms"], 3)
                                                 for name, page in pages.items()}}
    print(json.dumps(result, indent=1))
    return 0 if load["lost_total"] == 0 and load["duplicated_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
