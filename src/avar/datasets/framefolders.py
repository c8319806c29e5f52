"""Frame-level anomaly datasets: frame folders (UCSD Ped2 as shipped) or class folders of videos.

Two layouts are recognised by :func:`open_frame_dataset`:

* **Frame folders** (UCSD Ped2, Avenue-style)::

      DATA_DIR/training/frames/<video>/<frame>.jpg     normal videos only
      DATA_DIR/testing/frames/<video>/<frame>.jpg
      DATA_DIR/test_frame_labels.csv                   video,num_frames,abnormal_start,abnormal_end

  (the ``frames`` level may be left out). Frame numbers in the CSV are 0-based and
  inclusive; a video may have several rows (several ranges) or an empty range (no anomaly).

* **Class folders of video files** (the layout of ``avar synth`` and ``avar extract``,
  see :mod:`avar.datasets.folders`): the ``normal`` clips of the train split are the
  training data; the test (and val) split clips are scored. A clip's anomalous frames are
  its ``interval`` in ``DATA_DIR/metadata.json`` when given, else the whole clip unless it
  is ``normal``.

Audio: a video file's own track is used when it has one; frame folders may be paired with
``AUDIO_DIR/<training|testing>/<video>.<wav|flac|...>`` (the paper paired Ped2 with recorded
sounds). :attr:`FrameDataset.audio_pairing` states which, and every result repeats it.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from avar.datasets.folders import discover
from avar.media.decode import AUDIO_EXTENSIONS
from avar.media.files import read_audio, read_frames

FRAME_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
LABELS_FILE = "test_frame_labels.csv"
DEFAULT_FRAME_FPS = 10.0
"""Frame rate assumed for frame folders (UCSD Ped2 was filmed at 10 frames/s); it only sets the
time axis of plots and the audio hop."""
_SPLIT_DIRS = {"train": "training", "test": "testing"}


@dataclass
class FrameVideo:
    """One video of a frame-level dataset.

    ``source`` is a folder of frames or a media file. Ground truth is ``abnormal_frames``
    (inclusive 0-based frame ranges) for frame folders or ``abnormal_seconds`` (half-open
    ``[start, end)`` intervals) for files; ``labelled`` is False where none is known (training
    videos, or test videos without a labels file).
    """

    video_id: str
    split: str
    source: Path
    labelled: bool
    abnormal_frames: list[tuple[int, int]] = field(default_factory=list)
    abnormal_seconds: list[tuple[float, float]] = field(default_factory=list)
    audio: Path | None = None
    """Paired audio file (or the video file itself when its track is used); None for no audio."""
    n_frames: int | None = None
    """Known without decoding for frame folders; None for files until they are read."""
    fps: float = DEFAULT_FRAME_FPS

    def frame_labels(self, n_frames: int, fps: float | None = None) -> np.ndarray:
        """``bool [n_frames]``, True where the frame is anomalous; frame ``i`` sits at ``i / fps`` s."""
        if not self.labelled:
            raise ValueError(
                f"{self.source}: video '{self.video_id}' has no frame ground truth; frame-level metrics need "
                f"a labelled test split (for frame folders: {LABELS_FILE} next to testing/)"
            )
        labels = np.zeros(n_frames, dtype=bool)
        for start, end in self.abnormal_frames:
            labels[max(start, 0) : min(end + 1, n_frames)] = True
        times = np.arange(n_frames) / float(fps or self.fps)
        for start, end in self.abnormal_seconds:
            labels |= (times >= start) & (times < end)
        return labels


@dataclass
class LoadedVideo:
    """A video's pixels (and sound), ready for the detectors.

    ``frames`` is ``uint8 [N, H, W]`` grayscale at the requested size; ``native`` the same
    frames at their stored size (the learning-free floor is measured there); ``audio`` mono
    ``float32 [S]`` at ``audio_rate`` Hz or None; ``labels`` ``bool [N]`` or None.
    """

    video: FrameVideo
    frames: np.ndarray
    native: np.ndarray | None
    fps: float
    audio: np.ndarray | None
    audio_rate: int | None
    labels: np.ndarray | None


@dataclass
class FrameDataset:
    """Every video of a frame-level dataset with its split, labels and audio pairing."""

    root: Path
    layout: str
    """'frame-folders' or 'class-folders'."""
    videos: list[FrameVideo]
    audio_pairing: str
    """One sentence saying where the audio comes from; repeated in every result."""

    def split(self, name: str) -> list[FrameVideo]:
        return [v for v in self.videos if v.split == name]

    def describe(self) -> dict:
        """JSON summary: layout, videos and frames per split (frames when known), the audio pairing."""
        out: dict = {"root": str(self.root), "layout": self.layout, "audio_pairing": self.audio_pairing}
        for name in ("train", "val", "test"):
            videos = self.split(name)
            if videos:
                counts = [v.n_frames for v in videos]
                out[name] = {"videos": len(videos),
                             "frames": sum(counts) if all(c is not None for c in counts) else None}
        return out


def natural_key(name: str) -> list:
    """Sort key that orders ``2.jpg`` before ``10.jpg`` (and ``Test2`` before ``Test10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """The image files of one frame folder in frame order."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()),
                  key=lambda p: natural_key(p.name))


def open_frame_dataset(
    data_dir: Path | str, *, audio_dir: Path | str | None = None, fps: float | None = None, seed: int = 0
) -> FrameDataset:
    """List a frame-level dataset (either layout in the module docstring); reads no pixels.

    ``audio_dir`` pairs frame folders with audio files; ``fps`` overrides the frame-folder rate
    (10 Hz); ``seed`` is the class-folder split's seed (as in ``avar extract``).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: not a directory; expected a frame-folder dataset (training/frames/<video>/*.jpg) "
            "or a class-per-folder video dataset (<class>/<clip>.mp4)"
        )
    if _split_root(root, "train") is not None:
        return _frame_folders(root, Path(audio_dir) if audio_dir else None, fps or DEFAULT_FRAME_FPS)
    if audio_dir is not None:
        raise ValueError(
            f"{root}: --audio pairs frame folders with sound; video files already carry their own track"
        )
    return _class_folders(root, seed)


def _split_root(root: Path, split: str) -> Path | None:
    for candidate in (root / _SPLIT_DIRS[split] / "frames", root / _SPLIT_DIRS[split]):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            return candidate
    return None


def read_frame_labels(path: Path) -> dict[str, tuple[int, list[tuple[int, int]]]]:
    """``{video: (num_frames, [(start, end), ...])}`` from a ``test_frame_labels.csv``."""
    out: dict[str, tuple[int, list[tuple[int, int]]]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"video", "num_frames", "abnormal_start", "abnormal_end"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected header {','.join(sorted(need))}")
        for line, row in enumerate(reader, start=2):
            try:
                n = int(row["num_frames"])
                start, end = row["abnormal_start"].strip(), row["abnormal_end"].strip()
                ranges = [(int(start), int(end))] if start and end else []
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}; frame numbers must be integers") from exc
            for a, b in ranges:
                if not 0 <= a <= b < n:
                    raise ValueError(f"{path}:{line}: range {a}-{b} is outside the video's {n} frames (0-based, inclusive)")
            previous = out.get(row["video"])
            if previous is not None and previous[0] != n:
                raise ValueError(f"{path}:{line}: video {row['video']} has num_frames {n} here and {previous[0]} above")
            out[row["video"]] = (n, (previous[1] if previous else []) + ranges)
    return out


def _find_audio(audio_dir: Path, split: str, name: str) -> Path:
    folder = audio_dir / _SPLIT_DIRS[split]
    matches = [folder / f"{name}{ext}" for ext in sorted(AUDIO_EXTENSIONS) if (folder / f"{name}{ext}").is_file()]
    if not matches:
        raise FileNotFoundError(
            f"{folder}: no audio for video '{name}'; expected {folder / name}.wav (or "
            f"{', '.join(sorted(AUDIO_EXTENSIONS))}) for every {_SPLIT_DIRS[split]} video"
        )
    return matches[0]


def _frame_folders(root: Path, audio_dir: Path | None, fps: float) -> FrameDataset:
    labels_path = root / LABELS_FILE
    labels = read_frame_labels(labels_path) if labels_path.is_file() else None
    videos: list[FrameVideo] = []
    for split in ("train", "test"):
        base = _split_root(root, split)
        if base is None:
            if split == "test":
                continue
            raise FileNotFoundError(f"{root}: no {_SPLIT_DIRS[split]}/frames/<video>/ folders")
        for folder in sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
            files = frame_files(folder)
            if not files:
                raise FileNotFoundError(
                    f"{folder}: no frames ({', '.join(sorted(FRAME_EXTENSIONS))}); remove the folder or add its frames"
                )
            ranges: list[tuple[int, int]] = []
            labelled = split == "train"
            if split == "test" and labels is not None:
                if folder.name not in labels:
                    raise ValueError(f"{labels_path}: no row for test video '{folder.name}' ({folder})")
                n, ranges = labels[folder.name]
                if n != len(files):
                    raise ValueError(
                        f"{labels_path}: video {folder.name} has num_frames {n} but {folder} holds {len(files)} frames"
                    )
                labelled = True
            audio = _find_audio(audio_dir, split, folder.name) if audio_dir else None
            videos.append(FrameVideo(
                video_id=f"{_SPLIT_DIRS[split]}/{folder.name}", split=split, source=folder, labelled=labelled,
                abnormal_frames=ranges, audio=audio, n_frames=len(files), fps=fps,
            ))
    if audio_dir is None:
        pairing = "none: video only (frame folders carry no sound)"
    else:
        pairing = (f"paired: {audio_dir}/<training|testing>/<video>.<ext> laid under the frame folders from "
                   f"frame 0 at {fps:g} frames/s (sound recorded separately, not the scene's own)")
    return FrameDataset(root=root, layout="frame-folders", videos=videos, audio_pairing=pairing)


def _class_folders(root: Path, seed: int) -> FrameDataset:
    try:
        entries = discover(root, seed=seed)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{root}: neither frame folders (training/frames/<video>/*.jpg) nor class folders of videos: {exc}"
        ) from exc
    intervals: dict[str, list[float] | None] = {}
    meta_path = root / "metadata.json"
    if meta_path.is_file():
        for clip in json.loads(meta_path.read_text()).get("clips", []):
            intervals[str(Path(clip["path"]))] = clip.get("interval")
    videos = []
    for e in entries:
        if e.split == "train" and e.label != "normal":
            continue  # unsupervised: training sees normal clips only
        relative = str(e.path.relative_to(root))
        interval = intervals.get(relative)
        if e.label == "normal":
            seconds: list[tuple[float, float]] = []
        elif interval is not None:
            seconds = [(float(interval[0]), float(interval[1]))]
        else:
            seconds = [(0.0, float("inf"))]
        videos.append(FrameVideo(video_id=e.clip_id, split=e.split, source=e.path, labelled=True,
                                 abnormal_seconds=seconds, audio=e.path, n_frames=None))
    if not any(v.split == "train" for v in videos):
        raise FileNotFoundError(
            f"{root}: no 'normal' clips in the train split; the autoencoder trains on DATA_DIR/normal/<clip>.mp4"
        )
    pairing = "embedded: each video file's own audio track (zeros where a file has none)"
    return FrameDataset(root=root, layout="class-folders", videos=videos, audio_pairing=pairing)


def load_video(
    video: FrameVideo,
    size: int | None = None,
    *,
    keep_native: bool = False,
    audio_rate: int | None = None,
) -> LoadedVideo:
    """Read one video's frames as grayscale (``size`` x ``size`` when given) and its audio.

    ``audio_rate`` (Hz) reads the paired audio; a frame folder's audio that runs shorter than
    its frames is padded with silence. Raises ``FileNotFoundError``/``ValueError`` naming the
    file on unreadable images.
    """
    if video.source.is_dir():
        native = []
        for path in frame_files(video.source):
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise ValueError(f"{path}: not a readable image; replace or remove it")
            native.append(image)
        native_frames = np.stack(native)
        fps = video.fps
    else:
        decoded = read_frames(video.source, gray=True)
        native_frames, fps = decoded.frames, decoded.fps
    n = len(native_frames)
    frames = native_frames
    if size is not None and native_frames.shape[1:] != (size, size):
        # Area averaging: the paper's 240 x 240 squeezes Ped2's 360 px width without aliasing.
        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in native_frames])
    audio = None
    if audio_rate is not None and video.audio is not None:
        audio = read_audio(video.audio, audio_rate)
        if audio is None:
            audio = np.zeros(int(round(n / fps * audio_rate)), np.float32)
    labels = video.frame_labels(n, fps) if video.labelled and video.split != "train" else None
    return LoadedVideo(video=video, frames=frames, native=native_frames if keep_native else None, fps=fps,
                       audio=audio, audio_rate=audio_rate if audio is not None else None, labels=labels)
