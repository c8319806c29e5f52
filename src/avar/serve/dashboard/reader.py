"""Read-only queries the dashboard makes against an event store (:mod:`avar.serve.store`).

Every call opens its own short-lived connection with ``query_only`` set: the store is in WAL
mode, so these readers never block a watcher writing to it, and a reader never holds a
transaction open between requests.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

MAX_STEP = 60.0
"""Longest step (seconds) the time-window queries allow for."""
LIVE_SECONDS = 30.0
"""A source that wrote a step or event this recently (wall clock) is shown as live."""
MAX_ID = 2**63 - 1
"""The largest integer SQLite stores: no id can be larger (binding one raises OverflowError)."""


def fits(value: int) -> bool:
    """Whether ``value`` can be an id in the store (any other names no row)."""
    return 0 <= value <= MAX_ID


@dataclass(frozen=True)
class EventFilter:
    """The events list's filters; ``None`` keeps everything. ``since``/``until`` are Unix
    seconds on the wall clock (when the event was recorded), ``after`` an event id."""

    label: str | None = None
    source: int | None = None
    since: float | None = None
    until: float | None = None
    min_score: float | None = None
    after: int | None = None

    def where(self) -> tuple[str, list]:
        clauses = (("e.label = ?", self.label), ("e.source_id = ?", self.source), ("e.created >= ?", self.since),
                   ("e.created < ?", self.until), ("e.peak_score >= ?", self.min_score), ("e.id > ?", self.after))
        given = [(c, v) for c, v in clauses if v is not None]
        return (" WHERE " + " AND ".join(c for c, _ in given) if given else ""), [v for _, v in given]


_EVENT_COLUMNS = ('e.id, e.source_id, s.uri AS source, e."start", e."end", e.label, e.peak_score, e.peak_time, '
                  "e.thumbnail IS NOT NULL AS has_thumbnail, e.created")


class StoreReader:
    """Queries over one event store file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def _rows(self, sql: str, params=()) -> list[dict]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.execute("PRAGMA query_only = ON")
            cur = db.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur]
        finally:
            db.close()

    def events(self, filters: EventFilter, *, limit: int, offset: int = 0, newest_first: bool = True) -> list[dict]:
        """A page of events matching ``filters``: newest first for the list, oldest first
        (``newest_first=False``) for a poller reading everything after an id."""
        where, params = filters.where()
        order = "DESC" if newest_first else "ASC"
        return self._rows(f"SELECT {_EVENT_COLUMNS} FROM events e JOIN sources s ON s.id = e.source_id{where} "
                          f"ORDER BY e.id {order} LIMIT ? OFFSET ?", [*params, limit, offset])

    def count(self, filters: EventFilter) -> int:
        where, params = filters.where()
        return self._rows(f"SELECT count(*) AS n FROM events e{where}", params)[0]["n"]

    def event(self, event_id: int) -> dict | None:
        if not fits(event_id):
            return None
        rows = self._rows(f"SELECT {_EVENT_COLUMNS}, e.thumbnail AS thumbnail_path FROM events e "
                          "JOIN sources s ON s.id = e.source_id WHERE e.id = ?", (event_id,))
        return rows[0] if rows else None

    def labels(self) -> list[str]:
        return [r["label"] for r in self._rows("SELECT DISTINCT label FROM events ORDER BY label")]

    def sources(self, source_id: int | None = None) -> list[dict]:
        """Every source (or the one with ``source_id``) with its event count, how far it was
        watched and its state: 'error' (its latest watch failed), 'live' / 'idle' (a stream that
        wrote in the last ``LIVE_SECONDS`` or not), 'reading' / 'done' (the same for a file), or
        while it is recent what its watcher said last when it was 'lagging', 'stalled' or
        'reconnecting'."""
        if source_id is not None and not fits(source_id):
            return []
        rows = self._rows(
            "SELECT s.id, s.uri, s.name, s.kind, s.state AS watcher_state, s.first_seen, s.last_seen, s.gaps, "
            "s.skipped, s.lagging, s.error, "
            "(SELECT count(*) FROM events e WHERE e.source_id = s.id) AS events, "
            '(SELECT max(t."end") FROM steps t WHERE t.source_id = s.id) AS watched_to '
            "FROM sources s" + ("" if source_id is None else " WHERE s.id = ?") + " ORDER BY s.id",
            () if source_id is None else (source_id,))
        now = time.time()
        for r in rows:
            recent = r["last_seen"] is not None and now - r["last_seen"] < LIVE_SECONDS
            stream = r["kind"] == "stream"
            r["state"] = "error" if r["error"] else ("live" if stream else "reading") if recent else \
                "idle" if stream else "done"
            if recent and not r["error"] and r["watcher_state"] in ("lagging", "stalled", "reconnecting"):
                r["state"] = r["watcher_state"]
        return rows

    def source(self, source_id: int) -> dict | None:
        rows = self.sources(source_id)
        return rows[0] if rows else None

    def steps(self, source_id: int, *, after: float | None = None, since: float | None = None,
              until: float | None = None) -> list[dict]:
        """Stored steps of a source in time order: ``time > after``, and overlapping
        ``[since, until)`` (seconds on the source's timeline), where given."""
        if not fits(source_id):
            return []
        sql = 'SELECT "time", "end", predicted, anomaly_score, probabilities FROM steps WHERE source_id = ?'
        params: list = [source_id]
        # "time" bounds use the primary key, so a camera's month of steps is not scanned for an
        # hour; a step is never longer than MAX_STEP seconds.
        for clause, value in (('"time" > ?', after), ('"time" > ?', None if since is None else since - MAX_STEP),
                              ('"end" > ?', since), ('"time" < ?', until)):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        rows = self._rows(sql + ' ORDER BY "time"', params)
        for r in rows:
            r["probabilities"] = json.loads(r["probabilities"])
        return rows

    def gaps(self, source_id: int) -> list[dict]:
        return self._rows('SELECT "start", "end", kind FROM gaps WHERE source_id = ? ORDER BY "start"', (source_id,))

    def last_event_id(self) -> int:
        return self._rows("SELECT coalesce(max(id), 0) AS n FROM events")[0]["n"]
