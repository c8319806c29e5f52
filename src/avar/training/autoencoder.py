"""Unsupervised training and scoring of the sequence autoencoders (Tariq et al., 2024).

The models learn to reconstruct normal sequences only (MSE, Adam, sec. 4.2); at test time a
frame's reconstruction error is its anomaly evidence. Training sequences are drawn at frame
strides 1, 2 and 3 (the paper's temporal augmentation, sec. 4.3).

A run directory holds no pickle::

    RUN_DIR/video.safetensors   visual model weights (modality v or av)
    RUN_DIR/audio.safetensors   acoustic model weights + the feature normalisation (a or av)
    RUN_DIR/config.json         "method": "autoencoder", model configs, training config, data
    RUN_DIR/history.json        per-epoch loss and seconds of each model
"""

from __future__ import annotations

import ctypes
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import uniform_filter1d
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from avar.datasets.framefolders import FrameDataset, LoadedVideo, load_video, open_frame_dataset
from avar.features.cache import write_json_atomic
from avar.features.spectral import SPECTRAL_RATE, MinMaxNormalizer, spectral_features
from avar.models.frame_difference import DEFAULT_GRID, grid_cell_means
from avar.training.run import FeatureRun
from avar.models.seq2seq_ae import AudioAEConfig, AudioSeq2SeqAE, VideoAEConfig, VideoSeq2SeqAE, count_parameters

METHOD = "autoencoder"
CONFIG_FILE = "config.json"
VIDEO_FILE = "video.safetensors"
AUDIO_FILE = "audio.safetensors"
MODALITIES = ("v", "a", "av")
SCORERS = ("frame", "patch", "motion")
"""How a frame's error becomes one number: ``frame`` is the paper's Euclidean norm over the whole
frame (Eq. 3); ``patch`` the Euclidean norm of the worst cell of a grid (local evidence);
``motion`` the worst cell's Euclidean error of the frame-to-frame change, i.e. how far the
reconstruction's motion ``r_t - r_{t-1}`` is from the input's ``x_t - x_{t-1}``."""


@dataclass
class AETrainConfig:
    """Training settings; every field is recorded in the run's ``config.json``."""

    modality: str = "v"
    """'v' visual model only, 'a' acoustic only, 'av' both (fused at evaluation)."""
    epochs: int = 6
    """Passes over the training sequences. The paper trains Ped2's visual model for 300 epochs on
    a GPU; 6 keep the Ped2 run inside 30 minutes on 2 CPU cores (25 min measured,
    docs/autoencoder.md)."""
    audio_epochs: int = 50
    """Epochs of the acoustic model (paper Table 6: 50 on Ped2); it is small and cheap."""
    batch_size: int = 10
    """Sequences per batch (sec. 4.3: batch size 10)."""
    lr: float = 1e-3
    """Adam's learning rate (the paper names Adam, not the rate; 1e-3 is Keras' default)."""
    strides: tuple[int, ...] = (1, 2, 3)
    """Frame strides of the training sequences (sec. 4.3)."""
    window_hop: int | None = None
    """Frames between the starts of consecutive training sequences of one stride (default
    ``seq_len``); each epoch shifts the starts by a random offset so every frame is used."""
    test_stride: int | None = None
    """Frames between the starts of test windows (default ``seq_len // 2``); a frame's error is
    averaged over the windows that contain it."""
    score: str = "motion"
    """Default scorer at evaluation (``SCORERS``); all are always reported. ``motion`` scored
    best on UCSD Ped2 (docs/autoencoder.md); ``frame`` is the paper's."""
    smooth: int = 10
    """Frames over which evaluation averages each frame's error, centred on it (1 = none): the
    paper scores 10-frame sequences (sec. 3.2.3), so a frame's evidence spans its sequence."""
    patch_grid: tuple[int, int] = DEFAULT_GRID
    """Rows x columns of the ``patch`` scorer's grid over the frame."""
    precision: str = "auto"
    """'bf16' (CPU or GPU autocast), 'fp32', or 'auto': bf16 where the hardware runs it natively."""
    calibration_fraction: float = 0.2
    """Share of the normal training videos held out of training to calibrate the scores on
    files and streams (at least one video; with fewer than three training videos the
    calibration uses the training videos themselves and the run says so)."""
    seed: int = 0
    threads: int | None = None
    """Torch CPU threads; None leaves torch's default (one per core)."""
    video: dict = field(default_factory=dict)
    """Overrides of :class:`VideoAEConfig` fields."""
    audio: dict = field(default_factory=dict)
    """Overrides of :class:`AudioAEConfig` fields."""

    def __post_init__(self) -> None:
        self.strides = tuple(int(s) for s in self.strides)
        self.patch_grid = tuple(int(g) for g in self.patch_grid)
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.score not in SCORERS:
            raise ValueError(f"score must be one of {SCORERS}, got {self.score!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.smooth < 1:
            raise ValueError(f"smooth must be >= 1 frame, got {self.smooth}")
        if self.epochs < 0 or self.audio_epochs < 0 or self.batch_size < 1 or not self.strides or min(self.strides) < 1:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and strides a non-empty list of integers >= 1")


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the OS.

    Every training step of the visual model allocates and frees activations of 100+ MB. By
    default glibc serves blocks that large with fresh ``mmap`` pages and unmaps them on free,
    so each step pays hundreds of thousands of page faults (measured here: a third of a
    step's time spent in the kernel, more with two threads). Turning ``mmap`` off for
    allocations and raising the trim threshold makes freed blocks reusable; the process's
    resident memory then stays at its peak. A no-op returning False off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2 GiB - 1); both return 1 on success.
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' where matrix units run bfloat16 natively (AVX512-BF16/AMX, CUDA), else 'fp32'."""
    if precision != "auto":
        return precision
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def training_windows(
    n_frames: int, seq_len: int, strides: tuple[int, ...] = (1, 2, 3), hop: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """Frame indices ``int [seq_len]`` of one video's training sequences (temporal augmentation).

    For each stride ``s`` a sequence takes every ``s``-th frame (stride 2: frames 1, 3, 5, ...),
    and sequences start every ``hop`` frames (default ``seq_len``), shifted by a random offset
    below ``hop`` when ``rng`` is given. A stride whose sequence would not fit is skipped; a
    video shorter than ``seq_len`` gives one sequence that repeats its last frame.
    """
    hop = hop or seq_len
    out = []
    for s in strides:
        span = (seq_len - 1) * s + 1
        if span > n_frames:
            continue
        offset = min(int(rng.integers(hop)) if rng is not None else 0, n_frames - span)
        out += [start + s * np.arange(seq_len) for start in range(offset, n_frames - span + 1, hop)]
    if not out:
        out.append(np.minimum(np.arange(seq_len), n_frames - 1))
    return out


def scoring_windows(n_frames: int, seq_len: int, stride: int) -> list[np.ndarray]:
    """Consecutive-frame windows every ``stride`` frames that together cover every frame.

    The last window ends on the last frame; a video shorter than ``seq_len`` gives one window
    that repeats its last frame (those repeats are scored once, as the last frame).
    """
    if n_frames <= seq_len:
        return [np.minimum(np.arange(seq_len), n_frames - 1)]
    starts = list(range(0, n_frames - seq_len + 1, stride))
    if starts[-1] != n_frames - seq_len:
        starts.append(n_frames - seq_len)
    return [s + np.arange(seq_len) for s in starts]


STREAM_CLASSES = ["normal", "anomaly"]
FALSE_ALARM = 0.01
"""Default event threshold on files and streams: the calibrated score that this share of
normal held-out steps reaches (1%)."""
CALIBRATION_LEVELS = 201
"""Quantiles of the normal scores stored in the run (every 0.5%)."""


class GrayFrames:
    """The visual autoencoder's input from decoded RGB frames: grayscale, area-resized to
    ``size`` x ``size`` as :func:`avar.datasets.framefolders.load_video` resizes, flattened
    to ``float32 [B, size * size]`` in 0..255."""

    name = "gray-frames"
    runtime = "numpy"
    input_size = None  # frames arrive at their native size and are resized here

    def __init__(self, size: int):
        self.size, self.dim = size, size * size

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = []
        for frame in frames:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
            if gray.shape != (self.size, self.size):
                gray = cv2.resize(gray, (self.size, self.size), interpolation=cv2.INTER_AREA)
            out.append(gray.reshape(-1))
        return np.stack(out).astype(np.float32)


class NoAudio:
    """Stands in for an audio extractor when a run reads no sound: ``[B, 0]``."""

    name = "none"
    runtime = "numpy"
    dim = 0

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        return np.zeros((len(audio), 0), np.float32)


@dataclass
class AERun(FeatureRun):
    """Trained autoencoder(s) with everything needed to score new videos.

    On files and streams (``avar predict`` / ``watch``, visual model only) a step is one frame
    at the training videos' frame rate; step ``t`` is scored in the window of ``seq_len``
    frames centred on it (the shared windows of :mod:`avar.training.sequences`): the mean
    over the window of its frames' errors (``config.score``), which is the evaluation's
    centred smoothing, mapped through the normal errors of held-out training videos
    (``stream.calibration``) to the share of normal steps it exceeds. So a score means the
    same on every video and on a live stream, and 0.99 is reached by 1% of normal steps.
    """

    method = METHOD
    learning = "unsupervised"
    classes = STREAM_CLASSES
    window_batch = 8

    config: AETrainConfig
    video_model: VideoSeq2SeqAE | None = None
    audio_model: AudioSeq2SeqAE | None = None
    audio_norm: MinMaxNormalizer | None = None
    meta: dict = field(default_factory=dict)
    """Data description (layout, counts, audio pairing), parameter counts, timings."""

    @property
    def seq_len(self) -> int:
        model = self.video_model or self.audio_model
        return model.config.seq_len

    @property
    def frame_size(self) -> int | None:
        return self.video_model.config.frame_size if self.video_model else None

    @property
    def extra(self) -> dict:
        return self.meta

    @property
    def stream(self) -> dict:
        """``{"fps", "calibration": {"quantiles", "videos", "frames", "held_out"}}``, written at
        training; a run saved before it existed is calibrated with ``avar upgrade``."""
        stream = self.meta.get("stream")
        if not stream:
            raise ValueError(
                "this autoencoder run was saved before runs were calibrated for files and streams; "
                "run `avar upgrade RUN_DIR --data DATA_DIR` (the data it was trained on) once"
            )
        return stream

    @property
    def step(self) -> float:
        return 1.0 / self.stream["fps"]

    @property
    def extractors(self) -> dict:
        return {"video": {"name": GrayFrames.name, "dim": (self.frame_size or 0) ** 2},
                "audio": {"name": NoAudio.name, "dim": 0}}

    def build_extractors(self, device: str = "cpu", runtime: str = "torch") -> tuple:
        if self.video_model is None or self.audio_model is not None:
            raise ValueError(f"files and streams need a visual-only autoencoder run (--modality v); this one is "
                             f"{self.config.modality!r}: score it with `avar evaluate RUN_DIR --data DATA_DIR`")
        return GrayFrames(self.frame_size), NoAudio()

    def normalise(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return video, audio

    @torch.inference_mode()
    def window_errors(self, video: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``float64 [N]``: each window's mean frame error (``config.score``) from gray frames
        ``video [N, L, S * S]`` (0..255; padded steps, ``~mask``, repeat the last real frame)."""
        n_real = mask.sum(1)
        size, L = self.frame_size, self.seq_len
        frames = video.reshape(len(video), L, size, size).copy()
        for row, n in enumerate(n_real):
            frames[row, n:] = frames[row, n - 1]
        recon_err, change = _window_errors(self.video_model, frames, resolve_precision(self.config.precision), True)
        err = change if self.config.score == "motion" else recon_err
        if self.config.score == "frame":
            per_frame = np.sqrt(err.sum(axis=(2, 3)))
        else:
            per_frame = np.sqrt(grid_cell_means(err.reshape(-1, size, size), self.config.patch_grid)
                                .max(axis=(1, 2))).reshape(len(err), -1)
        first = 1 if self.config.score == "motion" else 0  # motion is credited to the later frame
        out = np.empty(len(err))
        for row, n in enumerate(n_real):
            out[row] = per_frame[row, : max(1, n - first)].mean()
        return out

    def calibrated(self, errors: np.ndarray) -> np.ndarray:
        """Raw window errors -> the share of normal held-out steps they exceed, in [0, 1]."""
        quantiles = np.asarray(self.stream["calibration"]["quantiles"])
        return np.interp(errors, quantiles, np.linspace(0.0, 1.0, len(quantiles)))

    def window_probabilities(self, video: np.ndarray, audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
        score = self.calibrated(self.window_errors(video, mask))
        return np.repeat(np.stack([1.0 - score, score], -1)[:, None], video.shape[1], axis=1)

    def probabilities(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per step, and the clip's ``[P(normal), P(anomaly)]`` from its most anomalous step."""
        steps = self.step_probabilities(video, audio)
        score = float(steps[:, 1].max())
        return steps, np.array([1.0 - score, score])

    def clip_probabilities(self, video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return self.probabilities(video, audio)[1]

    def step_errors(self, frames: np.ndarray) -> np.ndarray:
        """Raw per-step errors ``[T]`` of one video's gray frames ``uint8 [T, S, S]`` as files
        and streams score them (what the calibration is fitted on)."""
        video = frames.reshape(len(frames), -1).astype(np.float32)
        return np.concatenate([self.window_errors(vw, mask) for vw, _, mask, _ in
                               self.centred_windows(video, np.zeros((len(video), 0), np.float32))])

    def calibrate(self, videos: list[np.ndarray], fps: float, held_out: bool) -> dict:
        """Fit ``stream`` on normal videos' gray frames (``uint8 [T, S, S]`` each) and store it."""
        errors = np.concatenate([self.step_errors(v) for v in videos])
        quantiles = np.quantile(errors, np.linspace(0.0, 1.0, CALIBRATION_LEVELS))
        self.meta["stream"] = {"fps": float(fps), "calibration": {
            "quantiles": [float(q) for q in np.maximum.accumulate(quantiles)], "videos": len(videos),
            "frames": int(len(errors)), "held_out": held_out}}
        self.meta["thresholds"] = {"threshold": 1.0 - FALSE_ALARM, "release": 1.0 - 5 * FALSE_ALARM}
        return self.meta["stream"]

    def save(self, root: Path | str) -> Path:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        if self.video_model is not None:
            save_file(_state(self.video_model), str(root / VIDEO_FILE))
        if self.audio_model is not None:
            tensors = _state(self.audio_model)
            tensors["norm.low"] = torch.from_numpy(self.audio_norm.low)
            tensors["norm.high"] = torch.from_numpy(self.audio_norm.high)
            save_file(tensors, str(root / AUDIO_FILE))
        write_json_atomic(root / CONFIG_FILE, {
            "method": METHOD,
            "learning": self.learning,
            "modality": self.config.modality,
            "video": self.video_model.config.to_dict() if self.video_model else None,
            "audio": self.audio_model.config.to_dict() if self.audio_model else None,
            "train": asdict(self.config),
            **self.meta,
        })
        return root

    @classmethod
    def load(cls, root: Path | str) -> "AERun":
        root = Path(root)
        path = root / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{root}: missing {CONFIG_FILE}; is this a run directory made by `avar train`?")
        meta = json.loads(path.read_text())
        if meta.get("method") != METHOD:
            raise ValueError(
                f"{path}: method is {meta.get('method')!r}, not {METHOD!r}; evaluate it with "
                "`avar evaluate RUN_DIR FEATURES_DIR` instead of --data"
            )
        config = AETrainConfig(**meta.pop("train"))
        run = cls(config=config)
        video_cfg, audio_cfg = meta.pop("video"), meta.pop("audio")
        meta.pop("method"), meta.pop("modality"), meta.pop("learning", None)
        if video_cfg is not None:
            run.video_model = VideoSeq2SeqAE(VideoAEConfig.from_dict(video_cfg))
            run.video_model.load_state_dict(_load_weights(root / VIDEO_FILE))
            run.video_model.eval()
        if audio_cfg is not None:
            tensors = _load_weights(root / AUDIO_FILE)
            run.audio_norm = MinMaxNormalizer(tensors.pop("norm.low").numpy(), tensors.pop("norm.high").numpy())
            run.audio_model = AudioSeq2SeqAE(AudioAEConfig.from_dict(audio_cfg))
            run.audio_model.load_state_dict(tensors)
            run.audio_model.eval()
        run.meta = meta
        return run

    def audio_features(self, loaded: LoadedVideo) -> np.ndarray:
        """Normalised spectral features ``[N, n_features]``, one row per frame of ``loaded``."""
        if loaded.audio is None:
            raise ValueError(
                f"{loaded.video.source}: no audio; modality {self.config.modality!r} needs sound "
                "(pair frame folders with --audio AUDIO_DIR, or use video files with an audio track)"
            )
        hop = max(1, int(round(loaded.audio_rate / loaded.fps)))
        raw = spectral_features(loaded.audio, loaded.audio_rate, hop, n_frames=len(loaded.frames))
        return self.audio_norm.apply(raw) if self.audio_norm is not None else raw

    @torch.inference_mode()
    def frame_errors(self, loaded: LoadedVideo, batch_size: int = 8) -> dict[str, np.ndarray]:
        """Raw per-frame reconstruction errors of one video, ``float64 [N]`` per scorer.

        Keys: ``video_frame`` (Eq. 3: Euclidean norm over the frame), ``video_patch`` (the
        Euclidean norm of the worst ``patch_grid`` cell), ``video_motion`` (the same over the
        error of the frame-to-frame change), ``audio_frame`` (Euclidean norm over the frame's
        spectral features), as the run's modality allows. Test windows of ``seq_len`` frames
        start every ``test_stride`` frames; each frame's squared error map is averaged over the
        windows containing it before it is reduced. No smoothing here (see ``smooth_scores``).
        """
        precision = resolve_precision(self.config.precision)
        stride = self.config.test_stride or max(1, self.seq_len // 2)
        out: dict[str, np.ndarray] = {}
        if self.video_model is not None:
            frames = loaded.frames
            size = self.frame_size
            if frames.shape[1:] != (size, size):
                raise ValueError(f"{loaded.video.source}: frames are {frames.shape[1:]}, the model needs {size} x {size}")
            sq, motion = _mean_window_error(self.video_model, frames, self.seq_len, stride, batch_size, precision,
                                            video=True)
            out["video_frame"] = np.sqrt(sq.sum(axis=(1, 2)))
            out["video_patch"] = np.sqrt(grid_cell_means(sq, self.config.patch_grid).max(axis=(1, 2)))
            out["video_motion"] = np.sqrt(grid_cell_means(motion, self.config.patch_grid).max(axis=(1, 2)))
        if self.audio_model is not None:
            feats = self.audio_features(loaded)
            sq, _ = _mean_window_error(self.audio_model, feats, self.seq_len, stride, 64, precision, video=False)
            out["audio_frame"] = np.sqrt(sq.sum(axis=1))
        return out


def smooth_scores(scores: np.ndarray, frames: int) -> np.ndarray:
    """Centred moving average of one video's per-frame scores over ``frames`` frames.

    The paper's regularity score describes a 10-frame sequence (sec. 3.2.3); averaging each
    frame's error over the frames around it is that sequence view, centred on the frame
    rather than starting at it. The video's ends repeat their edge values.
    """
    if frames <= 1 or len(scores) < 2:
        return np.asarray(scores, dtype=np.float64)
    return uniform_filter1d(np.asarray(scores, dtype=np.float64), frames, mode="nearest")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: missing {path.name}; the run directory is incomplete, train it again")
    return load_file(str(path))


def _as_input(windows: np.ndarray, video: bool) -> torch.Tensor:
    if video:  # uint8 [B, T, S, S] -> float [B, T, 1, S, S] in [0, 1]
        return torch.from_numpy(windows).float().div_(255.0).unsqueeze(2)
    return torch.from_numpy(windows).float()


@torch.inference_mode()
def _window_errors(model, windows: np.ndarray, precision: str, video: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Squared reconstruction error of every element of ``windows [B, T, ...]`` and, for video,
    of the frame-to-frame change ``(x_t - x_{t-1}) - (r_t - r_{t-1})`` (``[B, T - 1, S, S]``,
    credited to frame ``t``)."""
    x = _as_input(windows, video)
    with _autocast(precision):
        recon = model(x).float()
    if not video:
        return (recon - x).square().numpy(), None
    x, recon = x.squeeze(2), recon.squeeze(2)
    change = ((x[:, 1:] - x[:, :-1]) - (recon[:, 1:] - recon[:, :-1])).square().numpy()
    return (recon - x).square().numpy(), change


def _mean_window_error(model, data: np.ndarray, seq_len: int, stride: int, batch_size: int, precision: str,
                       video: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Squared errors of every element of ``data [N, ...]``, averaged over the test windows.

    Returns the reconstruction error and, for video, the error of the frame-to-frame change
    (``(x_t - x_{t-1}) - (r_t - r_{t-1})`` within a window, credited to frame ``t``; a frame no
    window gives a predecessor, such as frame 0, takes its nearest neighbour's).
    """
    model.eval()
    n = len(data)
    total = np.zeros(data.shape, dtype=np.float32)
    count = np.zeros(n, dtype=np.float32)
    motion = np.zeros(data.shape, dtype=np.float32) if video else None
    motion_count = np.zeros(n, dtype=np.float32)
    windows = scoring_windows(n, seq_len, stride)
    for k in range(0, len(windows), batch_size):
        chunk = windows[k : k + batch_size]
        err, change = _window_errors(model, np.stack([data[w] for w in chunk]), precision, video)
        for b, w in enumerate(chunk):
            idx = np.unique(w)  # a short video's repeated last frame counts once
            total[idx] += err[b, : len(idx)]
            count[idx] += 1
            if video and len(idx) > 1:
                motion[idx[1:]] += change[b, : len(idx) - 1]
                motion_count[idx[1:]] += 1
    total /= count.reshape((n,) + (1,) * (data.ndim - 1))
    if video:
        seen = np.flatnonzero(motion_count > 0)
        if seen.size == 0:
            motion = total.copy()  # a one-frame video has no motion to compare
        else:
            motion[seen] /= motion_count[seen].reshape((-1,) + (1,) * (data.ndim - 1))
            for i in np.flatnonzero(motion_count == 0):
                motion[i] = motion[seen[np.argmin(np.abs(seen - i))]]
    return total, motion


def _fit(model: torch.nn.Module, data: list[np.ndarray], config: AETrainConfig, epochs: int, video: bool,
         name: str, progress: bool) -> list[dict]:
    """Adam on MSE over the training sequences of every video in ``data``; returns the history."""
    precision = resolve_precision(config.precision)
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    seq_len = model.config.seq_len
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        started = time.perf_counter()
        windows = [(v, w) for v, frames in enumerate(data)
                   for w in training_windows(len(frames), seq_len, config.strides, config.window_hop, rng)]
        order = rng.permutation(len(windows))
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"{name} epoch {epoch}/{epochs}",
                   disable=not progress, leave=False)
        for k in bar:
            batch = [windows[i] for i in order[k : k + config.batch_size]]
            x = _as_input(np.stack([data[v][w] for v, w in batch]), video)
            with _autocast(precision):
                recon = model(x)
            loss = torch.nn.functional.mse_loss(recon.float(), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{total / seen:.5f}")
        history.append({"epoch": epoch, "loss": total / max(seen, 1), "sequences": seen,
                        "seconds": round(time.perf_counter() - started, 2)})
    model.eval()
    return history


def calibration_videos(n_train: int, fraction: float, seed: int) -> list[int]:
    """Indices of the training videos held out for calibration: ``fraction`` of them, at
    least one, none when fewer than three (seeded)."""
    if n_train < 3 or fraction <= 0:
        return []
    count = min(n_train - 2, max(1, round(fraction * n_train)))
    return sorted(np.random.default_rng([seed, 11]).permutation(n_train)[:count].tolist())


def train_autoencoder(
    data: FrameDataset | Path | str,
    out_dir: Path | str,
    config: AETrainConfig | None = None,
    *,
    audio_dir: Path | str | None = None,
    progress: bool = True,
) -> AERun:
    """Train the run's models on the normal training videos of ``data`` and save to ``out_dir``.

    ``data`` is a :class:`FrameDataset` or a directory (see
    :func:`avar.datasets.framefolders.open_frame_dataset`); ``audio_dir`` pairs frame folders
    with sound. Returns the saved :class:`AERun`.
    """
    config = config or AETrainConfig()
    dataset = data if isinstance(data, FrameDataset) else open_frame_dataset(data, audio_dir=audio_dir, seed=config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    retain_freed_memory()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    train = dataset.split("train")
    if not train:
        raise ValueError(f"{dataset.root}: no training videos")
    use_video, use_audio = "v" in config.modality, "a" in config.modality
    held_out = calibration_videos(len(train), config.calibration_fraction, config.seed) if use_video else []
    calibration = [train[i] for i in held_out]
    train = [v for i, v in enumerate(train) if i not in set(held_out)]
    video_cfg = VideoAEConfig(**config.video)
    audio_cfg = AudioAEConfig(**{"seq_len": video_cfg.seq_len, **config.audio})
    started = time.perf_counter()
    loaded = [load_video(v, video_cfg.frame_size if use_video else None,
                         audio_rate=SPECTRAL_RATE if use_audio else None)
              for v in tqdm(train, desc="reading training videos", disable=not progress, leave=False)]
    load_seconds = time.perf_counter() - started
    run = AERun(config=config)
    history: dict[str, list] = {}
    meta = {
        "data": {**dataset.describe(), "train_frames_read": int(sum(len(v.frames) for v in loaded))},
        "audio_pairing": dataset.audio_pairing,
        "audio_dir": str(Path(audio_dir).resolve()) if audio_dir else None,
        "precision": resolve_precision(config.precision),
        "torch_threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 2),
    }
    if use_video:
        run.video_model = VideoSeq2SeqAE(video_cfg)
        meta["video_params"] = count_parameters(run.video_model)
        t0 = time.perf_counter()
        history["video"] = _fit(run.video_model, [v.frames for v in loaded], config, config.epochs, True, "video", progress)
        meta["video_train_seconds"] = round(time.perf_counter() - t0, 2)
    if use_audio:
        missing = [v.video.source for v in loaded if v.audio is None]
        if missing:
            raise ValueError(
                f"{missing[0]}: no audio for modality {config.modality!r}; pair frame folders with "
                "--audio AUDIO_DIR (AUDIO_DIR/training/<video>.wav) or train with --modality v"
            )
        raw = [run.audio_features(v) for v in loaded]
        run.audio_norm = MinMaxNormalizer.fit(raw)
        feats = [run.audio_norm.apply(f) for f in raw]
        run.audio_model = AudioSeq2SeqAE(audio_cfg)
        meta["audio_params"] = count_parameters(run.audio_model)
        t0 = time.perf_counter()
        history["audio"] = _fit(run.audio_model, feats, config, config.audio_epochs, False, "audio", progress)
        meta["audio_train_seconds"] = round(time.perf_counter() - t0, 2)
    run.meta = meta
    if use_video and not use_audio:
        t0 = time.perf_counter()
        shown = [load_video(v, video_cfg.frame_size) for v in calibration] if calibration else loaded
        run.calibrate([v.frames for v in shown], shown[0].fps, held_out=bool(calibration))
        meta["stream"]["calibration"]["video_ids"] = [v.video.video_id for v in shown]
        meta["calibration_seconds"] = round(time.perf_counter() - t0, 2)
    meta["train_seconds"] = round(time.perf_counter() - started, 2)
    run.save(out_dir)
    write_json_atomic(Path(out_dir) / "history.json", history)
    return run


def upgrade_autoencoder(run_dir: Path | str, data: FrameDataset | Path | str, *,
                        audio_dir: Path | str | None = None) -> AERun:
    """Calibrate a visual autoencoder run saved before runs carried a calibration, on the
    normal training videos of ``data`` (those it was trained on, so the calibration is
    in-sample and says so), and save it again."""
    run = AERun.load(run_dir)
    if run.video_model is None:
        raise ValueError(f"{run_dir}: an acoustic-only autoencoder run has no stream calibration to fit")
    dataset = data if isinstance(data, FrameDataset) else open_frame_dataset(data, audio_dir=audio_dir,
                                                                             seed=run.config.seed)
    loaded = [load_video(v, run.frame_size) for v in dataset.split("train")]
    if not loaded:
        raise ValueError(f"{dataset.root}: no training videos to calibrate on")
    run.calibrate([v.frames for v in loaded], loaded[0].fps, held_out=False)
    run.meta["stream"]["calibration"]["video_ids"] = [v.video.video_id for v in loaded]
    run.save(run_dir)
    return run

