"""``avar`` commands: the paper studies and the demo: ablations, MAVAD scenes, the privacy cost, reports."""

from __future__ import annotations

import sys
from pathlib import Path

from avar.cli.common import (add_anonymize_options, add_extractor_options, anonymize_config, default_of, emit,
                             extractors_from_args)
from avar.cli.engine import add_engine_options, engine_from_args, extractor_specs


def cmd_ablate(args) -> int:
    from avar.experiments.ablate import AblationPlan, run_ablation, tables_markdown, write_tables

    plan = AblationPlan.quick() if args.quick else AblationPlan()
    if args.seeds:
        plan.seeds = tuple(range(args.seeds))
    if args.epochs:
        plan.epochs = args.epochs
    plan.paper = args.paper
    results = run_ablation(args.features_dir, args.out, plan, workers=args.workers, progress=not args.quiet,
                           engine=engine_from_args(args))
    print(tables_markdown(write_tables(results, args.out)))
    print(f"{len(results)} runs; results.json, tables.md and tables.json in {args.out}")
    return 0 if len(results) == len(plan.cells()) else 1


def cmd_scenes(args) -> int:
    """``avar scenes DATA_DIR --out DIR``: the MAVAD protocol, per scene mean +- std over random splits."""
    from avar.experiments.scenes import extract_scenes, run_scene_protocol, scenes_markdown
    from avar.methods.avaca.train import WeakTrainConfig

    engine = engine_from_args(args)
    video, audio = extractors_from_args(args) if engine is None else extractor_specs(args)
    scenes, failures = extract_scenes(args.data_dir, Path(args.out) / "features", video, audio, step=args.step,
                                      progress=not args.quiet, engine=engine)
    for failure in failures:
        print(f"failed: {failure['scene']}: {failure['path']}: {failure['reason']}", file=sys.stderr)
    given = {"epochs": args.epochs, "lr": args.lr, "audio_path": args.audio_path}
    config = WeakTrainConfig(method=args.method, zero_audio=args.zero_audio, seed=args.seed,
                             **{k: v for k, v in given.items() if v is not None})
    result = run_scene_protocol(scenes, Path(args.out) / "runs", config, repeats=args.repeats, seed=args.seed,
                                progress=not args.quiet, workers=args.workers, engine=engine)
    return emit(args, result, scenes_markdown(result))


def cmd_report(args) -> int:
    from avar.report.html import build_report

    print(build_report(args.target, args.out, split=args.split))
    return 0


def cmd_demo(args) -> int:
    from avar.experiments.demo import STORE_NAME, results_table, run_demo, serve_command, weak_table

    result = run_demo(args.out, seed=args.seed, clips_per_class=args.clips_per_class, epochs=args.epochs,
                      progress=not args.quiet)
    print()
    print(results_table(result.results))
    print("\nAVACA from video-level labels, test split:")
    print(weak_table(result.weak))
    print(f"\nreport: {result.report} (and report.html); finished in {result.seconds:.0f} s")
    print(f"{result.events} events of the test clips in {result.out_dir / STORE_NAME}; review them with\n  "
          f"{serve_command(result.out_dir)}")
    return 0


def cmd_privacy_cost(args) -> int:
    """``avar privacy-cost DATA_DIR --out DIR``: paper Table V, raw vs anonymised media."""
    from avar.experiments.privacy import privacy_markdown, run_privacy_cost

    video, audio = extractors_from_args(args)
    result = run_privacy_cost(args.data_dir, args.out, video, audio, step=args.step, config=anonymize_config(args),
                              seeds=args.seeds, epochs=args.epochs, progress=not args.quiet)
    return emit(args, result, privacy_markdown(result))


def add_commands(command) -> None:
    """Add this group's subcommands; ``command(name, func, help)`` makes one."""
    from avar.experiments.demo import run_demo
    from avar.experiments.privacy import run_privacy_cost
    from avar.experiments.scenes import extract_scenes, run_scene_protocol
    from avar.methods.table import METHODS

    p = command("ablate", cmd_ablate, "the paper's ablations: heads x modalities, sequence lengths, early vs late fusion")
    p.add_argument("features_dir")
    p.add_argument("--out", required=True, help="ABLATION_DIR (a rerun resumes it)")
    p.add_argument("--quick", action="store_true", help="2 seeds x 20 epochs instead of 3 x 50")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--workers", type=int, help="parallel runs (default: one per core)")
    p.add_argument("--paper", action="store_true", help="the paper's setup (raw streams concatenated, Eq. 6, and the "
                   "paper's training recipe) instead of avar's robust defaults; use a separate --out")
    add_engine_options(p, workers=False)

    p = command("scenes", cmd_scenes, "MAVAD protocol: per scene folder, 3 random per-class 60/20/20 splits, weak "
                "training and frame-level evaluation, mean +- std")
    p.add_argument("data_dir", help="DATA_DIR/<scene>/<class>/<clip>.mp4")
    p.add_argument("--out", required=True, help="OUT_DIR: features/<scene>, runs/<scene>/split<r>, scenes.json/.md")
    p.add_argument("--method", choices=[m.name for m in METHODS.values() if m.learning == "weak"], default="avaca")
    p.add_argument("--audio-path", choices=("focused", "plain"))
    p.add_argument("--zero-audio", action="store_true")
    p.add_argument("--repeats", type=int, default=default_of(run_scene_protocol, "repeats"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=default_of(run_scene_protocol, "seed"))
    add_extractor_options(p, default_of(extract_scenes, "step"))
    p.add_argument("--workers", type=int, help="parallel runs, or with --engine ray extraction workers and "
                   "concurrent runs (default: one per core / as the cluster allows)")
    add_engine_options(p, workers=False)
    p.add_argument("--json", action="store_true")

    p = command("privacy-cost", cmd_privacy_cost, "what anonymisation costs (MAVAD Table V): extract DATA_DIR raw "
                "and anonymised, train and evaluate AVAR-Net's head and AVACA on both over seeds")
    p.add_argument("data_dir", help="DATA_DIR/<class>/<clip>.mp4, optionally with splits.csv")
    p.add_argument("--out", required=True, help="OUT_DIR: both caches, the runs, privacy.json and privacy.md")
    p.add_argument("--seeds", type=int, default=default_of(run_privacy_cost, "seeds"))
    p.add_argument("--epochs", type=int, help="training epochs (default: each method's)")
    add_extractor_options(p, default_of(run_privacy_cost, "step"))
    add_anonymize_options(p, switch=False)
    p.add_argument("--json", action="store_true")

    p = command("report", cmd_report, "one self-contained HTML page for a run or an ablation directory")
    p.add_argument("target", help="RUN_DIR or ABLATION_DIR")
    p.add_argument("--out", help="HTML file to write (default TARGET/report.html)")
    p.add_argument("--split", default="test")

    p = command("demo", cmd_demo, "the main job: synth -> extract -> train a/v/av and AVACA -> evaluate -> predict")
    for name in ("out_dir", "seed", "clips_per_class", "epochs"):
        default = default_of(run_demo, name)
        p.add_argument("--" + name.removesuffix("_dir").replace("_", "-"), type=type(default), default=default,
                       help=f"default {default}")
