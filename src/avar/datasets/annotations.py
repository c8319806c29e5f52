"""Frame-level ground truth for weakly labelled data: which frames of a clip are anomalous.

Training reads only video labels; evaluation reads this. A clip's truth is a set of half-open
frame ranges at a frame rate (``FrameTruth``). It comes, first match wins, from

1. the clip's manifest entry (``"truth"``), written by importers such as XD-Violence's;
2. an annotations file given by the caller: a synthetic benchmark's ``metadata.json``
   (intervals in seconds) or an XD-Violence-style ``annotations.txt`` (name, then pairs of
   frame numbers at 24 fps);
3. the ``metadata.json`` of the dataset a clip was extracted from (``avar synth`` writes one),
   found next to the clip's media file or up to three folders above it.

A clip with none of these is scored by its video label on every frame (the MAVAD protocol:
its clips are trimmed to the anomaly), and reports count such clips.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avar.media.clips import clip_id_for, clip_path_of
from avar.media.decode import MEDIA_EXTENSIONS

SYNTH_GENERATOR = "avar.media.synth"


@dataclass(frozen=True)
class FrameTruth:
    """Anomalous frames of one clip: half-open ranges ``[start, end)`` of frame indices at ``fps``
    (frame ``k`` is shown at ``k / fps`` seconds). No ranges: a normal clip."""

    fps: float
    ranges: tuple[tuple[int, int], ...] = ()

    def labels(self, n_frames: int) -> np.ndarray:
        """``bool [n_frames]``, True on anomalous frames (ranges past the end are cut)."""
        out = np.zeros(n_frames, dtype=bool)
        for start, end in self.ranges:
            out[max(0, start) : max(0, min(end, n_frames))] = True
        return out

    def to_dict(self) -> dict:
        return {"fps": self.fps, "frames": [list(r) for r in self.ranges]}

    @classmethod
    def from_dict(cls, data: dict) -> "FrameTruth":
        return cls(float(data["fps"]), tuple((int(s), int(e)) for s, e in data.get("frames", [])))

    @classmethod
    def from_seconds(cls, intervals_s: list[tuple[float, float]] | list[list[float]], fps: float) -> "FrameTruth":
        """Ranges from ``[start_s, end_s)`` intervals: frame ``k`` is anomalous when
        ``start_s <= k / fps < end_s`` (how ``avar synth`` paints its anomalies)."""

        def first_frame_at_or_after(t: float) -> int:
            return math.ceil(t * fps - 1e-6)

        return cls(float(fps), tuple((first_frame_at_or_after(s), first_frame_at_or_after(e)) for s, e in intervals_s))


def read_synth_metadata(path: Path | str) -> dict[str, FrameTruth]:
    """Clip id (as ``avar extract`` names it) -> truth, from ``avar synth``'s ``metadata.json``."""
    meta = json.loads(Path(path).read_text())
    if "clips" not in meta or "fps" not in meta:
        raise ValueError(f"{path}: not a synthetic benchmark's metadata.json (no 'clips' / 'fps')")
    fps = float(meta["fps"])
    return {
        clip_id_for(Path(c["path"])): FrameTruth.from_seconds([c["interval"]] if c.get("interval") else [], fps)
        for c in meta["clips"]
    }


def read_annotations(path: Path | str) -> dict[str, list[tuple[int, int]]]:
    """``annotations.txt``: video name -> abnormal ``(start, end)`` frame pairs (inclusive).

    A few names in the published file end in ``.mp4`` (14 of 500); the extension is dropped
    so that every name matches the lists.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotations file")
    out: dict[str, list[tuple[int, int]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        numbers = fields[1:]
        if len(numbers) % 2 or not all(n.lstrip("-").isdigit() for n in numbers):
            raise ValueError(f"{path}:{number}: expected a name then pairs of frame numbers, got {line!r}")
        frames = [int(n) for n in numbers]
        pairs = list(zip(frames[::2], frames[1::2]))
        if any(end < start for start, end in pairs):
            raise ValueError(f"{path}:{number}: an interval ends before it starts: {line!r}")
        name = fields[0]
        if Path(name).suffix.lower() in MEDIA_EXTENSIONS:
            name = name[: -len(Path(name).suffix)]
        if name in out:
            raise ValueError(f"{path}:{number}: '{name}' is annotated twice")
        out[name] = pairs
    return out


def read_frame_annotations(path: Path | str, fps: float = 24.0) -> dict[str, FrameTruth]:
    """Video name -> truth from an XD-Violence-style file: ``name s1 e1 [s2 e2 ...]`` per line.

    Frame numbers are inclusive at both ends (``s..e`` anomalous), at ``fps``.
    """
    return {name: FrameTruth(fps, tuple((s, e + 1) for s, e in pairs)) for name, pairs in read_annotations(path).items()}


def read_annotations_file(path: Path | str) -> dict[str, FrameTruth]:
    """Either format above, told apart by content (JSON metadata or plain text lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotations file")
    text = path.read_text().lstrip()
    if text.startswith("{"):
        return read_synth_metadata(path)
    return read_frame_annotations(path)


def _match(clip_id: str, table: dict[str, FrameTruth]) -> FrameTruth | None:
    if clip_id in table:
        return table[clip_id]
    # Annotations name videos without folder or extension; a clip id holds both.
    name = clip_path_of(clip_id).name
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in MEDIA_EXTENSIONS else name
    if stem in table:
        return table[stem]
    # Caches made before ids kept the extension: "<folder>__<name>".
    for name, truth in table.items():
        if clip_id.endswith("__" + name):
            return truth
    return None


def _nearby_metadata(media: str, cache: dict[Path, dict[str, FrameTruth] | None]) -> tuple[Path, dict] | None:
    if not media:
        return None
    path = Path(media)
    for folder in list(path.parents)[:4]:
        candidate = folder / "metadata.json"
        if candidate not in cache:
            table = None
            if candidate.is_file():
                try:
                    if json.loads(candidate.read_text()).get("generator") == SYNTH_GENERATOR:
                        table = read_synth_metadata(candidate)
                except (ValueError, KeyError):
                    table = None
            cache[candidate] = table
        if cache[candidate] is not None:
            return folder, cache[candidate]
    return None


def clip_truths(records: list[dict], annotations: Path | str | None = None) -> dict[str, FrameTruth | None]:
    """Clip id -> its ``FrameTruth`` (None when nothing says which frames are anomalous).

    ``records`` are manifest entries (``FeatureSet.clips``); see the module docstring for the
    order in which the sources are tried.
    """
    given = read_annotations_file(annotations) if annotations else {}
    cache: dict[Path, dict[str, FrameTruth] | None] = {}
    out: dict[str, FrameTruth | None] = {}
    for record in records:
        clip_id = record["clip_id"]
        if "truth" in record:
            out[clip_id] = FrameTruth.from_dict(record["truth"])
            continue
        truth = _match(clip_id, given) if given else None
        if truth is None:
            found = _nearby_metadata(record.get("path", ""), cache)
            if found is not None:
                folder, table = found
                relative = Path(record["path"]).relative_to(folder)
                truth = table.get(clip_id_for(relative))
        out[clip_id] = truth
    return out


def find_synth_metadata(records: list[dict]) -> Path | None:
    """The ``metadata.json`` of the synthetic benchmark the clips were extracted from, if any."""
    cache: dict[Path, dict[str, FrameTruth] | None] = {}
    for record in records:
        found = _nearby_metadata(record.get("path", ""), cache)
        if found is not None:
            return found[0] / "metadata.json"
    return None
