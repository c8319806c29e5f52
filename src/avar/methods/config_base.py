"""What every config shares: a JSON round trip, the width of a head's input, and the
command-line options ``avar train METHOD`` generates from config fields (:func:`option`)."""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

from avar.methods.streams import STREAM_FUSIONS, check_stream_fields


def option(help: str, *, flag: str | None = None, choices: tuple | None = None, metavar: str | None = None,
           only: tuple[str, ...] = ()) -> dict:
    """Field metadata that makes a config field an option of ``avar train``: its ``help``
    (the default is added from the config unless the text gives it), the ``flag`` (default
    ``--field-name``; a bool field's flag sets it to True, or to False when it starts with
    ``--no-``), ``choices``, ``metavar``, and the methods it belongs to where a config serves
    several (``only``)."""
    return {"option": {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "only": only}}


class JsonConfig:
    """Mixin for config dataclasses saved as JSON next to safetensors weights."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(known)} "
                "(was the checkpoint written by a different avar version or model?)"
            )
        return cls(**data)


@dataclass
class StreamConfig(JsonConfig):
    """Base of the configs of heads that read ``video_dim`` / ``audio_dim`` streams per
    ``modality``: how the streams enter the head (:mod:`avar.methods.streams`)."""

    stream_fusion: str = field(default="projected", metadata=option(
        "how the streams enter a head: projected (each normalised and projected to --stream-width, modality dropout) "
        "or concat (the paper's Eq. 6)", choices=STREAM_FUSIONS, only=("avarnet",)))
    """How the streams enter the head: 'projected' (default) normalises each stream and
    projects it to ``stream_width`` channels, with modality dropout in training; 'concat'
    is the paper's plain concatenation of the raw features (Eq. 6), kept for the fidelity
    tables (:mod:`avar.methods.streams`)."""
    stream_width: int = field(default=64, metadata=option("projected: channels per stream", only=("avarnet",)))
    """'projected' only: channels each stream is projected to."""
    modality_dropout: float = field(default=0.3, metadata=option(
        "projected: share of training windows that see one stream only", only=("avarnet",)))
    """'projected' with both streams only: probability that a training window sees one
    stream alone (the other zeroed), so each stream's path learns on its own."""
    motion_dim: int = 0
    """Columns at the end of the video input that are the motion stream (optical flow,
    :mod:`avar.features.motion`; 0: none). 'projected' gives them their own normalisation and
    projection, a third stream beside appearance and sound; 'concat' reads them as video."""

    def __post_init__(self) -> None:
        check_stream_fields(self)

    def input_dim(self) -> int:
        """Width of the fused per-step feature that enters the head for ``modality``:
        ``stream_width`` per stream when projected, the raw widths concatenated otherwise."""
        if self.stream_fusion == "projected":
            return self.stream_width * (len(self.modality) + (1 if self.motion_dim and "v" in self.modality else 0))
        return {
            "av": self.video_dim + self.audio_dim,
            "a": self.audio_dim,
            "v": self.video_dim,
        }[self.modality]


def _option_type(hint) -> type:
    """``int`` of ``int | None`` and the like: the type an option's text is read as."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _default_text(help: str, default, note: str | None) -> str:
    """What an option's help adds about its default: the ``note``, else ``(default X)`` unless
    the help says it already or there is nothing to show (None; a flag)."""
    if note:
        return f" ({note})"
    if "default" in help or default is None or isinstance(default, bool):
        return ""
    return f" (default {default:g})" if isinstance(default, float) else f" (default {default})"


def add_config_options(parser: argparse.ArgumentParser, cls, method: str, *, defaults=None, dest_prefix: str = "",
                       notes: dict[str, str] | None = None) -> None:
    """Add an option for every field of the config dataclass ``cls`` that carries :func:`option`
    metadata for ``method``. The value left unset is ``None`` (the config's own default then
    applies); ``defaults`` (a ``cls`` instance, default ``cls()``) gives the default shown,
    ``notes`` (field -> text) replaces it where another setting decides it. An option another
    config already added (``--layers`` of two heads) gets this config's help appended."""
    hints = typing.get_type_hints(cls)
    shown = defaults if defaults is not None else cls()
    for f in fields(cls):
        spec = f.metadata.get("option")
        if not spec or spec["only"] and method not in spec["only"]:
            continue
        flag = spec["flag"] or "--" + f.name.replace("_", "-")
        text = spec["help"] + _default_text(spec["help"], getattr(shown, f.name), (notes or {}).get(f.name))
        existing = parser._option_string_actions.get(flag)
        if existing is not None:
            if text not in existing.help:
                existing.help += f"; {text}"
            continue
        kind = _option_type(hints[f.name])
        if kind is bool:
            parser.add_argument(flag, dest=dest_prefix + f.name, action="store_const",
                                const=not flag.startswith("--no-"), help=text)
        else:
            parser.add_argument(flag, dest=dest_prefix + f.name, type=kind, choices=spec["choices"],
                                metavar=spec["metavar"] or (None if spec["choices"] else f.name.upper()), help=text)


def config_values(args: argparse.Namespace, cls, dest_prefix: str = "") -> dict[str, Any]:
    """``{field: value}`` of the options of ``cls`` (:func:`add_config_options`) given on the command line."""
    values = {}
    for f in fields(cls):
        value = getattr(args, dest_prefix + f.name, None)
        if f.metadata.get("option") and value is not None:
            values[f.name] = value
    return values


EPOCHS = option("epochs at most")
SEED = option("seed of every random choice of the training")
LR = option("learning rate")
BATCH_SIZE = option("training examples per batch")
MODALITY = option("the streams the run reads: both, audio or video", choices=("av", "a", "v"))
MOTION = option("leave out the cache's motion stream (optical flow, `avar extract --motion`); by default a run reads "
                "it where the cache has it", flag="--no-motion")
FALSE_EVENTS_OPTION = option("the run's event threshold is chosen on its validation clips for at most RATE false "
                             "events per hour of normal footage", metavar="RATE")
THREADS = option("torch CPU threads (default: all cores)")
"""The options several methods' train configs share, defined once."""
