"""The feature cache: one safetensors file per clip plus a JSON manifest.

Decoding and backbones are the expensive part of avar, so they run once here; heads,
ablations and evaluations read the cache. Every file is written to a temporary name and
renamed into place, so a killed run leaves either a whole clip file or none, and a rerun
skips the clips already done.

Layout::

    FEATURES_DIR/manifest.json      settings + one entry per finished clip
    FEATURES_DIR/clips/<id>.safetensors   video [T, dv], audio [T, da], times [T] (seconds)
    FEATURES_DIR/failures.json      files that could not be decoded, with the reason
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from avar.datasets.folders import ClipEntry
from avar.features.base import Extractor
from avar.media.decode import ClipSteps, MediaError, decode_steps

MANIFEST = "manifest.json"
FAILURES = "failures.json"
BATCH = 32

log = logging.getLogger(__name__)


@dataclass
class StepFeatures:
    """Cached features of one clip: ``video [T, dv]``, ``audio [T, da]`` float32, ``times [T]`` s."""

    clip_id: str
    label: str
    split: str
    video: np.ndarray
    audio: np.ndarray
    times: np.ndarray
    audio_missing: bool = False
    video_missing: bool = False


@dataclass
class ExtractSummary:
    out_dir: Path
    done: int
    skipped: int
    failures: list[dict] = field(default_factory=list)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def extractor_record(extractor: Extractor, weights: str | None) -> dict:
    return {"name": extractor.name, "version": extractor.version, "dim": int(extractor.dim), "weights": weights}


def features_from_steps(steps: ClipSteps, video: Extractor, audio: Extractor) -> tuple[np.ndarray, np.ndarray]:
    """Run both backbones over every step of a clip, in batches: ``[T, dv]``, ``[T, da]``."""

    def batched(extractor, data):
        return np.concatenate([extractor(data[i : i + BATCH]) for i in range(0, len(data), BATCH)])

    return batched(video, steps.frames).astype(np.float32), batched(audio, steps.audio).astype(np.float32)


def _clip_file(out_dir: Path, clip_id: str) -> Path:
    return out_dir / "clips" / f"{clip_id}.safetensors"


def _clip_record(entry: ClipEntry, steps: ClipSteps) -> dict:
    return {
        "clip_id": entry.clip_id,
        "path": str(entry.path),
        "label": entry.label,
        "split": entry.split,
        "n_steps": steps.n_steps,
        "duration": steps.duration,
        "audio_missing": steps.audio_missing,
        "video_missing": steps.video_missing,
    }


def _save_clip(path: Path, record: dict, video: np.ndarray, audio: np.ndarray, times: np.ndarray) -> dict:
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"video": np.ascontiguousarray(video, np.float32), "audio": np.ascontiguousarray(audio, np.float32),
         "times": np.ascontiguousarray(times, np.float64)},
        str(tmp),
        metadata={"record": json.dumps(record)},
    )
    os.replace(tmp, path)
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
) -> ExtractSummary:
    """Extract and cache features for ``entries``; resumes, and survives bad files."""
    out_dir = Path(out_dir)
    settings = {
        "step": step,
        "video": extractor_record(video, video_weights),
        "audio": extractor_record(audio, audio_weights),
    }
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in settings} != settings:
            raise ValueError(
                f"{out_dir} holds features made with other settings "
                f"({ {k: old.get(k) for k in settings} }); pass a new --out directory"
            )
    out_dir.mkdir(parents=True, exist_ok=True)

    records: dict[str, dict] = {}
    todo = []
    for entry in entries:
        path = _clip_file(out_dir, entry.clip_id)
        record = _read_record(path) if path.is_file() else None
        if record is not None:
            record.update(label=entry.label, split=entry.split)
            records[entry.clip_id] = record
        else:
            todo.append(entry)
    skipped = len(records)

    failures: list[dict] = []

    def decode(entry: ClipEntry):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                steps = decode_steps(entry.path, step, getattr(video, "input_size", None))
            return steps, [str(w.message) for w in caught]
        except MediaError as exc:
            return exc, []

    def write_manifest():
        ordered = [records[e.clip_id] for e in entries if e.clip_id in records]
        # The runtime is recorded but not part of the settings: every runtime's features match
        # eager fp32 (cosine >= 0.999), so a cache may be resumed under another one.
        runtimes = {"video": getattr(video, "runtime", "numpy"), "audio": getattr(audio, "runtime", "numpy")}
        write_json_atomic(manifest_path, {**settings, "runtimes": runtimes, "clips": ordered})
        write_json_atomic(out_dir / FAILURES, failures)

    # Decode the next clip in a thread while the backbones run on this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(decode, e) for e in todo[:2]]
        log.info("%d clips to extract, %d already done -> %s", len(todo), skipped, out_dir)
        bar = tqdm(total=len(todo), desc="extract", unit="clip", disable=not progress)
        for i, entry in enumerate(todo):
            result, notes = pending[i].result()
            if i + 2 < len(todo):
                pending.append(pool.submit(decode, todo[i + 2]))
            pending[i] = None
            if isinstance(result, MediaError):
                failures.append({"path": str(entry.path), "reason": result.reason})
                log.error("%s: %s", entry.path, result.reason)
            else:
                for note in notes:
                    log.warning("%s", note)
                v, a = features_from_steps(result, video, audio)
                records[entry.clip_id] = _save_clip(
                    _clip_file(out_dir, entry.clip_id), _clip_record(entry, result), v, a, result.times
                )
            bar.update(1)
            if i % 20 == 19:
                write_manifest()
        bar.close()
    write_manifest()
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
               records: dict[str, dict] | None = None) -> "FeatureSet":
        """A cache from features computed elsewhere (e.g. a dataset's published features).

        ``video`` / ``audio`` describe the extractors: ``{"name", "version", "dim"}``.
        ``clips`` may be a generator, so a large dataset never sits in memory at once.
        ``records`` adds JSON fields to a clip's manifest entry by clip id (e.g. its
        frame-level ground truth, ``{"truth": {...}}``).
        """
        root = Path(root)
        records_out = []
        for clip in clips:
            record = {
                "clip_id": clip.clip_id, "path": "", "label": clip.label, "split": clip.split,
                "n_steps": len(clip.times), "duration": float(len(clip.times) * step),
                "audio_missing": clip.audio_missing, "video_missing": clip.video_missing,
                **(records or {}).get(clip.clip_id, {}),
            }
            records_out.append(_save_clip(_clip_file(root, clip.clip_id), record, clip.video, clip.audio, clip.times))
        manifest = {"step": step, "video": {"weights": None, **video}, "audio": {"weights": None, **audio},
                    "clips": records_out}
        write_json_atomic(root / MANIFEST, manifest)
        return cls(root, manifest)

    @property
    def clips(self) -> list[dict]:
        return self.manifest["clips"]

    @property
    def classes(self) -> list[str]:
        """Class names, sorted, with ``normal`` first when present (it anchors the anomaly score)."""
        labels = sorted({c["label"] for c in self.clips})
        return sorted(labels, key=lambda name: (name != "normal", name))

    def load(self, clip: dict) -> StepFeatures:
        arrays = load_file(str(_clip_file(self.root, clip["clip_id"])))
        return StepFeatures(
            clip_id=clip["clip_id"],
            label=clip["label"],
            split=clip["split"],
            video=arrays["video"],
            audio=arrays["audio"],
            times=arrays["times"],
            audio_missing=clip.get("audio_missing", False),
            video_missing=clip.get("video_missing", False),
        )

    def split(self, name: str) -> list[StepFeatures]:
        return [self.load(c) for c in self.clips if c["split"] == name]


def summary_dict(summary: ExtractSummary) -> dict:
    return {**asdict(summary), "out_dir": str(summary.out_dir)}
