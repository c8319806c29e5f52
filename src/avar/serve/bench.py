"""``avar bench``: the paper's Table 4 (throughput, latency, memory) measured on this machine.

A media file runs through ``Watcher`` as fast as it decodes, exactly as ``avar watch`` would
run it (decoding in its own thread, backbones under the chosen runtime on the steps that are
ready, the head on a causal window), and the watcher's own clocks give the figures:

* ``steps_per_second``: steps recorded per second of wall time, decoding included, from the
  first demuxed packet to the last record (loading the models is reported apart as
  ``setup_s``);
* ``latency_p50_ms`` / ``latency_p95_ms``: from a step's media being complete to its record,
  measured in a second pass over the first ``live_steps`` steps paced at the media's own
  speed (``avar watch --realtime``), as a camera would deliver them; in the as-fast-as-possible
  pass a step also waits behind the steps decoded before it, reported as
  ``queued_latency_p50_ms`` / ``queued_latency_p95_ms``;
* per-stage milliseconds per step (decode, video features, audio features, head); the
  stages overlap, so they may add up to more than the wall time per step;
* ``peak_rss_mb``: the process's largest resident memory while the media ran.
"""

from __future__ import annotations

import os
import platform
import resource
import threading
import time
from pathlib import Path

import numpy as np
import torch

from avar.features import DEFAULT_AUDIO, DEFAULT_VIDEO, Extractor, build_extractor
from avar.features.runtime import user_cache_dir
from avar.media.synth import CLASSES, write_bench_clip
from avar.methods.heads import build_head, head_config
from avar.serve.watch import Watcher
from avar.runs import load_run
from avar.methods.avarnet.run import Run
from avar.training.run import Normalization

BENCH_CLIP = "bench-60s-1280x720-25fps-h264-2M-aac48k.mp4"
"""Name of the standard clip in ``user_cache_dir()/bench`` (see ``write_bench_clip``)."""


def standard_clip(cache_dir: Path | None = None) -> Path:
    """The standard bench clip, written once (about 20 s on 2 cores) and reused."""
    path = Path(cache_dir or user_cache_dir() / "bench") / BENCH_CLIP
    if not path.is_file():
        write_bench_clip(path)
    return path


def random_run(video: Extractor, audio: Extractor, step: float = 1.0, seq_len: int = 10) -> Run:
    """A default-shaped AVAR-Net head with random weights over these extractors' features.

    Its scores mean nothing; it stands in for a trained head when only speed is measured.
    """
    torch.manual_seed(0)
    config = head_config("mtcn", video_dim=video.dim, audio_dim=audio.dim, num_classes=len(CLASSES))
    norm = Normalization(np.zeros(video.dim, np.float32), np.ones(video.dim, np.float32),
                         np.zeros(audio.dim, np.float32), np.ones(audio.dim, np.float32))
    extractors = {m: {"name": e.name, "version": e.version, "dim": int(e.dim), "weights": None}
                  for m, e in (("video", video), ("audio", audio))}
    return Run(head=build_head(config).eval(), config=config, classes=list(CLASSES), norm=norm,
               seq_len=seq_len, step=step, extractors=extractors)


class PeakRss:
    """Samples the process's resident memory every ``interval`` seconds while in the block.

    The kernel's own peak (``ru_maxrss``) covers the whole process, model loading and ONNX
    export included; this covers only the block. Without ``/proc`` it falls back to the former.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRss":
        self.peak_bytes = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def run_bench(
    run_dir: Path | str | None = None,
    media: Path | str | None = None,
    *,
    video: str | None = None,
    audio: str | None = None,
    random_weights: bool = False,
    runtime: str = "auto",
    batch: int = 8,
    causal: bool = True,
    device: str = "cpu",
    live_steps: int = 15,
) -> dict:
    """Time ``media`` (default: the standard clip) through a watcher; the JSON of ``avar bench``.

    With ``run_dir`` the run's head and extractors are timed (``video``/``audio`` must then be
    None); without, ``video``/``audio`` (default: the offline extractors) and a random head of
    the default shape. ``random_weights`` builds the backbones untrained (their architectures
    are what costs time; their weights need not be on this machine).
    """
    began = time.perf_counter()
    media = Path(media) if media is not None else standard_clip()
    if not media.exists():
        raise FileNotFoundError(f"{media}: no such media file; pass --media FILE or omit it for the standard clip")
    if run_dir is not None:
        if video or audio:
            raise ValueError("--video/--audio choose backbones for a random head; a run brings its own")
        run = load_run(run_dir)
        ex = run.extractors
        names = {m: ex[m]["name"] for m in ("video", "audio")}
        weights = {m: None if random_weights else ex[m].get("weights") for m in ("video", "audio")}
    else:
        run = None
        names = {"video": video or DEFAULT_VIDEO, "audio": audio or DEFAULT_AUDIO}
        weights = {"video": None, "audio": None}
    if run is not None and not random_weights:
        extractors = run.build_extractors(device, runtime)  # a run may read more than registered extractors
    else:
        extractors = tuple(build_extractor(names[m], weights[m], device, runtime=runtime,
                                           random_weights=random_weights) for m in ("video", "audio"))
    run = run or random_run(*extractors)
    watcher = Watcher(run, causal=causal, batch=batch, extractors=extractors)
    setup_s = time.perf_counter() - began

    with PeakRss() as rss:
        t0 = time.perf_counter()
        records = sum(1 for _ in watcher.watch(media))
        wall = time.perf_counter() - t0
    stats = watcher.stats
    per_step = 1000.0 / max(records, 1)
    queued = np.array(stats.latencies) * 1000.0

    live = Watcher(run, causal=causal, batch=batch, extractors=extractors)
    for i, _ in enumerate(live.watch(media, realtime=True)):
        if i + 1 >= live_steps:
            break
    latency = np.array(live.stats.latencies) * 1000.0
    return {
        "media": str(media),
        "steps": records,
        "step_s": run.step,
        "wall_s": round(wall, 3),
        "steps_per_second": round(records / wall, 3),
        "realtime_factor": round(records * run.step / wall, 3),
        "latency_p50_ms": round(float(np.percentile(latency, 50)), 2),
        "latency_p95_ms": round(float(np.percentile(latency, 95)), 2),
        "live_steps": len(latency),
        "queued_latency_p50_ms": round(float(np.percentile(queued, 50)), 2),
        "queued_latency_p95_ms": round(float(np.percentile(queued, 95)), 2),
        "decode_ms_per_step": round(stats.decode_s * per_step, 2),
        "video_ms_per_step": round(stats.video_s * per_step, 2),
        "audio_ms_per_step": round(stats.audio_s * per_step, 2),
        "head_ms_per_step": round(stats.head_s * per_step, 2),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "setup_s": round(setup_s, 2),
        "backbones": {
            m: {"name": e.name, "runtime": getattr(e, "runtime", "numpy"),
                "weights": "random" if random_weights and hasattr(e, "net") else weights[m] or "default"}
            for m, e in (("video", extractors[0]), ("audio", extractors[1]))
        },
        "runtime": runtime,
        "head": f"trained {run.method}" if run_dir is not None else "random (default AVAR-Net shape)",
        "window": "causal" if causal else "centred",
        "batch": batch,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
