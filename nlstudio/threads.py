"""How many CPU threads torch may use: every core but one by default (the spare core keeps the
machine, or the GUI, responsive; torch's two-thread kernels collapse under contention on a
2-core machine), and never more than the cores this process may run on."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_torch_threads() -> int:
    """All usable cores but one, at least one."""
    return max(1, usable_cores() - 1)


def threads_problem(n: int) -> str | None:
    """Why ``n`` threads is not a valid choice here (None if it is)."""
    cores = usable_cores()
    if not 1 <= n <= cores:
        return f"must be between 1 and {cores} (the cores this process may use), got {n}"
    return None
