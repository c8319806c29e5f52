"""Covering regions, and keeping them covered across frames where a detector blinks.

A detector misses a face now and then (a turned head, motion blur); one missed frame in a
video shows that face. :class:`Persistence` therefore covers a region for ``hold`` frames after
it was last found, carrying the box along (a track follows a region from frame to frame by
overlap), and for ``lead`` frames before it was first found, which needs the frames to wait
``lead`` frames before they are written (:class:`Anonymizer` keeps that small buffer).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np

from avar.anonymize.detect import Box, iou

MODES = ("blur", "pixelate", "fill")


def expand(box: Box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` grown by ``margin`` of its size on every side, in whole pixels inside the frame."""
    dx, dy = (box.x1 - box.x0) * margin, (box.y1 - box.y0) * margin
    x0, y0 = max(0, int(np.floor(box.x0 - dx))), max(0, int(np.floor(box.y0 - dy)))
    x1, y1 = min(width, int(np.ceil(box.x1 + dx))), min(height, int(np.ceil(box.y1 + dy)))
    return x0, y0, x1, y1


def cover(frame: np.ndarray, boxes: list[Box], mode: str = "blur", margin: float = 0.2) -> np.ndarray:
    """A copy of ``frame`` (``uint8 [H, W, 3]``) with every box covered; pixels outside stay.

    ``blur``: a Gaussian blur whose width is a third of the region (no face detail survives);
    ``pixelate``: 6 blocks across the region's shorter side; ``fill``: solid black.
    """
    if mode not in MODES:
        raise ValueError(f"cover mode must be one of {MODES}, got {mode!r}")
    out = frame.copy()
    h, w = frame.shape[:2]
    for box in boxes:
        x0, y0, x1, y1 = expand(box, margin, w, h)
        if x1 <= x0 or y1 <= y0:
            continue
        region = out[y0:y1, x0:x1]
        if mode == "fill":
            region[:] = 0
        elif mode == "pixelate":
            blocks = max(1, min(x1 - x0, y1 - y0) // 6)
            small = cv2.resize(region, (max(1, (x1 - x0) // blocks), max(1, (y1 - y0) // blocks)),
                               interpolation=cv2.INTER_AREA)
            region[:] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        else:
            sigma = max(x1 - x0, y1 - y0) / 3.0
            # Blur a padded copy so the region's border mixes in no sharp outside pixels,
            # then flatten what is left: a blurred face keeps its average colour only.
            blurred = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
            region[:] = cv2.blur(blurred, (max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2)))
    return out


@dataclass
class _Track:
    box: Box
    last_seen: int


@dataclass
class Persistence:
    """Tracks of regions across frames: which boxes to cover in each frame.

    ``update(t, detections)`` takes frame ``t``'s detections and returns the boxes to cover in
    it: the detections, plus every track not matched this frame but seen within ``hold``
    frames (its last box, score 0: held), and the boxes of tracks born at ``t``, which the
    caller covers in the ``lead`` frames before it.
    """

    hold: int = 5
    lead: int = 2
    match_iou: float = 0.2
    tracks: list[_Track] = field(default_factory=list)

    def update(self, t: int, detections: list[Box]) -> tuple[list[Box], list[Box]]:
        """(boxes to cover in frame ``t``, boxes of tracks that start at ``t``)."""
        born = []
        free = list(self.tracks)
        for box in detections:
            best = max(free, key=lambda tr: iou(tr.box, box), default=None)
            if best is not None and best.box.kind == box.kind and iou(best.box, box) >= self.match_iou:
                best.box, best.last_seen = box, t
                free.remove(best)
            else:
                self.tracks.append(_Track(box, t))
                born.append(box)
        self.tracks = [tr for tr in self.tracks if t - tr.last_seen <= self.hold]
        held = [Box(tr.box.x0, tr.box.y0, tr.box.x1, tr.box.y1, tr.box.kind, 0.0)
                for tr in self.tracks if tr.last_seen < t]
        return list(detections) + held, born


@dataclass
class Covered:
    """One frame on its way out: its index, the covered pixels, the regions with their origin."""

    index: int
    frame: np.ndarray
    regions: list[dict]


class Anonymizer:
    """Detect, track and cover, frame by frame, with ``lead`` frames of delay.

    ``push(frame)`` returns the frames now final (covered also for regions found up to
    ``lead`` frames later); ``finish()`` the rest. ``every`` runs the detectors on every n-th
    frame only (the tracks carry the boxes between), trading recall for speed.
    """

    def __init__(self, detectors: list, *, mode: str = "blur", margin: float = 0.2, hold: int = 5, lead: int = 2,
                 every: int = 1):
        if mode not in MODES:
            raise ValueError(f"cover mode must be one of {MODES}, got {mode!r}")
        if every < 1 or hold < 0 or lead < 0 or margin < 0:
            raise ValueError("every must be >= 1 and hold, lead and margin >= 0")
        self.detectors, self.mode, self.margin, self.every = detectors, mode, margin, every
        self.persistence = Persistence(hold=max(hold, every - 1), lead=lead)
        self.pending: collections.deque = collections.deque()  # (index, frame, [(box, source), ...])
        self.count = 0

    def detect(self, frame: np.ndarray) -> list[Box]:
        return [box for detector in self.detectors for box in detector(frame)]

    def push(self, frame: np.ndarray) -> list[Covered]:
        t = self.count
        self.count += 1
        found = self.detect(frame) if t % self.every == 0 else []
        boxes, born = self.persistence.update(t, found)
        for index, _, earlier in self.pending:
            if t - index <= self.persistence.lead:
                earlier.extend((b, "lead") for b in born)
        self.pending.append((t, frame, [(b, "detected" if b.score > 0 else "held") for b in boxes]))
        return list(self._release(lambda index: t - index >= self.persistence.lead))

    def finish(self) -> list[Covered]:
        return list(self._release(lambda index: True))

    def _release(self, ready) -> Iterator[Covered]:
        while self.pending and ready(self.pending[0][0]):
            index, frame, regions = self.pending.popleft()
            yield Covered(index, cover(frame, [b for b, _ in regions], self.mode, self.margin),
                          [{"box": b.as_list(), "source": source} for b, source in regions])

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """Detect and cover one frame on its own, no tracking (steps a second apart, thumbnails)."""
        return cover(frame, self.detect(frame), self.mode, self.margin)


@dataclass
class AnonymizeConfig:
    """What to find and how to cover it; ``avar anonymize``, ``extract --anonymize`` and
    ``watch --anonymize`` share these options and defaults."""

    faces: str = "centerface"
    """Face detector (``avar.anonymize.detect.DETECTORS``, ``onnx:PATH`` or ``centerface:PATH``) or 'none'."""
    plates: str = "haar-plate"
    """Licence-plate detector, or 'none'."""
    mode: str = "blur"
    margin: float = 0.2
    """Share of a region's size added on every side."""
    hold: int = 5
    """Frames a region stays covered after its last detection."""
    lead: int = 2
    """Frames a region is covered before its first detection (the output waits this long)."""
    every: int = 1
    """Run the detectors on every n-th frame only."""
    detect_width: int = 640
    """Frames are downscaled to at most this width for detection."""

    def build(self) -> Anonymizer:
        from avar.anonymize.detect import build_detector

        specs = [s for s in (self.faces, self.plates) if s and s != "none"]
        if not specs:
            raise ValueError("--faces none and --plates none: nothing to anonymise")
        return Anonymizer([build_detector(s, detect_width=self.detect_width) for s in specs], mode=self.mode,
                          margin=self.margin, hold=self.hold, lead=self.lead, every=self.every)
