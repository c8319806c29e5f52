"""``avar train avaca`` / ``avar train mil`` and ``avar evaluate`` of their runs: the weakly
supervised methods' command-line surface, generated from their config dataclasses."""

from __future__ import annotations

import argparse

from avar.methods.avarnet.options import add_head_options, head_values
from avar.methods.config_base import add_config_options, config_values


def add_train_options(p: argparse.ArgumentParser, method: str) -> None:
    """FEATURES_DIR and the option fields of ``WeakTrainConfig`` for ``method``, with the shape
    of the model: AVACA's config, or a supervised head's (mil)."""
    from avar.methods.avaca.config import AVACAConfig
    from avar.methods.avaca.train import WeakTrainConfig

    p.add_argument("features_dir", help="FEATURES_DIR made by `avar extract`; a clip is normal when its label is "
                                        "normal, anomalous otherwise")
    add_config_options(p, WeakTrainConfig, method)
    if method == "mil":
        add_head_options(p, method)
    else:
        add_config_options(p, AVACAConfig, method, dest_prefix="model.")


def add_evaluate_options(p: argparse.ArgumentParser) -> None:
    """``avar evaluate``'s options for avaca and mil runs."""
    p.add_argument("--annotations", help="avaca/mil runs: frame truth for caches without it (avar synth's "
                                         "metadata.json or an XD-Violence annotations.txt)")


def train(args, progress: bool) -> tuple[dict, str]:
    from avar.features.cache import FeatureSet
    from avar.methods.avaca.config import AVACAConfig
    from avar.methods.avaca.train import WeakTrainConfig, train_weak

    model = head_values(args) if args.method == "mil" else config_values(args, AVACAConfig, "model.")
    config = WeakTrainConfig(method=args.method, model=model, **config_values(args, WeakTrainConfig))
    run = train_weak(FeatureSet.open(args.features_dir), args.out, config, progress=progress)
    info = {"run_dir": str(args.out), "method": args.method,
            **{k: getattr(run.record, k) for k in ("params", "best_epoch", "train_seconds", "n_train", "streams",
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
