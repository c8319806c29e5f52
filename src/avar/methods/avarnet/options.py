"""``avar train avarnet`` and ``avar evaluate`` of its runs: the method's command-line surface.
Every default shown is read from the config dataclasses, where it is defined."""

from __future__ import annotations

import argparse


def add_common_options(p: argparse.ArgumentParser, config, recipes_lr: str | None = None) -> None:
    """``--epochs``, ``--seed``, ``--lr``, ``--batch-size`` with ``config``'s defaults."""
    p.add_argument("--epochs", type=int, help=f"default {config.epochs}")
    p.add_argument("--seed", type=int, help=f"default {config.seed}")
    p.add_argument("--lr", type=float, help=f"default {recipes_lr or f'{config.lr:g}'}")
    p.add_argument("--batch-size", type=int, help=f"default {config.batch_size}")


def add_run_options(p: argparse.ArgumentParser, config) -> None:
    """``--no-motion`` and ``--false-events-per-hour``: what every run on cached features reads and stores."""
    p.add_argument("--no-motion", action="store_true", help="leave out the cache's motion stream (optical flow, "
                   "`avar extract --motion`); by default a run reads it where the cache has it")
    p.add_argument("--false-events-per-hour", type=float, metavar="RATE", help="the run's event threshold is chosen "
                   "on its validation clips for at most RATE false events per hour of normal footage "
                   f"(default {config.false_events_per_hour:g})")


def add_head_options(p: argparse.ArgumentParser) -> None:
    """The shape of a supervised head (AVAR-Net's MS-TCN or a baseline), for avarnet and mil."""
    from avar.methods.avarnet.config import AVARNetConfig
    from avar.methods.avarnet.train import COMPACT_MTCN, TrainConfig, recipe_head
    from avar.methods.baselines.config import BaselineConfig
    from avar.methods.heads import HEADS

    sup, tcn, rnn = TrainConfig(), AVARNetConfig(), BaselineConfig()
    p.add_argument("--head", choices=list(HEADS), help=f"mtcn = AVAR-Net; the rest are Table 2's baselines "
                   f"(default {sup.head_type})")
    p.add_argument("--stages", type=int, help=f"mtcn: MS-TCN stages (default {COMPACT_MTCN['num_stages']}; "
                   f"{tcn.num_stages} with --recipe paper)")
    p.add_argument("--layers", type=int, help="mtcn: dilated layers per stage (default: as many as dilations inside "
                   f"the window, {recipe_head(sup)['num_layers']} for {sup.seq_len} steps; {tcn.num_layers} with "
                   f"--recipe paper); baselines: recurrent/encoder layers (default {rnn.num_layers})")
    p.add_argument("--f-maps", type=int, help=f"mtcn: feature maps (default {COMPACT_MTCN['num_f_maps']}; "
                   f"{tcn.num_f_maps} with --recipe paper)")
    p.add_argument("--no-attention", action="store_true", help="mtcn: drop the attention module")
    p.add_argument("--hidden", type=int, help=f"baselines: hidden width (default {rnn.hidden})")


def head_options(args) -> dict:
    return {"num_stages": args.stages, "num_layers": args.layers, "num_f_maps": args.f_maps,
            "attention": False if args.no_attention else None, "hidden": args.hidden}


def given(args, names: dict[str, str]) -> dict:
    """``{config field: value}`` of the options the user gave (``names``: option dest -> field)."""
    return {field: getattr(args, dest, None) for dest, field in names.items() if getattr(args, dest, None) is not None}


def add_train_options(p: argparse.ArgumentParser, method: str) -> None:
    from avar.methods.avarnet.config import AVARNetConfig
    from avar.methods.avarnet.train import RECIPES, TrainConfig
    from avar.methods.heads import FUSIONS
    from avar.methods.streams import STREAM_FUSIONS

    sup, tcn = TrainConfig(), AVARNetConfig()
    p.add_argument("features_dir", help="FEATURES_DIR made by `avar extract`")
    add_head_options(p)
    p.add_argument("--modality", choices=("av", "a", "v"), help=f"default {sup.modality}")
    p.add_argument("--fusion", choices=FUSIONS, help="early: fuse the streams per step before one head; "
                   f"late: one head per stream, probabilities fused (default {sup.fusion})")
    p.add_argument("--late-mode", choices=("mean", "learned"), help=f"late fusion: mean or learned weights "
                   f"(default {sup.late_mode})")
    p.add_argument("--stream-fusion", choices=STREAM_FUSIONS, help="how the streams enter a head: projected (each "
                   "normalised and projected to --stream-width, modality dropout) or concat (the paper's Eq. 6; "
                   f"default {tcn.stream_fusion})")
    p.add_argument("--stream-width", type=int, help=f"projected: channels per stream (default {tcn.stream_width})")
    p.add_argument("--modality-dropout", type=float, help="projected: share of training windows that see one stream "
                   f"only (default {tcn.modality_dropout})")
    p.add_argument("--video-motion", type=int, metavar="K", help="read the video stream as motion over the last K "
                   "steps (the mean of their features and their mean absolute change; 0 = off, the default): for "
                   "short clips extracted at fine steps, e.g. --step 0.125 with K = 4 (docs/fusion.md)")
    add_run_options(p, sup)
    p.add_argument("--recipe", choices=sorted(RECIPES), help=f"robust (default {sup.recipe}; AdamW, label "
                   "smoothing, balanced classes, smoothed-loss checkpoint, refit on train + val) or paper (Adam "
                   "1e-2, plateau schedule, best validation accuracy)")
    p.add_argument("--no-stream-selection", action="store_true", help="--modality av: fuse both streams even when "
                   "cross-validation on the labelled clips says one carries no class information (the robust recipe "
                   "checks by default; --recipe paper never does)")
    p.add_argument("--clip-blend", type=float, metavar="W", help="weight of the head's clip prediction against a "
                   f"pooled-feature logistic regression's (robust recipe {RECIPES['robust']['clip_blend']:g}, paper "
                   "1 = the head alone); per-step scores stay the head's")
    p.add_argument("--seq-len", type=int, help=f"steps per window (default {sup.seq_len}, the paper's T)")
    add_common_options(p, sup, recipes_lr=f"{RECIPES['robust']['lr']:g}; {RECIPES['paper']['lr']:g} with --recipe paper")


def train(args, progress: bool) -> tuple[dict, str]:
    from avar.features.cache import FeatureSet
    from avar.methods.avarnet.train import TrainConfig, train_head

    flags = {**head_options(args), "stream_fusion": args.stream_fusion, "stream_width": args.stream_width,
             "modality_dropout": args.modality_dropout}
    config = TrainConfig(motion=not args.no_motion, select_streams=False if args.no_stream_selection else None,
                         clip_blend=args.clip_blend, head={k: v for k, v in flags.items() if v is not None},
                         **given(args, {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "head": "head_type",
                                        "modality": "modality", "fusion": "fusion", "late_mode": "late_mode",
                                        "seq_len": "seq_len", "seed": "seed", "recipe": "recipe",
                                        "video_motion": "video_motion",
                                        "false_events_per_hour": "false_events_per_hour"}))
    run = train_head(FeatureSet.open(args.features_dir), args.out, config, progress=progress)
    info = {"run_dir": str(args.out), "classes": run.classes,
            **{k: run.extra.get(k) for k in ("params", "best_epoch", "train_seconds", "val_branch_accuracy",
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
