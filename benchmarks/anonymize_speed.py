"""How fast anonymisation runs on this machine: frames per second at 720p.

    .venv/bin/python benchmarks/anonymize_speed.py --json

Writes a 1280x720 25 fps H.264 clip (the first real fight-dev 720p clip when ../shared is
there, its frames looped to 10 s, else synthetic frames), then times, in one run:
detection alone per detector, the whole ``Anonymizer`` (detect, track, cover) at every frame
and at every 3rd frame, and ``avar anonymize`` end to end (decode, anonymise, re-encode,
copy the audio). Prints JSON; ratios within the run are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from avar.anonymize.cover import AnonymizeConfig
from avar.anonymize.detect import build_detector
from avar.anonymize.files import anonymize_file
from avar.media.synth import write_av_file

FIGHT = Path(os.environ.get("AVAR_FIGHT", Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-dev"))


def source_frames(n: int) -> tuple[np.ndarray, str]:
    for path in sorted(FIGHT.glob("*/*.mp4")):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.height != 720:
                continue
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        looped = np.stack([frames[i % len(frames)] for i in range(n)])
        return looped, f"{path.name} (looped)"
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, 720, 1280, 3), dtype=np.uint8), "synthetic noise"


def rate(func, frames: np.ndarray) -> float:
    started = time.perf_counter()
    for frame in frames:
        func(frame)
    return len(frames) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    frames, origin = source_frames(int(args.seconds * 25))
    result = {"frames": len(frames), "size": "1280x720", "source": origin, "threads": torch.get_num_threads(),
              "cores": os.cpu_count()}
    sample = frames[: min(50, len(frames))]
    for name in ("centerface", "haar-face", "haar-plate"):
        detector = build_detector(name)
        detector(sample[0])  # warm-up: session start, first allocation
        result[f"detect_{name}_fps"] = round(rate(detector, sample), 2)
    for every in (1, 3):
        anonymizer = AnonymizeConfig(every=every).build()
        result[f"anonymizer_every{every}_fps"] = round(rate(anonymizer.push, sample), 2)
    with tempfile.TemporaryDirectory() as tmp:
        t = np.arange(int(args.seconds * 48000)) / 48000
        clip = write_av_file(Path(tmp) / "clip.mp4", frames, 25, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32),
                             48000)
        started = time.perf_counter()
        done = anonymize_file(clip, Path(tmp) / "out.mp4", AnonymizeConfig().build())
        result["anonymize_file_fps"] = round(done.frames / (time.perf_counter() - started), 2)
        result["anonymize_file_frames_with_regions"] = done.frames_with_regions
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
