"""``avar train avaca`` / ``avar train mil`` and ``avar evaluate`` of their runs: the weakly
supervised methods' command-line surface. Defaults are read from the config dataclasses."""

from __future__ import annotations

import argparse

from avar.methods.avarnet.options import add_common_options, add_head_options, add_run_options, given, head_options


def add_train_options(p: argparse.ArgumentParser, method: str) -> None:
    from avar.methods.avaca.config import AVACAConfig
    from avar.methods.avaca.train import WeakTrainConfig

    weak = WeakTrainConfig()
    p.add_argument("features_dir", help="FEATURES_DIR made by `avar extract`; a clip is normal when its label is "
                                        "normal, anomalous otherwise")
    if method == "mil":
        add_head_options(p)
    else:
        p.add_argument("--hidden", type=int, help=f"path width (default {AVACAConfig.hidden})")
        p.add_argument("--audio-path", choices=("focused", "plain"), help="the VAT reads audio first differences "
                       f"(focused) or the audio itself (plain; default {weak.audio_path})")
        p.add_argument("--zero-audio", action="store_true", help="zero the audio input (the paper's baseline)")
    p.add_argument("--modality", choices=("av", "a", "v"), help=f"default {weak.modality}")
    add_run_options(p, weak)
    p.add_argument("--window", type=int, help=f"steps per scoring window on files and streams (default {weak.window})")
    p.add_argument("--alpha", type=float, help=f"top k = floor(steps / alpha) per video (default {weak.alpha})")
    p.add_argument("--theta", type=float, help=f"weight of the dynamic MIL loss (default {weak.theta:g})")
    p.add_argument("--lambda", dest="lambda_center", type=float, help=f"weight of the center loss (default {weak.lam:g})")
    p.add_argument("--max-steps", type=int, help=f"longer training videos are averaged to this many steps "
                                                 f"(default {weak.max_steps})")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    add_common_options(p, weak)


def train(args, progress: bool) -> tuple[dict, str]:
    import torch

    from avar.features.cache import FeatureSet
    from avar.methods.avaca.train import WeakTrainConfig, train_weak

    if args.threads:
        torch.set_num_threads(args.threads)
    model = head_options(args) if args.method == "mil" else {"hidden": args.hidden}
    config = WeakTrainConfig(method=args.method, zero_audio=getattr(args, "zero_audio", False),
                             motion=not args.no_motion, model={k: v for k, v in model.items() if v is not None},
                             **given(args, {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size",
                                            "modality": "modality", "audio_path": "audio_path", "alpha": "alpha",
                                            "theta": "theta", "lambda_center": "lam", "max_steps": "max_steps",
                                            "head": "head_type", "seed": "seed", "window": "window",
                                            "false_events_per_hour": "false_events_per_hour"}))
    run = train_weak(FeatureSet.open(args.features_dir), args.out, config, progress=progress)
    info = {"run_dir": str(args.out), "method": args.method,
            **{k: run.extra.get(k) for k in ("params", "best_epoch", "train_seconds", "n_train", "streams",
                                             "event_calibration")}}
    text = (f"saved {args.out}: {args.method}, {info['params']:,} parameters, best epoch {info['best_epoch']}, "
            f"{info['train_seconds']:.1f} s\nthe run reads: {', '.join(info['streams'])}")
    if info["event_calibration"]:
        text += f"\nevent threshold {info['event_calibration']['threshold']:.3f}: {info['event_calibration']['note']}"
    return info, text


def evaluate(args):
    """Frame- and video-level detection metrics on ``args.split`` of FEATURES_DIR."""
    from avar.methods.avaca.evaluate import evaluate_weak

    if args.features_dir is None:
        raise ValueError(f"avar evaluate {args.run_dir} needs FEATURES_DIR (made by `avar extract`)")
    return evaluate_weak(args.run_dir, args.features_dir, args.split, args.out, annotations=args.annotations,
                         plots=not args.no_plots)
