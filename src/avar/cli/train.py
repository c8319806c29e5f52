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
    """``avar upgrade RUN_DIR ...``: what a method's runs saved by an earlier avar need before
    predict and watch can use them (its options module's ``upgrade``, where it has one)."""
    from avar.methods.table import METHODS
    from avar.runs import run_method

    name = run_method(args.run_dir)
    upgrade = getattr(METHODS[name].cli, "upgrade", None)
    if upgrade is None:
        return emit(args, {"run_dir": str(args.run_dir), "upgraded": False},
                    f"{args.run_dir}: {name} runs of earlier versions load as they are; nothing to upgrade")
    info, text = upgrade(args)
    return emit(args, info, text)


def add_commands(command) -> None:
    """Add this group's subcommands; ``command(name, func, help)`` makes one. What is a method's
    own comes from the table: its train options, and the evaluate and upgrade options of the
    methods that have them (``add_evaluate_options``, ``add_upgrade_options`` in its options module)."""
    from avar.methods.table import METHODS

    surfaces = list({m.options: m.cli for m in METHODS.values()}.values())  # avaca and mil share one
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

    p = command("evaluate", cmd_evaluate, "the metrics of a run on held-out data: " + "; ".join(
        f"{m.name}: {m.evaluates}" for m in METHODS.values()))
    p.add_argument("run_dir")
    p.add_argument("features_dir", nargs="?", help="FEATURES_DIR (runs trained on features)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="where to write eval files (default RUN_DIR)")
    p.add_argument("--no-plots", action="store_true", help="skip the per-video score plots")
    p.add_argument("--json", action="store_true")
    for surface in surfaces:
        if hasattr(surface, "add_evaluate_options"):
            surface.add_evaluate_options(p)

    p = command("upgrade", cmd_upgrade, "bring a run saved by an earlier avar up to date where it needs more than "
                "loading (an autoencoder run saved before runs were calibrated), so predict and watch can use it")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    for surface in surfaces:
        if hasattr(surface, "add_upgrade_options"):
            surface.add_upgrade_options(p)
