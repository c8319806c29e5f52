"""``avar train autoencoder`` and ``avar evaluate`` of its runs: the unsupervised method's
command-line surface, generated from its config dataclass."""

from __future__ import annotations

import argparse

from avar.methods.config_base import add_config_options, config_values


def add_train_options(p: argparse.ArgumentParser, method: str) -> None:
    """DATA_DIR, AUDIO_DIR and the option fields of ``AETrainConfig``."""
    from avar.methods.autoencoder.config import AETrainConfig

    p.add_argument("--data", help="DATA_DIR: frame folders (training/frames/<video>/*.jpg, e.g. UCSD "
                   "Ped2) or class folders of videos whose normal/ clips are the training data")
    p.add_argument("--audio", help="AUDIO_DIR/<training|testing>/<video>.wav paired with frame folders")
    add_config_options(p, AETrainConfig, method)


def add_evaluate_options(p: argparse.ArgumentParser) -> None:
    """``avar evaluate``'s options for autoencoder runs."""
    from avar.methods.autoencoder.config import SCORERS, AETrainConfig

    p.add_argument("--data", help="autoencoder runs: DATA_DIR whose test videos are scored frame by frame")
    p.add_argument("--audio", help="autoencoder runs: AUDIO_DIR paired with frame folders (default: the training one)")
    p.add_argument("--gamma", type=float, help="autoencoder runs: regularity threshold (default: chosen on labelled "
                                                "validation videos, else paper Table 6)")
    p.add_argument("--score", choices=SCORERS, help="autoencoder runs: override the run's scorer")
    p.add_argument("--smooth", type=int, help="autoencoder runs: frames each score is averaged over (default: the "
                   f"run's, {AETrainConfig().smooth} unless trained otherwise)")


def add_upgrade_options(p: argparse.ArgumentParser) -> None:
    """``avar upgrade``'s options for autoencoder runs."""
    p.add_argument("--data", help="autoencoder runs: DATA_DIR the run was trained on (its normal training videos)")
    p.add_argument("--audio", help="autoencoder runs: AUDIO_DIR paired with frame folders, as at training")


def train(args, progress: bool) -> tuple[dict, str]:
    from avar.methods.autoencoder.config import AETrainConfig
    from avar.methods.autoencoder.train import train_autoencoder

    if args.data is None:
        raise ValueError("avar train autoencoder needs --data DATA_DIR (frame folders such as UCSD Ped2, or class "
                         "folders whose normal/ clips are the training videos)")
    config = AETrainConfig(**config_values(args, AETrainConfig))
    run = train_autoencoder(args.data, args.out, config, audio_dir=args.audio, progress=progress)
    info = {"run_dir": str(args.out), "modality": config.modality, "audio_pairing": run.record.audio_pairing,
            **{k: getattr(run.record, k) for k in ("video_params", "audio_params", "precision", "train_seconds")}}
    return info, (f"saved {args.out}: autoencoder ({config.modality}), {info['train_seconds']:.1f} s on "
                  f"{run.record.torch_threads} threads ({info['precision']}); audio: {info['audio_pairing']}")


def evaluate(args):
    """Frame-level detection metrics on the test videos of ``args.data``."""
    from avar.methods.autoencoder.evaluate import evaluate_autoencoder

    if args.data is None:
        raise ValueError(f"{args.run_dir} is an autoencoder run: evaluate it on frames with --data DATA_DIR")
    return evaluate_autoencoder(args.run_dir, args.data, args.out, gamma=args.gamma, score=args.score,
                                smooth=args.smooth, audio_dir=args.audio, plots=not args.no_plots,
                                progress=not args.quiet)


def upgrade(args) -> tuple[dict, str]:
    """``avar upgrade RUN_DIR --data DATA_DIR``: calibrate a run saved before runs carried a
    calibration for files and streams (:func:`avar.methods.autoencoder.train.upgrade_autoencoder`)."""
    from avar.methods.autoencoder.train import upgrade_autoencoder

    if args.data is None:
        raise ValueError(f"avar upgrade {args.run_dir} needs --data DATA_DIR: the data the run was trained on")
    run = upgrade_autoencoder(args.run_dir, args.data, audio_dir=args.audio)
    calibration = run.stream["calibration"]
    return run.stream, (f"calibrated {args.run_dir} on {calibration['frames']} steps of {calibration['videos']} "
                        f"normal training videos at {run.stream['fps']:g} fps")
