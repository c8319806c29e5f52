"""The run format every method shares, and the one scoring interface of a trained run.

A run directory holds no pickle anywhere::

    RUN_DIR/model.safetensors    weights + the feature normalisation (``norm.*``)
    RUN_DIR/config.json          method, learning type, model config, sequence length, step,
                                 extractors (or frame inputs), thresholds, training args
    RUN_DIR/labels.json          class names in output order (supervised runs)
    RUN_DIR/history.json         per-epoch losses and metrics

``config.json`` also records the SHA-256 digest of every weights file (``"weights":
{"model.safetensors": "<hex>"}``), checked on load; runs saved before digests existed load
unchecked. Every run is written by :func:`save_run` (whole or not at all) and its files read
back by :func:`read_run_config`, :func:`read_labels` and :func:`load_weights`, which turn a
damaged or foreign file into one ``ValueError`` naming the file and the fix.

Each method's run class lives with the method (``avar.methods.<method>.run``); ``avar.runs``
loads any of them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import safetensors.torch
import torch

from avar.features.cache import StepFeatures, visual_clips, visual_side
from avar.files import replace_dir, write_synced
from avar.training.sequences import pad_windows, step_windows

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
HISTORY_FILE = "history.json"
WEIGHTS_KEY = "weights"
"""``config.json`` key: weights file name -> SHA-256 hex digest of its bytes."""

_RESTORE = "retrain the run or restore the run directory from a backup"


def check_options(config, *, at_least: dict[str, int] | None = None, rates: tuple[str, ...] = ()) -> None:
    """Refuse training options out of range, naming the option as the CLI spells it
    (``seq_len`` -> ``--seq-len``): ``at_least`` maps integer fields to their minimum,
    ``rates`` are fields that must be finite and > 0 (learning rates)."""
    for name, low in (at_least or {}).items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{_flag(name)} must be an integer >= {low}, got {value!r}")
    for name in rates:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{_flag(name)} must be a finite number > 0, got {value!r}")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')} ({name})"


def check_run_dir(root: Path | str) -> Path:
    """Refuse a run destination that is a file, or a directory holding other things than a
    run (the run is written whole into place, replacing what is there). Called before
    training starts, so a wrong ``--out`` fails before the hours of training, not after."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: exists and is a file, not a run directory; pass --out a new directory "
                         "(or an existing run directory to replace)")
    if root.is_dir() and not (root / CONFIG_FILE).is_file() and any(root.iterdir()):
        raise ValueError(f"{root}: a directory holding other files but no run ({CONFIG_FILE}); pass --out a new "
                         "directory: a run directory is replaced whole when a new run is saved there")
    return root


def save_run(root: Path | str, *, weights: dict[str, dict[str, torch.Tensor]], config: dict,
             labels: list[str] | None = None, files: dict[str, object] | None = None, keep: bool = False) -> Path:
    """Write a run directory whole or not at all: every file goes into a temporary sibling
    directory, which is renamed into place at the end, so a failure or Ctrl-C half-way
    leaves the previous run (if any) as it was and no half-written one.

    ``weights`` maps safetensors file names to tensors; their SHA-256 digests are stored in
    ``config.json`` under :data:`WEIGHTS_KEY`. ``labels`` go to ``labels.json``, ``files``
    (name -> JSON value, e.g. ``history.json``) beside them. ``keep`` carries over the files
    of the run already at ``root`` that this save does not write (a re-saved run keeps its
    history and evaluations); otherwise an existing run is replaced with nothing of it kept.
    A full disk (or any other failed write) is one ``RuntimeError`` naming the file; weights
    holding NaN or infinite values (a diverged training) are a ``ValueError`` and not saved.
    A process killed outright (SIGKILL) may leave a hidden ``.<name>.*.partial`` sibling.
    """
    root = check_run_dir(root)
    existed = root.is_dir()
    stage = root.parent / f".{root.name}.{secrets.token_hex(4)}.partial"
    current = root
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
        digests = {}
        for name, tensors in weights.items():
            current = root / name
            for key, tensor in tensors.items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise ValueError(f"{root}: not saved: tensor {key!r} of {name} holds NaN or infinite values "
                                     "(training diverged); train again with a lower --lr")
            data = safetensors.torch.save(tensors)
            digests[name] = hashlib.sha256(data).hexdigest()
            write_synced(stage / name, data)
        json_files = {CONFIG_FILE: {**config, WEIGHTS_KEY: digests}, **(files or {})}
        if labels is not None:
            json_files[LABELS_FILE] = list(labels)
        for name, value in json_files.items():
            current = root / name
            write_synced(stage / name, (json.dumps(value, indent=1) + "\n").encode())
        if keep and existed:
            for item in root.iterdir():
                if not (stage / item.name).exists():
                    current = item
                    copy = shutil.copytree if item.is_dir() and not item.is_symlink() else shutil.copy2
                    copy(item, stage / item.name)
        current = root
        replace_dir(stage, root)
    except OSError as exc:
        kept = "the run that was there is unchanged" if existed else "nothing was saved"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RuntimeError(f"{current}: no space left on the device while saving the run ({kept}); "
                               "free some space or pass --out a directory on another disk") from exc
        raise RuntimeError(f"{exc.filename or current}: cannot save the run: {exc.strerror or exc} ({kept}); "
                           "pass --out a directory you can write to") from exc
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return root


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); {_RESTORE}") from None


def read_run_config(root: Path | str) -> dict:
    """A run's ``config.json``, which must be a JSON object."""
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no {CONFIG_FILE}; is this a run directory made by `avar train`?")
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: a JSON {type(meta).__name__}, not a run config (a JSON object); {_RESTORE}")
    return meta


@contextmanager
def reading_config(root: Path | str, what: str = "run"):
    """Turn what a damaged ``config.json`` makes its readers raise (a missing key, a value
    of the wrong type or out of range) into one ``ValueError`` naming the file."""
    path = Path(root) / CONFIG_FILE
    try:
        yield path
    except KeyError as exc:
        raise ValueError(f"{path}: lacks {exc.args[0]!r}, which every {what} config has; {_RESTORE}") from None
    except (TypeError, AttributeError, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a valid {what} config ({exc}); {_RESTORE}") from None


def check_window(root: Path | str, seq_len, step) -> None:
    """A run's window: ``seq_len`` an integer >= 1, ``step`` a finite number of seconds > 0."""
    path = Path(root) / CONFIG_FILE
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"{path}: seq_len must be an integer >= 1, got {seq_len!r}; {_RESTORE}")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        raise ValueError(f"{path}: step must be a finite number of seconds > 0, got {step!r}; {_RESTORE}")


def check_extractors(root: Path | str, extractors) -> dict:
    """``{"video": {"name", ...}, "audio": {"name", ...}}`` as a run records its backbones,
    with ``"motion": {"name", ...}`` where the run reads a motion stream."""
    path = Path(root) / CONFIG_FILE
    if not isinstance(extractors, dict) or not all(isinstance(extractors.get(m), dict)
                                                   and isinstance(extractors[m].get("name"), str)
                                                   for m in ("video", "audio")):
        raise ValueError(f"{path}: 'extractors' must name the video and audio backbones "
                         f"({{'video': {{'name': ...}}, 'audio': {{'name': ...}}}}), got {extractors!r}; {_RESTORE}")
    motion = extractors.get("motion")
    if motion is not None and not (isinstance(motion, dict) and isinstance(motion.get("name"), str)):
        raise ValueError(f"{path}: 'extractors.motion' must name the motion extractor ({{'name': ...}}) or be absent, "
                         f"got {motion!r}; {_RESTORE}")
    return extractors


def read_labels(root: Path | str, n_outputs: int) -> list[str]:
    """A supervised run's ``labels.json``: ``n_outputs`` distinct non-empty class names."""
    path = Path(root) / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{root}: missing {LABELS_FILE}; is this a run directory made by `avar train`?")
    labels = _read_json(path)
    if not isinstance(labels, list) or not all(isinstance(c, str) and c for c in labels):
        raise ValueError(f"{path}: must be a JSON list of class names, got {str(labels)[:80]}; {_RESTORE}")
    if len(labels) != n_outputs:
        raise ValueError(f"{path}: {len(labels)} class names for a model with {n_outputs} outputs; {_RESTORE}")
    repeated = sorted({c for c in labels if labels.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}: class names repeat ({', '.join(repeated)}); {_RESTORE}")
    return labels


def load_weights(root: Path | str, name: str, digests) -> dict[str, torch.Tensor]:
    """The tensors of the run's weights file ``name``, after checking them against the digest
    ``config.json`` recorded (``digests``: its :data:`WEIGHTS_KEY` entry; ``None`` for runs saved
    before digests: no check), that the file is safetensors (never unpickled) and that every
    value is finite."""
    root = Path(root)
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{root}: missing {name}; the run directory is incomplete: {_RESTORE}")
    data = path.read_bytes()
    if digests is not None:
        if not isinstance(digests, dict) or not isinstance(digests.get(name), str):
            raise ValueError(f"{root / CONFIG_FILE}: '{WEIGHTS_KEY}' records no digest for {name}; {_RESTORE}")
        if hashlib.sha256(data).hexdigest() != digests[name]:
            raise ValueError(f"{path}: does not match the SHA-256 digest recorded in {CONFIG_FILE} (the file is "
                             f"damaged or was replaced after training); {_RESTORE}")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # the parser's errors on foreign or damaged bytes have no common base
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())[:200]}); "
                         f"{_RESTORE}") from None
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: tensor {key!r} holds NaN or infinite values; {_RESTORE}")
    return tensors


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``module.load_state_dict(tensors)``; weights that do not fit the model ``config.json``
    describes are a ``ValueError`` naming the weights file."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit the model {CONFIG_FILE} describes "
                         f"({' '.join(str(exc).split())[:300]}); {_RESTORE}") from None
    module.eval()


def typed(cls, values: dict, path: Path | str, what: str):
    """The dataclass ``cls`` from a saved dict: the keys it has fields for, the others (written by
    another version of avar) left out with a note in the log; missing keys take their defaults."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        log.info("%s: %s: leaving out %s, which this version of avar does not read", path, what, ", ".join(unknown))
    return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class TrainingRecord:
    """What training recorded about a run beside its model, saved in ``config.json`` beside the
    model's config; every field is optional, so runs saved before a field existed load (it is
    ``None``). Each method's record subclasses it (:meth:`Run.load` reads it with
    :meth:`from_dict`) and names its train config class in :meth:`train_config`."""

    train: Any = None
    """The train config the run was trained with (the method's dataclass)."""
    params: int | None = None
    best_epoch: int | None = None
    """The epoch whose weights the run holds (1-based)."""
    train_seconds: float | None = None
    torch_threads: int | None = None
    numerics: dict | None = None
    """:func:`avar.training.seeding.numerics` at training."""
    streams: list[str] | None = None
    """What the run reads: ``video``, ``audio``, ``motion`` (:func:`avar.methods.streams.run_streams`)."""
    features_dir: str | None = None
    """The feature cache a run on features was trained on."""
    feature_runtimes: dict | None = None
    """Modality -> the runtime its training features were extracted under (``avar extract``)."""
    thresholds: dict | None = None
    """The event thresholds chosen at training (:class:`avar.metrics.events.EventConfig` fields)."""
    event_calibration: dict | None = None
    """How ``thresholds`` were chosen (:func:`avar.training.events.calibrate_events`)."""

    @classmethod
    def train_config(cls, values: dict, path: Path | str):
        """The method's train config from its saved dict (of ``path``)."""
        return values

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["train"] = asdict(self.train) if is_dataclass(self.train) else self.train
        return out

    @classmethod
    def from_dict(cls, values: dict, path: Path | str):
        """The record from a run's ``config.json`` entries (those the run's model config does not
        take); entries of other versions are left out (:func:`typed`)."""
        record = typed(cls, values, path, "training record")
        if isinstance(record.train, dict):
            record.train = cls.train_config(record.train, path)
        return record


_NORM_FIELDS = ("video_mean", "video_std", "audio_mean", "audio_std")


@dataclass
class Normalization:
    """Per-dimension mean and std of the training steps, one pair per modality."""

    video_mean: np.ndarray
    video_std: np.ndarray
    audio_mean: np.ndarray
    audio_std: np.ndarray

    @classmethod
    def fit(cls, videos: list[np.ndarray], audios: list[np.ndarray]) -> "Normalization":
        v, a = np.concatenate(videos), np.concatenate(audios)
        # The floor keeps constant dimensions (e.g. a zeroed modality) at zero, not inf.
        return cls(v.mean(0), np.maximum(v.std(0), 1e-4), a.mean(0), np.maximum(a.std(0), 1e-4))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The statistics as ``norm.<name>`` float32 tensors, saved beside a model's weights."""
        return {f"norm.{n}": torch.from_numpy(np.ascontiguousarray(getattr(self, n), np.float32)) for n in _NORM_FIELDS}

    @classmethod
    def pop_tensors(cls, tensors: dict[str, torch.Tensor], source: Path | str = "the weights",
                    video_dim: int | None = None, audio_dim: int | None = None) -> "Normalization":
        """Take the ``norm.*`` entries out of ``tensors`` (leaving the model's weights); each
        must be one vector per modality, of the model's input width where given."""
        missing = [f"norm.{n}" for n in _NORM_FIELDS if f"norm.{n}" not in tensors]
        if missing:
            raise ValueError(f"{source}: lacks the feature normalisation ({', '.join(missing)}); {_RESTORE}")
        norm = cls(*(tensors.pop(f"norm.{n}").float().numpy() for n in _NORM_FIELDS))
        for modality, dim in (("video", video_dim), ("audio", audio_dim)):
            mean, std = getattr(norm, f"{modality}_mean"), getattr(norm, f"{modality}_std")
            if mean.ndim != 1 or mean.shape != std.shape or (dim is not None and len(mean) != dim):
                raise ValueError(f"{source}: the {modality} normalisation has shape {tuple(mean.shape)}, "
                                 f"{tuple(std.shape)}, the model reads {dim} dims; {_RESTORE}")
            if not (std > 0).all():  # fitted stds are floored at 1e-4
                raise ValueError(f"{source}: the {modality} normalisation has a std <= 0; {_RESTORE}")
        return norm

    def apply(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            ((video - self.video_mean) / self.video_std).astype(np.float32),
            ((audio - self.audio_mean) / self.audio_std).astype(np.float32),
        )


class FeatureRun:
    """The one scoring interface every trained run has: the supervised heads (``avar.methods.avarnet.run.Run``), the
    weakly supervised models (``avar.methods.avaca.run.WeakRun``) and the visual autoencoder
    (``avar.methods.autoencoder.run.AERun``, whose per-step "features" are gray frames).
    ``avar.runs.load_run`` loads any of them.

    Attributes every run has: ``classes`` (output order; weak and unsupervised runs' are
    ``["normal", "anomaly"]``), ``norm`` (:class:`Normalization`), ``step`` (seconds per step),
    ``seq_len`` (steps per scoring window), ``extractors`` (``{"video": {name, version, dim,
    weights}, "audio": {...}}`` as in the feature cache) and ``record`` (what training recorded:
    a :class:`TrainingRecord` of the method's kind).
    Subclasses give :meth:`window_probabilities` and :meth:`clip_probabilities`; per-step
    scores are cut into windows here, once, the same way for ``avar predict`` and ``avar watch``
    (:func:`avar.training.sequences.centred_start`).
    """

    method: str
    """The run's method, as in its ``config.json``."""
    learning: str
    """'supervised', 'weak' (video-level labels) or 'unsupervised'."""
    window_batch = 256
    """Windows scored at once by :meth:`step_probabilities` (bounds its memory on long clips)."""
    root: Path | None = None
    """The run directory it was loaded from (``None`` for a run built in memory)."""
    context_steps = 0
    """Raw steps before a step that :meth:`normalise` reads to give that step's input (a run that
    reads the video as motion over K steps: K - 1). A stream scored as it arrives
    (``avar watch``) passes them along with each batch, so its steps match a whole file's."""

    def window_probabilities(self, video: np.ndarray, audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, L, C]`` of every step of ``N`` windows of normalised
        features ``video [N, L, dv]``, ``audio [N, L, da]``, ``mask [N, L]`` (True on real steps)."""
        raise NotImplementedError

    def clip_probabilities(self, video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Class probabilities ``[C]`` of one whole clip from its raw ``[T, d]`` features."""
        raise NotImplementedError

    def probabilities(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both at once: per step ``[T, C]`` (:meth:`step_probabilities`) and clip ``[C]``;
        runs whose clip score is made of their step scores compute the steps once."""
        return self.step_probabilities(video, audio), self.clip_probabilities(video, audio)

    def normalise(self, video: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``[T, d]`` features as the model reads them (the training split's statistics)."""
        return self.norm.apply(video, audio)

    def centred_windows(self, video: np.ndarray, audio: np.ndarray) -> Iterator[tuple]:
        """The window centred on every step of one clip's ``[T, d]`` features, in batches of
        ``window_batch``: ``(video [N, L, dv], audio [N, L, da], mask [N, L], at [N])``, ``at``
        being each scored step's position in its window."""
        n, L = len(video), self.seq_len
        for lo in range(0, n, self.window_batch):
            windows = step_windows(range(lo, min(n, lo + self.window_batch)), n, L)
            (vw, aw), mask = pad_windows([video, audio], [(start, stop) for _, start, stop in windows], L)
            yield vw, aw, mask, np.array([t - start for t, start, _ in windows])

    def step_probabilities(self, video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Class probabilities ``[T, C]`` of every step of one clip's raw ``[T, d]`` features,
        each from the window centred on it."""
        self.check_features(video, audio)
        v, a = self.normalise(video, audio)
        return self.check_finite(np.concatenate([self.window_probabilities(vw, aw, mask)[np.arange(len(at)), at]
                                                 for vw, aw, mask, at in self.centred_windows(v, a)]))

    def check_features(self, video: np.ndarray, audio: np.ndarray) -> None:
        """Refuse features holding NaN or infinite values (what the backbones gave the run)."""
        for name, x in (("video", video), ("audio", audio)):
            if not np.isfinite(x).all():
                raise ValueError(f"{name} features hold NaN or infinite values; re-extract them (a damaged cache "
                                 "entry is extracted again by `avar extract`)")

    def check_finite(self, probabilities: np.ndarray) -> np.ndarray:
        """``probabilities`` when every value is finite; otherwise the run is damaged (a
        ``ValueError`` naming it), never a NaN score passed on as an answer."""
        if not np.isfinite(probabilities).all():
            where = self.root if self.root is not None else f"this {self.method} run"
            raise ValueError(f"{where}: the run scored NaN or infinite probabilities from finite features, so its "
                             f"weights or normalisation are damaged; {_RESTORE}")
        return probabilities

    @property
    def reads_motion(self) -> bool:
        """Whether the run reads a motion stream (``extractors['motion']``): its video input is
        then the visual side, appearance then motion (:func:`avar.features.cache.visual_side`)."""
        return bool(getattr(self, "extractors", {}).get("motion"))

    def visual(self, video: np.ndarray, motion: np.ndarray | None) -> np.ndarray:
        """The video input this run reads from a clip's appearance and motion features."""
        if self.reads_motion and motion is None:
            raise ValueError("this run reads a motion stream, and none was given; extract features with the run's "
                             f"motion extractor ({self.extractors['motion']['name']})")
        return visual_side(video, motion if self.reads_motion else None)

    def read(self, clips: list[StepFeatures]) -> list[StepFeatures]:
        """Cached clips as this run reads them (:meth:`visual`), their own motion dropped; a cache
        without the motion stream the run reads is a ``ValueError`` naming the fix."""
        if self.reads_motion and clips and clips[0].motion is None:
            raise ValueError(f"this run reads a motion stream ({self.extractors['motion']['name']}) and the cache has "
                             "none; extract the features again with `avar extract ... --motion "
                             f"{self.extractors['motion']['name']}`")
        return visual_clips(clips, self.reads_motion)

    @property
    def normal_index(self) -> int | None:
        return self.classes.index("normal") if "normal" in self.classes else None

    @property
    def normal_class(self) -> str:
        """The class events are not raised for: ``normal``, else the first class."""
        return self.classes[self.normal_index or 0]

    def anomaly_score(self, step_probs: np.ndarray) -> np.ndarray:
        """``1 - P(normal)`` per step; without a ``normal`` class, the top anomaly probability."""
        if self.normal_index is None:
            return step_probs.max(-1)
        return 1.0 - step_probs[..., self.normal_index]

    def build_extractors(self, device: str = "cpu", runtime: str = "torch") -> tuple:
        """The (video, audio, motion) extractors with the weights this run was trained on
        (motion None where the run reads none). ``auto``
        takes the runtime the training features were extracted under where the run recorded
        it (``feature_runtimes``), so predictions see the features the head was trained on."""
        from avar.features import build_extractor
        from avar.features.runtime import RUNTIMES

        recorded = self.record.feature_runtimes or {}

        def chosen(modality: str) -> str:
            if runtime == "auto" and recorded.get(modality) in RUNTIMES and device == "cpu":
                return recorded[modality]
            return runtime

        video, audio = (build_extractor(self.extractors[m]["name"], self.extractors[m].get("weights"), device,
                                        runtime=chosen(m)) for m in ("video", "audio"))
        return video, audio, self.build_motion()

    def build_motion(self):
        """The motion extractor this run reads (no weights: flow is computed), or None."""
        from avar.features import build_extractor

        return build_extractor(self.extractors["motion"]["name"]) if self.reads_motion else None
