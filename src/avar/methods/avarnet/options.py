"""``avar train avarnet`` and ``avar evaluate`` of its runs: the method's command-line surface,
generated from the option fields of its config dataclasses (``TrainConfig`` and the head
configs), where each option's help and default are defined."""

from __future__ import annotations

import argparse

from avar.methods.config_base import add_config_options, config_values


def add_head_options(p: argparse.ArgumentParser, method: str, notes: dict[str, str] | None = None) -> None:
    """The shape of a supervised head (AVAR-Net's MS-TCN or a baseline), for avarnet and mil:
    the option fields of their configs (:func:`avar.methods.config_base.add_config_options`);
    ``notes`` on the AVAR-Net head's defaults."""
    from avar.methods.avarnet.config import AVARNetConfig
    from avar.methods.baselines.config import BaselineConfig

    add_config_options(p, AVARNetConfig, method, dest_prefix="head.", notes=notes)
    add_config_options(p, BaselineConfig, method, dest_prefix="head.")


def head_values(args) -> dict:
    """The head config fields given on the command line (:func:`add_head_options`)."""
    from avar.methods.avarnet.config import AVARNetConfig
    from avar.methods.baselines.config import BaselineConfig

    return {**config_values(args, BaselineConfig, "head."), **config_values(args, AVARNetConfig, "head.")}


def add_train_options(p: argparse.ArgumentParser, method: str) -> None:
    from avar.methods.avarnet.config import AVARNetConfig
    from avar.methods.avarnet.train import COMPACT_MTCN, RECIPES, TrainConfig, recipe_head

    sup, tcn, paper = TrainConfig(), AVARNetConfig(), " with --recipe paper"
    p.add_argument("features_dir", help="FEATURES_DIR made by `avar extract`")
    add_config_options(p, TrainConfig, method, defaults=sup, notes={
        "lr": f"the peak after warm-up; default {RECIPES['robust']['lr']:g}; {RECIPES['paper']['lr']:g}{paper}",
        "clip_blend": f"default {RECIPES['robust']['clip_blend']:g}; {RECIPES['paper']['clip_blend']:g}{paper}"})
    add_head_options(p, method, notes={
        "num_stages": f"default {COMPACT_MTCN['num_stages']}; {tcn.num_stages}{paper}",
        "num_layers": f"default: as many as dilations inside the window, {recipe_head(sup)['num_layers']} for "
                      f"{sup.seq_len} steps; {tcn.num_layers}{paper}",
        "num_f_maps": f"default {COMPACT_MTCN['num_f_maps']}; {tcn.num_f_maps}{paper}"})


def train(args, progress: bool) -> tuple[dict, str]:
    from avar.features.cache import FeatureSet
    from avar.methods.avarnet.train import TrainConfig, train_head

    config = TrainConfig(**config_values(args, TrainConfig), head=head_values(args))
    run = train_head(FeatureSet.open(args.features_dir), args.out, config, progress=progress)
    info = {"run_dir": str(args.out), "classes": run.classes,
            **{k: getattr(run.record, k) for k in ("params", "best_epoch", "train_seconds", "val_branch_accuracy",
                                             "fusion_warning", "stream_selection", "clip_blend", "video_motion",
                                             "streams", "motion_selection", "event_calibration")}}
    text = (f"saved {args.out}: {len(run.classes)} classes, {info['params']:,} parameters, "
            f"best epoch {info['best_epoch']}, {info['train_seconds']:.1f} s")
    if info["motion_selection"]:
        text += f"\nvisual side: {info['motion_selection']['reason']}"
    if info["stream_selection"]:
        text += f"\nstreams: {info['stream_selection']['reason']}"
    text += f"\nthe run reads: {', '.join(info['streams'])}"
    if info["event_calibration"]:
        text += f"\nevent threshold {info['event_calibration']['threshold']:.3f}: {info['event_calibration']['note']}"
    if info["video_motion"]:
        text += (f"\nvideo read as motion over {info['video_motion']} steps "
                 f"({info['video_motion'] * run.step:g} s): mean and mean change of their features")
    if info["clip_blend"]:
        weight = info["clip_blend"]["head_weight"]
        text += f"\nclip prediction: {weight:g} x head + {1 - weight:g} x pooled-feature regression"
    branches = info["val_branch_accuracy"]
    if branches:
        text += (f"\nvalidation accuracy: audio + video {branches['av']:.3f}, audio branch alone {branches['a']:.3f}, "
                 f"video branch alone {branches['v']:.3f}")
    return info, text


def evaluate(args):
    """Clip-level metrics on ``args.split`` of FEATURES_DIR."""
    from avar.methods.avarnet.evaluate import evaluate_run

    if args.features_dir is None:
        raise ValueError(f"avar evaluate {args.run_dir} needs FEATURES_DIR (made by `avar extract`)")
    return evaluate_run(args.run_dir, args.features_dir, args.split, args.out)
