"""Plumbing shared by the per-token matrix memories (``linear_attention``, ``delta``).

Per head, a fast weight ``M [d_v, d_k]`` written at every token and read as ``y_t = M_t q_t``
(the read comes after the token's write, as in linear attention and DeltaNet); q/k/v/out
projections with a short causal depthwise convolution over time on q, k, v (option ``conv``,
its width; 0: none); the state ``{"M": [B, H, d_v, d_k], "conv": [B, width−1, 3·d_model],
"t", "updates", "write_norms", "last_write"}``. The inner optimizer's ``eta`` scales every
write. A subclass implements :meth:`recur`, the exact recurrence over a call's tokens.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.levels.base import Level, LevelProbe
from nlstudio.models.levels.common import (CausalConv1d, check_level_shape, conv_qkv,
                                           l2_normalize, merge_heads, split_heads,
                                           write_norm_series)
from nlstudio.models.precision import full_precision, state_dtype, widen


class MatrixMemoryLevel(Level):
    """Base of the matrix memories written every token (see the module docstring)."""

    #: applied to q, k, v after the convolution (before the L2 norm of q, k): None or "silu"
    qkv_activation: ClassVar[str | None] = None
    #: C×C matrices per head kept for the backward pass of a chunk (scores, decays, solves)
    intra_chunk_matrices: ClassVar[int] = 2

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        check_level_shape(self)
        self.eta = float(self.make_inner_optimizer().hp["eta"])
        self.d_head = d_model // heads
        self.chunk = 64  # the internal compute chunk (set by the subclass): never the result
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.conv = CausalConv1d(3 * d_model, int(self.option("conv")))
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> dict[str, Any]:
        device, dtype = self._param_device_dtype(device, dtype)
        return {"t": 0, "updates": 0,
                "write_norms": torch.zeros(0, device=device, dtype=dtype),
                "last_write": None,
                "M": torch.zeros(batch, self.heads, self.d_head, self.d_head, device=device,
                                 dtype=dtype),
                "conv": self.conv.init_history(batch, device, dtype)}

    # -- q, k, v ----------------------------------------------------------------------------
    def project(self, x: Tensor, history: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """q, k (L2-normalised) and v as ``[B, H, T, d_head]`` of ``x`` continuing a stream
        whose convolution history is ``history`` (None: a fresh stream)."""
        return self.project_stream(x, history)[:3]

    def project_stream(self, x: Tensor, history: Tensor | None
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`project`, and the convolution's new input history."""
        q, k, v, history = conv_qkv(self.conv, (self.q_proj(x), self.k_proj(x), self.v_proj(x)),
                                    history)
        return (*self._shape(q, k, v), history)

    def _shape(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.qkv_activation == "silu":
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        return (l2_normalize(split_heads(q, self.heads)),
                l2_normalize(split_heads(k, self.heads)), split_heads(v, self.heads))

    # -- the call ---------------------------------------------------------------------------
    def recur(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, memory: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
        """The exact recurrence over the call's tokens: ``(y [B, H, T, d_v], final memory,
        surprise u [B, H, T, d_v])``, where every write is ``u_t k_tᵀ`` after the decay."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: dict[str, Any] | None = None, *, frozen: bool = False
                ) -> tuple[Tensor, dict[str, Any]]:
        """``frozen``: read every token with the memory in ``state``, write nothing (no
        decay either); the convolution history and ``t`` advance as usual."""
        if state is None:
            state = self.init_state(x.shape[0], x.device, state_dtype(x))
        q, k, v, history = self.project_stream(x, state["conv"])
        t = x.shape[1]
        new = dict(state)
        new["conv"] = history
        new["t"] = state["t"] + t
        if frozen:
            new["write_norms"] = state["M"].new_zeros(t)
            return self.out_proj(merge_heads(self._read(state["M"], q))), new
        # the recurrence and the memory in float32 under bf16 autocast (models/precision.py)
        with full_precision(x):
            x, q, k, v = widen(x), widen(q), widen(k), widen(v)
            y, memory, surprise = self.recur(x, q, k, v, state["M"])
        new["M"] = memory
        new["updates"] = state["updates"] + t
        with torch.no_grad():
            new["write_norms"] = write_norm_series(surprise.detach(), k.detach())
            if t:
                new["last_write"] = torch.outer(surprise[0, 0, -1], k[0, 0, -1]).detach()
        return self.out_proj(merge_heads(y)), new

    @staticmethod
    def _read(memory: Tensor, q: Tensor) -> Tensor:
        """``M q_t`` for every token: ``[B, H, T, d_v]``."""
        return q @ memory.mT

    def read(self, state: dict[str, Any], x: Tensor) -> Tensor:
        """``out_proj(M q(x))`` with the memory in ``state``, each token of ``x`` read alone
        (no convolution history: the filter's newest tap only); nothing is written."""
        qkv = self.conv.alone(torch.cat((self.q_proj(x), self.k_proj(x), self.v_proj(x)), -1))
        q, _, _ = self._shape(*qkv.chunk(3, dim=-1))
        memory = state["M"]
        if memory.shape[0] != x.shape[0]:
            memory = memory.expand(x.shape[0], *memory.shape[1:])
        return self.out_proj(merge_heads(self._read(memory, q)))

    # -- what the level costs ---------------------------------------------------------------
    @property
    def compute_chunk(self) -> int:
        """Tokens per sequential step of the chunk-parallel form (its internal chunk)."""
        return self.chunk

    def activation_floats_per_token(self, seq_len: int) -> int:
        """Kept for the backward pass, per token: input, norm, output (3·d), q, k, v and their
        projections (6·d), the convolution's output (3·d), the C×C intra-chunk matrices
        (``intra_chunk_matrices·heads·C``) and one memory state per internal chunk
        (``⌈T/C⌉·heads·d_h²``, spread over the T tokens). Checked against the tensors autograd
        actually saves (tests/models/test_level_api.py)."""
        d, c = self.d_model, self.chunk
        per = (9 * d + (3 * d if self.conv.weight is not None else 0)
               + self.intra_chunk_matrices * self.heads * c)
        states = math.ceil(seq_len / c) * self.heads * self.d_head ** 2
        return per + math.ceil(states / max(seq_len, 1))

    def probe(self, state: dict[str, Any]) -> LevelProbe:
        last = state.get("last_write")
        return LevelProbe(memory=state["M"][0, 0].detach(),
                          write=None if last is None else last.detach(),
                          updates=int(state["updates"]),
                          write_norms=state["write_norms"].detach())
