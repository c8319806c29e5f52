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


def _media(media: Path | str | None) -> Path:
    """``media``, or the standard clip when None; a missing file is a one-line error."""
    media = Path(media) if media is not None else standard_clip()
    if not media.is_file():
        raise FileNotFoundError(f"{media}: no such media file; pass --media FILE or omit it for the standard clip")
    return media


def random_run(video: Extractor, audio: Extractor, step: float = 1.0, seq_len: int = 10,
               motion: Extractor | None = None) -> Run:
    """A default-shaped AVAR-Net head with random weights over these extractors' features
    (with ``motion``: a motion stream on the visual side too).

    Its scores mean nothing; it stands in for a trained head when only speed is measured.
    """
    torch.manual_seed(0)
    motion_dim = motion.dim if motion is not None else 0
    visual = video.dim + motion_dim
    config = head_config("mtcn", video_dim=visual, audio_dim=audio.dim, num_classes=len(CLASSES), motion_dim=motion_dim)
    norm = Normalization(np.zeros(visual, np.float32), np.ones(visual, np.float32),
                         np.zeros(audio.dim, np.float32), np.ones(audio.dim, np.float32))
    extractors = {m: {"name": e.name, "version": e.version, "dim": int(e.dim), "weights": None}
                  for m, e in (("video", video), ("audio", audio), ("motion", motion)) if e is not None}
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
    motion: str | None = None,
) -> dict:
    """Time ``media`` (default: the standard clip) through a watcher; the JSON of ``avar bench``.

    With ``run_dir`` the run's head and extractors are timed (``video``/``audio`` must then be
    None); without, ``video``/``audio`` (default: the offline extractors) and a random head of
    the default shape. ``random_weights`` builds the backbones untrained (their architectures
    are what costs time; their weights need not be on this machine).
    """
    began = time.perf_counter()
    media = _media(media)
    run, extractors, backbones = bench_models(run_dir, video=video, audio=audio, random_weights=random_weights,
                                              runtime=runtime, device=device, motion=motion)
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
        "motion_ms_per_step": round(stats.motion_s * per_step, 2),
        "audio_ms_per_step": round(stats.audio_s * per_step, 2),
        "head_ms_per_step": round(stats.head_s * per_step, 2),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "setup_s": round(setup_s, 2),
        **_setting(backbones, runtime, run_dir, run, causal, batch),
    }


def bench_models(run_dir: Path | str | None = None, *, video: str | None = None, audio: str | None = None,
                 random_weights: bool = False, runtime: str = "auto", device: str = "cpu", motion: str | None = None):
    """``(run, (video, audio, motion) extractors, backbones description)`` to time: a run's own
    head and extractors, or ``video``/``audio`` (default: the offline extractors), ``motion``
    (default: none) and a random head of the default shape."""
    if run_dir is not None:
        if video or audio or motion:
            raise ValueError("--video/--audio/--motion choose backbones for a random head; a run brings its own")
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
        extractors += (build_extractor(motion) if motion else run.build_motion() if run is not None else None,)
    backbones = {m: {"name": e.name, "runtime": getattr(e, "runtime", "numpy"),
                     "weights": "random" if random_weights and hasattr(e, "net") else weights.get(m) or "default"}
                 for m, e in zip(("video", "audio", "motion"), extractors) if e is not None}
    return run or random_run(*extractors[:2], motion=extractors[2]), extractors, backbones


def _setting(backbones: dict, runtime: str, run_dir, run, causal: bool, batch: int) -> dict:
    """What was timed and where: the part of the JSON both bench modes share."""
    return {
        "backbones": backbones,
        "runtime": runtime,
        "head": f"trained {run.method}" if run_dir is not None else "random (default AVAR-Net shape)",
        "window": "causal" if causal else "centred",
        "batch": batch,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }


MAX_LATENCY_S = 2.0
"""A stream holds real time when it skipped no step and its p95 latency is at most this."""


def _percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(values) * 1000.0, q)), 1) if values else None


def run_streams(
    streams: int,
    run_dir: Path | str | None = None,
    media: Path | str | None = None,
    *,
    sources: list | None = None,
    seconds: float = 30.0,
    video: str | None = None,
    audio: str | None = None,
    random_weights: bool = False,
    runtime: str = "auto",
    batch: int = 8,
    causal: bool = True,
    device: str = "cpu",
    models=None,
    motion: str | None = None,
) -> dict:
    """``streams`` live streams in one watcher, each paced at its own speed (``avar bench
    --streams N``): ``media`` (default: the standard clip) watched ``streams`` times at once, or
    the given ``sources`` (files, URLs, devices; ``streams`` of them). Runs ``seconds`` of media
    per stream (at most the clip's length).

    Per stream: steps recorded, steps per second, latency p50/p95 from a step's media being
    complete to its record, skipped steps, times it fell behind. Overall: the same summed, each
    stage's busy share of the wall clock (stages overlap and use several threads), the process's
    CPU use as a share of all cores, and peak resident memory. ``holds_realtime``: no stream
    skipped a step and every stream's p95 latency is at most ``MAX_LATENCY_S``.
    ``models``: ``bench_models(...)``'s result, to time several N without rebuilding them.
    """
    import tempfile

    from avar.serve.watch import Source

    if streams < 1:
        raise ValueError(f"--streams must be at least 1, got {streams}")
    if not seconds > 0:
        raise ValueError(f"--seconds must be positive, got {seconds}")
    run, extractors, backbones = models or bench_models(run_dir, video=video, audio=audio,
                                                        random_weights=random_weights, runtime=runtime,
                                                        device=device, motion=motion)
    with tempfile.TemporaryDirectory(prefix="avar-streams-") as tmp:
        if sources is None:
            clip = _media(media)
            # The same clip under N names: N sources, each decoded on its own.
            sources = []
            for i in range(streams):
                link = Path(tmp) / f"stream-{i + 1:03d}{clip.suffix}"
                link.symlink_to(clip.resolve())
                sources.append(Source(str(link), f"stream {i + 1}"))
        elif len(sources) < streams:
            raise ValueError(f"--streams {streams} but only {len(sources)} sources given; list more or lower --streams")
        else:
            sources = [s if isinstance(s, Source) else Source(str(s)) for s in sources[:streams]]
        watcher = Watcher(run, causal=causal, batch=batch, extractors=extractors)
        watcher.warm_up()
        reached = {s.uri: 0.0 for s in sources}  # each stream's latest record's end (s)
        with PeakRss() as rss:
            t0, cpu0 = time.perf_counter(), time.process_time()
            for uri, record in watcher.watch_many(sources, realtime=True):
                reached[uri] = record.end
                if record.end >= seconds and min(reached.values()) >= seconds:
                    break
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stats = watcher.stats
    rows = []
    for s in sources:
        st = watcher.source_stats.get(s.uri)
        steps = st.steps if st else 0
        rows.append({"source": s.name or s.uri, "steps": steps, "steps_per_second": round(steps / wall, 3),
                     "latency_p50_ms": _percentile_ms(st.latencies, 50) if st else None,
                     "latency_p95_ms": _percentile_ms(st.latencies, 95) if st else None,
                     "skipped": st.skipped if st else 0, "lagging": st.lagging if st else 0})
    worst_p95 = max((r["latency_p95_ms"] or float("inf")) for r in rows)
    holds = all(r["skipped"] == 0 and r["steps"] > 0 for r in rows) and worst_p95 <= MAX_LATENCY_S * 1000
    cores = os.cpu_count() or 1
    return {
        "streams": streams,
        "seconds_per_stream": seconds,
        "holds_realtime": holds,
        "steps": stats.steps,
        "wall_s": round(wall, 3),
        "steps_per_second": round(stats.steps / wall, 3),
        "latency_p50_ms": _percentile_ms(stats.latencies, 50),
        "latency_p95_ms": _percentile_ms(stats.latencies, 95),
        "worst_stream_latency_p95_ms": None if worst_p95 == float("inf") else worst_p95,
        "skipped": stats.skipped,
        "lagging": stats.lagging,
        "stage_busy_share": {name: round(getattr(stats, f"{name}_s") / wall, 3)
                             for name in ("decode", "video", "audio", "head")},
        "process_cpu_share": round(cpu / (wall * cores), 3),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "per_stream": rows,
        **_setting(backbones, runtime, run_dir, run, causal, batch),
    }


def max_streams(run_dir: Path | str | None = None, media: Path | str | None = None, *, start: int = 1,
                limit: int = 64, progress=None, **options) -> dict:
    """The largest number of copies of ``media`` that ``run_streams`` holds in real time
    (``--max-streams``): doubling from ``start`` until one fails, then halving the interval.
    Returns the largest N that held, every trial's summary, and the full result at that N.
    ``progress(trial)`` is called after each trial."""
    chosen = {k: options.pop(k) for k in ("video", "audio", "random_weights", "runtime", "device", "motion")
              if k in options}
    models = bench_models(run_dir, **chosen)
    trials: dict[int, dict] = {}

    def trial(n: int) -> bool:
        result = run_streams(n, run_dir, media, models=models, **chosen, **options)
        trials[n] = result
        if progress is not None:
            progress({k: result[k] for k in ("streams", "holds_realtime", "worst_stream_latency_p95_ms",
                                             "skipped", "steps_per_second", "process_cpu_share")})
        return result["holds_realtime"]

    good, bad = 0, None
    n = max(1, start)
    while n <= limit:
        if not trial(n):
            bad = n
            break
        good, n = n, n * 2
    if bad is None and good < limit:
        bad = limit + 1
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        if trial(middle):
            good = middle
        else:
            bad = middle
    summary = [{k: r[k] for k in ("streams", "holds_realtime", "worst_stream_latency_p95_ms", "skipped",
                                  "steps_per_second", "process_cpu_share", "peak_rss_mb")}
               for _, r in sorted(trials.items())]
    return {"max_streams": good, "max_latency_ms": MAX_LATENCY_S * 1000, "trials": summary,
            "at_max": trials.get(good)}
