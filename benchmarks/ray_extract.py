"""Feature extraction: the local engine vs Ray with 1 and 2 workers, same clips; prints JSON.

Clips: the built-in synthetic benchmark (``avar synth``: 320x240, 12.5 fps H.264 + AAC, 8 s,
one step per second) with ``--clips-per-class`` clips of each of its 10 classes. Each engine
extracts them into its own fresh cache with the offline backbones (EfficientNet-Lite0 under
``runtime="auto"``, i.e. ONNX Runtime on a CPU, and log-mel), one after the other, so they
share the machine alike. Reported per engine: wall seconds (including, for Ray, starting the
workers and loading their backbones), clips/s and steps/s over that wall time, and the
steady-state seconds one worker spends per clip (the wall time less the set-up before the first
clip, times the workers). The ONNX export is made once before any engine is timed. Usage::

    python benchmarks/ray_extract.py --json [--clips-per-class 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from avar.cluster import RayEngine
from avar.datasets.folders import discover
from avar.features import build_extractor
from avar.features.cache import FeatureSet, extract_dataset
from avar.features.distributed import ExtractorSpec, extract_dataset_ray
from avar.media.synth import synthesize

VIDEO, AUDIO = "efficientnet-lite0", "logmel"


def _steps(root: Path) -> int:
    return sum(c["n_steps"] for c in FeatureSet.open(root).clips)


def local(entries, out: Path) -> dict:
    start = time.perf_counter()
    video, audio = build_extractor(VIDEO, runtime="auto"), build_extractor(AUDIO, runtime="auto")
    setup = time.perf_counter() - start
    summary = extract_dataset(entries, out, video, audio, progress=False)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "setup_s": setup, "clips": summary.done, "steps": _steps(out),
            "clips_per_s": summary.done / wall, "steps_per_s": _steps(out) / wall,
            "s_per_clip_steady": (wall - setup) / summary.done, "runtimes": FeatureSet.open(out).manifest["runtimes"]}


def on_ray(entries, out: Path, workers: int) -> dict:
    def run():
        start = time.perf_counter()
        summary = extract_dataset_ray(entries, out, ExtractorSpec(VIDEO), ExtractorSpec(AUDIO),
                                      engine=RayEngine(workers=workers), progress=False)
        return summary, time.perf_counter() - start

    summary, wall = run()
    # The same call on the finished cache starts one worker, loads its backbones and finds
    # nothing to do: the set-up a run pays before its first clip.
    again, setup = run()
    assert again.done == 0 and again.skipped == summary.done
    return {"workers": workers, "wall_s": wall, "setup_s": setup, "clips": summary.done, "steps": _steps(out),
            "clips_per_s": summary.done / wall, "steps_per_s": _steps(out) / wall,
            "s_per_clip_steady": (wall - setup) * workers / summary.done,
            "runtimes": FeatureSet.open(out).manifest["runtimes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-class", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    work = Path(tempfile.mkdtemp(prefix="avar-ray-bench-"))
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    try:
        synthesize(work / "data", clips_per_class=args.clips_per_class, progress=False)
        entries = discover(work / "data")
        build_extractor(VIDEO, runtime="auto")  # the ONNX export, once, outside every timing
        result = {"machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()},
                  "clips": len(entries), "clip": "avar synth: 8 s, 320x240, 12.5 fps H.264 + AAC, 1 step/s",
                  "extractors": [VIDEO, AUDIO], "local": local(entries, work / "local")}
        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=temp, logging_level="WARNING")
        result["ray_init_s"] = time.perf_counter() - start
        result["ray"] = [on_ray(entries, work / f"ray{n}", n) for n in (1, 2)]
        result["ratios"] = {f"ray_{r['workers']}_vs_local": r["clips_per_s"] / result["local"]["clips_per_s"]
                            for r in result["ray"]}
        result["ratios"]["ray_2_vs_ray_1"] = result["ray"][1]["clips_per_s"] / result["ray"][0]["clips_per_s"]
        print(json.dumps(result, indent=1))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
