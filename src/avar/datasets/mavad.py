"""MAVAD-style scene datasets and the paper's repeated per-class 60/20/20 splits (sec. V).

Layout: ``DATA_DIR/<scene>/<class>/<clip>.<ext>``, one folder per camera scene, clips per
class inside (``normal`` for the normal ones), as MAVAD's Mgarr / Zejtun Scrapyard / Zejtun
Field. Each scene is its own experiment: its clips are split 60% train, 20% validation, 20%
test within every class ("if possible": a class too small for three parts keeps what it can,
training first), and the experiment is repeated with 3 different random splits; results are
reported per scene as mean +- standard deviation over the repeats.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from avar.media.clips import ClipEntry

from avar.datasets.folders import discover
from avar.media.decode import MEDIA_EXTENSIONS

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
"""Train, validation, test share of every class (sec. V)."""
REPEATS = 3
"""Random splits per scene (sec. V)."""


def scene_folders(data_dir: Path | str) -> dict[str, Path]:
    """Scene name -> folder, for every sub-folder of ``data_dir`` that holds class folders of media."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: not a directory; expected DATA_DIR/<scene>/<class>/<clip>.mp4")
    scenes = {}
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(f.suffix.lower() in MEDIA_EXTENSIONS for c in folder.iterdir() if c.is_dir() for f in c.rglob("*")):
            scenes[folder.name] = folder
    if not scenes:
        raise FileNotFoundError(
            f"{data_dir}: no scene folders with class folders of media; expected DATA_DIR/<scene>/<class>/<clip>.mp4"
        )
    return scenes


def scene_entries(scene_dir: Path | str) -> list[ClipEntry]:
    """The clips of one scene for ``avar extract`` (their split is set later, per repeat)."""
    return discover(scene_dir, val_fraction=0.0, test_fraction=0.0)


def class_split(labels: dict[str, str], seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, str]:
    """Clip id -> ``train`` / ``val`` / ``test``: ``fractions`` of every class, shuffled by ``seed``.

    Per class of ``n`` clips, ``round(n * val)`` go to validation and ``round(n * test)`` to test,
    the rest (at least one) to training: 5 clips give 3/1/1, 3 give 1/1/1, 2 give 2/0/0.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be three shares (train, val, test) summing to 1, got {fractions}")
    by_class: dict[str, list[str]] = defaultdict(list)
    for clip_id, label in sorted(labels.items()):
        by_class[label].append(clip_id)
    rng = np.random.default_rng(seed)
    out = {}
    for label in sorted(by_class):
        ids = by_class[label]
        order = rng.permutation(len(ids))
        n = len(ids)
        n_val, n_test = int(round(n * fractions[1])), int(round(n * fractions[2]))
        while n - n_val - n_test < 1 and n_val + n_test > 0:
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        for rank, index in enumerate(order):
            out[ids[index]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def repeated_splits(labels: dict[str, str], repeats: int = REPEATS, seed: int = 0) -> list[dict[str, str]]:
    """``repeats`` independent :func:`class_split` assignments (seeds ``seed``, ``seed + 1``, ...)."""
    return [class_split(labels, seed + r) for r in range(repeats)]
