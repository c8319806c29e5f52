"""``avar dataset stats``: a dataset described as the AVAR-Net paper's Table 1 describes VAAR
(classes, clips, clips per class, modality, resolution, duration), per class and split, with a
class-balance plot. Read from the files' headers: nothing is decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from avar.datasets.folders import SPLITS, scan
from avar.media.cut import media_info
from avar.media.decode import MediaError
from avar.plots import plot_bars


@dataclass
class DatasetStats:
    """Table 1's row for one dataset (``summary``) and its ``classes`` (name -> clips per
    split, seconds, clips with sound), plus the files whose headers could not be read."""

    data_dir: str
    summary: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    plot: str | None = None

    def to_dict(self) -> dict:
        return {"data_dir": self.data_dir, "summary": self.summary, "classes": self.classes,
                "unreadable": self.unreadable, "plot": self.plot}

    def to_markdown(self) -> str:
        s = self.summary
        text = ("| dataset | classes | clips | clips per class | modality | resolution | duration |\n"
                "|---|---|---|---|---|---|---|\n"
                f"| {Path(self.data_dir).name} | {s['classes']} | {s['clips']} | {s['clips_per_class']} | "
                f"{s['modality']} | {s['resolution']} | {s['duration']} |\n\n"
                "| class | clips | " + " | ".join(SPLITS) + " | with sound | seconds | mean seconds |\n"
                "|---|---|" + "---|" * len(SPLITS) + "---|---|---|\n")
        for name, c in self.classes.items():
            text += (f"| {name} | {c['clips']} | " + " | ".join(str(c[split]) for split in SPLITS)
                     + f" | {c['with_audio']} | {c['seconds']:.1f} | {c['seconds'] / max(c['clips'], 1):.2f} |\n")
        if self.unreadable:
            text += f"\n{len(self.unreadable)} files could not be read (run `avar dataset check`): " \
                    + ", ".join(self.unreadable[:10])
        if self.plot:
            text += f"\nclass balance: {self.plot}"
        return text.rstrip("\n")


def dataset_stats(data_dir: Path | str, *, plot: Path | str | None = None, progress: bool = True) -> DatasetStats:
    """Describe ``data_dir`` (its splits.csv, or class folders); ``plot`` writes the clips per
    class as a bar chart (PNG) there."""
    data_dir = Path(data_dir)
    stats = DatasetStats(str(data_dir))
    widths, heights, resolutions, modal, total = [], [], {}, {"audio + video": 0, "video only": 0, "audio only": 0}, 0.0
    for entry in tqdm(scan(data_dir).entries, desc="stats", unit="clip", disable=not progress):
        try:
            info = media_info(entry.path)
        except MediaError:
            stats.unreadable.append(entry.path.relative_to(data_dir).as_posix())
            continue
        c = stats.classes.setdefault(entry.label, {"clips": 0, **dict.fromkeys(SPLITS, 0), "with_audio": 0,
                                                   "seconds": 0.0})
        c["clips"] += 1
        c[entry.split] += 1
        c["with_audio"] += info.has_audio
        c["seconds"] += info.duration
        total += info.duration
        kind = ("audio + video" if info.has_video and info.has_audio else "video only" if info.has_video
                else "audio only")
        modal[kind] += 1
        if info.has_video:
            widths.append(info.width)
            heights.append(info.height)
            key = f"{info.width}x{info.height}"
            resolutions[key] = resolutions.get(key, 0) + 1
    stats.classes = dict(sorted(stats.classes.items()))
    counts = [c["clips"] for c in stats.classes.values()]
    common = max(resolutions, key=resolutions.get) if resolutions else "none"
    stats.summary = {
        "classes": len(counts), "clips": sum(counts),
        "clips_per_class": f"{min(counts)}-{max(counts)}" if counts and min(counts) != max(counts)
        else str(counts[0]) if counts else "0",
        "modality": ", ".join(f"{k} ({n})" for k, n in modal.items() if n),
        "resolution": (f"{common} (most; {min(widths)}x{min(heights)} to {max(widths)}x{max(heights)})"
                       if len(resolutions) > 1 else common),
        "duration": f"{_span(total)} ({total / max(sum(counts), 1):.1f} s per clip)",
        "seconds": round(total, 1), "resolutions": resolutions, "modalities": modal,
    }
    if plot is not None and stats.classes:
        stats.plot = str(plot_bars({k: c["clips"] for k, c in stats.classes.items()}, plot,
                                   f"clips per class: {data_dir.name}", "clips", fmt="%d"))
    return stats


def _span(seconds: float) -> str:
    """``1.50 h``, ``12.5 min`` or ``45 s``."""
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"
