"""The ``--engine`` options of the commands that can run on a Ray cluster (extract, ablate, scenes)."""

from __future__ import annotations


def add_engine_options(p, *, workers: bool = True) -> None:
    """``--engine local|ray`` and the Ray cluster's options; ``workers=False`` where the
    command already has its own ``--workers`` (it then also sets the Ray width)."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this machine (default); ray: a Ray cluster (pip install 'avar[ray]'; docs/distributed.md)")
    p.add_argument("--address", help="--engine ray: the cluster: auto (this node's, after `ray start`), HOST:PORT or "
                   "ray://HOST:10001; default: a Ray instance started on this machine for the run")
    if workers:
        p.add_argument("--workers", type=int, help="--engine ray: workers (default: as many as the cluster's CPUs, "
                       "or GPUs with --gpus-per-worker, allow)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="--engine ray: CPUs (and torch threads) per worker (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="--engine ray: GPUs per worker, e.g. 1 or 0.5 (default 0: CPU workers)")


def engine_from_args(args):
    """The :class:`avar.cluster.RayEngine` the options ask for, or None for the local engine."""
    if args.engine != "ray":
        return None
    from avar.cluster import RayEngine

    return RayEngine(address=args.address, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                     gpus_per_worker=args.gpus_per_worker)


def extractor_specs(args) -> tuple:
    """The extractors as Ray workers build them: names, weights and runtime from the options."""
    from avar.features.distributed import ExtractorSpec

    return (ExtractorSpec(args.video, args.video_weights, args.runtime),
            ExtractorSpec(args.audio, args.audio_weights, args.runtime))
