"""Mixed precision: what the in-context memories keep in float32 under bf16 autocast.

With the project setting ``train.precision: bf16`` the training step's forward and loss run
under ``torch.autocast(device, dtype=torch.bfloat16)`` (nlstudio/cuda_graphs.py): the outer
layers (projections, attention, feed-forward blocks, the head) compute in bfloat16 while the
parameters, their gradients and the optimizer's state stay float32. The in-context memories
do not follow autocast:

- their state (fast weights, momenta, gradient sums, pending inputs, write norms) stays in the
  dtype the model's ``init_state`` gives it, the parameters' (float32);
- the recurrences that write that state (delta rule, linear attention, the Titans and
  self-modifying chunk steps with their hand-written backward, a CMS level's writes and local
  objectives) run with autocast off on inputs widened to float32.

Why: a memory is written at every token or chunk by small steps ``η u kᵀ`` onto weights of
order one, thousands of times per stream. bfloat16 keeps 8 bits of mantissa (about 3
significant digits): a write more than ~2⁻⁹ smaller than the weight would round away, and
decays ``∏ α_t`` would drift. The reads of a CMS level's fast weights are matmuls like any
linear layer's and may run in bfloat16 (models/levels/cms_reads.py).

Everything here is the identity when autocast is off (precision ``fp32``, evaluation, the
probes): the float32 path is unchanged, bit for bit.
"""
from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Callable, ContextManager, TypeVar

import torch
from torch import Tensor

#: dtypes a memory never keeps its state in (autocast's lower precisions)
LOW_PRECISION = (torch.bfloat16, torch.float16)


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device``'s type right now, or None when it is off
    there (or the device type has no autocast, e.g. ``meta``)."""
    kind = torch.device(device).type
    try:
        if not torch.is_autocast_enabled(kind):
            return None
        return torch.get_autocast_dtype(kind)
    except RuntimeError:  # a device type autocast does not know
        return None


def full_precision(like: Tensor) -> ContextManager:
    """Autocast off on ``like``'s device for the block (nothing happens when it is already
    off): the memory's recurrence then computes in its inputs' own dtype."""
    if autocast_dtype(like.device) is None:
        return nullcontext()
    return torch.autocast(like.device.type, enabled=False)


F = TypeVar("F", bound=Callable)


def writes_memory(method: F) -> F:
    """Decorator of a level method that computes new memory state: it runs with autocast off
    on the device of the level's parameters (its tensors are float32 state already)."""
    @functools.wraps(method)
    def run(level, *args, **kwargs):
        with full_precision(next(level.parameters())):
            return method(level, *args, **kwargs)
    return run  # type: ignore[return-value]


def without_autocast(fn: F) -> F:
    """Decorator of the forward and the hand-written backward of a memory's autograd node:
    autocast off on the device of the first tensor argument, so the node computes in its
    tensors' own dtype. Why the backward too: autograd runs a backward under the autocast
    state of the thread that calls it, and the model calls one inside its forward (a CMS
    level's inner gradient, models/assemble.py)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        like = next((a for a in args if isinstance(a, Tensor)), None)
        if like is None:
            return fn(*args, **kwargs)
        with full_precision(like):
            return fn(*args, **kwargs)
    return run  # type: ignore[return-value]


def widen(t: Tensor | None) -> Tensor | None:
    """``t`` in float32 when autocast made it bfloat16 / float16; otherwise ``t`` itself."""
    if t is None or t.dtype not in LOW_PRECISION:
        return t
    return t.float()


def state_dtype(x: Tensor) -> torch.dtype:
    """The dtype of a fresh state for inputs ``x``: ``x``'s, at least float32."""
    return torch.float32 if x.dtype in LOW_PRECISION else x.dtype
