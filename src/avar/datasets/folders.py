"""Class-per-folder datasets (the VAAR layout) and their train/val/test splits.

``DATA_DIR/<class>/<clip>.<ext>``; the split is seeded and stratified per class, unless
``DATA_DIR/splits.csv`` (``path,label,split``, paths relative to DATA_DIR) says otherwise.
Clips cut from one recording (one camera, one scene) look alike, so cross-validation must keep
them on one side: a ``group`` column in ``splits.csv``, or ``DATA_DIR/sources.csv``
(``path,source``, as fight-dev ships it), names each clip's group.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from avar.media.clips import ClipEntry, clip_id_for
from avar.media.decode import MEDIA_EXTENSIONS

SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


def check_label(label: str, where: str) -> str:
    """A class name as it may appear in runs, file names and tables: a plain name, no path."""
    if not label or label in (".", "..") or label != label.strip() or any(c in label for c in "/\\\0") \
            or not label.isprintable():
        raise ValueError(f"{where}: class label {label!r} is not a plain name (no '/', '\\', '..', control "
                         "characters or surrounding spaces); rename it")
    return label


@dataclass
class Listing:
    """What a dataset folder holds: the clips, and every file or folder that is not one.

    ``skipped`` rows are ``{"path", "reason"}``: unreadable folders and files, and files
    that are not media; nothing in a class folder is ignored silently.
    """

    entries: list[ClipEntry]
    skipped: list[dict]


def discover(
    data_dir: Path | str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    splits_csv: Path | str | None = None,
) -> list[ClipEntry]:
    """List a dataset's clips with labels and splits, sorted by clip id (:func:`scan`'s
    entries; what it skipped is logged)."""
    listing = scan(data_dir, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, splits_csv=splits_csv)
    for row in listing.skipped:
        log.warning("%s: %s", row["path"], row["reason"])
    return listing.entries


def scan(
    data_dir: Path | str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    splits_csv: Path | str | None = None,
) -> Listing:
    """The clips of ``DATA_DIR/<class>/<clip>.<ext>`` (or of a ``splits.csv``) and what was skipped."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: not a directory; expected DATA_DIR/<class>/<clip>.mp4")
    csv_path = Path(splits_csv) if splits_csv else data_dir / "splits.csv"
    if csv_path.is_file():
        return Listing(_with_sources(data_dir, _from_csv(data_dir, csv_path)), [])

    skipped: list[dict] = []
    by_class: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in _listdir(data_dir, skipped) if p.is_dir() and not p.name.startswith(".")):
        check_label(class_dir.name, str(class_dir))
        files = []
        for path in _walk(class_dir, skipped):
            if path.suffix.lower() in MEDIA_EXTENSIONS:
                files.append(path)
            elif not path.name.startswith("."):
                skipped.append({"path": str(path), "reason": f"not a media file (extensions: "
                                                             f"{', '.join(sorted(MEDIA_EXTENSIONS))})"})
        if files:
            by_class[class_dir.name] = sorted(files)
    if not by_class:
        raise FileNotFoundError(
            f"{data_dir}: no media files in class folders; expected DATA_DIR/<class>/<clip>.mp4 "
            f"(extensions: {', '.join(sorted(MEDIA_EXTENSIONS))}) or a splits.csv"
        )
    rng = np.random.default_rng(seed)
    entries = []
    for label, files in by_class.items():
        order = rng.permutation(len(files))
        n_test = int(round(len(files) * test_fraction))
        n_val = int(round(len(files) * val_fraction))
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            path = files[index]
            entries.append(ClipEntry(clip_id_for(path.relative_to(data_dir)), path, label, split))
    return Listing(_with_sources(data_dir, sorted(entries, key=lambda e: e.clip_id)), skipped)


def _with_sources(data_dir: Path, entries: list[ClipEntry]) -> list[ClipEntry]:
    """``entries`` with the groups of ``DATA_DIR/sources.csv`` (``path,source``) where the
    splits file gave none; a clip the file does not list keeps none."""
    path = data_dir / "sources.csv"
    if not path.is_file() or all(e.group is not None for e in entries):
        return entries
    groups = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"path", "source"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected header path,source (each clip's source recording)")
        for line, row in enumerate(reader, start=2):
            try:
                groups[clip_id_for(row["path"] or "")] = row["source"] or None
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}; paths in sources.csv are relative to DATA_DIR") from None
    return [e if e.group is not None else replace(e, group=groups.get(e.clip_id)) for e in entries]


def _listdir(folder: Path, skipped: list[dict]) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as exc:
        skipped.append({"path": str(folder), "reason": f"cannot list the folder ({exc.strerror or exc})"})
        return []


def _walk(folder: Path, skipped: list[dict]) -> list[Path]:
    """Every file below ``folder``; a folder that cannot be listed is reported, the rest go on."""
    files = []
    for path in _listdir(folder, skipped):
        if path.is_dir():
            if not path.name.startswith("."):
                files += _walk(path, skipped)
        elif path.is_file():
            if not os.access(path, os.R_OK):
                skipped.append({"path": str(path), "reason": "cannot read the file (permission denied)"})
            else:
                files.append(path)
    return files


def _from_csv(data_dir: Path, csv_path: Path) -> list[ClipEntry]:
    entries: dict[str, tuple[int, ClipEntry]] = {}
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; expected header path,label,split")
        for line, row in enumerate(reader, start=2):
            where = f"{csv_path}:{line}"
            if row["split"] not in SPLITS:
                raise ValueError(f"{where}: split '{row['split']}' is not one of {SPLITS}")
            try:
                clip_id = clip_id_for(row["path"] or "")
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}; paths in a splits file are relative to DATA_DIR") from None
            check_label(row["label"] or "", where)
            if clip_id in entries:
                raise ValueError(f"{where}: {row['path']} is listed twice (first on line {entries[clip_id][0]}); "
                                 "keep one row per file")
            entries[clip_id] = (line, ClipEntry(clip_id, data_dir / row["path"], row["label"], row["split"],
                                                row.get("group") or None))
    return sorted((entry for _, entry in entries.values()), key=lambda e: e.clip_id)
