"""Event thumbnails, and the event detector re-exported for the streaming side (it lives in
:mod:`avar.metrics.events`, where training calibrates its threshold and evaluation scores it)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from avar.files import safe_file_name, write_atomic
from avar.metrics.events import Event, EventConfig, EventDetector, Step, detect_events

__all__ = ["Event", "EventConfig", "EventDetector", "Step", "detect_events", "save_thumbnail", "thumbnail_path"]


def thumbnail_path(folder: Path | str, source: str, start: float, label: str) -> Path:
    """Where the thumbnail of ``source``'s event starting at ``start`` s with ``label`` goes:
    ``<stem>-<hash>_<start>_<label>.jpg``, always directly inside ``folder``.

    Source names and labels come from URLs, file names and run files, so anything but letters,
    digits, ``.``, ``-`` and ``_`` becomes ``_`` (no ``/``, no leading dot, no URL query with its
    tokens); the hash of the whole source keeps apart cameras whose streams share a name
    (``rtsp://a/live``, ``rtsp://b/live``). Raises ValueError when the name would still resolve
    outside ``folder`` (a symbolic link of that name pointing elsewhere).
    """
    folder = Path(folder)
    stem = Path(urlsplit(source).path if "://" in source else source).stem
    digest = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    path = folder / f"{safe_file_name(stem)}-{digest}_{start:09.3f}_{safe_file_name(label)}.jpg"
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"thumbnail {path} would be written outside {folder}; remove what is at that name")
    return path


def save_thumbnail(frame_rgb: np.ndarray, path: Path | str, quality: int = 90) -> Path:
    """Write an RGB ``uint8 [H, W, 3]`` frame as a JPEG at ``path``, atomically (temp file + rename)
    so a reader polling the folder never sees half a file."""
    import cv2

    frame = np.asarray(frame_rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"thumbnail {path}: need an RGB uint8 [H, W, 3] frame, got {frame.dtype} {frame.shape}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"thumbnail {path}: OpenCV could not encode the frame as JPEG")
    path = Path(path)
    write_atomic(path, buf.tobytes())
    return path
