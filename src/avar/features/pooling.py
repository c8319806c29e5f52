"""Longer steps from a finer cache: clip-level features as the mean over a clip's frames.

AVACA-style detectors score clips of a second or more, whose visual feature is often the
average of a frame extractor's features over the clip. ``avar extract --step 0.25`` gives one
frame (and a quarter second of audio) per step; pooling ``factor=4`` consecutive steps then
gives 1 s clips whose video feature is the mean over 4 frames, from any video extractor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avar.features.cache import FeatureSet, StepFeatures


def pool_steps(x: np.ndarray, factor: int) -> np.ndarray:
    """``x [T, d]`` -> ``[ceil(T / factor), d]``: means of consecutive groups (the last may be shorter)."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    starts = np.arange(0, len(x), factor)
    return np.add.reduceat(x, starts, axis=0) / np.diff(np.r_[starts, len(x)])[:, None]


def motion_steps(x: np.ndarray, steps: int) -> np.ndarray:
    """``x [T, d]`` -> ``[T, 2d]``: at each step, the mean of the last ``steps`` steps (itself
    included) and the mean absolute change between consecutive ones among them; the first steps
    use the steps there are (the first: itself, no change). Causal: a step's value depends on
    no later step, so a stream scored as it arrives gets the values a whole file gets, given
    the last ``steps - 1`` steps before it.

    What one frame per step cannot show: how the scene moves. On fight-dev (2-s clips) at
    0.125-s steps, ``steps=4`` (half a second; ``avar train avarnet --video-motion 4``) lifted the
    AVAR-Net head alone, cross-validated in folds of whole source videos, from 0.65 to 0.77
    (docs/fusion.md)."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    x = np.asarray(x, np.float64)

    def trailing_sum(v: np.ndarray, k: int) -> np.ndarray:  # sum of the last k rows, fewer at the start
        c = np.cumsum(v, axis=0)
        return c - np.vstack([np.zeros((k, v.shape[1])), c])[: len(c)]

    t = np.arange(1, len(x) + 1, dtype=np.float64)[:, None]
    change = np.vstack([np.zeros((min(1, len(x)), x.shape[1])), np.abs(np.diff(x, axis=0))])
    mean = trailing_sum(x, steps) / np.minimum(t, steps)
    mean_change = trailing_sum(change, steps - 1) / np.clip(t - 1, 1, steps - 1)
    return np.hstack([mean, mean_change]).astype(np.float32)


def pool_feature_set(source: FeatureSet, out_dir: Path | str, factor: int) -> FeatureSet:
    """A new cache in ``out_dir`` whose steps are ``factor`` steps of ``source``, averaged.

    Video and audio are both averaged; each pooled step starts where its first step started.
    Manifest entries keep their other fields (media path, frame truth), so evaluation finds
    the same ground truth. The extractor records gain ``"pooled": factor``.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    extra_keys = {"clip_id", "label", "split", "n_steps", "duration", "audio_missing", "video_missing"}
    records = {c["clip_id"]: {k: v for k, v in c.items() if k not in extra_keys} for c in source.clips}

    def clips():
        for record in source.clips:
            clip = source.load(record)
            yield StepFeatures(
                clip_id=clip.clip_id, label=clip.label, split=clip.split,
                video=pool_steps(clip.video, factor).astype(np.float32),
                audio=pool_steps(clip.audio, factor).astype(np.float32),
                times=clip.times[::factor], audio_missing=clip.audio_missing, video_missing=clip.video_missing,
            )

    manifest = source.manifest
    return FeatureSet.create(
        out_dir, clips(), step=manifest["step"] * factor, records=records,
        video={**manifest["video"], "pooled": factor}, audio={**manifest["audio"], "pooled": factor},
    )
