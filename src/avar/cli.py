"""The ``avar`` command: parse, call the Python API, print."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=1, allow_nan=False))


def _emit(args, payload, text: str) -> int:
    """Print ``payload`` as JSON under ``--json``, else ``text``; the command's exit status (0)."""
    if args.json:
        _print_json(payload)
    else:
        print(text)
    return 0


def cmd_synth(args) -> int:
    from avar.media.synth import synthesize

    summary = synthesize(Path(args.out_dir), seed=args.seed, clips_per_class=args.clips_per_class,
                         seconds=args.seconds, progress=not args.quiet, weak=args.weak,
                         normal_clips=args.normal_clips)
    print(f"wrote {summary.n_clips} clips of {len(summary.classes)} classes to {summary.out_dir}")
    return 0


def cmd_extractors(args) -> int:
    from avar.features import extractor_infos

    infos = extractor_infos()
    if args.json:
        _print_json([info.__dict__ for info in infos])
        return 0
    print(f"{'name':20} {'modality':8} {'dim':>5}  {'offline':7}  source / preprocessing")
    for i in infos:
        print(f"{i.name:20} {i.modality:8} {i.dim:>5}  {'yes' if i.offline else 'no':7}  {i.source}\n{'':46}{i.preprocessing}")
    return 0


def cmd_extract(args) -> int:
    from avar.datasets.folders import discover
    from avar.features import build_extractor
    from avar.features.cache import extract_dataset, summary_dict

    entries = discover(args.data_dir, seed=args.seed, splits_csv=args.splits)
    video = build_extractor(args.video, args.video_weights, runtime=args.runtime)
    audio = build_extractor(args.audio, args.audio_weights, runtime=args.runtime)
    summary = extract_dataset(entries, args.out, video, audio, step=args.step,
                              video_weights=args.video_weights, audio_weights=args.audio_weights,
                              progress=not args.quiet)
    if args.json:
        _print_json(summary_dict(summary))
    else:
        print(f"{summary.done} clips extracted, {summary.skipped} already done, {len(summary.failures)} failed -> {summary.out_dir}")
        for failure in summary.failures:
            print(f"  failed: {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 1 if summary.failures else 0


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
             "seed": args.seed, "recipe": args.recipe}
    config = TrainConfig(select_streams=False if args.no_stream_selection else None,
                         head={k: v for k, v in flags.items() if v is not None},
                         **{k: v for k, v in given.items() if v is not None})
    run = train_head(FeatureSet.open(args.features_dir), args.out, config, progress=not args.quiet)
    info = {"run_dir": str(args.out), "classes": run.classes,
            **{k: run.extra[k] for k in ("params", "best_epoch", "train_seconds", "val_branch_accuracy", "fusion_warning",
                                         "stream_selection")}}
    text = (f"saved {args.out}: {len(run.classes)} classes, {info['params']:,} parameters, "
            f"best epoch {info['best_epoch']}, {info['train_seconds']:.1f} s")
    if info["stream_selection"]:
        text += f"\nstreams: {info['stream_selection']['reason']}"
    branches = info["val_branch_accuracy"]
    if branches:
        text += (f"\nvalidation accuracy: audio + video {branches['av']:.3f}, audio branch alone {branches['a']:.3f}, "
                 f"video branch alone {branches['v']:.3f}")
    return _emit(args, info, text)


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
             "max_steps": args.max_steps, "head_type": args.head, "seed": args.seed, "window": args.window}
    config = WeakTrainConfig(method=args.method, zero_audio=args.zero_audio,
                             model={k: v for k, v in model.items() if v is not None},
                             **{k: v for k, v in given.items() if v is not None})
    run = train_weak(FeatureSet.open(args.features_dir), args.out, config, progress=not args.quiet)
    info = {"run_dir": str(args.out), "method": args.method,
            **{k: run.extra[k] for k in ("params", "best_epoch", "train_seconds", "n_train")}}
    return _emit(args, info, f"saved {args.out}: {args.method}, {info['params']:,} parameters, "
                             f"best epoch {info['best_epoch']}, {info['train_seconds']:.1f} s")


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
    return _emit(args, info, f"saved {args.out}: autoencoder ({config.modality}), {info['train_seconds']:.1f} s "
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
        return _emit(args, report.to_dict(), report.to_markdown())
    from avar.methods.avarnet.evaluate import evaluate_run
    if args.features_dir is None:
        raise ValueError(f"avar evaluate {args.run_dir} needs FEATURES_DIR (made by `avar extract`)")
    if learning == "weak":
        from avar.methods.avaca.evaluate import evaluate_weak

        report = evaluate_weak(args.run_dir, args.features_dir, args.split, args.out, annotations=args.annotations,
                               plots=not args.no_plots)
    else:
        report = evaluate_run(args.run_dir, args.features_dir, args.split, args.out)
    return _emit(args, report.to_dict(), report.to_markdown())


def cmd_xd_violence(args) -> int:
    """``avar xd-violence LISTS_DIR --out DIR``: import the published features, or list the videos for extract."""
    from avar.datasets.xd_violence import XDViolence, import_features, write_splits_csv

    xd = XDViolence.load(args.lists_dir)
    if args.videos:
        path, missing = write_splits_csv(xd, args.videos, Path(args.out) / "splits.csv", val_fraction=args.val_fraction,
                                         seed=args.seed)
        info = {"splits_csv": str(path), "videos": len(xd.videos) - len(missing), "missing": len(missing),
                "next": f"avar extract {args.videos} --splits {path} --out FEATURES_DIR --step {16 / 24!r}"}
    else:
        if not args.rgb:
            raise ValueError("avar xd-violence needs --rgb DIR (the I3D <name>__<crop>.npy files) or --videos DIR")
        summary = import_features(xd, args.rgb, args.audio, args.out, crops=args.crops, val_fraction=args.val_fraction,
                                  seed=args.seed, progress=not args.quiet)
        info = {"features_dir": str(args.out), "clips": summary.clips, "missing_rgb": len(summary.missing_rgb),
                "missing_audio": len(summary.missing_audio)}
    info["counts"] = xd.counts()
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_scenes(args) -> int:
    """``avar scenes DATA_DIR --out DIR``: the MAVAD protocol, per scene mean +- std over random splits."""
    from avar.features import build_extractor
    from avar.experiments.scenes import extract_scenes, run_scene_protocol, scenes_markdown
    from avar.methods.avaca.train import WeakTrainConfig

    video = build_extractor(args.video, args.video_weights, runtime=args.runtime)
    audio = build_extractor(args.audio, args.audio_weights, runtime=args.runtime)
    scenes, failures = extract_scenes(args.data_dir, Path(args.out) / "features", video, audio, step=args.step,
                                      progress=not args.quiet)
    for failure in failures:
        print(f"failed: {failure['scene']}: {failure['path']}: {failure['reason']}", file=sys.stderr)
    given = {"epochs": args.epochs, "lr": args.lr, "audio_path": args.audio_path}
    config = WeakTrainConfig(method=args.method, zero_audio=args.zero_audio, seed=args.seed,
                             **{k: v for k, v in given.items() if v is not None})
    result = run_scene_protocol(scenes, Path(args.out) / "runs", config, repeats=args.repeats, seed=args.seed,
                                progress=not args.quiet)
    return _emit(args, result, scenes_markdown(result))


def cmd_predict(args) -> int:
    from avar.serve.predict import predict_files

    predictions, failures = predict_files(args.run_dir, args.media, args.out, progress=not args.quiet,
                                          runtime=args.runtime)
    if args.json:
        for p in predictions:
            print(json.dumps(p.to_dict()))
    else:
        for p in predictions:
            peak = max(p.steps, key=lambda s: s.anomaly_score)
            print(f"{p.path}: {p.clip_class} (p={p.clip_probabilities[p.clip_class]:.2f}); "
                  f"peak anomaly score {peak.anomaly_score:.2f} at {peak.time:.0f}-{peak.end:.0f} s ({peak.predicted})")
            for s in p.steps:
                print(f"  {s.time:7.1f}-{s.end:<7.1f} {s.predicted:16} anomaly {s.anomaly_score:.2f}")
        if args.out:
            print(f"step records and plots in {args.out}")
    for failure in failures:
        print(f"failed: {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 1 if failures else 0


def cmd_ablate(args) -> int:
    from avar.experiments.ablate import AblationPlan, run_ablation, tables_markdown, write_tables

    plan = AblationPlan.quick() if args.quick else AblationPlan()
    if args.seeds:
        plan.seeds = tuple(range(args.seeds))
    if args.epochs:
        plan.epochs = args.epochs
    plan.paper = args.paper
    results = run_ablation(args.features_dir, args.out, plan, workers=args.workers, progress=not args.quiet)
    print(tables_markdown(write_tables(results, args.out)))
    print(f"{len(results)} runs; results.json, tables.md and tables.json in {args.out}")
    return 0 if len(results) == len(plan.cells()) else 1


def cmd_report(args) -> int:
    from avar.report.html import build_report

    print(build_report(args.target, args.out, split=args.split))
    return 0


def cmd_events(args) -> int:
    """``avar events DB``: list stored events as a table, or JSON lines with ``--json``."""
    from avar.serve.store import EventStore

    with EventStore(args.db, create=False) as store:
        rows = store.query(label=args.label, source=args.source, since=args.since, until=args.until,
                           min_score=args.min_score, limit=args.limit)
    if args.json:
        for r in rows:
            print(json.dumps(r, allow_nan=False))
        return 0
    if not rows:
        print(f"no events in {args.db} match")
        return 0
    print(f"{'id':>5} {'start':>9} {'end':>9} {'label':16} {'peak':>5} {'at':>9}  source")
    for r in rows:
        print(f"{r['id']:>5} {r['start']:>9.2f} {r['end']:>9.2f} {r['label']:16} {r['peak_score']:>5.2f} "
              f"{r['peak_time']:>9.2f}  {r['source']}")
    return 0


def cmd_watch(args) -> int:
    from avar.serve.events import EventConfig
    from avar.serve.store import EventStore
    from avar.serve.watch import Watcher
    from avar.runs import load_run

    run = load_run(args.run_dir)
    thresholds = dict(item.split("=", 1) for item in args.class_threshold)
    given = {"threshold": args.threshold, "release": args.release, "min_duration": args.min_duration}
    config = EventConfig(**{**run.extra.get("thresholds", {}), **{k: v for k, v in given.items() if v is not None}},
                         class_thresholds={k: float(v) for k, v in thresholds.items()})
    store = EventStore(args.db) if args.db else None
    try:
        watcher = Watcher(run, causal=args.causal, events=config, store=store,
                          jsonl=args.jsonl, thumbnails=args.thumbnails, runtime=args.runtime, batch=args.batch)
        for record in watcher.watch(args.source, realtime=args.realtime):
            if args.json:
                print(json.dumps(record.__dict__), flush=True)
            elif not args.quiet:
                print(f"{record.time:9.1f}-{record.end:<9.1f} {record.predicted:16} anomaly {record.anomaly_score:.2f}", flush=True)
    finally:
        if store is not None:
            store.close()
    if not args.json:
        for e in watcher.events:
            print(f"event {e.label} {e.start:.1f}-{e.end:.1f} s peak {e.peak_score:.2f} ({e.source})")
    for failure in watcher.failures:
        print(f"failed: {failure['source']}: {failure['reason']}", file=sys.stderr)
    return 1 if watcher.failures else 0


def cmd_bench(args) -> int:
    from avar.serve.bench import run_bench

    result = run_bench(args.run, args.media, video=args.video, audio=args.audio, random_weights=args.random_weights,
                       runtime=args.runtime, batch=args.batch, causal=not args.centred)
    if args.json:
        _print_json(result)
        return 0
    b = result["backbones"]
    print(f"media      {result['media']} ({result['steps']} steps of {result['step_s']:g} s)")
    print(f"backbones  video {b['video']['name']} [{b['video']['runtime']}], audio {b['audio']['name']} "
          f"[{b['audio']['runtime']}], head {result['head']}, {result['threads']} threads")
    print(f"throughput {result['steps_per_second']:.2f} steps/s ({result['realtime_factor']:.1f}x real time)")
    print(f"latency    p50 {result['latency_p50_ms']:.0f} ms, p95 {result['latency_p95_ms']:.0f} ms (live pacing)")
    print(f"per step   decode {result['decode_ms_per_step']:.1f} ms, video {result['video_ms_per_step']:.1f} ms, "
          f"audio {result['audio_ms_per_step']:.1f} ms, head {result['head_ms_per_step']:.1f} ms (stages overlap)")
    print(f"memory     peak {result['peak_rss_mb']:.0f} MB resident")
    return 0


def cmd_export(args) -> int:
    from avar.features import build_extractor
    from avar.runs import load_run

    if args.run:
        backbones = load_run(args.run).build_extractors(runtime="torch")
    else:
        backbones = [build_extractor(name, weights) for name, weights in
                     ((args.video, args.video_weights), (args.audio, args.audio_weights)) if name]
    if not backbones:
        raise ValueError("nothing to export: pass --run RUN_DIR or --video/--audio NAME")
    for backbone in backbones:
        if not hasattr(backbone, "export_onnx"):
            print(f"{backbone.name}: plain numpy, nothing to export")
            continue
        path = backbone.onnx_path(Path(args.out) if args.out else None)
        if path.is_file() and not args.force:
            print(f"{backbone.name}: {path} (already exported)")
            continue
        backbone.export_onnx(path)
        print(f"{backbone.name}: {path}")
    return 0


def cmd_upgrade(args) -> int:
    """``avar upgrade RUN_DIR --data DATA_DIR``: calibrate an autoencoder run saved before runs
    carried a calibration for files and streams."""
    from avar.methods.autoencoder.train import upgrade_autoencoder

    run = upgrade_autoencoder(args.run_dir, args.data, audio_dir=args.audio)
    calibration = run.stream["calibration"]
    return _emit(args, run.stream, f"calibrated {args.run_dir} on {calibration['frames']} steps of "
                                   f"{calibration['videos']} normal training videos at {run.stream['fps']:g} fps")


def cmd_demo(args) -> int:
    from avar.experiments.demo import results_table, run_demo, weak_table

    result = run_demo(args.out, seed=args.seed, clips_per_class=args.clips_per_class, epochs=args.epochs,
                      progress=not args.quiet)
    print()
    print(results_table(result.results))
    print("\nAVACA from video-level labels, test split:")
    print(weak_table(result.weak))
    print(f"\nreport: {result.report} (and report.html); finished in {result.seconds:.0f} s")
    return 0


RUNTIME_HELP = ("how backbones run: auto (the fastest measured: ONNX Runtime or bfloat16), torch (eager fp32, "
                "the reference), bf16, onnx")


def build_parser() -> argparse.ArgumentParser:
    from avar.features import DEFAULT_AUDIO, DEFAULT_VIDEO
    from avar.features.runtime import RUNTIMES

    RUNTIME_CHOICES = ("auto", *RUNTIMES)
    from avar.methods.heads import FUSIONS, HEADS
    from avar.methods.streams import STREAM_FUSIONS
    from avar.methods.avarnet.train import RECIPES

    parser = argparse.ArgumentParser(prog="avar", description="Audio-visual anomaly recognition for surveillance video.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        return p

    p = command("synth", cmd_synth, "write the built-in synthetic audio-visual benchmark (MP4 files)")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips-per-class", type=int, default=24)
    p.add_argument("--seconds", type=float, help="clip length (default 8, or 30 with --weak)")
    p.add_argument("--weak", action="store_true", help="weakly labelled variant: long clips, the anomaly in 10-30%% of "
                   "each, as many normal clips as anomalous ones; intervals in metadata.json")
    p.add_argument("--normal-clips", type=int, help="--weak: number of normal clips (default: all anomalous clips together)")

    p = command("extractors", cmd_extractors, "list feature extractors")
    p.add_argument("--json", action="store_true")

    p = command("extract", cmd_extract, "decode media and cache per-step features")
    p.add_argument("data_dir", help="DATA_DIR/<class>/<clip>.<ext>, optionally with splits.csv")
    p.add_argument("--out", required=True, help="FEATURES_DIR")
    p.add_argument("--video", default=DEFAULT_VIDEO, help=f"video extractor (default {DEFAULT_VIDEO})")
    p.add_argument("--audio", default=DEFAULT_AUDIO, help=f"audio extractor (default {DEFAULT_AUDIO})")
    p.add_argument("--video-weights", help="local directory or Hugging Face id of the video weights")
    p.add_argument("--audio-weights", help="local directory or Hugging Face id of the audio weights")
    p.add_argument("--step", type=float, default=1.0, help="seconds per time step (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
    p.add_argument("--splits", help="a splits.csv (path,label,split) instead of DATA_DIR/splits.csv")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--json", action="store_true")

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
    p.add_argument("--score", choices=("frame", "patch", "motion"),
                   help="autoencoder: frame error (paper Eq. 3), worst grid patch, or worst patch of the "
                        "frame-to-frame change (default motion)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), help="autoencoder: arithmetic (default auto)")
    p.add_argument("--threads", type=int, help="autoencoder, avaca/mil: torch CPU threads (default: all cores)")
    p.add_argument("--head", choices=list(HEADS), help="mtcn = AVAR-Net (default); the rest are Table 2's baselines")
    p.add_argument("--modality", choices=("av", "a", "v"), help="default av (avarnet) or v (autoencoder)")
    p.add_argument("--fusion", choices=FUSIONS, help="early (default): fuse the streams per step before one head; "
                   "late: one head per stream, probabilities fused")
    p.add_argument("--stream-fusion", choices=STREAM_FUSIONS, help="how the streams enter a head: projected (default: "
                   "each normalised and projected to --stream-width, modality dropout) or concat (the paper's Eq. 6)")
    p.add_argument("--stream-width", type=int, help="projected: channels per stream (default 64)")
    p.add_argument("--modality-dropout", type=float, help="projected: share of training windows that see one stream "
                   "only (default 0.3)")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="avarnet: robust (default; AdamW, "
                   "label smoothing, balanced classes, smoothed-loss checkpoint, refit on train + val) or paper "
                   "(Adam 1e-2, plateau schedule, best validation accuracy)")
    p.add_argument("--no-stream-selection", action="store_true", help="avarnet --modality av: fuse both streams even "
                   "when cross-validation on the labelled clips says one carries no class information (the robust "
                   "recipe checks by default; --recipe paper never does)")
    p.add_argument("--late-mode", choices=("mean", "learned"), help="late fusion: mean (default) or learned weights")
    p.add_argument("--seq-len", type=int, help="avarnet: steps per window (default 10, the paper's T)")
    p.add_argument("--window", type=int, help="avaca/mil: steps per scoring window on files and streams (default 32)")
    p.add_argument("--calibration-fraction", type=float, help="autoencoder: share of the normal training videos "
                   "held out to calibrate scores for files and streams (default 0.2)")
    p.add_argument("--epochs", type=int, help="default 50 (avarnet), 6 (autoencoder) or 100 (avaca/mil)")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--lr", type=float, help="default 1e-3 (avarnet; 1e-2 with --recipe paper), 1e-3 (autoencoder) or "
                   "1e-4 (avaca/mil)")
    p.add_argument("--batch-size", type=int, help="default 32 (avarnet), 10 sequences (autoencoder) or 16 videos, half normal (avaca/mil)")
    p.add_argument("--stages", type=int, help="mtcn: MS-TCN stages (default 4)")
    p.add_argument("--layers", type=int, help="mtcn: dilated layers per stage (default 10); baselines: recurrent/encoder layers (default 2)")
    p.add_argument("--f-maps", type=int, help="mtcn: feature maps (default 64)")
    p.add_argument("--no-attention", action="store_true", help="mtcn: drop the attention module")
    p.add_argument("--hidden", type=int, help="baselines: hidden width (default 128); avaca: path width (default 128)")
    p.add_argument("--audio-path", choices=("focused", "plain"),
                   help="avaca: the VAT reads audio first differences (focused, default) or the audio itself (plain)")
    p.add_argument("--zero-audio", action="store_true", help="avaca: zero the audio input (the paper's baseline)")
    p.add_argument("--alpha", type=float, help="avaca/mil: top k = floor(steps / alpha) per video (default 8)")
    p.add_argument("--theta", type=float, help="avaca/mil: weight of the dynamic MIL loss (default 10)")
    p.add_argument("--lambda", dest="lambda_center", type=float, help="avaca/mil: weight of the center loss (default 1)")
    p.add_argument("--max-steps", type=int, help="avaca/mil: longer training videos are averaged to this many steps "
                                                 "(default 200)")
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
    p.add_argument("--score", choices=("frame", "patch", "motion"), help="autoencoder runs: override the run's scorer")
    p.add_argument("--smooth", type=int, help="autoencoder runs: frames each score is averaged over (default 10)")
    p.add_argument("--no-plots", action="store_true", help="autoencoder and avaca/mil runs: skip the per-video score plots")
    p.add_argument("--annotations", help="avaca/mil runs: frame truth for caches without it (avar synth's metadata.json "
                                         "or an XD-Violence annotations.txt)")
    p.add_argument("--json", action="store_true")

    p = command("xd-violence", cmd_xd_violence, "import XD-Violence's published I3D/VGGish features into a feature "
                "cache (test clips carry their frame truth), or write a splits.csv to extract its videos")
    p.add_argument("lists_dir", help="folder with train_videos.txt, test_videos.txt and annotations.txt")
    p.add_argument("--out", required=True, help="FEATURES_DIR to write (or, with --videos, where splits.csv goes)")
    p.add_argument("--rgb", action="append", help="folder of <name>__<crop>.npy I3D files (repeatable: train, test)")
    p.add_argument("--audio", action="append", help="folder of <name>__vggish.npy files (repeatable); none: zero audio")
    p.add_argument("--videos", help="folder of the videos themselves: write OUT/splits.csv for `avar extract`")
    p.add_argument("--crops", default="mean", help="training videos: mean (average the 5 crops, default), all "
                                                   "(one clip per crop) or a crop number 0-4; test videos: mean")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the training list kept for validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")

    p = command("scenes", cmd_scenes, "MAVAD protocol: per scene folder, 3 random per-class 60/20/20 splits, weak "
                "training and frame-level evaluation, mean +- std")
    p.add_argument("data_dir", help="DATA_DIR/<scene>/<class>/<clip>.mp4")
    p.add_argument("--out", required=True, help="OUT_DIR: features/<scene>, runs/<scene>/split<r>, scenes.json/.md")
    p.add_argument("--method", choices=("avaca", "mil"), default="avaca")
    p.add_argument("--audio-path", choices=("focused", "plain"))
    p.add_argument("--zero-audio", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--video", default=DEFAULT_VIDEO)
    p.add_argument("--audio", default=DEFAULT_AUDIO)
    p.add_argument("--video-weights")
    p.add_argument("--audio-weights")
    p.add_argument("--step", type=float, default=1.0)
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--json", action="store_true")

    p = command("predict", cmd_predict, "per-step classes and anomaly scores of media files")
    p.add_argument("run_dir")
    p.add_argument("media", nargs="+")
    p.add_argument("--out", help="write <stem>.jsonl, <stem>.png and predictions.json here")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object per file on stdout")

    p = command("ablate", cmd_ablate, "the paper's ablations: heads x modalities, sequence lengths, early vs late fusion")
    p.add_argument("features_dir")
    p.add_argument("--out", required=True, help="ABLATION_DIR (a rerun resumes it)")
    p.add_argument("--quick", action="store_true", help="2 seeds x 20 epochs instead of 3 x 50")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--workers", type=int, help="parallel runs (default: one per core)")
    p.add_argument("--paper", action="store_true", help="the paper's setup (raw streams concatenated, Eq. 6, and the "
                   "paper's training recipe) instead of avar's robust defaults; use a separate --out")

    p = command("report", cmd_report, "one self-contained HTML page for a run or an ablation directory")
    p.add_argument("target", help="RUN_DIR or ABLATION_DIR")
    p.add_argument("--out", help="HTML file to write (default TARGET/report.html)")
    p.add_argument("--split", default="test")

    p = command("watch", cmd_watch, "stream a file, folder, URL or device through a run: a record per step, events")
    p.add_argument("run_dir")
    p.add_argument("source", help="media file, folder of files, rtsp://... / http://... URL, or device")
    p.add_argument("--causal", action="store_true", help="use only past steps (record as soon as a step ends)")
    p.add_argument("--realtime", action="store_true", help="pace files at their own speed")
    p.add_argument("--db", help="SQLite event store to write events and sources to")
    p.add_argument("--jsonl", help="append events to this JSON-lines file")
    p.add_argument("--thumbnails", help="directory for event thumbnails (JPEG)")
    p.add_argument("--threshold", type=float, help="anomaly score that opens an event (default: the run's, else "
                   "0.5; an autoencoder run's is 0.99, reached by 1%% of normal steps)")
    p.add_argument("--release", type=float, help="score below which an event closes (default: the run's, else 0.4)")
    p.add_argument("--min-duration", type=float, help="seconds; shorter events are dropped (default 1)")
    p.add_argument("--class-threshold", action="append", default=[], metavar="CLASS=P",
                   help="per-class opening threshold on that class's probability (repeatable)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--batch", type=int, default=8, help="most steps per backbone call when decoding runs ahead (default 8)")
    p.add_argument("--json", action="store_true", help="one JSON step record per line")

    p = command("bench", cmd_bench, "throughput, latency and memory of the streaming pipeline on this machine (paper Table 4)")
    p.add_argument("--run", help="RUN_DIR to time (default: a random head of the default shape)")
    p.add_argument("--media", help="media file (default: the standard clip, 60 s 1280x720 25 fps H.264 + AAC 48 kHz)")
    p.add_argument("--video", help=f"video backbone when no --run is given (default {DEFAULT_VIDEO})")
    p.add_argument("--audio", help=f"audio backbone when no --run is given (default {DEFAULT_AUDIO})")
    p.add_argument("--random-weights", action="store_true", help="build the backbones untrained (timing needs no weights)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--centred", action="store_true", help="centred windows instead of causal ones")
    p.add_argument("--json", action="store_true")

    p = command("export", cmd_export, "export backbones to ONNX, cached next to their weights (used by --runtime onnx/auto)")
    p.add_argument("--run", help="export the backbones of this RUN_DIR")
    p.add_argument("--video", help="a video backbone to export")
    p.add_argument("--audio", help="an audio backbone to export")
    p.add_argument("--video-weights")
    p.add_argument("--audio-weights")
    p.add_argument("--out", help="folder for the ONNX files (default: next to the weights, else ~/.cache/avar/onnx)")
    p.add_argument("--force", action="store_true", help="export again even if the file exists")

    p = command("events", cmd_events, "list anomaly events kept in an event store")
    p.add_argument("db", help="the event store (SQLite file)")
    p.add_argument("--label", help="only this anomaly class")
    p.add_argument("--source", help="only this source URI")
    p.add_argument("--since", type=float, help="only events starting at or after SECONDS")
    p.add_argument("--until", type=float, help="only events starting before SECONDS")
    p.add_argument("--min-score", type=float, help="only events whose peak score is at least X")
    p.add_argument("--limit", type=int, help="at most N events")
    p.add_argument("--json", action="store_true", help="one JSON object per event")

    p = command("upgrade", cmd_upgrade, "calibrate an autoencoder run saved before runs were calibrated, so "
                "predict and watch can use it")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="DATA_DIR the run was trained on (its normal training videos)")
    p.add_argument("--audio", help="AUDIO_DIR paired with frame folders, as at training")
    p.add_argument("--json", action="store_true")

    p = command("demo", cmd_demo, "the main job: synth -> extract -> train a/v/av and AVACA -> evaluate -> predict")
    p.add_argument("--out", default="avar-demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips-per-class", type=int, default=24)
    p.add_argument("--epochs", type=int, default=50)
    return parser


STREAMING_COMMANDS = ("watch", "bench")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in STREAMING_COMMANDS:
        # The decoder thread, ONNX Runtime and PyTorch share the cores; OpenMP workers that
        # spin while idle starve the others (must be set before torch is imported).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
