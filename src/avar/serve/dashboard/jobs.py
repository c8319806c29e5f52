"""'Analyse a file': uploads checked before use, then run through a trained run in the background.

An upload is written to a temporary name in the uploads folder, size-limited while it
arrives, and checked by decoding its first step (:func:`avar.media.decode.probe`) before it
gets its final name; anything that fails leaves no file behind. A job watches the file with
the chosen run (one job at a time, in a worker thread) and writes the source, its steps and
its events to the store only once the whole file has been read, so a file that turns out to
be damaged half way leaves nothing in the store either. Uploads the server did not analyse
before it stopped (queued, or cut off by a kill) are removed, not analysed later: when it
stops and, for what a kill left, when the next one starts (the user uploads them again).
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from avar.files import safe_file_name
from avar.media.decode import MEDIA_EXTENSIONS, MediaError, probe

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
UPLOAD_NAME = re.compile(r"(\.[0-9a-f]{12}\.part|[0-9a-f]{12}-.*)")
"""The names this module gives uploaded files: ``.JOB.part`` while arriving, ``JOB-NAME.EXT`` after."""


class UploadError(ValueError):
    """An upload that was refused; the message says why and what to do. ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """One uploaded file being analysed. ``progress`` is the fraction of the file read (0-1)."""

    id: str
    name: str
    """The file name the user gave (shown, never used as a path)."""
    run: str
    path: Path
    duration: float
    state: str = "queued"
    """'queued', 'running', 'done' or 'failed'."""
    progress: float = 0.0
    error: str | None = None
    source_id: int | None = None
    events: int = 0

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "run": self.run, "state": self.state,
                "progress": round(self.progress, 4), "error": self.error, "source_id": self.source_id,
                "events": self.events, "duration": self.duration}


def _shown(exc: Exception, path: Path, name: str) -> str:
    """Why an upload failed, as its user may read it: the server's path to the file replaced by
    the name they gave, and for a file that failed part way the decoder's reason alone (a watch
    keeps what decoded before it; an upload keeps nothing)."""
    if isinstance(exc, MediaError) and isinstance(exc.__cause__, MediaError):
        exc = exc.__cause__
    reason = exc.reason if isinstance(exc, MediaError) else str(exc)
    for shown in (str(path), path.name):
        reason = reason.replace(shown, name)
    return reason


def list_runs(folder: Path | None) -> dict[str, Path]:
    """Run directories a user may pick by name: ``folder`` itself if it is a run, else its
    subfolders that hold a run (a ``config.json`` with weights next to it)."""
    if folder is None or not folder.is_dir():
        return {}
    candidates = [folder] if (folder / "config.json").is_file() else sorted(p for p in folder.iterdir() if p.is_dir())
    return {p.name: p for p in candidates
            if (p / "config.json").is_file() and any(p.glob("*.safetensors"))}


class Uploads:
    """Receives uploads into ``folder`` and analyses them with runs from ``runs``, writing to the store ``db``."""

    def __init__(self, folder: Path, db: Path, thumbnails: Path, runs: Path | None, max_bytes: int):
        self.folder, self.db, self.thumbnails, self.runs_dir, self.max_bytes = folder, db, thumbnails, runs, max_bytes
        self.jobs: dict[str, Job] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avar-analyse")
        self.sweep()

    def sweep(self) -> list[Path]:
        """Delete the uploads a stopped server left unanalysed (queued, running or still arriving
        when it stopped): files with this module's names that no source in the store names.
        Returns them. (One dashboard per uploads folder.)"""
        from avar.serve.store import EventStore

        if not self.folder.is_dir():
            return []
        with EventStore(self.db) as store:
            kept = {s["uri"] for s in store.sources()}
        left = [p for p in self.folder.iterdir()
                if UPLOAD_NAME.fullmatch(p.name) and p.is_file() and str(p.resolve()) not in kept]
        for path in left:
            log.warning("%s: an upload the dashboard stopped before analysing; removed (upload it again)", path.name)
            path.unlink(missing_ok=True)
        return left

    def runs(self) -> dict[str, Path]:
        return list_runs(self.runs_dir)

    def start(self, name: str, run: str) -> tuple[str, Path, Path]:
        """Check an upload's name and run before any byte is stored; returns (job id, temporary
        path, final path)."""
        runs = self.runs()
        if run not in runs:
            choices = ", ".join(runs) or "none: start avar serve with --runs DIR"
            raise UploadError(f"unknown run {run!r}; choose one of: {choices}")
        suffix = Path(name).suffix.lower()
        if suffix not in MEDIA_EXTENSIONS:
            raise UploadError(f"{name!r} is not a media file avar reads (extensions: "
                              f"{', '.join(sorted(MEDIA_EXTENSIONS))}); pick a video or sound file", 415)
        self.folder.mkdir(parents=True, exist_ok=True)
        job_id = uuid.uuid4().hex[:12]
        final = self.folder / f"{job_id}-{safe_file_name(Path(name).stem)[:80]}{suffix}"
        return job_id, self.folder / f".{job_id}{PART_SUFFIX}", final

    def accept(self, job_id: str, part: Path, final: Path, name: str, run: str) -> Job:
        """Check a fully received upload by decoding it; then name it and queue its analysis.
        (The caller deletes ``part`` when this raises.)"""
        try:
            duration = probe(part)
        except MediaError as exc:
            raise UploadError(f"{name!r} could not be read as media: {_shown(exc, part, name)}. Nothing was kept; "
                              "upload a playable video or sound file") from None
        part.replace(final)
        job = Job(id=job_id, name=name, run=run, path=final.resolve(), duration=duration)
        self.jobs[job.id] = job
        self._executor.submit(self._analyse, job)
        return job

    def _analyse(self, job: Job) -> None:
        from avar.runs import load_run
        from avar.serve.store import EventStore
        from avar.serve.watch import Watcher

        job.state = "running"
        thumbnails = self.thumbnails / f"upload-{job.id}"
        try:
            watcher = Watcher(load_run(self.runs()[job.run]), thumbnails=thumbnails)
            records = []
            for record in watcher.watch(job.path):
                records.append(record)
                job.progress = min(1.0, record.end / job.duration) if job.duration else 0.0
            end = records[-1].end if records else 0.0
            if job.duration and end < job.duration - max(1.0, 0.05 * job.duration):
                raise MediaError(job.path, f"the media ends at {end:g} s of the {job.duration:g} s its header declares; "
                                           "the file is truncated")
            uri = str(job.path)
            with EventStore(self.db) as store:
                job.source_id = store.add_source(uri, "upload")
                store.add_steps(uri, records)
                store.add_events(watcher.events)
            job.events, job.progress, job.state = len(watcher.events), 1.0, "done"
            log.info("%s: analysed with %s: %d steps, %d events", job.name, job.run, len(records), job.events)
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported in the page, not raised
            reason = _shown(exc, job.path, job.name)
            log.warning("%s: analysis failed: %s", job.name, reason)
            job.state, job.error = "failed", f"{job.name}: {reason}. Nothing was stored; check the file and upload it again"
            job.path.unlink(missing_ok=True)
            shutil.rmtree(thumbnails, ignore_errors=True)

    def close(self) -> None:
        """Stop taking jobs: queued ones are dropped with their files (the one running ends first)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        for job in self.jobs.values():
            if job.state == "queued":
                job.path.unlink(missing_ok=True)
                job.state, job.error = "failed", f"{job.name}: the dashboard stopped before analysing it; upload it again"

