"""The contract every level keeps.

A level is an associative memory with one call shape::

    y, state = level(x, state=None)          # x: [batch, time, d_model] -> y: same shape

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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

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
        from nlstudio.models.inner_optim import make_optimizer

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

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def probe(self, state: State) -> LevelProbe:
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------
    def _param_device_dtype(self, device, dtype):
        p = next(self.parameters(), None)
        if device is None:
            device = p.device if p is not None else torch.device("cpu")
        if dtype is None:
            dtype = p.dtype if p is not None else torch.get_default_dtype()
        return device, dtype
