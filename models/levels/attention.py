"""Causal softmax attention: a non-parametric memory that re-reads its context every token.

The closed-form (Nadaraya–Watson) solution of a weighted ℓ2 regression over the cached
(key, value) pairs: nothing is written by gradient steps, the "memory" is the KV cache
(frequency ∞). Rotary positions use absolute stream positions, and the state keeps every past
key/value (or, with a sliding ``window`` of w tokens, the last w − 1: all a later query can
still see) and the short convolution's input history, so a stream split over calls gives the
same outputs as one call.

Option ``conv`` (width, 0: none): a causal depthwise convolution over time on the q, k, v
projections, before the rotary positions; the cache holds the convolved keys and values.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.levels.base import Level, LevelProbe
from nlstudio.models.levels.common import (CausalConv1d, apply_rope, check_level_shape, conv_qkv,
                                          merge_heads, split_heads)
from nlstudio.models.precision import state_dtype

PROBE_TOKENS = 64


class AttentionLevel(Level):
    kind = "attention"

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        check_level_shape(self)
        window = self.option("window")
        if window is not None and int(window) < 1:
            raise ValueError(f"{self.level_id}: window must be >= 1 or null, got {window}")
        self.window: int | None = None if window is None else int(window)
        self.d_head = d_model // heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        # the short causal convolution on q, k, v (option ``conv``): what lets a small
        # attention model form its previous-token lookups quickly (H3, Based, Zoology)
        self.conv = CausalConv1d(3 * d_model, int(self.option("conv")))
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> dict[str, Any]:
        device, dtype = self._param_device_dtype(device, dtype)
        empty = torch.zeros(batch, self.heads, 0, self.d_head, device=device, dtype=dtype)
        return {"t": 0, "updates": 0, "write_norms": torch.zeros(0, device=device, dtype=dtype),
                "last_write": None, "k": empty, "v": empty.clone(), "attn_map": None,
                "conv": self.conv.init_history(batch, device, dtype)}

    def visible(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """Boolean ``[T_q, T_k]``: key j is visible to query i (causal, within the window)."""
        ok = k_pos[None, :] <= q_pos[:, None]
        if self.window is not None:
            ok = ok & (k_pos[None, :] > q_pos[:, None] - self.window)
        return ok

    def forward(self, x: Tensor, state: dict[str, Any] | None = None, *, frozen: bool = False
                ) -> tuple[Tensor, dict[str, Any]]:
        if frozen:
            raise ValueError(f"level {self.level_id!r}: attention writes no weights in context "
                             f"(it re-reads its context), so it cannot be frozen")
        if state is None:
            state = self.init_state(x.shape[0], x.device, state_dtype(x))
        t0, t = state["t"], x.shape[1]
        pos = torch.arange(t0, t0 + t, device=x.device)
        q, k, v, history = conv_qkv(self.conv, (self.q_proj(x), self.k_proj(x), self.v_proj(x)),
                                    state["conv"])
        q = apply_rope(split_heads(q, self.heads), pos)
        k = apply_rope(split_heads(k, self.heads), pos)
        v = split_heads(v, self.heads)
        cached = state["k"].shape[2]
        keys = torch.cat((state["k"], k), dim=2) if cached else k
        values = torch.cat((state["v"], v), dim=2) if cached else v
        k_pos = torch.arange(t0 - cached, t0 + t, device=x.device)
        if cached == 0 and self.window is None:
            y = F.scaled_dot_product_attention(q, keys, values, is_causal=True)  # fast path
        else:
            y = F.scaled_dot_product_attention(q, keys, values,
                                               attn_mask=self.visible(pos, k_pos))
        keep = keys.shape[2] if self.window is None else min(self.window - 1, keys.shape[2])
        new = dict(state)
        # the cache keeps the state's dtype (float32 under bf16 autocast: models/precision.py)
        dtype = state["k"].dtype
        new["k"] = keys[:, :, keys.shape[2] - keep:].to(dtype)
        new["v"] = values[:, :, values.shape[2] - keep:].to(dtype)
        new["conv"] = history
        new["t"] = t0 + t
        new["updates"] = t0 + t  # every token is written to the context
        with torch.no_grad():
            # Per-token norm of what enters the cache, ‖[k_t; v_t]‖ per head, summed over heads.
            kv = torch.cat((k, v), dim=-1).detach()
            new["write_norms"] = kv.norm(dim=-1).sum(1).mean(0).to(dtype)
            new["attn_map"] = (self._probe_map(q, keys, pos, k_pos).to(dtype) if t
                               else state["attn_map"])
        return self.out_proj(merge_heads(y)), new

    def read(self, state: dict[str, Any], x: Tensor) -> None:
        """None: attention has no associative memory to read without its context."""
        return None

    @property
    def compute_chunk(self) -> None:
        """None: no sequential step (every token attends to its context in parallel)."""
        return None

    def activation_floats_per_token(self, seq_len: int) -> int:
        """Kept for the backward pass, per token: input, norm, output (3·d), q, k, v, o (4·d),
        the convolution's output (3·d, with a convolution) and the softmax weights
        (``heads × min(T, window)``)."""
        d = self.d_model
        seen = seq_len if self.window is None else min(seq_len, self.window)
        conv = 3 * d if self.conv.weight is not None else 0
        return 7 * d + conv + self.heads * seen

    def _probe_map(self, q: Tensor, keys: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """Attention weights of head 0, batch 0: the last ≤ 64 queries over the last ≤ 64 keys
        (normalised over every key the query sees)."""
        qs = q[0, 0, -PROBE_TOKENS:].detach()
        logits = (qs @ keys[0, 0].detach().mT) / self.d_head ** 0.5
        logits = logits.masked_fill(~self.visible(q_pos[-PROBE_TOKENS:], k_pos), float("-inf"))
        return logits.softmax(-1)[:, -PROBE_TOKENS:]

    def probe(self, state: dict[str, Any]) -> LevelProbe:
        amap = state.get("attn_map")
        return LevelProbe(memory=None if amap is None else amap.detach(), write=None,
                          updates=int(state["updates"]),
                          write_norms=state["write_norms"].detach())
