"""How torch computes on the CPU in a thread that trains, evaluates or generates.

Threads: every core but one by default (the spare core keeps the machine, or the GUI,
responsive; torch's two-thread kernels collapse under contention on a 2-core machine), and
never more than the cores this process may run on.

Subnormal floats are flushed to zero (:func:`flush_denormals`). x86 CPUs compute with
subnormal numbers (|x| < 1.2e-38 in float32) tens of times more slowly than with normal
ones, and our memories reach them: the self-modifying level generates its own write targets
from its memories, so at initialisation every memory decays by about 100× per 256 tokens and
a long stream ends in the subnormal range (measured on the NSAM preset: 7e-17 after 2,048
tokens, and products of such values are subnormal). That made the time per token grow with T
(1.15× per doubling; 1.00× with flushing, bench/levels.py). Flushing changes only values
below 1.2e-38, which no figure of the app can show, and is what GPU kernels and other
frameworks commonly do on the CPU. The setting lives in each thread's floating-point control
register (MXCSR): a thread started later inherits its creator's, so it is set in every thread
that computes, before torch's thread pool starts.
"""
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


def flush_denormals() -> bool:
    """Flush subnormal floats to zero in this thread (and in threads it starts later); False
    where the CPU has no such mode (torch supports it on x86 with SSE3 and on ARM)."""
    import torch  # here, not at import: the command line starts without torch

    return bool(torch.set_flush_denormal(True))


def configure_torch(threads: int) -> None:
    """The calling thread computes with ``threads`` torch threads, subnormals flushed."""
    import torch

    flush_denormals()
    torch.set_num_threads(threads)


def threads_problem(n: int) -> str | None:
    """Why ``n`` threads is not a valid choice here (None if it is)."""
    cores = usable_cores()
    if not 1 <= n <= cores:
        return f"must be between 1 and {cores} (the cores this process may use), got {n}"
    return None
