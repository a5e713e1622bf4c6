"""How many cores this process may really use: CPU affinity, and the cgroup CPU quota.

`sched_getaffinity` honours taskset and cpusets, but not a CFS quota: a Kubernetes pod with
`limits.cpu: 2` on a 64-core node sees 64 CPUs and would start 64 workers, each throttled.
The quota is read from cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`)
and rounded up: 1.5 CPUs run 2 single-threaded workers at 75% each rather than leave half
a core idle. Read in the gunicorn master only (gunicorn_conf.py), never per request.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def quota_cores(root: Path | None = None) -> float | None:
    """The CPU limit in cores, or None when there is none (or no cgroup is mounted)."""
    root = root or CGROUP
    v2 = _read(root / "cpu.max")  # "max 100000" or "200000 100000"
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100000)
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return None if int(quota) < 0 else int(quota) / int(period)
    return None


def available_cores(root: Path | None = None) -> int:
    affinity = len(os.sched_getaffinity(0))
    quota = quota_cores(root)
    return affinity if quota is None else max(1, min(affinity, math.ceil(quota)))
