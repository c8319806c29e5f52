"""Peak memory of `avar watch` on a long file against a short one; prints JSON.

Both files are bench clips of the same kind (default 320x240, 25 fps H.264 + AAC 48 kHz, so
that an hour encodes in minutes); each is watched in its own fresh process with the offline
backbones and a random head, and the process's peak resident memory (``VmHWM``, model loading
included; Linux) is compared. Memory that grows with the stream would show in the ratio.

    python benchmarks/watch_memory.py --json            # 1 min vs 60 min
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from avar.features.runtime import user_cache_dir
from avar.media.synth import write_bench_clip

CHILD = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from avar.features import build_extractor
from avar.serve.bench import random_run
from avar.serve.watch import Watcher
video, audio = build_extractor("efficientnet-lite0", runtime="auto"), build_extractor("logmel")
watcher = Watcher(random_run(video, audio), causal=True, extractors=(video, audio))
t0 = time.perf_counter()
steps = sum(1 for _ in watcher.watch(sys.argv[1]))
# VmHWM: this process's own high-water mark (ru_maxrss would carry over the parent's peak
# across fork and exec on Linux).
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"steps": steps, "wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(hwm / 1024, 1)}))
"""


def watch_peak(path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short-min", type=float, default=1.0)
    parser.add_argument("--long-min", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--json", action="store_true", help="print only the JSON (it is always printed)")
    args = parser.parse_args()
    folder = user_cache_dir() / "bench"
    clips = {}
    for key, minutes in (("short", args.short_min), ("long", args.long_min)):
        path = folder / f"memory-{minutes:g}min-{args.width}x{args.height}.mp4"
        if not path.is_file():
            t = time.perf_counter()
            write_bench_clip(path, seconds=minutes * 60, size=(args.width, args.height), bitrate=500_000)
            print(f"wrote {path} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        clips[key] = path
    result = {key: {"minutes": m, **watch_peak(clips[key])}
              for key, m in (("short", args.short_min), ("long", args.long_min))}
    result["long_over_short_peak_rss"] = round(result["long"]["peak_rss_mb"] / result["short"]["peak_rss_mb"], 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
