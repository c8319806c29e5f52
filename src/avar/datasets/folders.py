"""Class-per-folder datasets (the VAAR layout) and their train/val/test splits.

``DATA_DIR/<class>/<clip>.<ext>``; the split is seeded and stratified per class, unless
``DATA_DIR/splits.csv`` (``path,label,split``, paths relative to DATA_DIR) says otherwise.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avar.media.decode import MEDIA_EXTENSIONS

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClipEntry:
    """One media file of a dataset: ``clip_id`` is unique and safe as a file name."""

    clip_id: str
    path: Path
    label: str
    split: str


def clip_id_for(relative: Path) -> str:
    return "__".join(relative.with_suffix("").parts)


def discover(
    data_dir: Path | str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    splits_csv: Path | str | None = None,
) -> list[ClipEntry]:
    """List a dataset's clips with labels and splits, sorted by clip id."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: not a directory; expected DATA_DIR/<class>/<clip>.mp4")
    csv_path = Path(splits_csv) if splits_csv else data_dir / "splits.csv"
    if csv_path.is_file():
        return _from_csv(data_dir, csv_path)

    by_class: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS)
        if files:
            by_class[class_dir.name] = files
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
    return sorted(entries, key=lambda e: e.clip_id)


def _from_csv(data_dir: Path, csv_path: Path) -> list[ClipEntry]:
    entries = []
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; expected header path,label,split")
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise ValueError(f"{csv_path}:{line}: split '{row['split']}' is not one of {SPLITS}")
            relative = Path(row["path"])
            entries.append(ClipEntry(clip_id_for(relative), data_dir / relative, row["label"], row["split"]))
    return sorted(entries, key=lambda e: e.clip_id)
