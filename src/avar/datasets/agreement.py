"""``avar dataset agree``: how far two annotators of the same recordings agree (the review
stage of the AVAR-Net paper's dataset, sec. 3.1).

Events of the two files (``file,start,end,label``, as ``avar dataset cut`` reads them) are
matched per recording by temporal overlap: the pairing with the largest total IoU
(intersection over union of the intervals), pairs that overlap at all. On the matched pairs:
Cohen's kappa of the labels (agreement beyond what the two label frequencies give by chance)
and the mean IoU. Every disagreement is listed: a label that differs, boundaries that differ
(IoU below ``min_iou``), an event only one annotator marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from avar.datasets.recordings import Annotation, read_annotations


def temporal_iou(a: Annotation, b: Annotation) -> float:
    """Intersection over union of two events' intervals (0 for different recordings)."""
    if a.file != b.file:
        return 0.0
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = max(a.end, b.end) - min(a.start, b.start)
    return inter / union if union > 0 else 0.0


def match_events(first: list[Annotation], second: list[Annotation]) -> tuple[list[tuple[Annotation, Annotation, float]],
                                                                            list[Annotation], list[Annotation]]:
    """Pairs of overlapping events (largest total IoU per recording), then the events of
    ``first`` and of ``second`` left without a partner."""
    pairs, only_first, only_second = [], [], []
    for file in sorted({e.file for e in first} | {e.file for e in second}):
        a = [e for e in first if e.file == file]
        b = [e for e in second if e.file == file]
        iou = np.array([[temporal_iou(x, y) for y in b] for x in a]).reshape(len(a), len(b))
        rows, cols = linear_sum_assignment(-iou) if iou.size else ([], [])
        kept = [(i, j) for i, j in zip(rows, cols) if iou[i, j] > 0]
        pairs += [(a[i], b[j], float(iou[i, j])) for i, j in kept]
        only_first += [a[i] for i in range(len(a)) if i not in {i for i, _ in kept}]
        only_second += [b[j] for j in range(len(b)) if j not in {j for _, j in kept}]
    return pairs, only_first, only_second


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two label sequences; None where it is undefined (chance agreement is
    certain: both used one and the same label throughout) or there are no labels."""
    if not first:
        return None
    labels = sorted(set(first) | set(second))
    index = {label: k for k, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for x, y in zip(first, second):
        table[index[x], index[y]] += 1
    n = table.sum()
    observed = np.trace(table) / n
    expected = float((table.sum(1) / n) @ (table.sum(0) / n))
    return None if expected >= 1.0 else float((observed - expected) / (1.0 - expected))


def _event(e: Annotation) -> dict:
    return {"line": e.line, "start": e.start, "end": e.end, "label": e.label}


@dataclass
class AgreementReport:
    """Agreement of annotation files ``first`` and ``second`` (see the module docstring)."""

    first: str
    second: str
    events: tuple[int, int]
    matched: int
    kappa: float | None
    mean_iou: float | None
    disagreements: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"first": self.first, "second": self.second, "events": list(self.events), "matched": self.matched,
                "kappa": self.kappa, "mean_iou": self.mean_iou, "disagreements": self.disagreements,
                "problems": self.problems}

    def to_markdown(self) -> str:
        kappa = "undefined (one label throughout)" if self.kappa is None else f"{self.kappa:.3f}"
        iou = "none matched" if self.mean_iou is None else f"{self.mean_iou:.3f}"
        text = (f"{self.first}: {self.events[0]} events; {self.second}: {self.events[1]} events; "
                f"{self.matched} matched\nCohen's kappa of matched labels: {kappa}\nmean temporal IoU of matched "
                f"events: {iou}\n")
        if self.disagreements:
            text += (f"\n{len(self.disagreements)} disagreements:\n\n"
                     "| recording | kind | first | second |\n|---|---|---|---|\n")
            for d in self.disagreements:
                cells = [f"line {e['line']}: {e['label']} [{e['start']:g}, {e['end']:g})" if e else "-"
                         for e in (d["first"], d["second"])]
                text += f"| {d['file']} | {d['kind']} | {cells[0]} | {cells[1]} |\n"
        if self.problems:
            text += "\nrows left out:\n" + "\n".join(f"- {p}" for p in self.problems)
        return text.rstrip("\n")


def agreement(first: Path | str, second: Path | str, *, min_iou: float = 0.5) -> AgreementReport:
    """Compare two annotation files of the same recordings."""
    a, a_problems = read_annotations(first)
    b, b_problems = read_annotations(second)
    pairs, only_a, only_b = match_events(a, b)
    rows = []
    for x, y, iou in pairs:
        if x.label != y.label:
            rows.append({"file": x.file, "kind": "label", "iou": round(iou, 3), "first": _event(x),
                         "second": _event(y)})
        elif iou < min_iou:
            rows.append({"file": x.file, "kind": f"boundaries (IoU {iou:.2f})", "iou": round(iou, 3),
                         "first": _event(x), "second": _event(y)})
    rows += [{"file": e.file, "kind": "only in first", "iou": 0.0, "first": _event(e), "second": None} for e in only_a]
    rows += [{"file": e.file, "kind": "only in second", "iou": 0.0, "first": None, "second": _event(e)} for e in only_b]
    rows.sort(key=lambda r: (r["file"], (r["first"] or r["second"])["start"]))
    problems = [f"{name}: {p}" for name, found in ((first, a_problems), (second, b_problems)) for p in found]
    return AgreementReport(
        str(first), str(second), (len(a), len(b)), len(pairs),
        cohen_kappa([x.label for x, _, _ in pairs], [y.label for _, y, _ in pairs]),
        float(np.mean([iou for _, _, iou in pairs])) if pairs else None, rows, problems)
