"""From long recordings and a spreadsheet of events to a dataset avar trains on (``avar dataset cut``).

The AVAR-Net paper built VAAR in three stages (sec. 3.1): gather raw videos, cut them into
clips at event boundaries, review the labels. This module is the second stage. The
annotations are a CSV ``file,start,end,label`` (``file`` relative to RAW_DIR; times in seconds
or ``[hh:]mm:ss[.ms]``); each event becomes one clip with its sound (:func:`avar.media.cut.cut`:
packets copied where the event starts on a key frame, re-encoded otherwise), and ``normal``
clips are sampled from the rest of each recording, ``margin`` seconds clear of every event,
starting on key frames where the recording has them (so they copy too).

The output is avar's layout: ``DATA_DIR/<label>/<clip>.mp4``, a ``splits.csv``
(``path,label,split,group``) that keeps every clip of one recording in one split (neighbouring
clips of one camera look alike, so a random split leaks), and a ``metadata.json`` with each
clip's source, interval, annotation line and how it was cut. Rows that cannot be cut (a
missing recording, an interval outside it, events that overlap) are reported with their line
numbers and the rest is still cut.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from avar.datasets.folders import SPLITS, check_label
from avar.files import safe_file_name, write_atomic, write_json_atomic
from avar.media.cut import cut, key_frame_times, media_info
from avar.media.decode import MediaError

log = logging.getLogger(__name__)

NORMAL = "normal"
COLUMNS = ("file", "start", "end", "label")
MP4_CODECS = {"h264", "hevc", "mpeg4", "aac", "mp3", "ac3", "alac", "opus"}
"""Codecs an MP4 holds as they are; a recording with others is cut into Matroska (.mkv)."""


@dataclass(frozen=True)
class Annotation:
    """One event of the annotations: ``file`` (relative to RAW_DIR), ``start`` and ``end``
    seconds from the recording's start, its ``label``, and the CSV ``line`` it came from."""

    line: int
    file: str
    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Problem:
    """A row or recording that could not be cut, and why."""

    line: int | None
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{'line ' + str(self.line) if self.line else self.file}: {self.reason}"


_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


def parse_time(text: str) -> float:
    """Seconds from ``12.5``, ``01:02.5`` (mm:ss) or ``1:02:03.250`` (hh:mm:ss[.ms])."""
    text = text.strip()
    match = _CLOCK.match(text)
    if match:
        hours, minutes, seconds = match.groups()
        if int(minutes) >= 60 or float(seconds) >= 60:
            raise ValueError(f"{text!r} has minutes or seconds of 60 or more")
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time (seconds, or [hh:]mm:ss[.ms])") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite time")
    return value


def read_annotations(path: Path | str) -> tuple[list[Annotation], list[Problem]]:
    """The events of an annotations CSV (header ``file,start,end,label``) and the rows that are
    not events (bad times, an end not after its start, an empty file or label), by line."""
    path = Path(path)
    events, problems = [], []
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the annotations as "
                         "UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: needs the columns {','.join(COLUMNS)} in its header; {', '.join(missing)} "
                         f"missing (found {reader.fieldnames})")
    for row in reader:
        line = reader.line_num
        file = (row["file"] or "").strip()
        try:
            if not file:
                raise ValueError("no file")
            start, end = parse_time(row["start"] or ""), parse_time(row["end"] or "")
            if start < 0 or end <= start:
                raise ValueError(f"the interval [{start:g}, {end:g}) s is empty or negative")
            label = check_label((row["label"] or "").strip(), f"{path}:{line}")
        except ValueError as exc:
            problems.append(Problem(line, file, str(exc)))
            continue
        events.append(Annotation(line, file, start, end, label))
    return events, problems


@dataclass(frozen=True)
class Planned:
    """One clip to cut: ``[start, end)`` of recording ``file`` as ``label``; ``kind`` is
    ``event`` (an annotation, its ``line``) or ``normal`` (sampled between events)."""

    file: str
    start: float
    end: float
    label: str
    kind: str
    line: int | None = None


def overlapping(events: list[Annotation]) -> dict[int, int]:
    """Line -> the line of an event of the same recording it overlaps, for every such event."""
    out: dict[int, int] = {}
    by_file: dict[str, list[Annotation]] = {}
    for event in events:
        by_file.setdefault(event.file, []).append(event)
    for group in by_file.values():
        group = sorted(group, key=lambda e: (e.start, e.end))
        reach = None  # the event reaching furthest so far
        for event in group:
            if reach is not None and event.start < reach.end:
                out.setdefault(event.line, reach.line)
                out.setdefault(reach.line, event.line)
            if reach is None or event.end > reach.end:
                reach = event
    return out


def normal_intervals(duration: float, events: list[tuple[float, float]], margin: float, length: float, count: int,
                     rng: np.random.Generator, key_frames: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Up to ``count`` non-overlapping ``length``-second intervals of ``[0, duration)`` at least
    ``margin`` seconds from every event, drawn at random among the slots that fit. With
    ``key_frames`` (seconds), slots start on key frames where a gap has them, so that their
    cuts copy the stream."""
    blocked = sorted((max(0.0, s - margin), min(duration, e + margin)) for s, e in events)
    free, at = [], 0.0
    for s, e in blocked:
        if s > at:
            free.append((at, s))
        at = max(at, e)
    if at < duration:
        free.append((at, duration))
    slots = []
    for s, e in free:
        keyed = _keyed_slots(s, e, length, key_frames) if key_frames is not None and len(key_frames) else []
        n = int((e - s + 1e-9) // length)
        if keyed:
            slots += keyed
        elif n:
            offset = rng.uniform(0, (e - s) - n * length)  # where the slots sit inside the gap
            slots += [(s + offset + k * length, s + offset + (k + 1) * length) for k in range(n)]
    chosen = sorted(rng.choice(len(slots), size=min(count, len(slots)), replace=False)) if slots else []
    return [(round(slots[i][0], 3), round(slots[i][1], 3)) for i in chosen]


def _keyed_slots(start: float, end: float, length: float, key_frames: np.ndarray) -> list[tuple[float, float]]:
    """Back-to-back ``length``-second slots of ``[start, end)``, each starting on a key frame."""
    slots = []
    at = start
    while True:
        k = np.searchsorted(key_frames, at - 1e-6)
        if k == len(key_frames) or key_frames[k] + length > end:
            return slots
        slots.append((float(key_frames[k]), float(key_frames[k]) + length))
        at = key_frames[k] + length


def assign_splits(sizes: dict[str, int], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Recording -> split, whole recordings at a time: the largest first (ties in a seeded
    order), each to the split furthest below its share of the clips; then, while a split that
    should get clips has none, the smallest recording of a split holding several moves there."""
    names = list(sizes)
    np.random.default_rng(seed).shuffle(names)
    names.sort(key=lambda n: -sizes[n])
    total = sum(sizes.values())
    held = dict.fromkeys(SPLITS, 0)
    out = {}
    for name in names:
        split = max(SPLITS, key=lambda s: fractions[SPLITS.index(s)] * total - held[s])
        out[name] = split
        held[split] += sizes[name]
    for split in SPLITS:
        members = {s: [n for n in names if out[n] == s] for s in SPLITS}
        donor = max(SPLITS, key=lambda s: len(members[s]))
        if fractions[SPLITS.index(split)] > 0 and not members[split] and len(members[donor]) > 1:
            out[members[donor][-1]] = split
    return out


@dataclass
class CutReport:
    """What ``avar dataset cut`` did: the ``clips`` written (metadata rows), the ``problems``
    (rows and recordings not cut, by line), and the split of each recording."""

    out_dir: str
    clips: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"out_dir": self.out_dir, "clips": self.clips, "problems": [asdict(p) for p in self.problems],
                "splits": self.splits}

    def to_markdown(self) -> str:
        labels = sorted({c["label"] for c in self.clips})
        rows = ["| label | clips | copied | re-encoded | seconds |", "|---|---|---|---|---|"]
        for label in labels:
            mine = [c for c in self.clips if c["label"] == label]
            copied = sum(c["copied"] for c in mine)
            rows.append(f"| {label} | {len(mine)} | {copied} | {len(mine) - copied} | "
                        f"{sum(c['end'] - c['start'] for c in mine):.1f} |")
        text = f"cut {len(self.clips)} clips into {self.out_dir}\n\n" + "\n".join(rows)
        by_split = {s: sorted(r for r, v in self.splits.items() if v == s) for s in SPLITS}
        text += "\n\nrecordings per split: " + "; ".join(f"{s}: {len(v)}" for s, v in by_split.items())
        if self.problems:
            text += f"\n\n{len(self.problems)} not cut:\n" + "\n".join(f"- {p}" for p in self.problems)
        return text


def cut_dataset(raw_dir: Path | str, annotations: Path | str, out_dir: Path | str, *, margin: float = 2.0,
                normal_length: float | None = None, normals: int | None = None,
                fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0,
                progress: bool = True) -> CutReport:
    """Cut the events of ``annotations`` out of the recordings in ``raw_dir`` into ``out_dir``.

    ``normal_length`` seconds per normal clip (default: the events' median length); ``normals``
    per recording (default: as many as it has events; 0: none). ``fractions`` of the clips go to
    train, val and test, whole recordings at a time. A ``normal`` label in the annotations is an
    annotated normal clip, cut like any event.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise NotADirectoryError(f"{raw_dir}: not a folder of recordings; pass RAW_DIR, the folder the annotations' "
                                 "file column is relative to")
    if margin < 0 or (normal_length is not None and normal_length <= 0) or (normals is not None and normals < 0):
        raise ValueError("--margin must be >= 0, --normal-length > 0 and --normals >= 0")
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"--fractions must be three shares >= 0 (train, val, test), not all 0; got {list(fractions)}")
    events, problems = read_annotations(annotations)
    report = CutReport(str(out_dir), problems=problems)
    infos = {}
    for file in sorted({e.file for e in events}):
        path = raw_dir / file
        try:
            if not path.resolve().is_relative_to(raw_dir.resolve()):
                raise ValueError(f"{file}: outside RAW_DIR")
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such recording")
            infos[file] = media_info(path)
        except (ValueError, OSError, MediaError) as exc:
            report.problems += [Problem(e.line, file, f"not cut: {exc}") for e in events if e.file == file]
    clashes = overlapping(events)
    plans: list[Planned] = []
    for e in events:
        if e.file not in infos:
            continue
        duration = infos[e.file].duration
        if e.end > duration + 1e-3:
            report.problems.append(Problem(e.line, e.file, f"[{e.start:g}, {e.end:g}) s runs past the recording's end "
                                                           f"({duration:g} s); not cut"))
        elif e.line in clashes:
            report.problems.append(Problem(e.line, e.file, f"overlaps the event of line {clashes[e.line]}; neither is "
                                                           "cut (a clip must not cross an event's boundary)"))
        else:
            plans.append(Planned(e.file, e.start, e.end, e.label, "event", e.line))
    lengths = [e.end - e.start for e in events if e.label != NORMAL] or [10.0]
    length = normal_length or float(np.median(lengths))
    rng = np.random.default_rng(seed)
    for file, info in infos.items():
        mine = [(e.start, e.end) for e in events if e.file == file]
        count = normals if normals is not None else sum(1 for e in events if e.file == file and e.label != NORMAL)
        try:
            key_frames = key_frame_times(raw_dir / file) if count else None
        except MediaError as exc:  # its packets break part-way: normal clips go anywhere, and are re-encoded
            log.warning("%s", exc)
            key_frames = None
        for s, e in normal_intervals(info.duration, mine, margin, length, count, rng, key_frames):
            plans.append(Planned(file, s, e, NORMAL, "normal"))
    report.splits = assign_splits({f: sum(p.file == f for p in plans) for f in infos}, fractions, seed)
    empty = [s for s, share in zip(SPLITS, fractions) if share > 0 and s not in report.splits.values()]
    if empty:
        report.problems.append(Problem(None, str(annotations), f"{len(infos)} recording(s) cannot fill every split "
                                       f"without one recording in two: {', '.join(empty)} left empty"))
    for plan in tqdm(plans, desc="cut", unit="clip", disable=not progress):
        info = infos[plan.file]
        ext = ".mp4" if {info.video_codec, info.audio_codec} - {None} <= MP4_CODECS else ".mkv"
        rel = Path(plan.label) / (f"{_name(plan.file)}_{round(plan.start * 1000):09d}_{round(plan.end * 1000):09d}"
                                  + ext)
        try:
            done = cut(raw_dir / plan.file, plan.start, plan.end, out_dir / rel)
        except (ValueError, OSError, MediaError) as exc:
            report.problems.append(Problem(plan.line, plan.file, f"[{plan.start:g}, {plan.end:g}) s: {exc}"))
            continue
        report.clips.append({"path": rel.as_posix(), "label": plan.label, "source": plan.file, "kind": plan.kind,
                             "line": plan.line, "start": round(done.start, 6), "end": round(done.end, 6),
                             "copied": done.copied, "split": report.splits[plan.file],
                             "interval": [0.0, round(done.end - done.start, 6)] if plan.label != NORMAL else None})
    report.problems.sort(key=lambda p: (p.line is None, p.line or 0, p.file))
    _write_outputs(out_dir, report, {"margin": margin, "normal_length": length, "normals": normals,
                                     "fractions": list(fractions), "seed": seed, "annotations": str(annotations)})
    return report


def _name(file: str) -> str:
    """A recording's relative path as one file-name part, distinct for distinct paths."""
    stem = safe_file_name(Path(file).with_suffix("").as_posix().replace("/", "__"), 48)
    return f"{stem}-{hashlib.sha256(file.encode()).hexdigest()[:6]}"


def _write_outputs(out_dir: Path, report: CutReport, settings: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["path", "label", "split", "group"])
    writer.writerows([c["path"], c["label"], c["split"], c["source"]] for c in report.clips)
    write_atomic(out_dir / "splits.csv", table.getvalue().encode())
    write_json_atomic(out_dir / "metadata.json", {"settings": settings, **report.to_dict()})
