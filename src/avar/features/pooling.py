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
