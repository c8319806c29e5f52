"""``avar`` commands: training and evaluating a run of any method, and upgrading old runs."""

from __future__ import annotations

from avar.cli.common import emit


def cmd_train(args) -> int:
    from avar.methods.table import METHODS

    info, text = METHODS[args.method].cli.train(args, progress=not args.quiet)
    return emit(args, info, text)


def cmd_evaluate(args) -> int:
    from avar.methods.table import METHODS
    from avar.runs import run_method

    report = METHODS[run_method(args.run_dir)].cli.evaluate(args)
    return emit(args, report.to_dict(), report.to_markdown())


def old_train_spelling(argv: list[str]) -> list[str]:
    """``avar train FEATURES --method X ...`` (before methods were subcommands) as ``avar train X
    FEATURES ...``, with a note on stderr; other command lines unchanged."""
    import sys

    from avar.methods.table import METHODS

    if argv[:1] != ["train"] or len(argv) > 1 and (argv[1] in METHODS or argv[1] in ("-h", "--help")):
        return argv
    rest, method = [], "avarnet"
    i = 1
    while i < len(argv):
        if argv[i] == "--method" and i + 1 < len(argv):
            method, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith("--method="):
            method = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    print(f"note: `avar train ... --method {method}` is the old spelling and goes away in the next release; "
          f"write `avar train {method} ...`", file=sys.stderr)
    return ["train", method, *rest]


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
    from avar.methods.table import METHODS

    ae = AETrainConfig()
    p = command("train", cmd_train, "train a run of one method: " + "; ".join(
        f"{m.name}: {m.summary}" for m in METHODS.values()))
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD",
                               help=f"one of {', '.join(METHODS)}; `avar train METHOD --help` lists its options")
    for m in METHODS.values():
        q = methods.add_parser(m.name, help=m.summary, description=f"{m.name} ({m.learning}): {m.summary}")
        q.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        q.add_argument("--out", required=True, help="RUN_DIR")
        q.add_argument("--json", action="store_true")
        m.cli.add_train_options(q, m.name)

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
