"""One loader for every trained run: ``load_run(RUN_DIR)`` -> an object that scores steps.

Every run directory holds ``config.json`` with its ``method``, looked up in the one table of
methods (:mod:`avar.methods.table`). Every run loads into a :class:`~avar.training.run.FeatureRun`:
class probabilities per step from windows of ``seq_len`` steps centred on it (the weakly
supervised and unsupervised runs' two classes are ``normal`` and ``anomaly``), an anomaly
score ``1 - P(normal)`` in [0, 1], and what it reads per step (backbone features; for the
autoencoder one gray frame at its training frame rate). ``avar predict``, ``watch``,
``bench --run``, ``report`` and ``export --run`` all go through here.
"""

from __future__ import annotations

from pathlib import Path

from avar.methods.table import METHODS
from avar.training.run import CONFIG_FILE, FeatureRun, read_run_config


def run_method(run_dir: Path | str) -> str:
    """The ``method`` a run directory records (runs saved before it was recorded are 'avarnet')."""
    method = read_run_config(run_dir).get("method", "avarnet")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{run_dir}: unknown method {method!r} in {CONFIG_FILE}; this avar knows {sorted(METHODS)}")
    return method


def load_run(run_dir: Path | str) -> FeatureRun:
    """Load any run that scores extracted features (see the module docstring)."""
    return METHODS[run_method(run_dir)].load(run_dir)


__all__ = ["METHODS", "load_run", "run_method"]
