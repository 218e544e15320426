"""The contract every level keeps.

A level is an associative memory with one call shape::

    y, state = level(x, state=None, *, frozen=False)   # x: [batch, time, d_model] -> y: same

``frozen=True`` (parametric levels only): read with the memory in ``state`` and make no
in-context write for the whole call (no write, no decay, no momentum or optimizer-state change);
bookkeeping that is not memory (``t``, a convolution's history, a pending chunk) advances.

``state`` is a plain dict owned by the level: its fast weights (memories, momenta, optimizer
state), ``"t"`` (tokens seen so far in this stream, a Python int) and whatever it needs to make
a stream split over several calls give the same outputs as one call (a partial chunk, a KV
cache, convolution history). ``state=None`` starts a fresh stream from :meth:`init_state`.
The level never mutates a state it was given; it returns a new dict.

Fast state is per sequence (leading batch dimension) and is never shared across the batch.

Reserved keys every level fills so the probes can read any level the same way:

``"updates"``      int, in-context writes since the stream started;
``"write_norms"``  Tensor ``[time]`` of the last call: the Frobenius norm of the write applied at
                   each token (0 where nothing was written), averaged over the batch; what the
                   spectrum plot transforms;
``"last_write"``   Tensor 2-D or None: the latest write (surprise ⊗ key) of batch element 0.

What the model, the memory check (``nlstudio/build.py``) and the probes ask a level, with the
defaults below (a kind overrides what its own computation makes different):

``read(state, x)``                   what the memory returns for ``x`` without writing; None for
                                     non-parametric kinds (attention);
``compute_chunk``                    tokens per sequential step of the computation, or None;
``state_floats(batch)``              floats of the in-context state of ``batch`` sequences;
``activation_floats_per_token(T)``   floats kept per token for the backward pass (an estimate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from nlstudio.models.inner_optim import make_optimizer
from nlstudio.models.registry import KindInfo, kind_info

State = dict[str, Any]


@dataclass
class LevelProbe:
    """What a level stores, as the plots show it (all CPU-ready tensors, detached)."""

    memory: Tensor | None  # 2-D: the fast weights of batch element 0 (MLPs: their first weight)
    write: Tensor | None  # 2-D: the latest write (surprise ⊗ key), same shape as memory
    updates: int  # in-context writes so far in this stream
    write_norms: Tensor | None  # [time] write norm per token of the last call


class Level(nn.Module):
    """Base class: stores the spec, reads options with their registry defaults."""

    kind: ClassVar[str] = ""

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__()
        self.spec = dict(spec)
        self.info: KindInfo = kind_info(self.kind or spec["kind"])
        self.level_id: str = spec.get("id", self.kind)
        self.d_model = d_model
        self.heads = heads
        self.period: int | None = spec.get("period", self.info.default_period)
        self.objective: str | None = spec.get("objective") or self.info.default_objective

    def option(self, name: str):
        return self.spec.get(name, self.info.option(name).default)

    def make_inner_optimizer(self):
        """The level's inner optimizer from its spec: the kind's default optimizer and the
        kind's hyper-parameter defaults where the spec leaves them out."""
        spec = dict(self.spec.get("optimizer") or {})
        name = spec.pop("name", None) or self.info.default_optimizer
        if name not in self.info.optimizers:
            raise ValueError(f"level {self.level_id!r}: inner optimizer {name!r} is not one of "
                             f"{', '.join(self.info.optimizers)}")
        return make_optimizer({"name": name, **self.info.optimizer_overrides(name), **spec})

    # -- the contract ---------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State | None = None, *, frozen: bool = False
                ) -> tuple[Tensor, State]:
        raise NotImplementedError

    def probe(self, state: State) -> LevelProbe:
        raise NotImplementedError

    # -- what the model, the memory check and the probes ask (defaults) --------------------
    def read(self, state: State, x: Tensor) -> Tensor | None:
        """What the memory in ``state`` returns for ``x [B, n, d_model]`` (already in the
        level's input space, after its pre-norm), without writing and without context (no
        convolution history, no KV cache): the associative read-out followed by the level's
        output projection. None for a non-parametric kind (attention: nothing is stored but
        the context itself)."""
        if not self.info.parametric:
            return None
        raise NotImplementedError(f"level kind {self.info.name!r} does not implement read()")

    #: Whether an output can depend on other positions of the same call (attention, recurrent
    #: memories, convolutions). The model then commits a task level's writes only for whole
    #: segments of a stream (NestedModel._commit_end). True unless a kind says otherwise.
    mixes_positions: ClassVar[bool] = True

    @property
    def compute_chunk(self) -> int | None:
        """Tokens per sequential step of the level's computation: the internal chunk of a
        chunk-wise level (which keeps it as ``self.chunk``), else the period (None: attention,
        a frozen MLP). The memory check keeps one copy of the state per such step."""
        chunk = getattr(self, "chunk", None)
        return int(chunk) if chunk else self.period

    def state_floats(self, batch: int = 1) -> int:
        """Floats of the level's in-context state for ``batch`` sequences: every tensor of a
        fresh :meth:`init_state`, built on the ``meta`` device (nothing is allocated)."""
        return _numel(self.init_state(batch, device="meta"))

    def activation_floats_per_token(self, seq_len: int) -> int:
        """Floats kept per token for the backward pass, an estimate used by the memory check
        (``seq_len`` for terms that grow with the context): the level's input, its norm and
        its output, ``3·d_model``."""
        return 3 * self.d_model

    # -- helpers --------------------------------------------------------------------------
    def _param_device_dtype(self, device, dtype):
        p = next(self.parameters(), None)
        if device is None:
            device = p.device if p is not None else torch.device("cpu")
        if dtype is None:
            dtype = p.dtype if p is not None else torch.get_default_dtype()
        return device, dtype


def _numel(obj: Any) -> int:
    """Elements of every tensor in a (nested) state."""
    if isinstance(obj, Tensor):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(_numel(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_numel(v) for v in obj)
    return 0
