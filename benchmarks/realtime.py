"""Naive vs fast streaming pipeline on the same media, in one run; prints JSON.

(a) naive: a plain in-process loop: PyAV decodes every frame to full-size RGB, steps are cut
    by timestamp, the backbones run in eager fp32 on one step at a time, then the head; no
    threads, no overlap.
(b) fast: ``avar bench``'s path: ``Watcher`` with decoding in its own thread, only each
    step's frame converted (at the backbone's size), the backbones under ``--runtime``
    (default ``auto``) on the steps that are ready, the head batched.

Also measured: each backbone under every runtime on the same steps (milliseconds per step at
batch 8, and the smallest cosine similarity to eager fp32): the table ``auto`` was chosen
from. Usage::

    python benchmarks/realtime.py --json                      # paper backbones, random weights
    python benchmarks/realtime.py --video efficientnet-lite0 --audio logmel --trained --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

# As `avar bench` does: OpenMP workers must not spin on cores the decoder and ONNX Runtime need.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import av
import numpy as np
import torch

from avar.features import build_extractor
from avar.features.runtime import RUNTIMES, TorchBackbone, bf16_native
from avar.media.decode import AUDIO_RATE, iter_steps
from avar.serve.bench import random_run, run_bench, standard_clip


def naive_pipeline(media, video, audio, run) -> dict:
    """The plain loop (a); assumes both streams start at 0 s, as the standard clip does."""
    step, per_step, L = run.step, int(round(run.step * AUDIO_RATE)), run.seq_len
    clock = {"decode": 0.0, "video": 0.0, "audio": 0.0, "head": 0.0}
    feats_v, feats_a, frames, latencies = [], [], [], []
    wave, shown, done = np.zeros(0, np.float32), None, 0
    began = time.perf_counter()
    with av.open(str(media)) as container:
        vs, as_ = container.streams.video[0], container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        t0 = time.perf_counter()
        for packet in container.demux(vs, as_):
            for frame in packet.decode():
                if packet.stream is vs:
                    rgb = frame.to_ndarray(format="rgb24")
                    while (len(frames) + 0.5) * step < frame.time:
                        frames.append(shown if shown is not None else rgb)
                    shown = rgb
                else:
                    chunks = [c.to_ndarray().reshape(-1) for c in resampler.resample(frame)]
                    wave = np.concatenate([wave, *chunks])
            while done < len(frames) and len(wave) >= (done + 1) * per_step:
                ready = time.perf_counter()
                clock["decode"] += ready - t0
                feats_v.append(video(frames[done][None])[0])
                t1 = time.perf_counter()
                feats_a.append(audio(wave[done * per_step : (done + 1) * per_step][None])[0])
                t2 = time.perf_counter()
                lo = max(0, done - L + 1)
                v, a = run.norm.apply(np.stack(feats_v[lo:]), np.stack(feats_a[lo:]))
                with torch.inference_mode():
                    out = run.head(torch.from_numpy(v[None]), torch.from_numpy(a[None]), torch.ones(1, len(v), dtype=torch.bool))
                    torch.softmax(out.step_logits[0, -1], -1)
                t0 = time.perf_counter()
                clock["video"] += t1 - ready
                clock["audio"] += t2 - t1
                clock["head"] += t0 - t2
                latencies.append(t0 - ready)
                frames[done] = None
                done += 1
    wall = time.perf_counter() - began
    return {
        "steps": done,
        "wall_s": round(wall, 3),
        "steps_per_second": round(done / wall, 3),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        **{f"{k}_ms_per_step": round(v / done * 1000, 2) for k, v in clock.items()},
    }


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).min())


def runtime_table(names, random_weights: bool, frames: np.ndarray, waves: np.ndarray,
                  runtimes=RUNTIMES) -> dict:
    """Each neural backbone under each of ``runtimes`` (``torch`` first: the reference) on the
    same steps: ms per step, min cosine."""
    table = {}
    for name in names:
        data = None
        for runtime in runtimes:
            backbone = build_extractor(name, random_weights=random_weights, runtime=runtime)
            if not isinstance(backbone, TorchBackbone):
                break
            data = frames if backbone.modality == "video" else waves
            backbone(data)  # warm-up (and ONNX session start)
            times = []
            for _ in range(3):
                t = time.perf_counter()
                feats = backbone(data)
                times.append(time.perf_counter() - t)
            if runtime == "torch":
                reference = feats
            table.setdefault(name, {})[runtime] = {
                "ms_per_step": round(float(np.median(times)) / len(data) * 1000, 2),
                "min_cosine_vs_torch_fp32": round(min_cosine(reference, feats), 6),
            }
        if name in table:
            table[name]["auto"] = build_extractor(name, random_weights=random_weights, runtime="auto").runtime
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", help="media file (default: the standard bench clip)")
    parser.add_argument("--video", default="mobilevit-small")
    parser.add_argument("--audio", default="wav2vec2-base")
    parser.add_argument("--trained", action="store_true", help="load the backbones' weights instead of random ones")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runtimes", default="torch,bf16,onnx",
                        help="runtimes of the per-backbone table, torch first (int8 has its own acceptance "
                        "benchmark, benchmarks/int8_acceptance.py: its calibration takes minutes per backbone)")
    parser.add_argument("--json", action="store_true", help="print only the JSON (it is always printed)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    random_weights = not args.trained
    media = args.media or standard_clip()

    fast = run_bench(None, media, video=args.video, audio=args.audio, random_weights=random_weights,
                     runtime=args.runtime, batch=args.batch)

    video = build_extractor(args.video, random_weights=random_weights, runtime="torch")
    audio = build_extractor(args.audio, random_weights=random_weights, runtime="torch")
    naive = naive_pipeline(media, video, audio, random_run(video, audio))

    steps = [m for _, m in zip(range(16), iter_steps(media, 1.0, getattr(video, "input_size", None)))]
    frames, waves = np.stack([m.frame for m in steps]), np.stack([m.audio for m in steps])
    table = runtime_table([args.video, args.audio], random_weights, frames[:8], waves[:8], args.runtimes.split(","))
    fast_video = build_extractor(args.video, random_weights=random_weights, runtime=args.runtime)
    fast_audio = build_extractor(args.audio, random_weights=random_weights, runtime=args.runtime)
    result = {
        "speedup_vs_naive": round(fast["steps_per_second"] / naive["steps_per_second"], 2),
        "fast_steps_per_second": fast["steps_per_second"],
        "naive_steps_per_second": naive["steps_per_second"],
        "fast_min_cosine_vs_eager_fp32": {
            "video": round(min_cosine(video(frames), fast_video(frames)), 6),
            "audio": round(min_cosine(audio(waves), fast_audio(waves)), 6),
        },
        "fast": fast,
        "naive": naive,
        "runtimes": table,
        "bf16_native": bf16_native(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
