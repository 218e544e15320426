"""Plumbing shared by the chunk-written deep memories (``titans``, ``self_modifying``).

Both keep per-head memory weights (and optionally a momentum of the same shapes) that are
written once every ``period`` C tokens (docs/internals.md §1): a chunk's tokens read the memory
as it was at the chunk start (read before write) and the chunk is written when its last token
arrives. This base owns what does not depend on the memory's math:

- the spec checks (period rule, heads dividing d_model, objective), in one place;
- the state: ``{"t", "updates", "write_norms", "last_write", <memory_key>, "momentum"?,
  "pending", "conv"}``, where ``pending`` holds the inputs of a chunk not yet complete (so a
  stream split over calls gives the same outputs as one call) and ``conv`` the short
  convolution's input history;
- the split of a call's tokens into complete chunks and a pending rest (:meth:`_chunks`);
- the per-token write-norm series (non-zero at each chunk's last token) and the probe.

A subclass sets ``memory_key`` (the state key of its weight tuple), builds ``memory_init``
(a ParameterList: the meta-learned initial weights, one tensor per layer, shared by all
sequences) and ``conv`` (its short convolution, a ``CausalConv1d``), sets ``use_momentum``,
says what a pending token keeps (``_pending_width``) and implements the three steps of
:meth:`ChunkedMemoryLevel.forward` (``_project``: the inputs of the memory, ``_memory_pass``:
the chunks, ``_output``: the reads to the level's output), ``read`` and ``_probe_memory``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from nlstudio.models.levels.base import Level, LevelProbe, State
from nlstudio.models.levels.common import check_level_shape, tensor_floats
from nlstudio.models.precision import full_precision, state_dtype, widen


@dataclass
class ChunkSplit:
    """A call's tokens, with the pending ones of earlier calls in front: ``xs [B, n, ·]`` (a
    tuple of such when :meth:`ChunkedMemoryLevel._chunks` was given a tuple; ``n = pending +
    new``), ``full`` complete chunks (``done = full·C`` tokens) and ``rest`` tokens left
    pending."""

    xs: Tensor | tuple[Tensor, ...]
    pending: int
    n: int
    full: int
    rest: int
    done: int


class ChunkedMemoryLevel(Level):
    """Base of the levels whose memory is written once per chunk of ``period`` tokens."""

    #: the state key of the memory's weight tuple
    memory_key: ClassVar[str] = "weights"

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        check_level_shape(self)
        if self.objective not in self.info.objectives:
            raise ValueError(f"level {self.level_id!r} ({self.info.name}): objective must be one "
                             f"of {', '.join(self.info.objectives)}, got {self.objective!r}")
        self.chunk = int(self.period)
        self.head_dim = d_model // heads
        self.use_momentum = False

    # -- state ------------------------------------------------------------------------------
    def init_state(self, batch: int, device=None, dtype=None) -> State:
        device, dtype = self._param_device_dtype(device, dtype)
        weights = tuple(p.to(device=device, dtype=dtype).unsqueeze(0).expand(batch, *p.shape)
                        for p in self.memory_init)
        state: State = {
            "t": 0, "updates": 0,
            "write_norms": torch.zeros(0, device=device, dtype=dtype),
            "last_write": None,
            self.memory_key: weights,
            "pending": torch.zeros(batch, 0, self._pending_width(), device=device, dtype=dtype),
            "conv": self.conv.init_history(batch, device, dtype),
        }
        if self.use_momentum:
            state["momentum"] = tuple(torch.zeros(batch, *p.shape, device=device, dtype=dtype)
                                      for p in self.memory_init)
        return state

    def _pending_width(self) -> int:
        """Channels of a pending token as the state keeps it."""
        return self.d_model

    # -- one call ---------------------------------------------------------------------------
    def forward(self, x: Tensor, state: State | None = None, *, frozen: bool = False
                ) -> tuple[Tensor, State]:
        """``frozen``: every token reads the memory as it is in ``state``; no memory and no
        momentum changes, while ``t``, the convolution history and the pending tokens advance
        as usual."""
        if state is None:
            state = self.init_state(x.shape[0], x.device, state_dtype(x))
        if x.shape[1] == 0:
            return self._empty_call(x, state)
        inputs, history = self._project(x, state["conv"])
        # the memory's chunk steps and its state in float32 under bf16 autocast
        # (models/precision.py); the projections before and the output after follow autocast
        with full_precision(x):
            o, new_state = self._memory_pass(widen(x), widen(inputs), history, state, frozen)
        return self._output(o, x), new_state

    def _project(self, x: Tensor, history: Tensor | None) -> tuple[Tensor, Tensor]:
        """The memory's inputs ``[B, T, ·]`` (the short convolution applied) and the
        convolution's new history."""
        raise NotImplementedError

    def _memory_pass(self, x: Tensor, inputs: Tensor, history: Tensor, state: State,
                     frozen: bool) -> tuple[Tensor, State]:
        """The chunks of one call: the reads ``o [B·H, T, dh]`` of its tokens, the new state."""
        raise NotImplementedError

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """Reads ``o [B·H, T, dh]`` of the tokens of ``x`` -> the level's output."""
        raise NotImplementedError

    def _empty_call(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        b = x.shape[0]
        norms = x.new_zeros(0, dtype=state["write_norms"].dtype)
        return x.new_zeros(b, 0, self.d_model), {**state, "write_norms": norms}

    def _chunks(self, new: Tensor | tuple[Tensor, ...], state: State) -> ChunkSplit:
        """The pending tokens of earlier calls followed by ``new``, cut into chunks. ``new``
        may be a tuple of tensors ``[B, T, ·]`` that a pending token keeps side by side (the
        state's ``pending`` holds them concatenated along the last dim); ``xs`` is then the
        tuple, each with its pending tokens in front (separate tensors, so autograd never
        slices a concatenation apart)."""
        parts = new if isinstance(new, tuple) else (new,)
        pending = state["pending"]
        p = pending.shape[1]
        n = p + parts[0].shape[1]
        if p:
            pend = pending.to(parts[0].dtype).split([z.shape[-1] for z in parts], dim=-1)
            parts = tuple(torch.cat((a, z), dim=1) for a, z in zip(pend, parts))
        full, rest = divmod(n, self.chunk)
        xs = parts if isinstance(new, tuple) else parts[0]
        return ChunkSplit(xs, p, n, full, rest, full * self.chunk)

    def _write_norm_series(self, per_chunk: Tensor | None, split: ChunkSplit, t_new: int,
                           like: Tensor) -> Tensor:
        """``[t_new]``: each complete chunk's write norm at its last token, 0 elsewhere."""
        norms = torch.zeros(t_new, device=like.device, dtype=like.dtype)
        if split.full:
            ends_at = (torch.arange(1, split.full + 1, device=like.device) * self.chunk - 1
                       - split.pending)
            norms[ends_at] = per_chunk.to(like.dtype)
        return norms

    def _next_state(self, state: State, split: ChunkSplit, t_new: int, write_norms: Tensor,
                    last_write: Tensor | None, weights: tuple, momentum: tuple | None,
                    conv_history: Tensor, wrote: bool = True) -> State:
        """The state after a call; ``wrote`` False (a frozen call): the complete chunks were
        read but not written, so ``updates`` stays."""
        new: State = {
            "t": state["t"] + t_new,
            "updates": state["updates"] + (split.full if wrote else 0),
            "write_norms": write_norms,
            "last_write": last_write,
            self.memory_key: weights,
            "pending": (torch.cat([z[:, split.done:] for z in split.xs], dim=-1)
                        if isinstance(split.xs, tuple) else split.xs[:, split.done:]),
            "conv": conv_history,
        }
        if self.use_momentum:
            new["momentum"] = momentum
        return new

    # -- what the level costs ---------------------------------------------------------------
    @property
    def compute_chunk(self) -> int:
        """Tokens per sequential step: the period C (one write per chunk)."""
        return self.chunk

    def state_floats(self, batch: int = 1) -> int:
        """Floats of the in-context state for ``batch`` sequences at its largest: the memory
        (and momentum), the convolution history and up to C − 1 pending tokens."""
        fresh = tensor_floats(self.init_state(batch, device="meta"))
        return fresh + batch * (self.chunk - 1) * self._pending_width()

    # -- probes -----------------------------------------------------------------------------
    def _probe_memory(self, state: State) -> Tensor:
        """2-D: the memory of batch element 0, head 0, as the plots show it."""
        raise NotImplementedError

    def probe(self, state: State) -> LevelProbe:
        norms = state.get("write_norms")
        last = state.get("last_write")
        return LevelProbe(
            memory=self._probe_memory(state).detach().cpu(),
            write=None if last is None else last.detach().cpu(),
            updates=int(state["updates"]),
            write_norms=None if norms is None else norms.detach().cpu(),
        )
