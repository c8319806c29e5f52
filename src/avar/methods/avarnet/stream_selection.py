"""Which streams to fuse: cross-validated on the labelled clips before the head is trained.

On a few dozen clips no head can tell from its own training loss that a stream carries no
class information (a microphone behind glass, a camera at night, features of the wrong
extractor): it memorises that stream along with the useful one, and the fused model ends up
far below the useful stream alone (issue 11: a stream shuffled across clips took the
AVAR-Net head from 0.58 to 0.37). What a head cannot see on its training data, k-fold
cross-validation on the labelled clips (train + val) does see, cheaply: a logistic
regression on each clip's pooled features (:data:`POOLING`; each stream given an equal share,
:func:`stream_balance`), fitted for audio, video and both, in folds of whole recordings where
the dataset names them (``StepFeatures.group``).
A stream whose own cross-validated accuracy is not clearly above the rate of always guessing
the largest class (:func:`chance_margin`), and without which the other stream does as well as
both together, is left out of the head; so is one that makes both together clearly worse than
the other alone.

The regression is a proxy for the head (it cannot see time), so the rule only acts on
clear differences (:data:`MARGIN`, :func:`chance_margin`); on the built-in benchmark it keeps
both streams on every clean cache and drops the shuffled one on 16 of the 18 uninformative
caches (on the other two, 90 clips each, the regression on both cross-validated 0.07-0.10 above
audio alone; docs/fusion.md)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from avar.features.cache import StepFeatures

MARGIN = 0.05
"""Cross-validated accuracy differences smaller than this are treated as ties (both
streams are kept)."""

FOLDS = 5
"""Folds at most; fewer when the smallest class has fewer labelled clips."""


def chance_margin(chance: float, n: int) -> float:
    """How far above always guessing the largest class a stream's cross-validated accuracy
    must be to count as informative: :data:`MARGIN`, or two binomial standard errors of an
    accuracy at that rate over ``n`` clips where that is more. On 40 clips of 10 classes a
    stream of shuffled features scored 0.175 (7 clips right, 0.10 expected): 0.05 kept it,
    two standard errors (0.095) do not."""
    return max(MARGIN, 2 * math.sqrt(chance * (1 - chance) / n))


POOLING = ("mean", "max", "change")
"""Statistics over a clip's steps that make its pooled vector: the mean, the max, and the mean
absolute change between consecutive steps. Mean and max say what the clip shows and hears;
the change says how much it moves, which they cannot: on fight-dev (real clips, grouped by
source video) the video regression's source-grouped cross-validated accuracy rose from 0.68
with mean and max to 0.72 with the change added (docs/fusion.md)."""
LEGACY_POOLING = ("mean", "max")
"""What runs saved before the change statistic was added pooled (their regression's width)."""


def pooled_features(video: np.ndarray, audio: np.ndarray, modality: str, stats=POOLING) -> np.ndarray:
    """One vector per clip (``video [T, dv]``, ``audio [T, da]``): the ``stats`` over its steps
    (:data:`POOLING`) of the ``modality`` streams ('v', 'a' or 'av'), video first. A one-step
    clip has no change (zeros)."""
    x = np.hstack([s for m, s in (("v", video), ("a", audio)) if m in modality])
    change = np.abs(np.diff(x, axis=0)).mean(0) if len(x) > 1 else np.zeros(x.shape[1], x.dtype)
    by_name = {"mean": x.mean(0), "max": x.max(0), "change": change}
    return np.hstack([by_name[s] for s in stats])


def stream_balance(video_dim: int, audio_dim: int, modality: str, stats=POOLING, motion_dim: int = 0) -> np.ndarray:
    """Per-column weights of a :func:`pooled_features` vector, applied after standardisation, that
    give each stream the same share of the total variance: with 'av', a video column weighs
    ``sqrt((dv + da) / (2 dv))`` and an audio column ``sqrt((dv + da) / (2 da))`` (the total stays
    ``dv + da`` per statistic); one stream: all ones. Standardised but unweighted, 1280 video
    dimensions against 192 audio ones make the L2-penalised regression mostly a video
    regression, the imbalance the heads' stream projection removes (:mod:`avar.methods.streams`);
    on the built-in benchmark balancing took the regression from 0.85 / 0.92 / 0.96 to
    0.95 / 0.99 / 1.00 at 6 / 12 / 24 clips per class (docs/fusion.md). The last ``motion_dim``
    video columns (the motion stream, :func:`avar.features.cache.visual_side`) are a stream of
    their own."""
    widths = [w for m, ws in (("v", (video_dim - motion_dim, motion_dim)), ("a", (audio_dim,))) if m in modality
              for w in ws if w]
    total = sum(widths)
    per_stat = np.hstack([np.full(w, math.sqrt(total / (len(widths) * w))) for w in widths])
    return np.tile(per_stat, len(stats))


def pooled_design(clips: list[StepFeatures], modality: str, stats=POOLING, motion_dim: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The pooled vectors ``[N, D]`` of ``clips`` (:func:`pooled_features`) and their column
    weights (:func:`stream_balance`; ``motion_dim``: the video's motion columns), what
    :func:`pooled_regression` takes."""
    x = np.stack([pooled_features(c.video, c.audio, modality, stats) for c in clips])
    return x, stream_balance(clips[0].video.shape[1], clips[0].audio.shape[1], modality, stats, motion_dim)


def _weigh(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return x * weights


def pooled_regression(seed: int = 0, balance: np.ndarray | None = None):
    """The pooled-feature classifier: standardisation, the streams' ``balance``
    (:func:`stream_balance`; ``None`` or all ones: unweighted, the features kept in their own
    dtype) and an L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    weighted = balance is not None and not np.all(balance == 1)
    weigh = FunctionTransformer(_weigh, kw_args={"weights": balance}) if weighted else "passthrough"
    return make_pipeline(StandardScaler(), weigh, LogisticRegression(max_iter=5000, random_state=seed))


@dataclass
class StreamChoice:
    """The outcome of :func:`select_streams`, recorded in the run (``stream_selection``)."""

    modality: str
    """The streams the head is trained on: 'av', 'a' or 'v'."""
    cv_accuracy: dict[str, float] | None
    """Cross-validated accuracy of the pooled regression per stream choice (None: too few
    clips to cross-validate)."""
    chance: float | None
    """Share of the largest class among the labelled clips: what always guessing it scores."""
    folds: int
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _groups(clips: list[StepFeatures]) -> list[str] | None:
    """Each clip's recording, or None unless every clip names one."""
    return [c.group for c in clips] if all(c.group is not None for c in clips) else None


def cv_splits(clips: list[StepFeatures], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cross-validation folds of ``clips`` as (fit, held-out) index arrays: stratified, up to
    :data:`FOLDS`, and of whole recordings where every clip names one (``StepFeatures.group``).
    Empty when some class has fewer than 2 clips or there are fewer than 2 recordings (nothing
    to cross-validate)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.array([c.label for c in clips])
    _, counts = np.unique(labels, return_counts=True)
    folds = int(min(FOLDS, counts.min())) if len(counts) > 1 else 0
    # Clips of one recording look alike: where the dataset names recordings, a fold holds whole
    # ones, or a stream that only recognises the scene would look informative (docs/fusion.md).
    groups = _groups(clips)
    if groups is not None:
        folds = min(folds, len(set(groups)))
    if folds < 2:
        return []
    splitter = (StratifiedKFold if groups is None else StratifiedGroupKFold)(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(clips)), labels, groups))


def cross_validated(clips: list[StepFeatures], modalities=("a", "v", "av"), seed: int = 0,
                    stats=POOLING, motion_dim: int = 0) -> tuple[dict[str, float] | None, int]:
    """Cross-validated accuracy (4 decimals) of the pooled regression on ``clips`` for each of
    ``modalities`` over the folds of :func:`cv_splits`, and the number of folds; ``None`` when
    there is nothing to cross-validate."""
    from sklearn.model_selection import cross_val_score

    splits = cv_splits(clips, seed)
    if not splits:
        return None, 0
    labels = np.array([c.label for c in clips])
    cv = {}
    for modality in modalities:
        x, balance = pooled_design(clips, modality, stats, motion_dim)
        cv[modality] = round(float(cross_val_score(pooled_regression(seed, balance), x, labels, cv=splits).mean()), 4)
    return cv, len(splits)


def select_streams(clips: list[StepFeatures], seed: int = 0, motion_dim: int = 0) -> StreamChoice:
    """Decide from ``clips`` (the labelled train + val clips) whether a head asked for
    audio + video should use both streams or one (see the module docstring); ``motion_dim``:
    the video's last columns are the motion stream (the visual side, :func:`select_motion`)."""
    cv, folds = cross_validated(clips, seed=seed, motion_dim=motion_dim)
    if cv is None:
        return StreamChoice("av", None, None, folds,
                            "kept both streams: fewer than 2 labelled clips in some class, nothing to cross-validate")
    _, counts = np.unique([c.label for c in clips], return_counts=True)
    chance = float(counts.max() / counts.sum())
    groups = _groups(clips)
    names = {"a": "audio", "v": "video"}
    best, other = ("a", "v") if cv["a"] >= cv["v"] else ("v", "a")
    grouped = "" if groups is None else f" in folds of whole recordings ({len(set(groups))})"
    figures = (f"cross-validated accuracy of a pooled-feature regression over {len(clips)} labelled clips{grouped}: "
               f"audio {cv['a']:.3f}, video {cv['v']:.3f}, both {cv['av']:.3f}, largest class {chance:.3f}")
    if cv[other] < chance + chance_margin(chance, len(clips)) and cv[best] >= cv["av"] - MARGIN:
        return StreamChoice(best, cv, chance, folds, f"{names[best]} alone: the {names[other]} stream carries "
                            f"no class information ({figures})")
    if cv[best] >= cv["av"] + MARGIN:
        return StreamChoice(best, cv, chance, folds, f"{names[best]} alone: the {names[other]} stream makes "
                            f"both together worse ({figures})")
    return StreamChoice("av", cv, chance, folds, f"both streams ({figures})")


def select_motion(clips: list[StepFeatures], seed: int = 0) -> StreamChoice:
    """Decide from ``clips`` (labelled train + val, each with a motion stream) whether the
    visual side keeps the motion stream beside appearance, by the rule :func:`select_streams`
    applies to audio and video: motion is left out when it carries no class information and
    appearance alone does as well as both, or when it makes both clearly worse. Appearance
    always stays (a useless appearance stream is the audio-vs-video choice's to drop).
    ``modality`` is 'vm' (both) or 'v' (appearance alone)."""
    from dataclasses import replace

    as_pair = [replace(c, audio=c.motion) for c in clips]  # motion in the audio slot: the same folds and rule
    cv, folds = cross_validated(as_pair, seed=seed)
    if cv is None:
        return StreamChoice("vm", None, None, folds, "kept the motion stream: nothing to cross-validate")
    cv = {"v": cv["v"], "m": cv["a"], "vm": cv["av"]}
    _, counts = np.unique([c.label for c in clips], return_counts=True)
    chance = float(counts.max() / counts.sum())
    figures = (f"cross-validated accuracy of a pooled-feature regression over {len(clips)} labelled clips: "
               f"appearance {cv['v']:.3f}, motion {cv['m']:.3f}, both {cv['vm']:.3f}, largest class {chance:.3f}")
    if cv["m"] < chance + chance_margin(chance, len(clips)) and cv["v"] >= cv["vm"] - MARGIN:
        return StreamChoice("v", cv, chance, folds, f"appearance without motion: the motion stream carries no class "
                            f"information ({figures})")
    if cv["v"] >= cv["vm"] + MARGIN:
        return StreamChoice("v", cv, chance, folds, f"appearance without motion: the motion stream makes both "
                            f"worse ({figures})")
    return StreamChoice("vm", cv, chance, folds, f"appearance and motion ({figures})")


__all__ = ["FOLDS", "LEGACY_POOLING", "MARGIN", "POOLING", "StreamChoice", "chance_margin", "cross_validated", "cv_splits", "pooled_design",
           "pooled_features", "pooled_regression", "select_motion", "select_streams", "stream_balance"]
