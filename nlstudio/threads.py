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
that computes, before torch's thread pool starts (the app's own worker threads and processes:
:func:`configure_torch`), or for the duration of a call made on a caller's thread
(:func:`denormals_flushed`: ``Trainer.run``; :func:`denormals_restored`:
``nlstudio.commands.run``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_torch_threads() -> int:
    """All usable cores but one, at least one."""
    return max(1, usable_cores() - 1)


def flush_denormals(on: bool = True) -> bool:
    """Flush subnormal floats to zero in this thread (and in threads it starts later), or stop
    (``on=False``); False where the CPU has no such mode (torch has it on x86 with SSE3 and on
    ARM)."""
    import torch  # here, not at import: the command line starts without torch

    return bool(torch.set_flush_denormal(on))


#: a subnormal double (Python's floats are IEEE doubles computed with the same SSE unit whose
#: control register holds the flush mode, so they show it without torch)
_SUBNORMAL = 1e-310


def flushing_denormals() -> bool:
    """Whether this thread flushes subnormals now (torch has no getter: read from arithmetic)."""
    tiny = _SUBNORMAL  # a variable, so the product is computed now, never constant-folded
    return tiny * 1.0 == 0.0


@contextmanager
def denormals_restored():
    """This thread's flush mode as it was before the ``with`` block, after it: for code run on
    a caller's thread (``Trainer.run``, the command line run in-process), which must not change
    that thread's arithmetic for good (hypothesis, for one, refuses to generate floats where
    subnormals are flushed). Costs no torch import when nothing changed."""
    was = flushing_denormals()
    try:
        yield
    finally:
        if not was and flushing_denormals():
            flush_denormals(False)


@contextmanager
def denormals_flushed():
    """Subnormals flushed in this thread for the ``with`` block, the previous mode after it."""
    with denormals_restored():
        flush_denormals()
        yield


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
