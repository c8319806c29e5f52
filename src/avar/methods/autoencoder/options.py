"""``avar train autoencoder`` and ``avar evaluate`` of its runs: the unsupervised method's
command-line surface. Defaults are read from the config dataclasses."""

from __future__ import annotations

import argparse

from avar.methods.avarnet.options import add_common_options, given


def add_train_options(p: argparse.ArgumentParser, method: str) -> None:
    from avar.methods.autoencoder.config import SCORERS, AETrainConfig

    ae = AETrainConfig()
    p.add_argument("--data", help="DATA_DIR: frame folders (training/frames/<video>/*.jpg, e.g. UCSD "
                   "Ped2) or class folders of videos whose normal/ clips are the training data")
    p.add_argument("--audio", help="AUDIO_DIR/<training|testing>/<video>.wav paired with frame folders")
    p.add_argument("--modality", choices=("av", "a", "v"), help=f"default {ae.modality}")
    p.add_argument("--score", choices=SCORERS, help="frame error (paper Eq. 3), worst grid patch, or worst patch of "
                   f"the frame-to-frame change (default {ae.score})")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), help=f"arithmetic (default {ae.precision})")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    p.add_argument("--calibration-fraction", type=float, help="share of the normal training videos held out to "
                   f"calibrate scores for files and streams (default {ae.calibration_fraction})")
    add_common_options(p, ae)


def train(args, progress: bool) -> tuple[dict, str]:
    from avar.methods.autoencoder.config import AETrainConfig
    from avar.methods.autoencoder.train import train_autoencoder

    if args.data is None:
        raise ValueError("avar train autoencoder needs --data DATA_DIR (frame folders such as UCSD Ped2, or class "
                         "folders whose normal/ clips are the training videos)")
    config = AETrainConfig(**given(args, {name: name for name in (
        "modality", "epochs", "lr", "batch_size", "score", "precision", "threads", "seed", "calibration_fraction")}))
    run = train_autoencoder(args.data, args.out, config, audio_dir=args.audio, progress=progress)
    info = {"run_dir": str(args.out), "modality": config.modality, "audio_pairing": run.meta["audio_pairing"],
            **{k: run.meta.get(k) for k in ("video_params", "audio_params", "precision", "train_seconds")}}
    return info, (f"saved {args.out}: autoencoder ({config.modality}), {info['train_seconds']:.1f} s on "
                  f"{run.meta['torch_threads']} threads ({info['precision']}); audio: {info['audio_pairing']}")


def evaluate(args):
    """Frame-level detection metrics on the test videos of ``args.data``."""
    from avar.methods.autoencoder.evaluate import evaluate_autoencoder

    if args.data is None:
        raise ValueError(f"{args.run_dir} is an autoencoder run: evaluate it on frames with --data DATA_DIR")
    return evaluate_autoencoder(args.run_dir, args.data, args.out, gamma=args.gamma, score=args.score,
                                smooth=args.smooth, audio_dir=args.audio, plots=not args.no_plots,
                                progress=not args.quiet)
