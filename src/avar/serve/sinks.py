"""Where a watch's results go: the event store, events as JSON lines, event thumbnails, and the
list of events closed so far. The engine hands them what it decided; they know nothing of it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from avar.serve.events import Event, save_thumbnail, thumbnail_path
from avar.serve.predict import StepRecord
from avar.serve.sources import source_kind
from avar.serve.store import EventStore, write_jsonl

log = logging.getLogger(__name__)


class Sinks:
    """``store`` (an :class:`~avar.serve.store.EventStore`), ``jsonl`` (a file events are
    appended to), ``thumbnails`` (a folder for a JPEG of each event's peak): each optional, and
    a method does nothing for one that is not set. ``events`` keeps every event closed."""

    def __init__(self, store: EventStore | None = None, jsonl: Path | None = None, thumbnails: Path | None = None):
        self.store, self.jsonl, self.thumbnails = store, jsonl, thumbnails
        self.events: list[Event] = []

    def source(self, uri: str, kind: str, name: str | None) -> None:
        if self.store is not None:
            self.store.add_source(uri, kind, name=name)

    def state(self, uri: str, state: str, *, lagging: bool = False) -> None:
        if self.store is not None:
            self.store.set_state(uri, state, lagging=lagging)

    def gap(self, uri: str, start: float, end: float, kind: str) -> None:
        if self.store is not None:
            self.store.record_gap(uri, start, end, kind)

    def steps(self, uri: str, records: list[StepRecord]) -> None:
        """A batch of records, stored in one transaction."""
        if self.store is not None and records:
            self.store.add_steps(uri, records)

    def failed(self, uri: str, reason: str) -> None:
        if self.store is not None:
            self.store.mark_error(uri, reason, source_kind(uri))

    def closed(self, events: list[Event], frames: dict[float, np.ndarray]) -> None:
        """Events that closed; ``frames`` (step time -> RGB frame) the recent frames, for thumbnails."""
        if not events:
            return
        if self.thumbnails is not None:
            for e in events:
                if e.peak_time in frames:
                    try:
                        path = thumbnail_path(self.thumbnails, e.source, e.start, e.label)
                    except ValueError as exc:
                        log.warning("%s: no thumbnail for the event at %g s: %s", e.source, e.start, exc)
                        continue
                    # absolute, so a dashboard started elsewhere finds it
                    e.thumbnail = str(Path(save_thumbnail(frames[e.peak_time], path)).resolve())
        if self.store is not None:
            self.store.add_events(events)
        if self.jsonl is not None:
            write_jsonl(events, self.jsonl)
        self.events.extend(events)
