"""Does a weakly supervised run find the events when watched? AVACA on the synthetic files.

Runs, in one process, what these commands do::

    avar synth DATA --weak --clips-per-class 12
    avar extract DATA --out FEATURES
    avar train avaca FEATURES --out RUN --seed S
    avar watch RUN DATA/<class>/<clip>.mp4 --db events.sqlite     # every test clip, default thresholds

and prints one JSON object: per seed, the share of anomalous test clips with an event that
overlaps the true interval, the share of normal test clips with no event, the events per
clip, and the mean and sample std over seeds. Data and features are shared with
``benchmarks/avaca_synthetic.py`` when ``--work`` is the same folder.

    python benchmarks/weak_events.py --work /tmp/avaca-bench --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from avaca_synthetic import prepare  # noqa: E402


def watch_test_clips(run_dir: Path, features_dir: Path, events_config=None) -> dict:
    """Watch every test clip's file through the run; the event-level figures of one run."""
    from avar.features.cache import FeatureSet
    from avar.serve.watch import Watcher

    features = FeatureSet.open(features_dir)
    metadata = json.loads((Path(features.clips[0]["path"]).parents[1] / "metadata.json").read_text())
    intervals = {str(Path(features.clips[0]["path"]).parents[1] / c["path"]): c["interval"] for c in metadata["clips"]}
    watcher = Watcher(run_dir, events=events_config)
    hits, clean, n_events, rows = [], [], [], []
    for clip in (c for c in features.clips if c["split"] == "test"):
        before = len(watcher.events)
        for _ in watcher.watch(clip["path"]):
            pass
        events = watcher.events[before:]
        interval = intervals[clip["path"]]
        n_events.append(len(events))
        if interval is None:
            clean.append(not events)
        else:
            hits.append(any(e.start < interval[1] and e.end > interval[0] for e in events))
        rows.append({"clip": clip["clip_id"], "interval": interval,
                     "events": [[e.start, e.end, round(e.peak_score, 3)] for e in events]})
    return {"anomalous_clips_with_overlapping_event": float(np.mean(hits)), "anomalous_clips": len(hits),
            "normal_clips_without_event": float(np.mean(clean)), "normal_clips": len(clean),
            "events_per_clip": float(np.mean(n_events)), "clips": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("avaca-bench"), help="folder for data, features and runs")
    parser.add_argument("--clips-per-class", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="only the JSON result on stdout")
    args = parser.parse_args()

    import torch

    from avar.features.cache import FeatureSet
    from avar.methods.avaca.train import WeakTrainConfig, train_weak

    torch.set_num_threads(1)
    features_dir, timings = prepare(args.work, args.clips_per_class, progress=not args.json)
    per_seed = {}
    for seed in range(args.seeds):
        run_dir = args.work / "runs" / f"avaca_focused-s{seed}"
        if not (run_dir / "model.safetensors").is_file():
            train_weak(FeatureSet.open(features_dir), run_dir, WeakTrainConfig(seed=seed), progress=False)
        started = time.perf_counter()
        per_seed[seed] = watch_test_clips(run_dir, features_dir)
        per_seed[seed]["watch_seconds"] = round(time.perf_counter() - started, 1)
        if not args.json:
            print(seed, {k: v for k, v in per_seed[seed].items() if k != "clips"}, file=sys.stderr)
    keys = ("anomalous_clips_with_overlapping_event", "normal_clips_without_event", "events_per_clip")
    summary = {k: {"mean": float(np.mean([r[k] for r in per_seed.values()])),
                   "std": float(np.std([r[k] for r in per_seed.values()], ddof=1)) if len(per_seed) > 1 else 0.0}
               for k in keys}
    print(json.dumps({"summary": summary, "per_seed": per_seed, **timings}, indent=1))


if __name__ == "__main__":
    main()
