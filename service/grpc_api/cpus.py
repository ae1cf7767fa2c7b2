"""How many CPUs this process may use: the default worker count follows it."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: those of its affinity mask, capped by the cgroup v2
    CPU quota (`cpu.max` "QUOTA PERIOD": ceil(QUOTA / PERIOD); "max": no quota), not the
    host's cores (a container limited to 2 CPUs on a 64-core node runs 2 workers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 quota here
        pass
    return max(1, cpus)
