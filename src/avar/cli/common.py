"""What every command group shares: JSON output and the runtime option."""

from __future__ import annotations

import inspect
import json

RUNTIME_HELP = ("how backbones run: auto (the fastest measured: ONNX Runtime or bfloat16), torch (eager fp32, "
                "the reference), bf16, onnx")


def runtime_choices() -> tuple[str, ...]:
    from avar.features.runtime import RUNTIMES

    return ("auto", *RUNTIMES)


def default_of(func, name: str):
    """The default of ``func``'s parameter ``name``: options show and use the library's default,
    defined once there."""
    return inspect.signature(func).parameters[name].default


def print_json(obj) -> None:
    print(json.dumps(obj, indent=1, allow_nan=False))


def emit(args, payload, text: str) -> int:
    """Print ``payload`` as JSON under ``--json``, else ``text``; the command's exit status (0)."""
    if args.json:
        print_json(payload)
    else:
        print(text)
    return 0
