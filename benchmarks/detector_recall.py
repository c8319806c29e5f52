"""Recall and false positives of avar's face and plate detectors on hand-labelled real frames.

    .venv/bin/python benchmarks/detector_recall.py --json
    .venv/bin/python benchmarks/detector_recall.py --data ../shared/data/fight-dev --detectors centerface --details

Reads ``benchmarks/data/fight-dev-faces.json`` (45 middle frames of fight-dev clips with every
face, and every licence plate, boxed by hand; its ``rule`` says what was labelled), decodes
those frames from fight-dev (``--data``, else ``$AVAR_FIGHT``, else ``../shared/data/fight-dev``
next to the repository), runs each detector with its default settings, and prints JSON per
detector: labelled boxes of the detector's kind, found (true positives), recall, false
positives per frame, and recall for boxes under 24 px tall and at least 24 px tall.

Matching is greedy by IoU: every (detection, label) pair of the detector's kind with IoU >= 0.3,
highest IoU first, each label and detection used once. An unmatched detection that overlaps an
``ignore`` box (a head whose face the labeller could not decide on, or a plate too small to
label) by IoU >= 0.3, or lies at least half inside one, is neither a hit nor a false positive.
Frames flagged ``faces_uncertain`` (crowds too small to label) are labelled incompletely, so
false positives per frame are given with and without them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import av
import numpy as np

from avar.anonymize.detect import Box, build_detector, iou

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "benchmarks" / "data" / "fight-dev-faces.json"
FIGHT = Path(os.environ.get("AVAR_FIGHT", ROOT.parent / "shared" / "data" / "fight-dev"))
SMALL = 24
"""Labelled boxes under this many pixels tall are 'small'."""


def read_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` (in decode order, from 0) of ``path`` as RGB ``uint8 [H, W, 3]``."""
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{path}: no frame {index}")


def ignored(det: Box, ignores: list[Box], threshold: float) -> bool:
    for box in ignores:
        w = min(det.x1, box.x1) - max(det.x0, box.x0)
        h = min(det.y1, box.y1) - max(det.y0, box.y0)
        inside = max(w, 0) * max(h, 0) / max((det.x1 - det.x0) * (det.y1 - det.y0), 1e-9)
        if iou(det, box) >= threshold or inside >= 0.5:
            return True
    return False


def match(dets: list[Box], labels: list[Box], threshold: float) -> tuple[set[int], set[int]]:
    """Greedy one-to-one matching by IoU; the indices of matched labels and matched detections."""
    pairs = sorted(((iou(d, g), i, j) for i, d in enumerate(dets) for j, g in enumerate(labels)), reverse=True)
    used_d, used_g = set(), set()
    for value, i, j in pairs:
        if value < threshold:
            break
        if i not in used_d and j not in used_g:
            used_d.add(i)
            used_g.add(j)
    return used_g, used_d


def ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def evaluate(spec: str, frames: list[dict], images: list[np.ndarray], threshold: float, details: bool) -> dict:
    detector = build_detector(spec)
    kind = detector.kind
    detector(images[0])  # warm-up: session start, first allocation
    labelled = found = false_pos = false_pos_certain = n_ignored = 0
    sizes = {"lt24": [0, 0], "ge24": [0, 0]}
    rows, seconds = [], 0.0
    for frame, image in zip(frames, images):
        labels = [Box(*b[:4], b[4]) for b in frame["boxes"] if b[4] == kind]
        ignores = [Box(*b[:4], b[4]) for b in frame["boxes"] if b[4] == "ignore"]
        started = time.perf_counter()
        dets = [d for d in detector(image) if d.kind == kind]
        seconds += time.perf_counter() - started
        hit, used = match(dets, labels, threshold)
        extra = [d for i, d in enumerate(dets) if i not in used]
        fps = [d for d in extra if not ignored(d, ignores, threshold)]
        labelled += len(labels)
        found += len(hit)
        false_pos += len(fps)
        false_pos_certain += 0 if frame.get("faces_uncertain") else len(fps)
        n_ignored += len(extra) - len(fps)
        for j, g in enumerate(labels):
            bucket = sizes["lt24" if g.y1 - g.y0 < SMALL else "ge24"]
            bucket[0] += 1
            bucket[1] += j in hit
        if details:
            rows.append({"path": frame["path"], "labelled": len(labels), "found": len(hit), "false_positives": len(fps),
                         "missed": [[round(v) for v in (g.x0, g.y0, g.x1, g.y1)] for j, g in enumerate(labels)
                                    if j not in hit],
                         "false_positive_boxes": [d.as_list() for d in fps]})
    certain = sum(not f.get("faces_uncertain") for f in frames)
    result = {
        "detector": detector.name, "kind": kind, "frames": len(frames), "labelled": labelled, "found": found,
        "recall": ratio(found, labelled), "false_positives": false_pos,
        "false_positives_per_frame": ratio(false_pos, len(frames)),
        "false_positives_per_frame_without_uncertain_frames": ratio(false_pos_certain, certain),
        "detections_on_ignore_boxes": n_ignored,
        f"recall_under_{SMALL}px": {"labelled": sizes["lt24"][0], "found": sizes["lt24"][1],
                                    "recall": ratio(sizes["lt24"][1], sizes["lt24"][0])},
        f"recall_{SMALL}px_and_over": {"labelled": sizes["ge24"][0], "found": sizes["ge24"][1],
                                       "recall": ratio(sizes["ge24"][1], sizes["ge24"][0])},
        "detect_ms_per_frame": round(1000 * seconds / len(frames), 1),
    }
    if details:
        result["per_frame"] = rows
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=FIGHT, help="fight-dev folder (default: $AVAR_FIGHT or "
                                                                 "../shared/data/fight-dev)")
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--detectors", nargs="+", help="detector specs (default: centerface haar-face, and "
                                                       "haar-plate when plates are labelled)")
    parser.add_argument("--iou", type=float, default=0.3, help="IoU for a match (default 0.3)")
    parser.add_argument("--details", action="store_true", help="also per-frame misses and false positives")
    parser.add_argument("--json", action="store_true", help="only the JSON result on stdout")
    args = parser.parse_args()

    labels = json.loads(args.labels.read_text(encoding="utf-8"))
    frames = labels["frames"]
    kinds = {b[4] for f in frames for b in f["boxes"]}
    specs = args.detectors or ["centerface", "haar-face"] + (["haar-plate"] if "plate" in kinds else [])
    images = []
    for frame in frames:
        image = read_frame(args.data / frame["path"], frame["frame_index"])
        if [image.shape[1], image.shape[0]] != frame["size"]:
            raise SystemExit(f"{frame['path']}: frame is {image.shape[1]}x{image.shape[0]}, labels say {frame['size']}")
        images.append(image)
    counts = {k: sum(b[4] == k for f in frames for b in f["boxes"]) for k in sorted(kinds)}
    result = {"labels": str(args.labels), "data": str(args.data), "frames": len(frames),
              "frames_faces_uncertain": sum(bool(f.get("faces_uncertain")) for f in frames),
              "boxes": counts, "iou": args.iou, "detectors": {}}
    for spec in specs:
        result["detectors"][spec] = evaluate(spec, frames, images, args.iou, args.details)
        if not args.json:
            r = result["detectors"][spec]
            print(f"{spec:>12}: {r['found']}/{r['labelled']} {r['kind']}s found (recall {r['recall']}), "
                  f"{r['false_positives_per_frame']} false positives per frame")
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
