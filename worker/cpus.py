"""How many CPUs this process may really use: the default number of worker processes.

``os.cpu_count()`` counts the host's CPUs; in a container limited to one CPU on a 64-core host
it would start 64 workers. The affinity mask (taskset, cpusets) and the cgroup v2 CPU quota
(``docker run --cpus``, Kubernetes limits) both bound what is usable.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs usable by this process: the affinity mask, lowered to the cgroup quota if any."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        usable = os.cpu_count() or 1
    quota = cgroup_quota(cpu_max)
    return max(1, min(usable, quota) if quota else usable)


def cgroup_quota(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """The cgroup v2 quota in whole CPUs, rounded up ("150000 100000" is 2), or None."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None
