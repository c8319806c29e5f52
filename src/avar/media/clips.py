"""What a dataset's media files are called: :class:`ClipEntry` (a file with its label, split and
group) and clip ids, unique and reversible names made from a file's path inside its dataset
folder. The feature cache is keyed by them; :mod:`avar.datasets.folders` lists a folder's clips.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class ClipEntry:
    """One media file of a dataset: ``clip_id`` is unique and safe as a file name."""

    clip_id: str
    path: Path
    label: str
    split: str
    group: str | None = None
    """The recording the clip was cut from, where the dataset says (``splits.csv`` ``group``
    column or ``sources.csv``); clips of one group stay in one cross-validation fold."""


def clip_id_for(relative: Path | str) -> str:
    """A clip's id from its path relative to the dataset folder: unique and reversible.

    The parts are joined with ``__`` and the extension is kept, so ``normal/dup.mp4`` and
    ``normal/dup.mkv``, or ``a__b/c.mp4`` and ``a/b__c.mp4``, stay two clips: inside a part,
    ``%`` becomes ``%25`` and an ``_`` that would touch the separator (a second ``_`` in a row,
    or one at either end) becomes ``%5F``. :func:`clip_path_of` reverses it. Paths that leave
    the dataset folder (absolute, ``..``) are refused.
    """
    parts = PurePosixPath(Path(relative).as_posix()).parts
    if not parts or Path(relative).is_absolute() or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{relative}: a clip path must be relative to the dataset folder and stay inside it "
                         "(no absolute paths, no '..')")
    return "__".join(_escape(part) for part in parts)


def _escape(part: str) -> str:
    text = part.replace("%", "%25")
    return "".join("%5F" if ch == "_" and (i == 0 or i == len(text) - 1 or text[i - 1] == "_") else ch
                   for i, ch in enumerate(text))


def _unescape(part: str) -> str:
    return re.sub(r"%(25|5F)", lambda m: "%" if m.group(1) == "25" else "_", part)


def clip_path_of(clip_id: str) -> PurePosixPath:
    """The relative path a :func:`clip_id_for` id was made from."""
    return PurePosixPath(*(_unescape(part) for part in clip_id.split("__")))
