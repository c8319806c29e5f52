"""What the motion stream costs: `avar extract` time per clip with and without it (the same clips,
alternating, best of the repeats, in one process), and `avar bench` on the standard 60-s 1280x720 25-fps clip with
the offline backbones and a random head, with and without motion. Prints JSON; ratios within
one run are the figures to quote.

    .venv/bin/python benchmarks/motion_cost.py [--clips DIR] [--step 1.0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from avar.features import DEFAULT_AUDIO, DEFAULT_MOTION, DEFAULT_VIDEO, build_extractor
from avar.features.cache import extract_dataset
from avar.datasets.folders import discover
from avar.serve.bench import run_bench

FIGHT_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-dev"


def extraction_seconds(entries, step: float, video, audio, motion) -> float:
    """``avar extract`` of every clip into a new folder (decoding overlapped with the backbones,
    the cache written), as a user runs it."""
    with tempfile.TemporaryDirectory(prefix="avar-motion-cost-") as out:
        started = time.perf_counter()
        extract_dataset(entries, out, video, audio, step=step, motion=motion, progress=False)
        return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", default=str(FIGHT_DEV), help="a class-per-folder dataset (default fight-dev)")
    parser.add_argument("--limit", type=int, default=40, help="clips timed")
    parser.add_argument("--step", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # clips without sound say so on every pass
    entries = discover(args.clips)[: args.limit]
    video, audio = build_extractor(DEFAULT_VIDEO, runtime="auto"), build_extractor(DEFAULT_AUDIO)
    motion = build_extractor(DEFAULT_MOTION)
    extraction_seconds(entries[:2], args.step, video, audio, motion)  # warm-up
    times = {"without": [], "with": []}
    for _ in range(args.repeats):
        times["without"].append(extraction_seconds(entries, args.step, video, audio, None))
        times["with"].append(extraction_seconds(entries, args.step, video, audio, motion))
    best = {k: min(v) for k, v in times.items()}
    bench = {name: run_bench(motion=m) for name, m in (("without", None), ("with", DEFAULT_MOTION))}
    print(json.dumps({
        "clips": len(entries), "step_s": args.step,
        "extract_s_per_clip": {k: round(v / len(entries), 4) for k, v in best.items()},
        "extract_ratio_with_motion": round(best["with"] / best["without"], 3),
        "watch_720p25": {k: {f: b[f] for f in ("realtime_factor", "decode_ms_per_step", "video_ms_per_step",
                                                "motion_ms_per_step", "audio_ms_per_step", "head_ms_per_step",
                                                "latency_p95_ms")} for k, b in bench.items()},
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
