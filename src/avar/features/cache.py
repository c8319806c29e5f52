"""The feature cache: one safetensors file per clip plus a JSON manifest.

Decoding and backbones are the expensive part of avar, so they run once here; heads,
ablations and evaluations read the cache. Every file is written to a temporary name and
renamed into place, so a killed run leaves either a whole clip file or none, and a rerun
skips the clips already done.

Layout::

    FEATURES_DIR/manifest.json      settings + one entry per finished clip
    FEATURES_DIR/clips/<id>.safetensors   video [T, dv], audio [T, da], times [T] (seconds),
                                          motion [T, dm] where the cache has a motion stream
    FEATURES_DIR/failures.json      files that could not be decoded, with the reason
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save
from tqdm import tqdm

from avar.media.clips import ClipEntry, clip_path_of
from avar.features.base import Extractor
from avar.files import safe_file_name, write_atomic, write_json_atomic
from avar.media.decode import ClipSteps, MediaError, check_step, decode_steps, resize_rgb

MANIFEST = "manifest.json"
FAILURES = "failures.json"
BATCH = 32
MANIFEST_EVERY = 20
"""Clips between manifest writes (a killed run loses none: the clip files are the truth)."""

log = logging.getLogger(__name__)


@dataclass
class StepFeatures:
    """Cached features of one clip: ``video [T, dv]`` (appearance), ``audio [T, da]`` float32,
    ``times [T]`` s, and ``motion [T, dm]`` where the cache has a motion stream."""

    clip_id: str
    label: str
    split: str
    video: np.ndarray
    audio: np.ndarray
    times: np.ndarray
    audio_missing: bool = False
    video_missing: bool = False
    group: str | None = None
    """The recording the clip was cut from, where its dataset says (``ClipEntry.group``)."""
    motion: np.ndarray | None = None

    def visual(self, motion: bool) -> np.ndarray:
        """The visual side a run reads: appearance, with the motion stream's columns after it
        when ``motion`` is asked for (:func:`visual_side`)."""
        return visual_side(self.video, self.motion if motion else None)


def visual_side(video: np.ndarray, motion: np.ndarray | None) -> np.ndarray:
    """``[T, dv + dm]``: appearance then motion, the visual input of a run that reads motion
    (the heads split it again, :class:`avar.methods.streams.StreamFusion`); ``video`` alone
    when ``motion`` is None."""
    return video if motion is None else np.hstack([video, motion]).astype(np.float32)


def visual_clips(clips: list[StepFeatures], motion: bool) -> list[StepFeatures]:
    """``clips`` with their video the visual side (appearance, then motion where ``motion``) and
    their own motion dropped: what a run reads from a cache."""
    return [replace(c, video=c.visual(motion), motion=None) for c in clips]


@dataclass
class ExtractSummary:
    out_dir: Path
    done: int
    skipped: int
    failures: list[dict] = field(default_factory=list)


def extractor_record(extractor: Extractor, weights: str | None) -> dict:
    return {"name": extractor.name, "version": extractor.version, "dim": int(extractor.dim), "weights": weights}


def features_from_steps(steps: ClipSteps, video: Extractor, audio: Extractor, motion: Extractor | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run the backbones over every step of a clip, in batches: ``[T, dv]``, ``[T, da]`` and,
    with a ``motion`` extractor (the steps decoded with its ``sampling``), ``[T, dm]``."""

    def batched(extractor, data):
        return np.concatenate([extractor(data[i : i + BATCH]) for i in range(0, len(data), BATCH)]).astype(np.float32)

    if motion is not None and steps.motion is None:
        raise ValueError(f"{steps.path}: decoded without motion pairs; decode with the motion extractor's sampling")
    m = None if motion is None else batched(motion, steps.motion)
    return batched(video, steps.frames), batched(audio, steps.audio), m


NAME_BYTES = 200
"""Longest clip id used as a file name as it is; longer ones are shortened with a digest."""


def _clip_file(out_dir: Path, clip_id: str) -> Path:
    """Where a clip's features live: always a plain file name inside ``out_dir/clips``, whatever
    the id holds (ids come from data: a hostile one must not name a path elsewhere)."""
    name = clip_id
    if (not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0")
            or len(name.encode()) > NAME_BYTES):
        name = f"{safe_file_name(clip_id, 80)}-{hashlib.sha256(clip_id.encode()).hexdigest()[:16]}"
    return out_dir / "clips" / f"{name}.safetensors"


def _legacy_clip_file(out_dir: Path, clip_id: str) -> Path | None:
    """Where caches made before ids kept the extension stored this clip (parts joined, no
    extension), so a resumed old cache keeps its finished clips."""
    try:
        relative = clip_path_of(clip_id)
    except ValueError:
        return None
    old = "__".join(relative.with_suffix("").parts)
    return _clip_file(out_dir, old) if old and old != clip_id else None


def _clip_record(entry: ClipEntry, steps: ClipSteps) -> dict:
    return {
        "clip_id": entry.clip_id,
        "path": str(entry.path),
        "label": entry.label,
        "split": entry.split,
        "group": entry.group,
        "n_steps": steps.n_steps,
        "duration": steps.duration,
        "audio_missing": steps.audio_missing,
        "video_missing": steps.video_missing,
        "audio_partial": steps.audio_partial,
    }


def _save_clip(path: Path, record: dict, video: np.ndarray, audio: np.ndarray, times: np.ndarray,
               motion: np.ndarray | None = None) -> dict:
    arrays = {"video": np.ascontiguousarray(video, np.float32), "audio": np.ascontiguousarray(audio, np.float32),
              "times": np.ascontiguousarray(times, np.float64)}
    if motion is not None:
        arrays["motion"] = np.ascontiguousarray(motion, np.float32)
    write_atomic(path, save(arrays, metadata={"record": json.dumps(record)}))
    return record


def _adopt_legacy(out_dir: Path, entry: ClipEntry, path: Path) -> dict | None:
    """Move this entry's clip file from its pre-extension name to ``path``; its record, or None."""
    legacy = _legacy_clip_file(out_dir, entry.clip_id)
    record = _read_record(legacy) if legacy is not None and legacy.is_file() else None
    if record is None or record.get("path") != str(entry.path):
        return None
    arrays = load_file(str(legacy))
    record = _save_clip(path, {**record, "clip_id": entry.clip_id}, arrays["video"], arrays["audio"], arrays["times"],
                        arrays.get("motion"))
    legacy.unlink()
    return record


def _read_record(path: Path) -> dict | None:
    """The record stored in a finished clip file, or None if the file is unreadable."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return json.loads(handle.metadata()["record"])
    except Exception:  # a damaged file is simply extracted again
        return None


def extract_dataset(
    entries: list[ClipEntry],
    out_dir: Path | str,
    video: Extractor,
    audio: Extractor,
    *,
    step: float = 1.0,
    video_weights: str | None = None,
    audio_weights: str | None = None,
    progress: bool = True,
    unlisted: list[dict] | None = None,
    anonymize=None,
    motion: Extractor | None = None,
) -> ExtractSummary:
    """Extract and cache features for ``entries``; resumes, and survives bad files.

    Every entry ends up extracted, already done or in ``failures`` (with ``unlisted``: what
    listing the dataset could not use, from :func:`avar.datasets.folders.scan`). A full disk
    stops the run with one error; the clips finished before it are kept. ``anonymize`` (an
    ``avar.anonymize.cover.AnonymizeConfig``) covers faces and plates in every step's frame, at
    the source's resolution, before the backbone sees it. The same cache is written, to the
    same layout, by :func:`avar.features.distributed.extract_dataset_ray` on a Ray cluster;
    either resumes what the other began. ``motion`` (a motion extractor, e.g. ``flow-hist``)
    adds a motion stream from frame pairs kept in the same decoding pass.
    """
    out_dir = check_out_dir(entries, out_dir)
    step = check_step(step)
    with disk_full_message(out_dir):
        return _extract(entries, out_dir, video, audio, step, video_weights, audio_weights, progress, unlisted or [],
                        anonymize, motion)


def check_out_dir(entries: list[ClipEntry], out_dir: Path | str) -> Path:
    """``out_dir`` as a Path, once it is known to be a usable folder and the clip ids unique."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --out is an existing file; give a directory for the feature cache")
    first: dict[str, ClipEntry] = {}
    for entry in entries:
        other = first.setdefault(entry.clip_id, entry)
        if other is not entry:
            raise ValueError(f"{other.path} and {entry.path} get the same clip id {entry.clip_id!r}; rename one")
    return out_dir


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(out_dir: Path, filename: str | None) -> RuntimeError:
    return RuntimeError(f"{out_dir}: disk full while writing {filename or 'the cache'}; free some space "
                        "and run the same command again (finished clips are kept)")


@contextmanager
def disk_full_message(out_dir: Path):
    """A full disk becomes one error naming the cache and the fix; other errors pass."""
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(out_dir, exc.filename) from None
        raise


def cache_settings(step: float, video: dict, audio: dict, anonymize, motion: dict | None = None) -> dict:
    """What makes two caches' features comparable: a cache holds features of one setting only.
    ``video`` / ``audio`` / ``motion`` are :func:`extractor_record` dicts (``motion`` None: no
    motion stream, as in caches made before it existed)."""
    # Anonymised features differ from raw ones: a cache is one or the other.
    return {"step": step, "video": video, "audio": audio, "motion": motion,
            "anonymize": asdict(anonymize) if anonymize is not None else None}


def open_cache(entries: list[ClipEntry], out_dir: Path, settings: dict) -> tuple[dict[str, dict], list[ClipEntry]]:
    """Check ``out_dir`` was made with ``settings`` (or is new), create it, and read what is
    done: the records of finished clips by id, and the entries still to extract."""
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in settings} != settings:
            raise ValueError(
                f"{out_dir} holds features made with other settings "
                f"({ {k: old.get(k) for k in settings} }); pass a new --out directory"
                + (" (or --motion none to resume a cache made without a motion stream)"
                   if settings.get("motion") and not old.get("motion") else "")
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    todo = []
    for entry in entries:
        path = _clip_file(out_dir, entry.clip_id)
        record = _read_record(path) if path.is_file() else _adopt_legacy(out_dir, entry, path)
        if record is not None:
            record.update(label=entry.label, split=entry.split, group=entry.group)
            records[entry.clip_id] = record
        else:
            todo.append(entry)
    return records, todo


def write_manifest(out_dir: Path, settings: dict, runtimes: dict, entries: list[ClipEntry], records: dict[str, dict],
                   failures: list[dict]) -> None:
    """The manifest (settings, the runtimes, one record per finished clip in ``entries``' order)
    and the failures list; written only by the process that drives the extraction."""
    ordered = [records[e.clip_id] for e in entries if e.clip_id in records]
    # The runtime is recorded but not part of the settings: every runtime's features match
    # eager fp32 (cosine >= 0.999), so a cache may be resumed under another one.
    write_json_atomic(out_dir / MANIFEST, {**settings, "runtimes": runtimes, "clips": ordered})
    write_json_atomic(out_dir / FAILURES, failures)


def decode_clip(entry: ClipEntry, step: float, size: tuple[int, int] | None, anonymizer=None, motion=None
                ) -> tuple[ClipSteps | MediaError, list[str]]:
    """One clip's steps, frames resized to ``size`` (the video backbone's input), with the frame
    pairs ``motion`` (a ``MotionSampling``) asks for, and the decoder's warnings; a file that
    cannot be decoded gives its ``MediaError`` instead. Anonymisation covers the appearance
    frames; the motion pairs (small, gray, never stored) are not covered."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            steps = decode_steps(entry.path, step, None if anonymizer else size, motion)
        if anonymizer is not None:
            steps.frames = np.stack([resize_rgb(anonymizer.frame(f), size) for f in steps.frames])
        return steps, [str(w.message) for w in caught]
    except MediaError as exc:
        return exc, []


def save_features(out_dir: Path, entry: ClipEntry, steps: ClipSteps, video: Extractor, audio: Extractor,
                  motion: Extractor | None = None) -> dict:
    """Run the backbones over a decoded clip and write its cache file (atomically); its record."""
    v, a, m = features_from_steps(steps, video, audio, motion)
    return _save_clip(_clip_file(out_dir, entry.clip_id), _clip_record(entry, steps), v, a, steps.times, m)


def runtimes_of(video: Extractor, audio: Extractor) -> dict:
    return {"video": getattr(video, "runtime", "numpy"), "audio": getattr(audio, "runtime", "numpy")}


def motion_sampling(motion: Extractor | None):
    """The frame pairs the decoder must keep for ``motion`` (None: no motion stream)."""
    return None if motion is None else motion.sampling


def _extract(entries, out_dir: Path, video, audio, step: float, video_weights, audio_weights, progress: bool,
             unlisted: list[dict], anonymize, motion) -> ExtractSummary:
    settings = cache_settings(step, extractor_record(video, video_weights), extractor_record(audio, audio_weights),
                              anonymize, None if motion is None else extractor_record(motion, None))
    anonymizer = anonymize.build() if anonymize is not None else None
    records, todo = open_cache(entries, out_dir, settings)
    skipped = len(records)
    failures: list[dict] = list(unlisted)
    size = getattr(video, "input_size", None)

    def save():
        write_manifest(out_dir, settings, runtimes_of(video, audio), entries, records, failures)

    # Decode the next clip in a thread while the backbones run on this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        sampling = motion_sampling(motion)
        pending = [pool.submit(decode_clip, e, step, size, anonymizer, sampling) for e in todo[:2]]
        log.info("%d clips to extract, %d already done -> %s", len(todo), skipped, out_dir)
        bar = tqdm(total=len(todo), desc="extract", unit="clip", disable=not progress)
        for i, entry in enumerate(todo):
            result, notes = pending[i].result()
            if i + 2 < len(todo):
                pending.append(pool.submit(decode_clip, todo[i + 2], step, size, anonymizer, sampling))
            pending[i] = None
            if isinstance(result, MediaError):
                failures.append({"path": str(entry.path), "reason": result.reason})
                log.error("%s: %s", entry.path, result.reason)
            else:
                for note in notes:
                    log.warning("%s", note)
                records[entry.clip_id] = save_features(out_dir, entry, result, video, audio, motion)
            bar.update(1)
            if i % MANIFEST_EVERY == MANIFEST_EVERY - 1:
                save()
        bar.close()
    save()
    return ExtractSummary(out_dir, done=len(records) - skipped, skipped=skipped, failures=failures)


@dataclass
class FeatureSet:
    """A read view of a feature cache."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: Path | str) -> "FeatureSet":
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{root}: no {MANIFEST}; create the cache with `avar extract DATA_DIR --out {root}`"
            )
        return cls(root, json.loads(path.read_text()))

    @classmethod
    def create(cls, root: Path | str, clips: Iterable[StepFeatures], *, video: dict, audio: dict, step: float = 1.0,
               records: dict[str, dict] | None = None, motion: dict | None = None) -> "FeatureSet":
        """A cache from features computed elsewhere (e.g. a dataset's published features).

        ``video`` / ``audio`` (and ``motion``, where the clips carry it) describe the extractors:
        ``{"name", "version", "dim"}``.
        ``clips`` may be a generator, so a large dataset never sits in memory at once.
        ``records`` adds JSON fields to a clip's manifest entry by clip id (e.g. its
        frame-level ground truth, ``{"truth": {...}}``).
        """
        root = Path(root)
        records_out = []
        for clip in clips:
            record = {
                "clip_id": clip.clip_id, "path": "", "label": clip.label, "split": clip.split, "group": clip.group,
                "n_steps": len(clip.times), "duration": float(len(clip.times) * step),
                "audio_missing": clip.audio_missing, "video_missing": clip.video_missing,
                **(records or {}).get(clip.clip_id, {}),
            }
            records_out.append(_save_clip(_clip_file(root, clip.clip_id), record, clip.video, clip.audio, clip.times,
                                          clip.motion if motion is not None else None))
        manifest = {"step": step, "video": {"weights": None, **video}, "audio": {"weights": None, **audio},
                    "motion": None if motion is None else {"weights": None, **motion}, "clips": records_out}
        write_json_atomic(root / MANIFEST, manifest)
        return cls(root, manifest)

    @property
    def clips(self) -> list[dict]:
        return self.manifest["clips"]

    @property
    def has_motion(self) -> bool:
        """Whether the cache holds a motion stream (``manifest['motion']``)."""
        return bool(self.manifest.get("motion"))

    @property
    def classes(self) -> list[str]:
        """Class names, sorted, with ``normal`` first when present (it anchors the anomaly score)."""
        labels = sorted({c["label"] for c in self.clips})
        return sorted(labels, key=lambda name: (name != "normal", name))

    def load(self, clip: dict) -> StepFeatures:
        """One clip's cached features; a missing or damaged entry is a ``ValueError`` naming its
        file and the fix (``avar extract`` extracts unreadable entries again)."""
        path = _clip_file(self.root, clip["clip_id"])
        fix = (f"re-run `avar extract` on the same data with --out {self.root} (it extracts missing and damaged "
               "entries again)")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the feature cache; {fix}")
        try:
            arrays = load_file(str(path))
        except Exception as exc:  # the parser's errors on damaged bytes have no common base
            raise ValueError(f"{path}: damaged feature cache entry ({' '.join(str(exc).split())[:200]}); {fix}") from None
        video, audio, times, motion = (arrays.get(k) for k in ("video", "audio", "times", "motion"))
        if (video is None or audio is None or times is None or video.ndim != 2 or audio.ndim != 2 or times.ndim != 1
                or not len(video) == len(audio) == len(times)):
            raise ValueError(f"{path}: not a feature cache entry (video [T, dv], audio [T, da], times [T]); {fix}")
        if self.has_motion and (motion is None or motion.ndim != 2 or len(motion) != len(times)):
            raise ValueError(f"{path}: lacks the motion stream [T, dm] its cache's manifest names; {fix}")
        return StepFeatures(
            clip_id=clip["clip_id"],
            label=clip["label"],
            split=clip["split"],
            video=video,
            audio=audio,
            times=times,
            audio_missing=clip.get("audio_missing", False),
            video_missing=clip.get("video_missing", False),
            group=clip.get("group"),
            motion=motion if self.has_motion else None,
        )

    def split(self, name: str) -> list[StepFeatures]:
        return [self.load(c) for c in self.clips if c["split"] == name]


def summary_dict(summary: ExtractSummary) -> dict:
    return {**asdict(summary), "out_dir": str(summary.out_dir)}
