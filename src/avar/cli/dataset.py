"""``avar dataset example | cut | check | stats | agree``: from long recordings and a spreadsheet
of events to a dataset avar trains on, checked, described, and its annotators compared."""

from __future__ import annotations

from avar.cli.common import default_of, emit


def cmd_example(args) -> int:
    from avar.datasets.example import write_example

    example = write_example(args.out_dir, seed=args.seed)
    return emit(args, {"recordings": example.recordings, "annotations": str(example.annotations),
                       "second_annotator": str(example.second)},
                f"wrote {', '.join(example.recordings)} into {example.root}, their events in {example.annotations} "
                f"and a second annotator's in {example.second}")


def cmd_cut(args) -> int:
    from avar.datasets.recordings import cut_dataset

    report = cut_dataset(args.raw_dir, args.annotations, args.out, margin=args.margin,
                         normal_length=args.normal_length, normals=args.normals,
                         fractions=tuple(args.fractions), seed=args.seed, progress=not args.quiet)
    emit(args, report.to_dict(), report.to_markdown())
    return 1 if report.problems else 0


def cmd_check(args) -> int:
    from avar.datasets.check import check_dataset

    report = check_dataset(args.data_dir, progress=not args.quiet)
    emit(args, report.to_dict(), report.to_markdown())
    return 1 if report.errors else 0


def cmd_stats(args) -> int:
    from avar.datasets.stats import dataset_stats

    stats = dataset_stats(args.data_dir, plot=args.plot, progress=not args.quiet)
    return emit(args, stats.to_dict(), stats.to_markdown())


def cmd_agree(args) -> int:
    from avar.datasets.agreement import agreement

    report = agreement(args.first, args.second, min_iou=args.min_iou)
    return emit(args, report.to_dict(), report.to_markdown())


def add_commands(command) -> None:
    """Add ``avar dataset`` and its subcommands; ``command(name, func, help)`` makes one."""
    from avar.datasets.agreement import agreement
    from avar.datasets.recordings import cut_dataset

    p = command("dataset", None, "build a dataset from long recordings and an annotations CSV, check it, describe it, "
                "compare annotators")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name, func, help):
        q = sub.add_parser(name, help=help, description=help)
        q.set_defaults(func=func)
        q.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        q.add_argument("--json", action="store_true")
        return q

    q = action("example", cmd_example, "write two generated recordings with known events and two annotators' CSVs "
               "of them (to try the other actions on)")
    q.add_argument("out_dir", help="RAW_DIR to write")
    q.add_argument("--seed", type=int, default=0)

    q = action("cut", cmd_cut, "cut each annotated event (file,start,end,label) into a clip with its sound, sample "
               "normal clips between events, write class folders, a splits.csv grouped by recording and a "
               "metadata.json; exit status 1 when some rows could not be cut (they are listed)")
    q.add_argument("raw_dir", help="RAW_DIR: the recordings; the annotations' file column is relative to it")
    q.add_argument("annotations", help="CSV with header file,start,end,label; times in seconds or [hh:]mm:ss[.ms]")
    q.add_argument("--out", required=True, help="DATA_DIR to write")
    q.add_argument("--margin", type=float, default=default_of(cut_dataset, "margin"),
                   help="seconds between an event and any normal clip (default %(default)s)")
    q.add_argument("--normal-length", type=float, help="seconds per normal clip (default: the events' median length)")
    q.add_argument("--normals", type=int, help="normal clips per recording (default: as many as it has events)")
    q.add_argument("--fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   default=list(default_of(cut_dataset, "fractions")),
                   help="shares of the clips per split, whole recordings at a time (default %(default)s)")
    q.add_argument("--seed", type=int, default=default_of(cut_dataset, "seed"))

    q = action("check", cmd_check, "decode every clip of DATA_DIR and report what training would trip on (exit "
               "status 1): files that do not decode or hold nothing, clips or moments of a recording in two splits; "
               "and what is worth knowing: no or silent sound, copies, sources across splits")
    q.add_argument("data_dir", help="DATA_DIR/<class>/<clip>.<ext>, optionally with splits.csv, sources.csv, "
                                    "metadata.json")

    q = action("stats", cmd_stats, "describe DATA_DIR as the AVAR-Net paper's Table 1 does (classes, clips, "
               "modality, resolution, duration), per class and split")
    q.add_argument("data_dir")
    q.add_argument("--plot", help="write the clips per class as a bar chart (PNG) here")

    q = action("agree", cmd_agree, "how far two annotation files of the same recordings agree: Cohen's kappa of the "
               "labels of matched events, their mean temporal IoU, and every disagreement")
    q.add_argument("first", help="annotations CSV (file,start,end,label)")
    q.add_argument("second", help="the other annotator's CSV of the same recordings")
    q.add_argument("--min-iou", type=float, default=default_of(agreement, "min_iou"),
                   help="matched events overlapping less than this are listed as boundary disagreements "
                        "(default %(default)s)")
