"""The one table of methods. Every command, the run loader, the report and the experiments
look a method up here; nothing outside a method's folder branches on its name.

A method is a folder under ``avar/methods/`` with an ``options.py`` holding its command-line
surface (``add_train_options``, ``train``, ``evaluate``) and the modules those call, plus one
line below. Names are resolved lazily (``"module:attribute"``), so looking a method up imports
nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


def resolve(name: str):
    """The object a ``"package.module:attribute"`` name points to."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Method:
    """One method: ``name`` (as runs record it and ``avar train NAME`` spells it), its
    ``learning`` (``supervised``: a class per clip; ``weak``: video-level labels;
    ``unsupervised``: normal footage only), a one-line ``summary``, what it trains on
    (``reads``: ``features``, a cache made by ``avar extract``, or ``media``, a DATA_DIR), the
    class its saved runs load as (``run``), its train config dataclass (``config``, with
    ``defaults`` for this method), ``fit(data, out_dir, config, *, progress) -> run`` and
    ``evaluate(run_dir, data, *, split, out_dir, plots, progress) -> report`` (a report has
    ``to_dict`` and ``to_markdown``; ``headline`` names its one summary figure), and its
    command-line surface (``options``: a module with ``add_train_options(parser, name)``,
    ``train(args, progress) -> (info, text)`` and ``evaluate(args) -> report``, and where the
    method needs them ``add_evaluate_options(parser)``, ``add_upgrade_options(parser)`` and
    ``upgrade(args) -> (info, text)``), and what ``avar evaluate`` reports of it (``evaluates``)."""

    name: str
    learning: str
    summary: str
    reads: str
    run: str
    config: str
    trainer: str
    evaluator: str
    headline: tuple[str, str]
    options: str
    defaults: tuple[tuple[str, object], ...] = ()
    evaluates: str = ""
    """What ``avar evaluate`` reports of its runs, and on what (for the command's help)."""

    def run_class(self):
        return resolve(self.run)

    def load(self, run_dir):
        return self.run_class().load(run_dir)

    def train_config(self, **values):
        """This method's train config: its defaults, then ``values``."""
        return resolve(self.config)(**{**dict(self.defaults), **values})

    def fit(self, data, out_dir, config=None, *, progress: bool = True):
        """Train on ``data`` (a FEATURES_DIR or a DATA_DIR, as ``reads`` says) into ``out_dir``."""
        return resolve(self.trainer)(data, out_dir, config or self.train_config(), progress=progress)

    def evaluate(self, run_dir, data, *, split: str = "test", out_dir=None, plots: bool = True,
                 progress: bool = True):
        return resolve(self.evaluator)(run_dir, data, split=split, out_dir=out_dir, plots=plots, progress=progress)

    @property
    def cli(self):
        return importlib.import_module(self.options)


_AVARNET, _AVACA, _AE = "avar.methods.avarnet", "avar.methods.avaca", "avar.methods.autoencoder"
_WEAK_EVALUATES = "frame AUC, AP (and XD-Violence's AP) and video AUC on a split of FEATURES_DIR"
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("avarnet", "supervised", "AVAR-Net (or a Table 2 baseline head) on cached features, a class per clip",
           "features", f"{_AVARNET}.run:Run", f"{_AVARNET}.train:TrainConfig", f"{_AVARNET}.train:fit",
           f"{_AVARNET}.evaluate:evaluate", ("accuracy", "clip accuracy"), f"{_AVARNET}.options",
           evaluates="clip accuracy, precision, recall, F1, AP and AUC on a split of FEATURES_DIR"),
    Method("avaca", "weak", "AVACA: audio-visual cross-attention from video-level labels (normal vs anything else)",
           "features", f"{_AVACA}.run:WeakRun", f"{_AVACA}.train:WeakTrainConfig", f"{_AVACA}.train:fit",
           f"{_AVACA}.evaluate:evaluate", ("video_auc", "video AUC"), f"{_AVACA}.options", (("method", "avaca"),),
           evaluates=_WEAK_EVALUATES),
    Method("mil", "weak", "any supervised head (--head) trained with AVACA's losses from video-level labels",
           "features", f"{_AVACA}.run:WeakRun", f"{_AVACA}.train:WeakTrainConfig", f"{_AVACA}.train:fit",
           f"{_AVACA}.evaluate:evaluate", ("video_auc", "video AUC"), f"{_AVACA}.options", (("method", "mil"),),
           evaluates=_WEAK_EVALUATES),
    Method("autoencoder", "unsupervised", "the audio-visual sequence autoencoder, trained on normal videos only",
           "media", f"{_AE}.run:AERun", f"{_AE}.config:AETrainConfig", f"{_AE}.train:fit",
           f"{_AE}.evaluate:evaluate", ("frame_auc", "frame AUC"), f"{_AE}.options",
           evaluates="frame AUC and EER on the test videos of --data DATA_DIR"),
)}
"""Method name -> :class:`Method`; adding a method is one folder and one line here."""