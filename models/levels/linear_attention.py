"""Linear attention: a matrix memory written every token by one GD step on −⟨M k, v⟩.

Per head, ``M_t = diag(a_t) M_{t−1} + η v_t k_tᵀ`` acting on the key dimension (columns) and
``y_t = M_t q_t`` (NeurIPS §2 / arXiv §4: the gradient of −⟨M k, v⟩ is −v kᵀ; η = 1 is classic
linear attention). The gate ``a_t`` is 1 (``none``), one data-dependent scalar per head
(``scalar``, RetNet/GLA style) or one per key dimension (``vector``, GLA), with
``log a_t = logsigmoid(W x_t + b)``.

Computed exactly and chunk-wise in parallel: inside a chunk a causal masked
``(Q Kᵀ ⊙ decay) V``; across chunks the chunk-start memories are a weighted sum of the chunks'
own writes (pairwise decays between chunks, all exponents ≤ 0), read as ``Q·M``. The compute
chunk is internal (no effect on the result); the level's period is 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.levels import fla_kernels
from nlstudio.models.levels.common import head_timescale_bias
from nlstudio.models.levels.matrix_memory import MatrixMemoryLevel

CHUNK = 64
VECTOR_CHUNK = 16  # the vector gate's intra-chunk decays are [L, L, d_k] per chunk


def _pad_time(x: Tensor, pad: int) -> Tensor:
    return F.pad(x, (0, 0, 0, pad)) if pad else x


def chunked_linear_attention(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor | None,
                             memory: Tensor, chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """Exact ``M_t = diag(a_t) M_{t−1} + v_t k_tᵀ``, ``y_t = M_t q_t`` for all t at once.

    q, k: ``[B, H, T, d_k]``; v: ``[B, H, T, d_v]`` (already scaled by η); log_a:
    ``[B, H, T, G]`` with G = 1 (one decay per head) or d_k, or None (no decay); memory
    ``[B, H, d_v, d_k]``. Returns ``y [B, H, T, d_v]`` and the final memory.
    """
    b, h, t, dk = k.shape
    dv = v.shape[-1]
    if t == 0:
        return v.new_zeros(b, h, 0, dv), memory
    n = -(-t // chunk)
    pad = n * chunk - t
    # Padding: zero keys/values write nothing and a zero log-decay keeps M, so it is exact.
    qc, kc, vc = (_pad_time(z, pad).view(b, h, n, chunk, z.shape[-1]) for z in (q, k, v))
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    if log_a is None:
        intra = (qc @ kc.mT).masked_fill(~causal, 0.0) @ vc
        writes = vc.mT @ kc  # [B, H, N, d_v, d_k]: each chunk's summed writes
        starts = torch.cumsum(writes, dim=2) - writes + memory.unsqueeze(2)
        final = memory + writes.sum(2)
        y = intra + qc @ starts.mT
        return y.reshape(b, h, n * chunk, dv)[:, :, :t], final

    g = log_a.shape[-1]
    cum = torch.cumsum(_pad_time(log_a, pad).view(b, h, n, chunk, g), dim=3)  # b_i ≤ 0
    if g == 1:
        diff = (cum - cum.mT).masked_fill(~causal, float("-inf"))  # b_i − b_j, j ≤ i
        intra = ((qc @ kc.mT) * diff.exp()) @ vc
    else:
        # [B, H, N, L, L, d_k]; b_i − b_j ≤ 0 on the causal part, the clamp only guards the
        # (masked) upper triangle against overflow.
        decay = (cum.unsqueeze(-2) - cum.unsqueeze(-3)).clamp_max(0.0).exp()
        scores = (qc.unsqueeze(-2) * kc.unsqueeze(-3) * decay).sum(-1)
        intra = scores.masked_fill(~causal, 0.0) @ vc
    last = cum[:, :, :, -1:]  # [B, H, N, 1, G]: a whole chunk's log-decay
    writes = vc.mT @ (kc * (last - cum).exp())  # decayed to the chunk's end
    # Chunk-start memories (and the final one as row N), pairwise between chunks:
    # M_start[c] = e^{E_excl[c]} M_0 + Σ_{s<c} e^{E_excl[c] − E[s]} writes[s].
    total = last.squeeze(3)  # [B, H, N, G]
    e_incl = torch.cumsum(total, dim=2)
    e_excl = torch.cat((e_incl - total, e_incl[:, :, -1:]), dim=2)  # [B, H, N+1, G]
    before = torch.ones(n + 1, n, dtype=torch.bool, device=q.device).tril(-1)
    pair = (e_excl.unsqueeze(3) - e_incl.unsqueeze(2))  # [B, H, N+1, N, G]
    pair = pair.masked_fill(~before[..., None], float("-inf")).exp()
    if g == 1:
        carried = torch.einsum("bhcs,bhsvk->bhcvk", pair[..., 0], writes)
    else:
        carried = torch.einsum("bhcsk,bhsvk->bhcvk", pair, writes)
    starts = e_excl.exp().unsqueeze(-2) * memory.unsqueeze(2) + carried  # [B, H, N+1, dv, dk]
    inter = (qc * cum.exp()) @ starts[:, :, :n].mT
    y = (intra + inter).reshape(b, h, n * chunk, dv)[:, :, :t]
    return y, starts[:, :, n]


class LinearAttentionLevel(MatrixMemoryLevel):
    kind = "linear_attention"

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        self.gate = self.option("gate")
        if self.gate not in ("none", "scalar", "vector"):
            raise ValueError(f"{self.level_id}: gate must be none, scalar or vector, got "
                             f"{self.gate!r}")
        # Internal compute chunk: changes speed, never the result.
        self.chunk = VECTOR_CHUNK if self.gate == "vector" else CHUNK
        # the scalar gate keeps its pairwise decays and the decayed scores too
        self.intra_chunk_matrices = 6 if self.gate == "scalar" else 2
        self.gate_proj: nn.Linear | None = None
        if self.gate != "none":
            width = 1 if self.gate == "scalar" else self.d_head
            self.gate_proj = nn.Linear(d_model, heads * width)
            with torch.no_grad():
                self.gate_proj.weight.mul_(0.1)
                bias = head_timescale_bias(heads).repeat_interleave(width)
                self.gate_proj.bias.copy_(bias)

    def log_decay(self, x: Tensor) -> Tensor | None:
        """``log a_t`` as ``[B, H, T, 1 or d_k]`` (None without a gate)."""
        if self.gate_proj is None:
            return None
        b, t, _ = x.shape
        logits = self.gate_proj(x).view(b, t, self.heads, self.gate_proj.out_features // self.heads)
        logits = logits.transpose(1, 2)
        return F.logsigmoid(logits)

    def recur(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, memory: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
        v = self.eta * v  # one GD step of size η on −⟨Mk, v⟩ writes η v kᵀ
        if fla_kernels.use_fla(q, v):  # CUDA with flash-linear-attention: its kernels
            y, memory = fla_kernels.linear_attention(q, k, v, self.log_decay(x), memory)
        else:
            y, memory = chunked_linear_attention(q, k, v, self.log_decay(x), memory, self.chunk)
        return y, memory, v

    def activation_floats_per_token(self, seq_len: int) -> int:
        """:meth:`MatrixMemoryLevel.activation_floats_per_token`, plus (vector gate) the
        per-key-dimension intra-chunk decays and the products over them, ``4·C·d`` a token."""
        extra = 4 * self.chunk * self.d_model if self.gate == "vector" else 0
        return super().activation_floats_per_token(seq_len) + extra
