"""Unsupervised training of the sequence autoencoders (Tariq et al., 2024).

The models learn to reconstruct normal sequences only (MSE, Adam, sec. 4.2); at test time a
frame's reconstruction error is its anomaly evidence. Training sequences are drawn at frame
strides 1, 2 and 3 (the paper's temporal augmentation, sec. 4.3).

The run it saves (:class:`~avar.methods.autoencoder.run.AERun`) scores frames and is calibrated
on held-out normal videos for files and streams.
"""

from __future__ import annotations

import ctypes
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from avar.datasets.framefolders import FrameDataset, load_video, open_frame_dataset
from avar.features.spectral import SPECTRAL_RATE, MinMaxNormalizer
from avar.methods.autoencoder import AudioAEConfig, AudioSeq2SeqAE, VideoAEConfig, VideoSeq2SeqAE, count_parameters
from avar.methods.autoencoder.flow_normality import FlowNormality
from avar.methods.autoencoder.config import AETrainConfig
from avar.methods.autoencoder.run import AERecord, AERun, as_model_input, autocast_for, resolve_precision
from avar.training.loop import Step, train_loop
from avar.training.run import check_options, check_run_dir
from avar.training.seeding import numerics, seed_everything


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


def _fit(model: torch.nn.Module, data: list[np.ndarray], config: AETrainConfig, epochs: int, video: bool,
         name: str, progress: bool) -> list[dict]:
    """Adam on MSE over the training sequences of every video in ``data``
    (:func:`avar.training.loop.train_loop`, no validation: the last epoch is kept); returns the
    history, each record tagged with ``name``."""
    precision = resolve_precision(config.precision)
    rng = np.random.default_rng(config.seed)
    seq_len = model.config.seq_len

    def batches(epoch: int):
        windows = [(v, w) for v, frames in enumerate(data)
                   for w in training_windows(len(frames), seq_len, config.strides, config.window_hop, rng)]
        order = rng.permutation(len(windows))
        return [[windows[i] for i in order[k : k + config.batch_size]] for k in range(0, len(order), config.batch_size)]

    def loss(batch) -> Step:
        x = as_model_input(np.stack([data[v][w] for v, w in batch]), video)
        with autocast_for(precision):
            recon = model(x)
        return Step(torch.nn.functional.mse_loss(recon.float(), x), len(batch))

    fitted = train_loop(model, torch.optim.Adam(model.parameters(), lr=config.lr), batches, loss, epochs,
                        desc=name, progress=progress, batch_progress=True)
    return [{"model": name, **record} for record in fitted.history]


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
    # AETrainConfig itself lets epochs be 0 and the rate be anything; a run needs both.
    check_options(config, at_least={"batch_size": 1, **({"epochs": 1} if "v" in config.modality else {}),
                                    **({"audio_epochs": 1} if "a" in config.modality else {})}, rates=("lr",))
    check_run_dir(out_dir)
    dataset = data if isinstance(data, FrameDataset) else open_frame_dataset(data, audio_dir=audio_dir, seed=config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    retain_freed_memory()
    seed_everything(config.seed)
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
    run = AERun(record=AERecord(train=config))
    history: list[dict] = []
    record = run.record
    record.data = {**dataset.describe(), "train_frames_read": int(sum(len(v.frames) for v in loaded))}
    record.audio_pairing = dataset.audio_pairing
    record.audio_dir = str(Path(audio_dir).resolve()) if audio_dir else None
    record.precision = resolve_precision(config.precision)
    record.torch_threads = torch.get_num_threads()
    record.load_seconds = round(load_seconds, 2)
    if use_video:
        run.video_model = VideoSeq2SeqAE(video_cfg)
        record.video_params = count_parameters(run.video_model)
        t0 = time.perf_counter()
        history += _fit(run.video_model, [v.frames for v in loaded], config, config.epochs, True, "video", progress)
        record.video_train_seconds = round(time.perf_counter() - t0, 2)
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
        record.audio_params = count_parameters(run.audio_model)
        t0 = time.perf_counter()
        history += _fit(run.audio_model, feats, config, config.audio_epochs, False, "audio", progress)
        record.audio_train_seconds = round(time.perf_counter() - t0, 2)
    if use_video and not use_audio:
        t0 = time.perf_counter()
        shown = [load_video(v, video_cfg.frame_size) for v in calibration] if calibration else loaded
        run.calibrate([v.frames for v in shown], shown[0].fps, held_out=bool(calibration))
        record.stream["calibration"]["video_ids"] = [v.video.video_id for v in shown]
        record.calibration_seconds = round(time.perf_counter() - t0, 2)
    if use_video:
        t0 = time.perf_counter()
        record.flow = FlowNormality.fit([load_video(v).frames for v in train]).to_dict()
        record.flow_seconds = round(time.perf_counter() - t0, 2)
    record.train_seconds = round(time.perf_counter() - started, 2)
    record.numerics = numerics()
    run.save(out_dir, history=history)
    return run


def upgrade_autoencoder(run_dir: Path | str, data: FrameDataset | Path | str, *,
                        audio_dir: Path | str | None = None) -> AERun:
    """Calibrate a visual autoencoder run saved before runs carried a calibration, on the
    normal training videos of ``data`` (those it was trained on, so the calibration is
    in-sample and says so), fit its motion term where it has none (:class:`FlowNormality`,
    on the same videos), and save it again."""
    run = AERun.load(run_dir)
    if run.video_model is None:
        raise ValueError(f"{run_dir}: an acoustic-only autoencoder run has no stream calibration to fit")
    dataset = data if isinstance(data, FrameDataset) else open_frame_dataset(data, audio_dir=audio_dir,
                                                                             seed=run.config.seed)
    loaded = [load_video(v, run.frame_size) for v in dataset.split("train")]
    if not loaded:
        raise ValueError(f"{dataset.root}: no training videos to calibrate on")
    run.calibrate([v.frames for v in loaded], loaded[0].fps, held_out=False)
    run.record.stream["calibration"]["video_ids"] = [v.video.video_id for v in loaded]
    if run.flow is None:
        run.record.flow = FlowNormality.fit([load_video(v.video).frames for v in loaded]).to_dict()
    run.save(run_dir, keep=True)
    return run


def fit(data, out_dir: Path | str, config: AETrainConfig | None = None, *, progress: bool = True) -> AERun:
    """The method table's entry (:mod:`avar.methods.table`): :func:`train_autoencoder` on a DATA_DIR."""
    return train_autoencoder(data, out_dir, config, progress=progress)
