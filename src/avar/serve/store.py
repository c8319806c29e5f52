"""A SQLite store of anomaly events, their sources and stream gaps, and the ``avar events`` command.

Event times (``start``, ``end``, ``peak_time``, gap bounds) are seconds on the source's own
timeline, as the detector reports them; bookkeeping times (``first_seen``, ``last_seen``,
``created``) are Unix wall-clock seconds.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from avar.serve.events import Event

# Marks the file as ours, so that opening some other SQLite database fails loudly instead of
# adding tables to it. "AVAR" in ASCII.
APPLICATION_ID = 0x41564152
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE sources(id INTEGER PRIMARY KEY, uri TEXT UNIQUE NOT NULL, kind TEXT, first_seen REAL,
                     last_seen REAL, gaps INTEGER DEFAULT 0, error TEXT);
CREATE TABLE events(id INTEGER PRIMARY KEY, source_id INTEGER NOT NULL REFERENCES sources(id),
                    "start" REAL, "end" REAL, label TEXT, peak_score REAL, peak_time REAL,
                    thumbnail TEXT, created REAL);
CREATE TABLE gaps(source_id INTEGER NOT NULL REFERENCES sources(id), "start" REAL, "end" REAL);
CREATE INDEX events_label ON events(label);
CREATE INDEX events_start ON events("start");
"""
# Per-step records (schema 3): what a dashboard draws under the video. One row per step of a
# source; watching the same file again replaces its rows.
_STEPS = """
CREATE TABLE steps(source_id INTEGER NOT NULL REFERENCES sources(id), "time" REAL NOT NULL, "end" REAL,
                   predicted TEXT, anomaly_score REAL, probabilities TEXT, created REAL,
                   PRIMARY KEY(source_id, "time")) WITHOUT ROWID;
CREATE INDEX events_source ON events(source_id, "start");
"""

# Many sources in one watch (schema 4): a source's display name, its state as the watcher saw
# it last (live, reading, lagging, stalled, reconnecting, done, error), how many of its steps
# were skipped to keep up and how often it fell behind; a gap's kind: 'drop' (the connection
# was lost), 'stall' (nothing came for a while), 'skipped' (one step not processed).
_SOURCE_STATE = """
ALTER TABLE sources ADD COLUMN name TEXT;
ALTER TABLE sources ADD COLUMN state TEXT;
ALTER TABLE sources ADD COLUMN skipped INTEGER DEFAULT 0;
ALTER TABLE sources ADD COLUMN lagging INTEGER DEFAULT 0;
ALTER TABLE gaps ADD COLUMN kind TEXT NOT NULL DEFAULT 'drop';
"""

# What brings a store of schema version N up to N + 1, applied in order when it is opened.
_MIGRATIONS = {
    1: "ALTER TABLE sources ADD COLUMN error TEXT;",
    2: _STEPS,
    3: _SOURCE_STATE,
}
GAP_KINDS = ("drop", "stall", "skipped")


class EventStore:
    """Events of many sources in one SQLite file (WAL mode: a viewer can read while a watcher writes)."""

    def __init__(self, path: Path | str, create: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; an event store is one SQLite file: pass a file name, "
                             f"e.g. {self.path / 'events.db'}")
        if not self.path.exists():
            if not create:
                raise FileNotFoundError(f"no event store at {self.path}; check the path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"cannot open {self.path} as an event store ({exc}); check the path and its "
                             "permissions") from exc
        try:
            self._init_schema()
        except (sqlite3.DatabaseError, ValueError) as exc:
            self._db.close()
            if isinstance(exc, ValueError):
                raise
            raise ValueError(f"{self.path} is not an avar event store ({exc}); "
                             "pass a new file name or one written by avar") from exc

    def _init_schema(self) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        n_tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and n_tables == 0:
            with db:
                # schema 2; the migrations below bring it to the current one
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute("PRAGMA user_version = 2")
        elif app_id != APPLICATION_ID:
            raise ValueError(f"{self.path} is a SQLite database but not an avar event store; "
                             "pass a new file name or one written by avar")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(f"{self.path} has event store schema {version}, newer than this avar's "
                             f"{SCHEMA_VERSION}; upgrade avar")
        while version < SCHEMA_VERSION:
            try:
                # One transaction, so a store is never left with the change but the old version.
                db.executescript(f"BEGIN; {_MIGRATIONS[version]} PRAGMA user_version = {version + 1}; COMMIT;")
            except sqlite3.OperationalError as exc:
                db.rollback()
                raise ValueError(f"cannot upgrade {self.path} from event store schema {version} to "
                                 f"{SCHEMA_VERSION} ({exc}); make the file writable and run again") from exc
            version += 1
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA foreign_keys = ON")
        # A dashboard reading the file (WAL: readers never block this writer) may briefly hold
        # the lock a checkpoint needs; wait for it rather than fail.
        db.execute("PRAGMA busy_timeout = 10000")

    def add_source(self, uri: str, kind: str, name: str | None = None) -> int:
        """The id of source ``uri``, registering it on first sight; later calls refresh ``last_seen``
        and ``name`` (when given) and clear the ``error`` of an earlier watch (the first ``kind`` stays)."""
        now = time.time()
        with self._db:
            self._db.execute("INSERT INTO sources(uri, kind, first_seen, last_seen, name) VALUES (?, ?, ?, ?, ?) "
                             "ON CONFLICT(uri) DO UPDATE SET last_seen = excluded.last_seen, error = NULL, "
                             "name = coalesce(excluded.name, name)",
                             (uri, kind, now, now, name))
        return self._source_id(uri)

    def set_state(self, uri: str, state: str, *, lagging: bool = False) -> None:
        """Note source ``uri``'s state as its watcher sees it now (``lagging``: it fell behind once
        more); nothing for a source not registered yet."""
        with self._db:
            self._db.execute("UPDATE sources SET state = ?, lagging = lagging + ?, last_seen = ? WHERE uri = ?",
                             (state, int(lagging), time.time(), uri))

    def mark_error(self, uri: str, reason: str, kind: str = "unknown") -> None:
        """Note that watching ``uri`` failed because of ``reason``. A source never read before is
        registered with ``kind``; one that delivered steps keeps its kind, its events and gaps."""
        now = time.time()
        with self._db:
            self._db.execute("INSERT INTO sources(uri, kind, first_seen, last_seen, error) "
                             "VALUES (?, ?, ?, ?, ?) "
                             "ON CONFLICT(uri) DO UPDATE SET last_seen = excluded.last_seen, error = excluded.error",
                             (uri, kind, now, now, reason))

    def _source_id(self, uri: str) -> int:
        row = self._db.execute("SELECT id FROM sources WHERE uri = ?", (uri,)).fetchone()
        if row is None:
            raise ValueError(f"{self.path}: unknown source {uri!r}; call add_source first")
        return row[0]

    def add_steps(self, uri: str, records) -> None:
        """Store step records of source ``uri`` (``avar.serve.predict.StepRecord``) in one transaction
        and refresh its ``last_seen``; a step already stored at the same time is replaced."""
        if not records:
            return
        source_id, now = self._source_id(uri), time.time()
        with self._db:
            self._db.executemany(
                'INSERT OR REPLACE INTO steps(source_id, "time", "end", predicted, anomaly_score, probabilities, created) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(source_id, r.time, r.end, r.predicted, r.anomaly_score,
                  json.dumps(r.probabilities, allow_nan=False), now) for r in records])
            self._db.execute("UPDATE sources SET last_seen = ? WHERE id = ?", (now, source_id))

    def steps(self, uri: str, *, since: float | None = None, until: float | None = None) -> list[dict]:
        """Stored step records of ``uri`` in time order, ``since <= time < until``, as dicts with
        ``probabilities`` decoded."""
        rows = self._select('SELECT t."time", t."end", t.predicted, t.anomaly_score, t.probabilities FROM steps t '
                            "JOIN sources s ON s.id = t.source_id",
                            (("s.uri = ?", uri), ('t."time" >= ?', since), ('t."time" < ?', until)),
                            't."time"', None, "steps")
        for row in rows:
            row["probabilities"] = json.loads(row["probabilities"])
        return rows

    def record_gap(self, uri: str, start: float, end: float, kind: str = "drop") -> None:
        """Note that source ``uri`` has no records from ``start`` to ``end`` (seconds): ``kind``
        'drop' (the connection was lost) or 'stall' (nothing came for a while) count in the
        source's ``gaps``, 'skipped' (one step not processed, to keep up) in its ``skipped``."""
        if end < start:
            raise ValueError(f"gap of {uri!r} ends ({end}s) before it starts ({start}s)")
        if kind not in GAP_KINDS:
            raise ValueError(f"unknown gap kind {kind!r}; one of {', '.join(GAP_KINDS)}")
        source_id = self._source_id(uri)
        counter = "skipped" if kind == "skipped" else "gaps"
        with self._db:
            self._db.execute('INSERT INTO gaps(source_id, "start", "end", kind) VALUES (?, ?, ?, ?)',
                             (source_id, start, end, kind))
            self._db.execute(f"UPDATE sources SET {counter} = {counter} + 1 WHERE id = ?", (source_id,))

    def gaps(self, uri: str, kind: str | None = None) -> list[tuple[float, float]]:
        """The recorded gaps of ``uri`` (of one ``kind``, or all) as ``(start, end)`` seconds, in time order."""
        sql = 'SELECT "start", "end" FROM gaps WHERE source_id = ?' + ("" if kind is None else " AND kind = ?")
        params = (self._source_id(uri),) + (() if kind is None else (kind,))
        return [tuple(r) for r in self._db.execute(sql + ' ORDER BY "start"', params)]

    def query_gaps(self, *, source: str | None = None, since: float | None = None, until: float | None = None,
                   limit: int | None = None) -> list[dict]:
        """Gaps as dicts ``{"source", "start", "end", "kind"}`` (seconds), by source then time.

        ``source`` keeps one source's (none for an unknown one); ``since``/``until`` keep gaps with
        ``since <= start < until``; ``limit`` keeps the first N.
        """
        return self._select('SELECT s.uri AS source, g."start", g."end", g.kind FROM gaps g '
                            "JOIN sources s ON s.id = g.source_id",
                            (("s.uri = ?", source), ('g."start" >= ?', since), ('g."start" < ?', until)),
                            's.id, g."start"', limit, "gaps")

    def sources(self) -> list[dict]:
        """Every source with its bookkeeping columns; ``error`` is why its latest watch failed, else None;
        ``state`` its watcher's last word (see ``set_state``)."""
        cur = self._db.execute("SELECT id, uri, name, kind, state, first_seen, last_seen, gaps, skipped, lagging, error "
                               "FROM sources ORDER BY id")
        return [dict(zip([d[0] for d in cur.description], row)) for row in cur]

    def add_events(self, events: list[Event]) -> list[int]:
        """Insert events in one transaction; unseen sources are registered with kind ``"unknown"``."""
        now = time.time()
        ids = []
        with self._db:
            for e in events:
                self._db.execute("INSERT INTO sources(uri, kind, first_seen, last_seen) VALUES (?, 'unknown', ?, ?) "
                                 "ON CONFLICT(uri) DO UPDATE SET last_seen = excluded.last_seen", (e.source, now, now))
                cur = self._db.execute(
                    'INSERT INTO events(source_id, "start", "end", label, peak_score, peak_time, thumbnail, created) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self._source_id(e.source), e.start, e.end, e.label, e.peak_score, e.peak_time, e.thumbnail, now))
                ids.append(cur.lastrowid)
        return ids

    def query(self, *, label: str | None = None, source: str | None = None, since: float | None = None,
              until: float | None = None, min_score: float | None = None, limit: int | None = None) -> list[dict]:
        """Events in ``start`` order, as dicts of the events columns plus ``source`` (the uri).

        ``since``/``until`` keep events with ``since <= start < until`` (seconds); ``min_score`` keeps
        ``peak_score >= min_score``; ``limit`` keeps the first N after filtering.
        """
        return self._select('SELECT e.id, s.uri AS source, e."start", e."end", e.label, e.peak_score, e.peak_time, '
                            "e.thumbnail, e.created FROM events e JOIN sources s ON s.id = e.source_id",
                            (("e.label = ?", label), ("s.uri = ?", source), ('e."start" >= ?', since),
                             ('e."start" < ?', until), ("e.peak_score >= ?", min_score)),
                            'e."start", e.id', limit, "events")

    def _select(self, sql: str, filters, order: str, limit: int | None, what: str) -> list[dict]:
        """Rows of ``sql`` as dicts, with the ``(clause, value)`` filters whose value is given."""
        given = [(clause, value) for clause, value in filters if value is not None]
        if given:
            sql += " WHERE " + " AND ".join(clause for clause, _ in given)
        sql += f" ORDER BY {order}"
        params = [value for _, value in given]
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be a positive number of {what}, got {limit}")
            sql += " LIMIT ?"
            params.append(limit)
        cur = self._db.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_jsonl(events: list[Event], path: Path | str) -> Path:
    """Append events to ``path`` as one JSON object per line (the ``Event`` fields)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for e in events:
            f.write(json.dumps(asdict(e), allow_nan=False) + "\n")
    return path
