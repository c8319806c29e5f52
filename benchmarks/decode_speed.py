"""Decoding every frame vs decoding only what the steps need, in one run; prints JSON.

Both variants are ``avar.media.decode.iter_steps`` on the same media: ``decode_all=True``
(every frame decoded, what avar did before issue 16) and the default (non-reference frames no
step can show are skipped by the decoder). Each step's frame is converted to RGB at the
backbone's input size in both, as ``avar watch`` does. Repetitions alternate the two variants
and the median is reported, so load from other processes on the shared cores hits both alike.
The steps of the two variants are compared byte for byte (frames, audio, times).

Media: the standard bench clip (60 s, 1280x720, 25 fps, H.264 with B-frames) and, when
``../shared/data/fight-dev`` exists, every 1280x720 clip in it (real surveillance footage,
2 s each) decoded one after the other as one set. Also measured: FFmpeg's threading modes on
the standard clip, decoding every frame and skipping every non-reference frame. Usage::

    python benchmarks/decode_speed.py --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
import warnings
from pathlib import Path

import av

from avar.media.decode import DecodeStats, iter_steps
from avar.serve.bench import standard_clip

FIGHT_DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fight-dev"


def decode(paths: list[Path], step: float, size: tuple[int, int], decode_all: bool) -> dict:
    """Decode ``paths`` one after the other: wall and CPU seconds, frames, a digest of the steps."""
    stats, digest, steps = DecodeStats(), hashlib.sha256(), 0
    wall, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        one = DecodeStats()
        for s in iter_steps(path, step, size, decode_all=decode_all, stats=one):
            digest.update(s.frame.tobytes())
            digest.update(s.audio.tobytes())
            digest.update(f"{s.time!r} {s.end!r} {s.audio_missing} {s.video_missing}".encode())
            steps += 1
        stats.packets += one.packets
        stats.frames_decoded += one.frames_decoded
        stats.frames_skipped += one.frames_skipped
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "steps": steps,
            "frames_decoded": stats.frames_decoded, "frames_skipped": stats.frames_skipped,
            "packets": stats.packets, "digest": digest.hexdigest()}


def compare(paths: list[Path], step: float, size: tuple[int, int], repeats: int) -> dict:
    runs: dict[str, list[dict]] = {"every_frame": [], "needed_only": []}
    for r in range(repeats):
        order = ["every_frame", "needed_only"] if r % 2 == 0 else ["needed_only", "every_frame"]
        for name in order:
            runs[name].append(decode(paths, step, size, decode_all=name == "every_frame"))
    out = {}
    for name, rs in runs.items():
        steps = rs[0]["steps"]
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        out[name] = {
            "steps": steps,
            "frames_decoded": rs[0]["frames_decoded"],
            "frames_skipped": rs[0]["frames_skipped"],
            "wall_ms_per_step": round(wall / steps * 1000, 2),
            "cpu_ms_per_step": round(cpu / steps * 1000, 2),
            "steps_per_second": round(steps / wall, 1),
        }
    every, needed = out["every_frame"], out["needed_only"]
    digests = {r["digest"] for rs in runs.values() for r in rs}
    out["speedup_wall"] = round(every["wall_ms_per_step"] / needed["wall_ms_per_step"], 2)
    out["speedup_cpu"] = round(every["cpu_ms_per_step"] / needed["cpu_ms_per_step"], 2)
    out["frames_decoded_ratio"] = round(needed["frames_decoded"] / every["frames_decoded"], 3)
    out["steps_identical"] = len(digests) == 1
    return out


def threading_table(path: Path, repeats: int) -> dict:
    """Plain PyAV decoding of ``path`` under each FFmpeg threading mode, every frame and with
    every non-reference frame skipped: median wall and CPU ms per frame of the clip."""
    modes = {"AUTO": ("AUTO", 0), "FRAME": ("FRAME", 0), "SLICE": ("SLICE", 0), "one_thread": ("NONE", 1)}
    samples: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for _ in range(repeats):
        for mode, (thread_type, count) in modes.items():
            for skip in ("DEFAULT", "NONREF"):
                with av.open(str(path)) as container:
                    video = container.streams.video[0]
                    video.thread_type, video.codec_context.thread_count = thread_type, count
                    video.codec_context.skip_frame = skip
                    wall, cpu, n = time.perf_counter(), time.process_time(), 0
                    for _frame in container.decode(video):
                        n += 1
                    total = video.frames
                samples.setdefault((mode, skip), []).append(
                    (time.perf_counter() - wall, time.process_time() - cpu, n))
    table: dict = {}
    for (mode, skip), xs in samples.items():
        table.setdefault(mode, {})["every_frame" if skip == "DEFAULT" else "nonref_skipped"] = {
            "frames_decoded": xs[0][2],
            "wall_ms_per_frame": round(statistics.median(x[0] for x in xs) / total * 1000, 3),
            "cpu_ms_per_frame": round(statistics.median(x[1] for x in xs) / total * 1000, 3),
        }
    return table


def fight_dev_720p() -> list[Path]:
    paths = []
    for path in sorted(FIGHT_DEV.glob("*/*.mp4")):
        with av.open(str(path)) as container:
            if container.streams.video and (container.streams.video[0].width,
                                            container.streams.video[0].height) == (1280, 720):
                paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each variant, alternating")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"),
                        help="RGB size of each step's frame (default: MobileViT's input)")
    parser.add_argument("--json", action="store_true", help="print only the JSON (it is always printed)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # clips without audio say so
    size = tuple(args.size)
    clip = standard_clip()
    result: dict = {"size": list(size), "repeats": args.repeats,
                    "standard_clip": {"path": clip.name, "step_1s": compare([clip], 1.0, size, args.repeats),
                                      "step_0.5s": compare([clip], 0.5, size, args.repeats)}}
    real = fight_dev_720p() if FIGHT_DEV.is_dir() else []
    if real:
        result["fight_dev_720p"] = {"clips": len(real), "resolution": "1280x720",
                                    "step_1s": compare(real, 1.0, size, args.repeats),
                                    "step_0.5s": compare(real, 0.5, size, args.repeats)}
    else:
        result["fight_dev_720p"] = {"skipped": f"no 1280x720 clips under {FIGHT_DEV}"}
    result["threading_standard_clip"] = threading_table(clip, max(1, args.repeats // 2))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
