"""How many CPU threads a model session gets, decided in one place.

The stages of a photo run one after another, and so do the models inside them: each session
gets every core this process may use (its affinity mask and its cgroup CPU quota: ``taskset``,
``docker --cpus``, Kubernetes limits), or ``--threads`` when given, and never more, so two
sessions never oversubscribe the cores. A folder run's decode and encode helper threads (one each,
``restore.folder``) work while the models do: they add at most two threads, mostly in libjpeg /
libpng. Work outside the models that runs while no model does (the assessment's measures, tone and
cast a band of rows at a time, the PNG writer's deflate) splits over the same cores: never more
threads than ``work_threads()``. On a Jetson the model runs on the GPU (TensorRT or CUDA provider)
and these threads only feed it: ``--threads`` can stay at its default.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def cgroup_cpu_limit(path: Path | None = None) -> float | None:
    """The CPU quota of this process's cgroup in cores (``docker --cpus 1.5`` -> 1.5), or None."""
    try:
        quota, period = (path or CGROUP_CPU_MAX).read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may use: its affinity mask, capped by its cgroup CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


_limit: int | None = None  # ``--threads`` of this process, once the command line gave it


def limit_threads(threads: int | None) -> None:
    """Take ``--threads`` (None: every available core) as this process's thread count."""
    global _limit
    _limit = int(threads) if threads else None


def session_threads(requested: int | None = None) -> int:
    """Intra-op threads of one model session: ``requested``, else ``--threads``, else every available core."""
    return int(requested) if requested else (_limit or available_cores())


def work_threads() -> int:
    """Threads for work outside the models that runs while no model does (tone, cast, PNG deflate)."""
    return session_threads(None)
