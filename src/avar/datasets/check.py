"""``avar dataset check``: what a dataset folder holds, and what a training run would trip on.

Every clip is decoded whole (picture and sound), so a file that opens but breaks half-way is
found here and not hours into ``avar extract``. Findings are ``error`` (training would fail or
its figures would lie: a file that does not decode or holds neither picture nor sound, a file
a splits.csv lists that is missing, the same clip or the same moment of one recording in two
splits) or ``warning`` (worth knowing: no sound track, a track of digital silence, which is as
good as none, no picture, copies within one split, one source recording in several splits,
a class with no training clip).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np
from tqdm.auto import tqdm

from avar.datasets.folders import SPLITS, scan
from avar.media.cut import media_info
from avar.media.decode import MediaError

SHOWN = 5
"""Findings of one kind written out in the text report (``--json`` has them all)."""
SILENCE_DBFS = -90.0
"""A track whose peak stays below this (or is exactly zero: digital silence) counts as silent."""


@dataclass
class ClipCheck:
    """One clip as decoded: where it is (``path`` relative to DATA_DIR, ``label``, ``split``,
    ``group``), whether it decodes (``error`` says why not), what it holds (``video`` /
    ``audio``: the stream is present; ``frames``, ``fps``, ``width`` x ``height``,
    ``sample_rate``, ``channels``, ``duration`` in seconds, ``audio_peak_dbfs``: the loudest
    sample, None without sound), whether its sound is ``silent`` and its ``sha256``."""

    path: str
    label: str
    split: str
    group: str | None = None
    error: str | None = None
    video: bool = False
    audio: bool = False
    frames: int = 0
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration: float | None = None
    audio_peak_dbfs: float | None = None
    silent: bool = False
    sha256: str = ""


@dataclass(frozen=True)
class Finding:
    severity: str
    """``error`` (training would trip on it) or ``warning``."""
    kind: str
    paths: tuple[str, ...]
    message: str


def check_clip(path: Path, relative: str, label: str, split: str, group: str | None) -> ClipCheck:
    """Decode ``path`` whole and describe it."""
    out = ClipCheck(relative, label, split, group)
    try:
        with path.open("rb") as handle:  # in chunks: a clip may be a long recording
            out.sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
        info = media_info(path)
        out.video, out.audio = info.has_video, info.has_audio
        out.fps, out.width, out.height = info.fps, info.width, info.height
        out.sample_rate, out.channels = info.sample_rate, info.channels
        peak, last = 0.0, 0.0
        with av.open(str(path)) as container:
            streams = [*container.streams.video[:1], *container.streams.audio[:1]]
            for frame in container.decode(*streams):
                if isinstance(frame, av.VideoFrame):
                    out.frames += 1
                    if frame.time is not None:
                        last = max(last, frame.time + 1 / (out.fps or 25))
                else:
                    samples = frame.to_ndarray()
                    if samples.size:
                        peak = max(peak, _full_scale(samples))
                    if frame.time is not None:
                        last = max(last, frame.time + frame.samples / frame.sample_rate)
        out.duration = round(info.duration or last, 3)
        if out.audio:
            out.audio_peak_dbfs = round(20 * math.log10(peak), 1) if peak > 0 else -math.inf
            out.silent = peak == 0 or out.audio_peak_dbfs < SILENCE_DBFS
        if out.video and out.frames == 0:
            raise MediaError(path, "a video stream without a decodable frame")
    except (OSError, MediaError, av.error.FFmpegError) as exc:
        out.error = " ".join(str(exc).split())[:300]
    return out


def _full_scale(samples: np.ndarray) -> float:
    """The loudest sample of a decoded audio frame as a share of full scale (float formats are
    in [-1, 1]; integer ones span their type; unsigned ones are centred on half their range)."""
    if samples.dtype.kind == "f":
        return float(np.abs(samples).max())
    info = np.iinfo(samples.dtype)
    centre = (info.max + 1) / 2 if info.min == 0 else 0.0
    return float(np.abs(samples.astype(np.float64) - centre).max()) / (info.max + 1 - centre)


@dataclass
class CheckReport:
    """The clips of a dataset as decoded and what was found in them."""

    data_dir: str
    splits_from: str
    clips: list[ClipCheck] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict:
        clips = [asdict(c) for c in self.clips]
        for c in clips:  # -inf (digital silence) is not JSON
            if c["audio_peak_dbfs"] == -math.inf:
                c["audio_peak_dbfs"] = None
        return {"data_dir": self.data_dir, "splits_from": self.splits_from, "summary": self.summary(),
                "findings": [asdict(f) for f in self.findings], "clips": clips}

    def summary(self) -> dict:
        """Counts per split: clips, with picture, with sound, silent sound, failing to decode."""
        out = {}
        for split in SPLITS:
            mine = [c for c in self.clips if c.split == split]
            out[split] = {"clips": len(mine), "video": sum(c.video for c in mine), "audio": sum(c.audio for c in mine),
                          "silent_audio": sum(c.silent for c in mine), "errors": sum(c.error is not None for c in mine),
                          "seconds": round(sum(c.duration or 0 for c in mine), 1)}
        return out

    def to_markdown(self) -> str:
        rows = ["| split | clips | with picture | with sound | silent sound | not decodable | seconds |",
                "|---|---|---|---|---|---|---|"]
        for split, s in self.summary().items():
            rows.append(f"| {split} | {s['clips']} | {s['video']} | {s['audio']} | {s['silent_audio']} | "
                        f"{s['errors']} | {s['seconds']} |")
        rates = _spread(self.clips)
        text = f"{self.data_dir}: {len(self.clips)} clips (splits: {self.splits_from})\n\n" + "\n".join(rows)
        text += "\n\n" + "\n".join(f"- {name}: {value}" for name, value in rates.items())
        for severity, title in (("error", "errors (training would trip on these)"), ("warning", "warnings")):
            found = [f for f in self.findings if f.severity == severity]
            if found:
                text += f"\n\n{len(found)} {title}:"
            for kind in dict.fromkeys(f.kind for f in found):
                mine = [f for f in found if f.kind == kind]
                text += f"\n- {kind} ({len(mine)}): " + "; ".join(f.message for f in mine[:SHOWN])
                if len(mine) > SHOWN:
                    text += f"; ... {len(mine) - SHOWN} more (--json lists them all)"
        if not self.findings:
            text += "\n\nno findings"
        return text


def _spread(clips: list[ClipCheck]) -> dict[str, str]:
    """The frame rates, sample rates and resolutions found, each with its clip count."""
    def counted(values) -> str:
        found: dict = {}
        for v in values:
            found[v] = found.get(v, 0) + 1
        return ", ".join(f"{k} ({n})" for k, n in sorted(found.items(), key=lambda kv: -kv[1])) or "none"

    ok = [c for c in clips if c.error is None]
    return {"frame rates": counted(f"{c.fps:g} fps" for c in ok if c.video and c.fps),
            "resolutions": counted(f"{c.width}x{c.height}" for c in ok if c.video),
            "sample rates": counted(f"{c.sample_rate} Hz" for c in ok if c.audio),
            "durations": (f"{min(c.duration for c in ok):.2f} to {max(c.duration for c in ok):.2f} s"
                          if ok else "none")}


def check_dataset(data_dir: Path | str, *, progress: bool = True) -> CheckReport:
    """Decode every clip of ``data_dir`` (its splits.csv, or class folders) and list the findings."""
    data_dir = Path(data_dir)
    listing = scan(data_dir)
    has_csv = (data_dir / "splits.csv").is_file()
    report = CheckReport(str(data_dir), "splits.csv" if has_csv else "none given: the seeded random split avar "
                                        "extract makes")
    for row in listing.skipped:
        report.findings.append(Finding("warning", "not a clip", (row["path"],), f"{row['path']}: {row['reason']}"))
    for entry in tqdm(listing.entries, desc="check", unit="clip", disable=not progress):
        relative = entry.path.relative_to(data_dir).as_posix()
        if not entry.path.is_file():
            report.clips.append(ClipCheck(relative, entry.label, entry.split, entry.group, error="no such file"))
            continue
        report.clips.append(check_clip(entry.path, relative, entry.label, entry.split, entry.group))
    report.findings += findings(report.clips, _intervals(data_dir))
    return report


def _intervals(data_dir: Path) -> dict[str, tuple[str, float, float]]:
    """Clip path -> (source recording, start, end) from a ``metadata.json`` that records them
    (``avar dataset cut`` writes it)."""
    path = data_dir / "metadata.json"
    if not path.is_file():
        return {}
    try:
        clips = json.loads(path.read_text()).get("clips", [])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {}
    return {c["path"]: (c["source"], float(c["start"]), float(c["end"])) for c in clips
            if isinstance(c, dict) and {"path", "source", "start", "end"} <= set(c)}


def findings(clips: list[ClipCheck], intervals: dict[str, tuple[str, float, float]]) -> list[Finding]:
    """What is wrong with or worth knowing about ``clips`` (see the module docstring)."""
    out = []
    for c in clips:
        if c.error is not None:
            out.append(Finding("error", "does not decode", (c.path,), f"{c.path}: {c.error}"))
        elif not c.video and not c.audio:
            out.append(Finding("error", "empty", (c.path,), f"{c.path}: neither picture nor sound"))
        else:
            if not c.audio:
                out.append(Finding("warning", "no sound", (c.path,), f"{c.path}: no audio track"))
            elif c.silent:
                level = "digital silence" if c.audio_peak_dbfs == -math.inf else f"peak {c.audio_peak_dbfs} dBFS"
                out.append(Finding("warning", "silent sound", (c.path,), f"{c.path}: its audio track is silent "
                                   f"({level}), as good as none"))
            if not c.video:
                out.append(Finding("warning", "no picture", (c.path,), f"{c.path}: no video track"))
    by_hash: dict[str, list[ClipCheck]] = {}
    for c in clips:
        if c.sha256:
            by_hash.setdefault(c.sha256, []).append(c)
    for same in by_hash.values():
        if len(same) > 1:
            paths = tuple(c.path for c in same)
            splits = sorted({c.split for c in same})
            if len(splits) > 1:
                out.append(Finding("error", "duplicate across splits", paths,
                                   f"the same file is in {', '.join(splits)}: {', '.join(paths)}; keep one copy"))
            else:
                out.append(Finding("warning", "duplicate", paths, f"the same file twice in {splits[0]}: "
                                   f"{', '.join(paths)}"))
    by_source: dict[str, list[tuple[ClipCheck, float, float]]] = {}
    split_of = {c.path: c for c in clips}
    for path, (source, start, end) in intervals.items():
        if path in split_of:
            by_source.setdefault(source, []).append((split_of[path], start, end))
    for source, spans in by_source.items():
        spans.sort(key=lambda s: s[1])
        for i, (a, a_start, a_end) in enumerate(spans):
            for b, b_start, _ in spans[i + 1:]:
                if b_start >= a_end:
                    break
                if a.split != b.split:
                    out.append(Finding("error", "overlap across splits", (a.path, b.path),
                                       f"{a.path} ({a.split}) and {b.path} ({b.split}) hold the same moments of "
                                       f"{source}; put clips of one recording in one split"))
    groups: dict[str, set[str]] = {}
    for c in clips:
        if c.group is not None:
            groups.setdefault(c.group, set()).add(c.split)
    for group, splits in sorted(groups.items()):
        if len(splits) > 1:
            paths = tuple(c.path for c in clips if c.group == group)
            out.append(Finding("warning", "source in several splits", paths, f"source {group} has clips in "
                               f"{', '.join(sorted(splits))}; neighbouring clips of one recording look alike"))
    trained = {c.label for c in clips if c.split == "train"}
    for label in sorted({c.label for c in clips} - trained):
        out.append(Finding("warning", "class without training clips", (),
                           f"class {label} has no clip in the train split"))
    return out
