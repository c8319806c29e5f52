"""What every command group shares: JSON output and the runtime option."""

from __future__ import annotations

import inspect
import json

RUNTIME_HELP = ("how backbones run: auto (the fastest measured: ONNX Runtime or bfloat16), torch (eager fp32, "
                "the reference), bf16, onnx, int8 (ONNX Runtime static int8, calibrated on real media; "
                "see docs/realtime.md)")


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


def add_anonymize_options(p, *, switch: bool) -> None:
    """The options of :class:`avar.anonymize.cover.AnonymizeConfig`, with its defaults; with
    ``switch``, behind ``--anonymize`` (extract, watch)."""
    from avar.anonymize.cover import MODES, AnonymizeConfig
    from avar.anonymize.detect import DETECTORS

    d = AnonymizeConfig()
    if switch:
        p.add_argument("--anonymize", action="store_true", help="cover faces and licence plates in every frame "
                       "before any feature is computed or any image is written")
    names = ", ".join(sorted(DETECTORS))
    p.add_argument("--faces", default=d.faces, help=f"face detector: {names}, onnx:PATH, centerface:PATH or none "
                   f"(default {d.faces})")
    p.add_argument("--plates", default=d.plates, help=f"licence-plate detector, as --faces (default {d.plates})")
    p.add_argument("--cover", choices=MODES, default=d.mode, help=f"how regions are covered (default {d.mode})")
    p.add_argument("--margin", type=float, default=d.margin,
                   help=f"share of a region's size added on every side (default {d.margin})")
    p.add_argument("--hold", type=int, default=d.hold,
                   help=f"frames a region stays covered after it was last found (default {d.hold})")
    p.add_argument("--lead", type=int, default=d.lead,
                   help=f"frames a region is covered before it was first found (default {d.lead})")
    p.add_argument("--detect-every", type=int, default=d.every,
                   help=f"run the detectors on every n-th frame, tracks carry the regions between (default {d.every})")
    p.add_argument("--detect-width", type=int, default=d.detect_width,
                   help=f"frames are downscaled to this width for detection (default {d.detect_width})")


def anonymize_config(args):
    from avar.anonymize.cover import AnonymizeConfig

    return AnonymizeConfig(faces=args.faces, plates=args.plates, mode=args.cover, margin=args.margin, hold=args.hold,
                           lead=args.lead, every=args.detect_every, detect_width=args.detect_width)


def add_extractor_options(p, step_default: float) -> None:
    """The backbones, their weights, the step and the runtime of a command that extracts features."""
    from avar.features import DEFAULT_AUDIO, DEFAULT_VIDEO

    p.add_argument("--video", default=DEFAULT_VIDEO, help=f"video extractor (default {DEFAULT_VIDEO})")
    p.add_argument("--audio", default=DEFAULT_AUDIO, help=f"audio extractor (default {DEFAULT_AUDIO})")
    p.add_argument("--video-weights", help="local directory or Hugging Face id of the video weights")
    p.add_argument("--audio-weights", help="local directory or Hugging Face id of the audio weights")
    p.add_argument("--step", type=float, default=step_default, help=f"seconds per time step (default {step_default:g})")
    p.add_argument("--runtime", choices=runtime_choices(), default="auto", help=RUNTIME_HELP)


def extractors_from_args(args) -> tuple:
    from avar.features import build_extractor

    return (build_extractor(args.video, args.video_weights, runtime=args.runtime),
            build_extractor(args.audio, args.audio_weights, runtime=args.runtime))
