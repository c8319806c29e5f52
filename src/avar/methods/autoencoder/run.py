"""The autoencoder's run: trained model(s) that score frames, calibrated for files and streams.

A run directory holds no pickle::

    RUN_DIR/video.safetensors   visual model weights (modality v or av)
    RUN_DIR/audio.safetensors   acoustic model weights + the feature normalisation (a or av)
    RUN_DIR/config.json         "method": "autoencoder", model configs, training config, data,
                                the stream calibration and default thresholds
    RUN_DIR/history.json        per-epoch records of each model (avar.training.loop)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import uniform_filter1d

from avar.datasets.framefolders import LoadedVideo
from avar.features.spectral import MinMaxNormalizer, spectral_features
from avar.methods.autoencoder.flow_normality import FlowNormality
from avar.methods.autoencoder.config import AETrainConfig
from avar.methods.autoencoder.frame_difference import grid_cell_means
from avar.methods.autoencoder.torch_model import AudioSeq2SeqAE, VideoSeq2SeqAE
from avar.methods.autoencoder.config import AudioAEConfig, VideoAEConfig
from avar.training.run import (HISTORY_FILE, WEIGHTS_KEY, FeatureRun, TrainingRecord, load_state, load_weights,
                               read_run_config, reading_config, save_run, typed)


METHOD = "autoencoder"


CONFIG_FILE = "config.json"


VIDEO_FILE = "video.safetensors"


AUDIO_FILE = "audio.safetensors"


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' where matrix units run bfloat16 natively (AVX512-BF16/AMX, CUDA), else 'fp32'."""
    if precision != "auto":
        return precision
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def autocast_for(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


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
class AERecord(TrainingRecord):
    """What training recorded about an autoencoder run (:class:`TrainingRecord`, whose ``train``
    is the run's :class:`AETrainConfig`, and the fields below)."""

    data: dict | None = None
    """The DATA_DIR described (layout, counts) and the training frames read."""
    audio_pairing: str | None = None
    audio_dir: str | None = None
    precision: str | None = None
    load_seconds: float | None = None
    video_params: int | None = None
    audio_params: int | None = None
    video_train_seconds: float | None = None
    audio_train_seconds: float | None = None
    stream: dict | None = None
    """The calibration for files and streams (:attr:`AERun.stream`)."""
    calibration_seconds: float | None = None
    flow: dict | None = None
    """The motion term (:class:`FlowNormality`) as saved."""
    flow_seconds: float | None = None

    @classmethod
    def train_config(cls, values: dict, path: Path | str):
        return typed(AETrainConfig, values, path, "train config")


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

    record: AERecord
    """What training recorded; ``record.train`` is the run's :class:`AETrainConfig` (:attr:`config`)."""
    video_model: VideoSeq2SeqAE | None = None
    audio_model: AudioSeq2SeqAE | None = None
    audio_norm: MinMaxNormalizer | None = None

    @property
    def config(self) -> AETrainConfig:
        return self.record.train

    @property
    def seq_len(self) -> int:
        model = self.video_model or self.audio_model
        return model.config.seq_len

    @property
    def frame_size(self) -> int | None:
        return self.video_model.config.frame_size if self.video_model else None

    @property
    def flow(self) -> FlowNormality | None:
        """The motion term (:mod:`avar.methods.autoencoder.flow_normality`) where the run has one
        (runs trained before it existed: ``avar upgrade`` fits it)."""
        return FlowNormality.from_dict(self.record.flow) if self.record.flow else None

    @property
    def stream(self) -> dict:
        """``{"fps", "calibration": {"quantiles", "videos", "frames", "held_out"}}``, written at
        training; a run saved before it existed is calibrated with ``avar upgrade``."""
        stream = self.record.stream
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
        return GrayFrames(self.frame_size), NoAudio(), None

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
        self.record.stream = {"fps": float(fps), "calibration": {
            "quantiles": [float(q) for q in np.maximum.accumulate(quantiles)], "videos": len(videos),
            "frames": int(len(errors)), "held_out": held_out}}
        self.record.thresholds = {"threshold": 1.0 - FALSE_ALARM, "release": 1.0 - 5 * FALSE_ALARM}
        return self.record.stream

    def save(self, root: Path | str, *, history: list[dict] | None = None, keep: bool = False) -> Path:
        """Write the run directory whole (:func:`avar.training.run.save_run`); ``history``
        goes to ``history.json``, ``keep`` keeps the other files of a run re-saved in place
        (``avar upgrade``)."""
        weights = {}
        if self.video_model is not None:
            weights[VIDEO_FILE] = _state(self.video_model)
        if self.audio_model is not None:
            tensors = _state(self.audio_model)
            tensors["norm.low"] = torch.from_numpy(np.ascontiguousarray(self.audio_norm.low))
            tensors["norm.high"] = torch.from_numpy(np.ascontiguousarray(self.audio_norm.high))
            weights[AUDIO_FILE] = tensors
        config = {
            "method": METHOD,
            "learning": self.learning,
            "modality": self.config.modality,
            "video": self.video_model.config.to_dict() if self.video_model else None,
            "audio": self.audio_model.config.to_dict() if self.audio_model else None,
            **self.record.to_dict(),
        }
        return save_run(root, weights=weights, config=config,
                        files=None if history is None else {HISTORY_FILE: history}, keep=keep)

    @classmethod
    def load(cls, root: Path | str) -> "AERun":
        root = Path(root)
        path = root / CONFIG_FILE
        meta = read_run_config(root)
        if meta.get("method") != METHOD:
            raise ValueError(
                f"{path}: method is {meta.get('method')!r}, not {METHOD!r}; evaluate it with "
                "`avar evaluate RUN_DIR FEATURES_DIR` instead of --data"
            )
        with reading_config(root, "autoencoder run"):
            digests = meta.pop(WEIGHTS_KEY, None)
            video_cfg, audio_cfg = meta.pop("video"), meta.pop("audio")
            meta.pop("method"), meta.pop("modality"), meta.pop("learning", None)
            meta["train"]  # every autoencoder run records it: its absence is a damaged config, not an old run
            run = cls(record=AERecord.from_dict(meta, path))
            if not isinstance(run.config, AETrainConfig):
                raise ValueError("'train' is not the autoencoder's training settings")
            if video_cfg is None and audio_cfg is None:
                raise ValueError("it names neither a video nor an audio model")
            if video_cfg is not None:
                run.video_model = VideoSeq2SeqAE(VideoAEConfig.from_dict(video_cfg))
            if audio_cfg is not None:
                run.audio_model = AudioSeq2SeqAE(AudioAEConfig.from_dict(audio_cfg))
            _check_stream(run.record.stream)
        if run.video_model is not None:
            load_state(run.video_model, load_weights(root, VIDEO_FILE, digests), root / VIDEO_FILE)
        if run.audio_model is not None:
            tensors = load_weights(root, AUDIO_FILE, digests)
            if "norm.low" not in tensors or "norm.high" not in tensors:
                raise ValueError(f"{root / AUDIO_FILE}: lacks the audio normalisation (norm.low, norm.high); retrain "
                                 "the run or restore the run directory from a backup")
            run.audio_norm = MinMaxNormalizer(tensors.pop("norm.low").numpy(), tensors.pop("norm.high").numpy())
            load_state(run.audio_model, tensors, root / AUDIO_FILE)
        run.root = root
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


def _check_stream(stream) -> None:
    """A recorded stream calibration (absent on runs saved before it): a positive frame rate
    and at least two finite, non-decreasing quantiles."""
    if stream is None:
        return
    fps, quantiles = stream["fps"], np.asarray(stream["calibration"]["quantiles"], dtype=np.float64)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"stream.fps must be a finite frame rate > 0, got {fps!r}")
    if quantiles.ndim != 1 or len(quantiles) < 2 or not np.isfinite(quantiles).all() or np.any(np.diff(quantiles) < 0):
        raise ValueError("stream.calibration.quantiles must be at least two finite, non-decreasing numbers")


def as_model_input(windows: np.ndarray, video: bool) -> torch.Tensor:
    if video:  # uint8 [B, T, S, S] -> float [B, T, 1, S, S] in [0, 1]
        return torch.from_numpy(windows).float().div_(255.0).unsqueeze(2)
    return torch.from_numpy(windows).float()


@torch.inference_mode()
def _window_errors(model, windows: np.ndarray, precision: str, video: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Squared reconstruction error of every element of ``windows [B, T, ...]`` and, for video,
    of the frame-to-frame change ``(x_t - x_{t-1}) - (r_t - r_{t-1})`` (``[B, T - 1, S, S]``,
    credited to frame ``t``)."""
    x = as_model_input(windows, video)
    with autocast_for(precision):
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
