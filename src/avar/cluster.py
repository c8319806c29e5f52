"""Running avar's expensive loops on a Ray cluster: which cluster, how big a worker is, and the
grid cells as Ray tasks.

The one-machine path never imports this module's Ray parts: ``ray`` is imported only when an
engine connects, and is an optional extra (``pip install 'avar[ray]'``). Feature extraction
on Ray (an actor pool over a dataset's clips) is :mod:`avar.features.distributed`; multi-node
set-up and which folders must be shared: docs/distributed.md.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'avar[ray]'"
ADDRESS_FORMS = "auto, HOST:PORT (a head started by `ray start --head`) or ray://HOST:PORT (Ray Client, port 10001)"
_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9._\-\[\]:]+:\d{1,5}")


@dataclass(frozen=True)
class RayEngine:
    """Where and how wide work runs on Ray.

    ``address``: None starts a Ray instance on this machine for the run (or joins the one
    ``RAY_ADDRESS`` names); ``auto`` joins the cluster this machine is part of (``ray start``);
    ``HOST:PORT`` a head node's GCS; ``ray://HOST:PORT`` a head through Ray Client (the driver
    then runs elsewhere: the data and output paths must still be the same on every node).
    ``workers``: actors (extraction) or concurrent tasks (grids); None: as many as the cluster's
    CPUs (or GPUs, with ``gpus_per_worker``) allow. ``cpus_per_worker`` is also each worker's
    torch / ONNX Runtime thread count.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self):
        if self.address not in (None, "auto") and not _ADDRESS.fullmatch(self.address):
            raise ValueError(f"--address {self.address!r} is not a Ray address; give {ADDRESS_FORMS}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, not {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError("--cpus-per-worker must be above 0 and --gpus-per-worker at least 0")

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_worker))

    def connect(self):
        """The ``ray`` module, connected to this engine's cluster (an existing connection is
        reused). A missing package or an unreachable cluster is a ``RuntimeError`` naming the fix."""
        try:
            import ray
        except ImportError:
            raise RuntimeError(f"--engine ray needs the ray package: {INSTALL_HINT}") from None
        if ray.is_initialized():
            return ray
        try:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"at {self.address}" if self.address else "on this machine"
            first = " ".join(str(exc).split())[:300]
            raise RuntimeError(f"cannot reach a Ray cluster {where} ({first}); start one with `ray start --head` and "
                               f"pass --address auto, or give {ADDRESS_FORMS}") from None
        resources = ray.cluster_resources()
        log.info("Ray cluster: %g CPUs, %g GPUs, %d nodes", resources.get("CPU", 0), resources.get("GPU", 0),
                 len([n for n in ray.nodes() if n.get("Alive")]))
        return ray

    def width(self, ray, jobs: int) -> int:
        """How many workers to run for ``jobs`` pieces of work: ``workers``, or what the cluster's
        CPUs (GPUs) hold, never more than the jobs and at least one."""
        if self.workers is not None:
            wanted = self.workers
        else:
            resources = ray.cluster_resources()
            wanted = int(resources.get("CPU", 1) // self.cpus_per_worker)
            if self.gpus_per_worker:
                wanted = min(wanted, int(resources.get("GPU", 0) // self.gpus_per_worker))
        return max(1, min(wanted, jobs))


def task_error(ray, exc: Exception) -> str:
    """One line for a task or actor that failed: the cell's own exception when it raised one."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    if cause is not None:
        return f"{type(cause).__name__}: {' '.join(str(cause).split())[:300]}"
    if isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.WorkerCrashedError):
        return f"worker process died ({type(exc).__name__})"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def run_cells(engine: RayEngine, func, cells: list, done: dict, arguments, on_done) -> list[dict]:
    """Run ``func(cell, *arguments(cell, threads))`` for every cell as a Ray task, at most
    ``engine.width`` at once, storing each result in ``done[cell.id]`` and calling ``on_done()``
    after each cell. A task whose worker dies is retried once (Ray's ``max_retries``); a cell
    that raises is reported and the rest go on. Returns the failures, as ``run_parallel`` does."""
    ray = engine.connect()
    task = ray.remote(num_cpus=engine.cpus_per_worker, num_gpus=engine.gpus_per_worker, max_retries=1)(func)
    width = engine.width(ray, len(cells))
    queue = list(reversed(cells))
    running: dict = {}
    failures = []
    while queue or running:
        while queue and len(running) < width:
            cell = queue.pop()
            running[task.remote(cell, *arguments(cell, engine.threads))] = cell
        (ready,), _ = ray.wait(list(running), num_returns=1)
        cell = running.pop(ready)
        try:
            done[cell.id] = ray.get(ready)
        except ray.exceptions.RayError as exc:  # one failed cell must not lose the rest of the grid
            failures.append({"id": cell.id, "error": task_error(ray, exc)})
            log.error("cell %s failed: %s", cell.id, failures[-1]["error"])
        on_done()
    return failures
