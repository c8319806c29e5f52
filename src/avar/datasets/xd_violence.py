"""XD-Violence (Wu et al., ECCV 2020): lists, weak labels, frame annotations, feature import.

The benchmark ships its video names in two lists (``train_videos.txt``, ``test_videos.txt``),
the weak label inside each name after ``_label_`` (``A`` normal; ``B1`` fighting, ``B2``
shooting, ``B4`` riot, ``B5`` abuse, ``B6`` car accident, ``G`` explosion; up to three codes
joined by ``-``, ``0`` for none), and the abnormal frame ranges of the 500 anomalous test
videos in ``annotations.txt`` (frame numbers at the videos' 24 fps, inclusive pairs).

Its published features are one file per video and stream: ``<name>__<crop>.npy`` I3D RGB
``[T, 1024]`` for crops 0-4 (one row per 16-frame snippet) and ``<name>__vggish.npy`` VGGish
``[T', 128]``. :func:`import_features` turns them into an avar feature cache, so AVACA and
the AVAR-Net head train on them like on anything ``avar extract`` made; :func:`write_splits_csv`
lets ``avar extract`` read the videos themselves instead.

The detection protocol scores every 16-frame snippet, repeats each score 16 times, and
compares with the annotated frames; the cache's step is therefore 16 frames (2/3 s) and
every test clip carries its frame truth (``FrameTruth`` at 24 fps).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avar.datasets.annotations import FrameTruth, read_annotations
from avar.features.cache import FeatureSet, StepFeatures
from avar.media.decode import MEDIA_EXTENSIONS

FPS = 24.0
"""Frame rate of the XD-Violence videos (annotations count frames at this rate)."""
SNIPPET_FRAMES = 16
"""Frames per I3D snippet: one feature row, one score."""
STEP_S = SNIPPET_FRAMES / FPS
"""Seconds per snippet (2/3 s): the step of an imported cache."""
CROPS = 5
"""I3D crops per video in the published features (``__0`` ... ``__4``)."""
RGB_DIM = 1024
VGGISH_DIM = 128

LABEL_CODES: dict[str, str] = {
    "A": "normal",
    "B1": "fighting",
    "B2": "shooting",
    "B4": "riot",
    "B5": "abuse",
    "B6": "car_accident",
    "G": "explosion",
}
"""Code in a video's name -> class name."""

LIST_FILES = {"train": "train_videos.txt", "test": "test_videos.txt"}
ANNOTATIONS_FILE = "annotations.txt"


def parse_label_codes(name: str) -> tuple[str, ...]:
    """The label codes in a video name, ``0`` placeholders dropped: ``...label_B2-G-0`` -> ``('B2', 'G')``."""
    if "_label_" not in name:
        raise ValueError(f"'{name}': an XD-Violence name has its labels after '_label_'")
    tail = name.rsplit("_label_", 1)[1]
    codes = tuple(code for code in tail.split("-") if code != "0")
    unknown = [code for code in codes if code not in LABEL_CODES]
    if not codes or unknown:
        raise ValueError(f"'{name}': unknown label code(s) {unknown or [tail]}; known: {sorted(LABEL_CODES)}")
    if "A" in codes and len(codes) > 1:
        raise ValueError(f"'{name}': 'A' (normal) cannot be combined with anomaly codes")
    return codes


@dataclass(frozen=True)
class XDVideo:
    """One video of the benchmark: its name, split and weak label codes."""

    name: str
    split: str
    codes: tuple[str, ...]

    @property
    def anomalous(self) -> bool:
        """The video-level (weak) label: True unless the code is ``A``."""
        return self.codes != ("A",)

    @property
    def label(self) -> str:
        """Class name of the first code (``normal`` for ``A``): the label a feature cache stores."""
        return LABEL_CODES[self.codes[0]]

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names of every code."""
        return tuple(LABEL_CODES[c] for c in self.codes)


def read_list(path: Path | str, split: str) -> list[XDVideo]:
    """The videos of one list file (one name per line, blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such list; expected XD-Violence's {LIST_FILES.get(split, 'list file')}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [XDVideo(name, split, parse_label_codes(name)) for name in names]


@dataclass
class XDViolence:
    """The benchmark's lists and annotations, read from one folder."""

    root: Path
    train: list[XDVideo]
    test: list[XDVideo]
    annotations: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path | str) -> "XDViolence":
        """Read ``train_videos.txt``, ``test_videos.txt`` and ``annotations.txt`` from ``root``."""
        root = Path(root)
        xd = cls(root, read_list(root / LIST_FILES["train"], "train"), read_list(root / LIST_FILES["test"], "test"),
                 read_annotations(root / ANNOTATIONS_FILE))
        test_names = {v.name: v for v in xd.test}
        stray = sorted(set(xd.annotations) - set(test_names))
        if stray:
            raise ValueError(f"{root / ANNOTATIONS_FILE}: {len(stray)} annotated videos are not in the test list, "
                             f"e.g. {stray[0]}")
        normal = sorted(name for name in xd.annotations if not test_names[name].anomalous)
        if normal:
            raise ValueError(f"{root / ANNOTATIONS_FILE}: normal videos carry abnormal frames, e.g. {normal[0]}")
        return xd

    @property
    def videos(self) -> list[XDVideo]:
        return self.train + self.test

    def counts(self) -> dict[str, int]:
        """Videos per split, normal videos per split, and annotated anomalous videos."""
        return {
            "train": len(self.train),
            "train_normal": sum(not v.anomalous for v in self.train),
            "test": len(self.test),
            "test_normal": sum(not v.anomalous for v in self.test),
            "annotated": len(self.annotations),
        }

    def frame_truth(self, video: XDVideo) -> FrameTruth | None:
        """Frame truth of a test video (none for a normal one); None for training videos and
        anomalous test videos without annotation: weak labels only."""
        if not video.anomalous:
            return FrameTruth(FPS, ())
        pairs = self.annotations.get(video.name)
        if video.split != "test" or pairs is None:
            return None
        return FrameTruth(FPS, tuple((start, end + 1) for start, end in pairs))

    def frame_labels(self, video: XDVideo, n_snippets: int) -> np.ndarray:
        """``bool [16 * n_snippets]``: the snippet protocol's frame ground truth of a test video."""
        truth = self.frame_truth(video)
        if truth is None:
            raise ValueError(f"'{video.name}': no frame annotation (a training video, or an anomalous test "
                             f"video missing from {ANNOTATIONS_FILE})")
        return truth.labels(SNIPPET_FRAMES * n_snippets)


def find_feature_files(*folders: Path | str) -> dict[str, dict[str, Path]]:
    """Video name -> ``{"0": path, ..., "4": path, "vggish": path}`` for every ``.npy`` below ``folders``."""
    found: dict[str, dict[str, Path]] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a directory of XD-Violence feature files (<name>__<crop>.npy)")
        for path in folder.rglob("*.npy"):
            name, sep, key = path.stem.rpartition("__")
            if sep and (key == "vggish" or key.isdigit()):
                found.setdefault(name, {})[key] = path
    return found


def align_rows(features: np.ndarray, n: int) -> np.ndarray:
    """``features [T', d]`` resampled to ``n`` rows by time: row ``i`` takes row ``floor(i * T' / n)``.

    The published VGGish rows are meant to follow the 16-frame snippets and usually match the
    I3D count or miss one; the proportional map is the identity when the counts agree and
    spreads any difference evenly instead of shifting the end of the video.
    """
    if len(features) == 0:
        raise ValueError("cannot align an empty feature array")
    index = np.minimum((np.arange(n) * len(features)) // n, len(features) - 1)
    return features[index]


def _load(path: Path, dim: int) -> np.ndarray:
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or array.shape[1] != dim or len(array) == 0:
        raise ValueError(f"{path}: expected a [T, {dim}] array, got shape {list(array.shape)}")
    return array.astype(np.float32)


@dataclass
class ImportSummary:
    """What :func:`import_features` did."""

    features: FeatureSet
    clips: int
    missing_rgb: list[str]
    """Listed videos without any I3D file (skipped)."""
    missing_audio: list[str]
    """Imported videos without a VGGish file (zero audio, ``audio_missing``)."""


def import_features(
    xd: XDViolence,
    rgb: list[Path | str] | Path | str,
    audio: list[Path | str] | Path | str | None,
    out_dir: Path | str,
    *,
    crops: str = "mean",
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> ImportSummary:
    """Write an avar feature cache from the published I3D / VGGish files.

    ``crops`` says what a training video becomes: ``mean`` (one clip, crop features averaged),
    ``all`` (five clips ``<name>__<crop>``, the usual augmentation) or a crop number ``0``-``4``.
    Test videos always become one clip with the crops averaged, so every test video counts once.
    ``val_fraction`` of the training list (stratified by the weak label, seeded) becomes the
    ``val`` split that weak training selects its checkpoint on, by video labels only.
    VGGish rows are aligned to the snippets by :func:`align_rows`. Each clip's manifest entry
    records its label codes and, for test videos, the frame truth.
    """
    if crops not in ("mean", "all") and not (crops.isdigit() and int(crops) < CROPS):
        raise ValueError(f"crops must be 'mean', 'all' or a crop number 0-{CROPS - 1}, got {crops!r}")
    rgb_dirs = [rgb] if isinstance(rgb, (str, Path)) else list(rgb)
    audio_dirs = [] if audio is None else [audio] if isinstance(audio, (str, Path)) else list(audio)
    files = find_feature_files(*rgb_dirs)
    audio_files = find_feature_files(*audio_dirs) if audio_dirs else {}
    videos = [v for v in xd.videos if any(k.isdigit() for k in files.get(v.name, {}))]
    missing_rgb = [v.name for v in xd.videos if v not in videos]
    if not videos:
        raise FileNotFoundError(
            f"no I3D feature files (<name>__<crop>.npy) for any listed video under {', '.join(map(str, rgb_dirs))}"
        )
    split_of = _val_split(videos, val_fraction, seed)
    missing_audio: list[str] = []
    records: dict[str, dict] = {}

    def clips() -> Iterator[StepFeatures]:
        for video in tqdm(videos, desc="import XD-Violence", unit="video", disable=not progress):
            found = files[video.name]
            crop_keys = sorted(k for k in found if k.isdigit())
            stacks = {k: _load(found[k], RGB_DIM) for k in crop_keys}
            n = min(len(s) for s in stacks.values())
            if video.split == "test" or crops == "mean":
                views = {"": np.mean([s[:n] for s in stacks.values()], axis=0)}
            elif crops == "all":
                views = {f"__{k}": s for k, s in stacks.items()}
            elif crops in stacks:
                views = {"": stacks[crops]}
            else:
                raise FileNotFoundError(f"{video.name}: crop {crops} missing (found crops {crop_keys})")
            if "vggish" in audio_files.get(video.name, {}):
                sound, missing = _load(audio_files[video.name]["vggish"], VGGISH_DIM), False
            else:
                sound, missing = None, True
                missing_audio.append(video.name)
            truth = xd.frame_truth(video)
            for suffix, rgb_rows in views.items():
                t = len(rgb_rows)
                clip_id = video.name + suffix
                records[clip_id] = {"codes": list(video.codes), **({"truth": truth.to_dict()} if truth else {})}
                yield StepFeatures(
                    clip_id=clip_id,
                    label=video.label,
                    split=split_of[video.name],
                    video=rgb_rows.astype(np.float32),
                    audio=np.zeros((t, VGGISH_DIM), np.float32) if sound is None else align_rows(sound, t),
                    times=np.arange(t) * STEP_S,
                    audio_missing=missing,
                )

    # The records dict fills while the generator runs; FeatureSet.create reads each clip's
    # entry right after the clip is yielded.
    features = FeatureSet.create(
        out_dir, clips(), step=STEP_S, records=records,
        video={"name": "i3d-rgb", "version": "xd-violence", "dim": RGB_DIM},
        audio={"name": "vggish", "version": "xd-violence", "dim": VGGISH_DIM},
    )
    if missing_audio:
        warnings.warn(f"{len(missing_audio)} videos have no VGGish file and got zero audio, e.g. {missing_audio[0]}",
                      stacklevel=2)
    return ImportSummary(features, len(features.clips), missing_rgb, missing_audio)


def _val_split(videos: list[XDVideo], val_fraction: float, seed: int) -> dict[str, str]:
    """Video name -> split: test stays test; ``val_fraction`` of each training label goes to val."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = {v.name: v.split for v in videos}
    rng = np.random.default_rng(seed)
    for anomalous in (False, True):
        names = sorted(v.name for v in videos if v.split == "train" and v.anomalous == anomalous)
        for index in rng.permutation(len(names))[: int(round(len(names) * val_fraction))]:
            out[names[index]] = "val"
    return out


def write_splits_csv(xd: XDViolence, video_dir: Path | str, out_csv: Path | str, *, val_fraction: float = 0.1,
                     seed: int = 0) -> tuple[Path, list[str]]:
    """A ``splits.csv`` for ``avar extract VIDEO_DIR --splits OUT_CSV`` over the benchmark's videos.

    Videos are found by name anywhere below ``video_dir`` (any media extension). Returns the
    file and the listed names that were not found. Labels are the class of the first code;
    ``avar evaluate --annotations annotations.txt`` then supplies the frame truth.
    """
    video_dir = Path(video_dir)
    by_name = {p.stem: p for p in video_dir.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS}
    found = [v for v in xd.videos if v.name in by_name]
    if not found:
        raise FileNotFoundError(f"{video_dir}: none of the {len(xd.videos)} listed XD-Violence videos is there")
    split_of = _val_split(found, val_fraction, seed)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for video in found:
            writer.writerow([by_name[video.name].relative_to(video_dir).as_posix(), video.label, split_of[video.name]])
    return out_csv, [v.name for v in xd.videos if v.name not in by_name]
