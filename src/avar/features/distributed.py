"""Feature extraction on a Ray cluster: a dataset's clips over a pool of actors.

Each actor builds its backbones once (``runtime="auto"``: eager PyTorch on a GPU when Ray gave
it one, else the measured fastest CPU runtime), then decodes and extracts one clip per call and
writes the clip's file itself, with the same atomic writer and layout as the local engine. The
driver (this process) owns the manifest and the failures list, so a cache may be begun by one
engine and finished by the other, and a restarted driver resumes from the files on disk.

Failure model: a worker killed mid-clip leaves no clip file (the write is a rename), and the
clip goes back to the queue for another worker, after which the dead actor is replaced; a clip
whose attempt raised or killed its worker twice is listed in the failures with the reason. A
file that cannot be decoded is a failure at once, as locally (decoding it again changes nothing).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from avar.cluster import RayEngine, task_error
from avar.media.clips import ClipEntry
from avar.features.cache import (DISK_FULL, MANIFEST_EVERY, ExtractSummary, cache_settings, check_out_dir,
                                 decode_clip, disk_full_error, disk_full_message, extractor_record, motion_sampling,
                                 open_cache, save_features, write_manifest)
from avar.media.decode import MediaError, check_step

ATTEMPTS = 2
"""Tries a clip gets (the second on another worker) before it is listed as failed."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractorSpec:
    """What a worker needs to build an extractor itself: its name, weights and runtime."""

    name: str
    weights: str | None = None
    runtime: str = "auto"

    def build(self, device: str = "cpu"):
        from avar.features import build_extractor

        return build_extractor(self.name, self.weights, device, runtime=self.runtime)


class ClipWorker:
    """One extraction worker (a Ray actor): its backbones, loaded once, and the cache folder."""

    def __init__(self, video: ExtractorSpec, audio: ExtractorSpec, out_dir: str, step: float, anonymize, threads: int,
                 motion: ExtractorSpec | None = None):
        import ray
        import torch

        torch.set_num_threads(threads)
        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.video, self.audio = video.build(self.device), audio.build(self.device)
        self.motion = None if motion is None else motion.build(self.device)
        self.records = {"video": extractor_record(self.video, video.weights),
                        "audio": extractor_record(self.audio, audio.weights),
                        "motion": None if motion is None else extractor_record(self.motion, None)}
        self.out_dir, self.step = Path(out_dir), step
        self.anonymizer = anonymize.build() if anonymize is not None else None

    def describe(self) -> dict:
        """The extractors' cache records, their runtimes and where this worker runs."""
        return {**self.records, "runtimes": {"video": getattr(self.video, "runtime", "numpy"),
                                             "audio": getattr(self.audio, "runtime", "numpy")},
                "device": self.device, "host": os.uname().nodename, "pid": os.getpid()}

    def extract(self, entry: ClipEntry, source: str) -> dict:
        """Decode ``source`` (``entry``'s file, as an absolute path: a worker's working folder is
        not the driver's), extract it and write its file: ``{"record", "notes", "seconds"}``, or
        ``{"reason"}`` for a file that cannot be decoded, or ``{"disk_full"}``."""
        start = time.perf_counter()
        steps, notes = decode_clip(replace(entry, path=Path(source)), self.step,
                                   getattr(self.video, "input_size", None), self.anonymizer, motion_sampling(self.motion))
        if isinstance(steps, MediaError):
            return {"reason": steps.reason}
        try:
            record = save_features(self.out_dir, entry, steps, self.video, self.audio, self.motion)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                return {"disk_full": exc.filename}
            raise
        return {"record": record, "notes": notes, "seconds": time.perf_counter() - start}


def extract_dataset_ray(
    entries: list[ClipEntry],
    out_dir: Path | str,
    video: ExtractorSpec,
    audio: ExtractorSpec,
    *,
    engine: RayEngine | None = None,
    step: float = 1.0,
    progress: bool = True,
    unlisted: list[dict] | None = None,
    anonymize=None,
    worker: type = ClipWorker,
    motion: ExtractorSpec | None = None,
) -> ExtractSummary:
    """:func:`avar.features.cache.extract_dataset` on a Ray cluster: the same cache, layout and
    summary. ``out_dir`` and every entry's path must be the same folder on every node (a shared
    mount) unless the cluster is this one machine. ``worker`` is the actor class (a subclass
    of :class:`ClipWorker`, e.g. one that sets up logging or metrics on its node)."""
    out_dir = check_out_dir(entries, out_dir)
    step = check_step(step)
    engine = engine or RayEngine()
    ray = engine.connect()
    actor = ray.remote(num_cpus=engine.cpus_per_worker, num_gpus=engine.gpus_per_worker)(worker)
    pool = _Pool(ray, lambda: actor.remote(video, audio, str(out_dir.resolve()), step, anonymize, engine.threads, motion))
    try:
        with disk_full_message(out_dir):
            return _drive(ray, engine, pool, entries, out_dir, step, progress, list(unlisted or []), anonymize)
    finally:
        pool.close()


class _Pool:
    """The driver's view of the actors: starting (their ``describe`` pending), idle, busy."""

    def __init__(self, ray, start):
        self.ray, self.start = ray, start
        self.starting: dict = {}  # describe ref -> actor
        self.idle: list = []
        self.busy: dict = {}  # extract ref -> (actor, entry)
        self.all: list = []

    def add(self, n: int = 1) -> None:
        for _ in range(n):
            actor = self.start()
            self.all.append(actor)
            self.starting[actor.describe.remote()] = actor

    def close(self) -> None:
        for actor in self.all:
            self.ray.kill(actor)


def _drive(ray, engine: RayEngine, pool: _Pool, entries, out_dir: Path, step: float, progress: bool,
           failures: list[dict], anonymize) -> ExtractSummary:
    # The extractors' records (their dims depend on the weights) come from a first worker; the
    # cache is checked against them before any clip is read or written, and the rest of the
    # pool is started for what is left to do.
    pool.add()
    first = _first_description(ray, pool)
    settings = cache_settings(step, first["video"], first["audio"], anonymize, first["motion"])
    records, todo = open_cache(entries, out_dir, settings)
    skipped = len(records)
    pool.add(engine.width(ray, max(1, len(todo))) - 1)
    runtimes = {k: {v} for k, v in first["runtimes"].items()}
    log.info("%d clips to extract, %d already done -> %s (Ray: %d workers)", len(todo), skipped, out_dir,
             len(pool.all))

    queue = deque(todo)
    retry: deque = deque()  # clips to give to a worker other than the one they failed on
    attempts: dict[str, int] = {}
    failed_on: dict[str, object] = {}
    bar = tqdm(total=len(todo), desc="extract", unit="clip", disable=not progress)
    finished = 0

    def save():
        write_manifest(out_dir, settings, {k: ", ".join(sorted(v)) for k, v in runtimes.items()}, entries, records,
                       failures)

    while queue or retry or pool.busy:
        for actor in list(pool.idle):
            entry = _next_clip(queue, retry, failed_on, actor, alone=len(pool.all) == 1)
            if entry is None:
                continue
            pool.idle.remove(actor)
            pool.busy[actor.extract.remote(entry, str(entry.path.absolute()))] = (actor, entry)
        if not pool.busy and not pool.starting:
            raise RuntimeError("no Ray worker is left to extract the remaining clips; run the same command again "
                               "to resume")
        (ref,), _ = ray.wait([*pool.busy, *pool.starting], num_returns=1)
        if ref in pool.starting:
            actor = pool.starting.pop(ref)
            description = _described(ray, ref)
            if {k: description[k] for k in ("video", "audio", "motion")} != {k: first[k] for k in ("video", "audio", "motion")}:
                raise RuntimeError(f"Ray worker on {description['host']} built other extractors ({description}) "
                                   f"than the first ({first}); give every node the same weights")
            for k, v in description["runtimes"].items():
                runtimes[k].add(v)
            pool.idle.append(actor)
            continue
        actor, entry = pool.busy.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as exc:
            reason = task_error(ray, exc)
            attempts[entry.clip_id] = attempts.get(entry.clip_id, 0) + 1
            if isinstance(exc, ray.exceptions.RayActorError):
                log.warning("%s: worker died on this clip; starting another", entry.path)
                pool.all.remove(actor)
                ray.kill(actor)  # an actor only unreachable for now must not hold its resources
                pool.add()
            else:
                pool.idle.append(actor)
            if attempts[entry.clip_id] < ATTEMPTS:
                log.warning("%s: %s; trying again on another worker", entry.path, reason)
                failed_on[entry.clip_id] = actor
                retry.append(entry)
                continue
            result = {"reason": f"failed {ATTEMPTS} times, last: {reason}"}
        else:
            pool.idle.append(actor)
        if "disk_full" in result:
            raise disk_full_error(out_dir, result["disk_full"])
        if "reason" in result:
            failures.append({"path": str(entry.path), "reason": result["reason"]})
            log.error("%s: %s", entry.path, result["reason"])
        else:
            for note in result["notes"]:
                log.warning("%s", note)
            records[entry.clip_id] = result["record"]
        finished += 1
        bar.update(1)
        if finished % MANIFEST_EVERY == 0:
            save()
    bar.close()
    save()
    return ExtractSummary(out_dir, done=len(records) - skipped, skipped=skipped, failures=failures)


def _described(ray, ref) -> dict:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        raise RuntimeError(f"a Ray worker could not load the extractors: {task_error(ray, exc)}") from None


def _first_description(ray, pool: _Pool) -> dict:
    (ref,), _ = ray.wait(list(pool.starting), num_returns=1)
    description = _described(ray, ref)
    pool.idle.append(pool.starting.pop(ref))
    log.info("first Ray worker up on %s (%s; runtimes %s)", description["host"], description["device"],
             description["runtimes"])
    return description


def _next_clip(queue: deque, retry: deque, failed_on: dict, actor, *, alone: bool) -> ClipEntry | None:
    """The clip ``actor`` takes next: a retried clip that failed elsewhere first, else the queue's head."""
    for entry in retry:
        if alone or failed_on.get(entry.clip_id) is not actor:
            retry.remove(entry)
            return entry
    return queue.popleft() if queue else None
