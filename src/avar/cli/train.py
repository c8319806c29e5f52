"""``avar`` commands: training and evaluating a run of any method, and upgrading old runs."""

from __future__ import annotations

from avar.cli.common import emit


def cmd_train(args) -> int:
    if args.method == "autoencoder":
        return cmd_train_autoencoder(args)
    if args.method in ("avaca", "mil"):
        return cmd_train_weak(args)
    from avar.features.cache import FeatureSet
    from avar.methods.avarnet.train import TrainConfig, train_head

    if args.features_dir is None:
        raise ValueError(f"avar train --method {args.method} needs FEATURES_DIR (made by `avar extract`)")
    flags = {"num_stages": args.stages, "num_layers": args.layers, "num_f_maps": args.f_maps,
             "attention": False if args.no_attention else None, "hidden": args.hidden,
             "stream_fusion": args.stream_fusion, "stream_width": args.stream_width,
             "modality_dropout": args.modality_dropout}
    given = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "head_type": args.head,
             "modality": args.modality, "fusion": args.fusion, "late_mode": args.late_mode, "seq_len": args.seq_len,
             "seed": args.seed, "recipe": args.recipe, "video_motion": args.video_motion,
             "false_events_per_hour": args.false_events_per_hour}
    config = TrainConfig(motion=not args.no_motion, select_streams=False if args.no_stream_selection else None,
                         clip_blend=args.clip_blend,
                         head={k: v for k, v in flags.items() if v is not None},
                         **{k: v for k, v in given.items() if v is not None})
    run = train_head(FeatureSet.open(args.features_dir), args.out, config, progress=not args.quiet)
    info = {"run_dir": str(args.out), "classes": run.classes,
            **{k: run.extra.get(k) for k in ("params", "best_epoch", "train_seconds", "val_branch_accuracy", "fusion_warning",
                                         "stream_selection", "clip_blend", "video_motion", "streams",
                                         "motion_selection", "event_calibration")}}
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
    return emit(args, info, text)


def cmd_train_weak(args) -> int:
    """``avar train FEATURES_DIR --method avaca|mil --out RUN_DIR``: from video-level labels only."""
    import torch

    from avar.features.cache import FeatureSet
    from avar.methods.avaca.train import WeakTrainConfig, train_weak

    if args.features_dir is None:
        raise ValueError(f"avar train --method {args.method} needs FEATURES_DIR (made by `avar extract`)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = {"num_stages": args.stages, "num_layers": args.layers, "num_f_maps": args.f_maps,
             "attention": False if args.no_attention else None, "hidden": args.hidden} if args.method == "mil" else \
        {"hidden": args.hidden}
    given = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "modality": args.modality,
             "audio_path": args.audio_path, "alpha": args.alpha, "theta": args.theta, "lam": args.lambda_center,
             "max_steps": args.max_steps, "head_type": args.head, "seed": args.seed, "window": args.window,
             "false_events_per_hour": args.false_events_per_hour}
    config = WeakTrainConfig(method=args.method, zero_audio=args.zero_audio, motion=not args.no_motion,
                             model={k: v for k, v in model.items() if v is not None},
                             **{k: v for k, v in given.items() if v is not None})
    run = train_weak(FeatureSet.open(args.features_dir), args.out, config, progress=not args.quiet)
    info = {"run_dir": str(args.out), "method": args.method,
            **{k: run.extra.get(k) for k in ("params", "best_epoch", "train_seconds", "n_train", "streams",
                                             "event_calibration")}}
    text = (f"saved {args.out}: {args.method}, {info['params']:,} parameters, best epoch {info['best_epoch']}, "
            f"{info['train_seconds']:.1f} s\nthe run reads: {', '.join(info['streams'])}")
    if info["event_calibration"]:
        text += f"\nevent threshold {info['event_calibration']['threshold']:.3f}: {info['event_calibration']['note']}"
    return emit(args, info, text)


def cmd_train_autoencoder(args) -> int:
    """``avar train --method autoencoder --data DATA_DIR --out RUN_DIR``: unsupervised, normal videos only."""
    from avar.methods.autoencoder.config import AETrainConfig
    from avar.methods.autoencoder.train import train_autoencoder

    if args.data is None:
        raise ValueError("avar train --method autoencoder needs --data DATA_DIR (frame folders such as UCSD Ped2, "
                         "or class folders whose normal/ clips are the training videos)")
    given = {"modality": args.modality, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
             "score": args.score, "precision": args.precision, "threads": args.threads, "seed": args.seed,
             "calibration_fraction": args.calibration_fraction}
    config = AETrainConfig(**{k: v for k, v in given.items() if v is not None})
    run = train_autoencoder(args.data, args.out, config, audio_dir=args.audio, progress=not args.quiet)
    info = {"run_dir": str(args.out), "modality": config.modality, "audio_pairing": run.meta["audio_pairing"],
            **{k: run.meta.get(k) for k in ("video_params", "audio_params", "precision", "train_seconds")}}
    return emit(args, info, f"saved {args.out}: autoencoder ({config.modality}), {info['train_seconds']:.1f} s "
                             f"on {run.meta['torch_threads']} threads ({info['precision']}); audio: {info['audio_pairing']}")


def cmd_evaluate(args) -> int:
    from avar.runs import METHODS, run_method

    learning = METHODS[run_method(args.run_dir)]
    if learning == "unsupervised" and args.data is None:
        raise ValueError(f"{args.run_dir} is an autoencoder run: evaluate it on frames with --data DATA_DIR")
    if args.data is not None:
        from avar.methods.autoencoder.evaluate import evaluate_autoencoder

        report = evaluate_autoencoder(args.run_dir, args.data, args.out, gamma=args.gamma, score=args.score,
                                      smooth=args.smooth, audio_dir=args.audio, plots=not args.no_plots, progress=not args.quiet)
        return emit(args, report.to_dict(), report.to_markdown())
    from avar.methods.avarnet.evaluate import evaluate_run
    if args.features_dir is None:
        raise ValueError(f"avar evaluate {args.run_dir} needs FEATURES_DIR (made by `avar extract`)")
    if learning == "weak":
        from avar.methods.avaca.evaluate import evaluate_weak

        report = evaluate_weak(args.run_dir, args.features_dir, args.split, args.out, annotations=args.annotations,
                               plots=not args.no_plots)
    else:
        report = evaluate_run(args.run_dir, args.features_dir, args.split, args.out)
    return emit(args, report.to_dict(), report.to_markdown())


def cmd_upgrade(args) -> int:
    """``avar upgrade RUN_DIR --data DATA_DIR``: calibrate an autoencoder run saved before runs
    carried a calibration for files and streams."""
    from avar.methods.autoencoder.train import upgrade_autoencoder

    run = upgrade_autoencoder(args.run_dir, args.data, audio_dir=args.audio)
    calibration = run.stream["calibration"]
    return emit(args, run.stream, f"calibrated {args.run_dir} on {calibration['frames']} steps of "
                                   f"{calibration['videos']} normal training videos at {run.stream['fps']:g} fps")


def add_commands(command) -> None:
    """Add this group's subcommands; ``command(name, func, help)`` makes one."""
    from avar.methods.autoencoder.config import SCORERS, AETrainConfig
    from avar.methods.avaca.config import AVACAConfig
    from avar.methods.avaca.train import WeakTrainConfig
    from avar.methods.avarnet.config import AVARNetConfig
    from avar.methods.avarnet.train import COMPACT_MTCN, RECIPES, TrainConfig, recipe_head
    from avar.methods.baselines.config import BaselineConfig
    from avar.methods.heads import FUSIONS, HEADS
    from avar.methods.streams import STREAM_FUSIONS

    # Every default shown here is read from the config dataclasses, where it is defined.
    sup, ae, weak, tcn, rnn = TrainConfig(), AETrainConfig(), WeakTrainConfig(), AVARNetConfig(), BaselineConfig()

    p = command("train", cmd_train, "train an AVAR-Net head (or a baseline) on cached features, or an "
                "unsupervised autoencoder on normal videos (--method autoencoder --data DATA_DIR), or a weakly "
                "supervised detector from video labels (--method avaca|mil)")
    p.add_argument("features_dir", nargs="?", help="FEATURES_DIR made by `avar extract` (supervised methods)")
    p.add_argument("--out", required=True, help="RUN_DIR")
    p.add_argument("--method", choices=("avarnet", "autoencoder", "avaca", "mil"), default="avarnet",
                   help="avarnet: supervised head on cached features (default); autoencoder: the audio-visual "
                        "sequence autoencoder trained on normal videos only; avaca: audio-visual cross-attention "
                        "from video-level labels (normal vs anything else); mil: --head trained with AVACA's losses")
    p.add_argument("--data", help="autoencoder: DATA_DIR, frame folders (training/frames/<video>/*.jpg, e.g. UCSD Ped2) "
                                  "or class folders of videos whose normal/ clips are the training data")
    p.add_argument("--audio", help="autoencoder: AUDIO_DIR/<training|testing>/<video>.wav paired with frame folders")
    p.add_argument("--score", choices=SCORERS,
                   help="autoencoder: frame error (paper Eq. 3), worst grid patch, or worst patch of the "
                        f"frame-to-frame change (default {ae.score})")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), help=f"autoencoder: arithmetic (default {ae.precision})")
    p.add_argument("--threads", type=int, help="autoencoder, avaca/mil: torch CPU threads (default: all cores)")
    p.add_argument("--head", choices=list(HEADS), help=f"mtcn = AVAR-Net; the rest are Table 2's baselines (default {sup.head_type})")
    p.add_argument("--modality", choices=("av", "a", "v"),
                   help=f"default {sup.modality} (avarnet), {weak.modality} (avaca/mil) or {ae.modality} (autoencoder)")
    p.add_argument("--fusion", choices=FUSIONS, help="early: fuse the streams per step before one head; "
                   f"late: one head per stream, probabilities fused (default {sup.fusion})")
    p.add_argument("--stream-fusion", choices=STREAM_FUSIONS, help="how the streams enter a head: projected (each "
                   "normalised and projected to --stream-width, modality dropout) or concat (the paper's Eq. 6; "
                   f"default {tcn.stream_fusion})")
    p.add_argument("--stream-width", type=int, help=f"projected: channels per stream (default {tcn.stream_width})")
    p.add_argument("--modality-dropout", type=float, help="projected: share of training windows that see one stream "
                   f"only (default {tcn.modality_dropout})")
    p.add_argument("--video-motion", type=int, metavar="K", help="avarnet: read the video stream as motion over the "
                   "last K steps (the mean of their features and their mean absolute change; 0 = off, the default): "
                   "for short clips extracted at fine steps, e.g. --step 0.125 with K = 4 (docs/fusion.md)")
    p.add_argument("--no-motion", action="store_true", help="avarnet, avaca/mil: leave out the cache's motion stream "
                   "(optical flow, `avar extract --motion`); by default a run reads it where the cache has it")
    p.add_argument("--false-events-per-hour", type=float, metavar="RATE", help="avarnet, avaca/mil: the run's event "
                   "threshold is chosen on its validation clips for at most RATE false events per hour of normal "
                   f"footage (default {sup.false_events_per_hour:g})")
    p.add_argument("--recipe", choices=sorted(RECIPES), help=f"avarnet: robust (default {sup.recipe}; AdamW, "
                   "label smoothing, balanced classes, smoothed-loss checkpoint, refit on train + val) or paper "
                   "(Adam 1e-2, plateau schedule, best validation accuracy)")
    p.add_argument("--no-stream-selection", action="store_true", help="avarnet --modality av: fuse both streams even "
                   "when cross-validation on the labelled clips says one carries no class information (the robust "
                   "recipe checks by default; --recipe paper never does)")
    p.add_argument("--clip-blend", type=float, metavar="W", help="avarnet: weight of the head's clip prediction "
                   "against a pooled-feature logistic regression's (robust recipe "
                   f"{RECIPES['robust']['clip_blend']:g}, paper 1 = the head alone); per-step scores stay the head's")
    p.add_argument("--late-mode", choices=("mean", "learned"), help=f"late fusion: mean or learned weights (default {sup.late_mode})")
    p.add_argument("--seq-len", type=int, help=f"avarnet: steps per window (default {sup.seq_len}, the paper's T)")
    p.add_argument("--window", type=int,
                   help=f"avaca/mil: steps per scoring window on files and streams (default {weak.window})")
    p.add_argument("--calibration-fraction", type=float, help="autoencoder: share of the normal training videos "
                   f"held out to calibrate scores for files and streams (default {ae.calibration_fraction})")
    p.add_argument("--epochs", type=int,
                   help=f"default {sup.epochs} (avarnet), {ae.epochs} (autoencoder) or {weak.epochs} (avaca/mil)")
    p.add_argument("--seed", type=int, help=f"default {sup.seed}")
    p.add_argument("--lr", type=float, help=f"default {RECIPES['robust']['lr']:g} (avarnet; {RECIPES['paper']['lr']:g} "
                   f"with --recipe paper), {ae.lr:g} (autoencoder) or {weak.lr:g} (avaca/mil)")
    p.add_argument("--batch-size", type=int, help=f"default {sup.batch_size} (avarnet), {ae.batch_size} sequences "
                   f"(autoencoder) or {weak.batch_size} videos, half normal (avaca/mil)")
    p.add_argument("--stages", type=int, help=f"mtcn: MS-TCN stages (default {COMPACT_MTCN['num_stages']}; "
                   f"{tcn.num_stages} with --recipe paper)")
    p.add_argument("--layers", type=int, help="mtcn: dilated layers per stage (default: as many as dilations inside "
                   f"the window, {recipe_head(sup)['num_layers']} for {sup.seq_len} steps; {tcn.num_layers} with --recipe paper); baselines: "
                   f"recurrent/encoder layers (default {rnn.num_layers})")
    p.add_argument("--f-maps", type=int, help=f"mtcn: feature maps (default {COMPACT_MTCN['num_f_maps']}; "
                   f"{tcn.num_f_maps} with --recipe paper)")
    p.add_argument("--no-attention", action="store_true", help="mtcn: drop the attention module")
    p.add_argument("--hidden", type=int, help=f"baselines: hidden width (default {rnn.hidden}); avaca: path width "
                   f"(default {AVACAConfig.hidden})")
    p.add_argument("--audio-path", choices=("focused", "plain"), help="avaca: the VAT reads audio first differences "
                   f"(focused) or the audio itself (plain; default {weak.audio_path})")
    p.add_argument("--zero-audio", action="store_true", help="avaca: zero the audio input (the paper's baseline)")
    p.add_argument("--alpha", type=float, help=f"avaca/mil: top k = floor(steps / alpha) per video (default {weak.alpha})")
    p.add_argument("--theta", type=float, help=f"avaca/mil: weight of the dynamic MIL loss (default {weak.theta:g})")
    p.add_argument("--lambda", dest="lambda_center", type=float,
                   help=f"avaca/mil: weight of the center loss (default {weak.lam:g})")
    p.add_argument("--max-steps", type=int, help="avaca/mil: longer training videos are averaged to this many steps "
                                                 f"(default {weak.max_steps})")
    p.add_argument("--json", action="store_true")

    p = command("evaluate", cmd_evaluate, "clip-level metrics of a run on a split, or frame-level detection "
                "metrics of an autoencoder run (--data DATA_DIR) or of an avaca/mil run (frame AUC, AP, XD AP)")
    p.add_argument("run_dir")
    p.add_argument("features_dir", nargs="?", help="FEATURES_DIR (supervised runs)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="where to write eval files (default RUN_DIR)")
    p.add_argument("--data", help="autoencoder runs: DATA_DIR whose test videos are scored frame by frame")
    p.add_argument("--audio", help="autoencoder runs: AUDIO_DIR paired with frame folders (default: the training one)")
    p.add_argument("--gamma", type=float, help="autoencoder runs: regularity threshold (default: chosen on labelled "
                                                "validation videos, else paper Table 6)")
    p.add_argument("--score", choices=SCORERS, help="autoencoder runs: override the run's scorer")
    p.add_argument("--smooth", type=int, help="autoencoder runs: frames each score is averaged over (default: the "
                   f"run's, {ae.smooth} unless trained otherwise)")
    p.add_argument("--no-plots", action="store_true", help="autoencoder and avaca/mil runs: skip the per-video score plots")
    p.add_argument("--annotations", help="avaca/mil runs: frame truth for caches without it (avar synth's metadata.json "
                                         "or an XD-Violence annotations.txt)")
    p.add_argument("--json", action="store_true")

    p = command("upgrade", cmd_upgrade, "calibrate an autoencoder run saved before runs were calibrated, so "
                "predict and watch can use it")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="DATA_DIR the run was trained on (its normal training videos)")
    p.add_argument("--audio", help="AUDIO_DIR paired with frame folders, as at training")
    p.add_argument("--json", action="store_true")
