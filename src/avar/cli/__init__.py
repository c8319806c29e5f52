"""The ``avar`` command: parse, call the Python API, print.

A thin layer: one module per command group (``data``, ``dataset``, ``train``, ``serve``, ``experiments``),
each command a few lines over library functions a user could call from a notebook. Training
defaults live in the config dataclasses, not here.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from avar.cli import data, dataset, experiments, serve, train

GROUPS = (data, dataset, train, serve, experiments)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avar", description="Audio-visual anomaly recognition for surveillance video.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        return p

    for group in GROUPS:
        group.add_commands(command)
    return parser


STREAMING_COMMANDS = ("watch", "bench")
LOGGED_COMMANDS = ("watch", "extract", "scenes")


def main(argv: list[str] | None = None) -> int:
    argv = train.old_train_spelling(sys.argv[1:] if argv is None else list(argv))
    if argv[:1] and argv[0] in STREAMING_COMMANDS:
        # The decoder thread, ONNX Runtime and PyTorch share the cores; OpenMP workers that
        # spin while idle starve the others (must be set before torch is imported).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    # Long-running commands say what they are doing; -q leaves warnings and errors only.
    verbose = args.command in LOGGED_COMMANDS and not args.quiet
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if verbose else logging.WARNING)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine said no: a full disk, a file where a folder goes, permissions
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system refusal: the path, what went wrong, what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    what = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "free some space and run the command again",
        errno.EDQUOT: "free some space and run the command again",
        errno.EEXIST: "a file is in the way of a folder; remove it or choose another path",
        errno.ENOTDIR: "a file is in the way of a folder; remove it or choose another path",
        errno.EISDIR: "a folder is in the way of a file; choose a file path",
        errno.EACCES: "check the permissions or choose another path",
        errno.EROFS: "the file system is read-only; choose another path",
    }.get(exc.errno, "check the path")
    return f"{where}{what}; {hint}"


if __name__ == "__main__":
    sys.exit(main())
