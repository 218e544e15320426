"""The (gated) delta rule: a matrix memory that erases before it writes (DeltaNet, Yang et al.
2024; Gated DeltaNet, Yang, Kautz & Hatamizadeh 2024, in its published form).

Per head, after a decay α_t, one step of size β_t on ½‖M k_t − v_t‖² taken at the decayed
memory α_t M_{t−1} (Gated DeltaNet: the gate decays the erase term too):

    M_t = α_t M_{t−1} (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ = α_t M_{t−1} + u_t k_tᵀ,
    u_t = β_t (v_t − α_t M_{t−1} k_t)                   (the surprise, written on key k_t)
    y_t = M_t q_t

with β_t = η·σ(w_β·x_t + b_β) (η: the inner optimizer's ``eta``, 1 by default, so β_t ∈ (0, 1)
as in the paper) and, when the gate is on, α_t = σ(w_α·x_t + b_α) (else 1: DeltaNet). As in
DeltaNet / Gated DeltaNet (and flash-linear-attention's layers), q, k and v are the short causal
convolution (option ``conv``) of their projections followed by SiLU, and q, k are then
L2-normalised, so the step is a contraction for β_t ≤ 1.

Computed exactly chunk-wise (the WY/UT form of the papers' chunked training). Inside a chunk
with cumulative log-decays Γ_j = Σ_{i≤j} log α_i (from its start, Γ_0 = 0) the memory is
``M_j = e^{Γ_j} M_0 + Σ_{i≤j} e^{Γ_j − Γ_i} u_i k_iᵀ``, so ``α_j M_{j−1} k_j`` expands and the
surprises satisfy the unit lower-triangular system

    u_j + β_j Σ_{i<j} e^{Γ_j − Γ_i} (k_j·k_i) u_i = β_j (v_j − e^{Γ_j} M_0 k_j),

solved once for all chunks (its right side is affine in the chunk-start memory M_0, so only a
few matmuls per chunk remain sequential). Then
``y_t = e^{Γ_t} M_0 q_t + Σ_{j≤t} e^{Γ_t − Γ_j} (k_j·q_t) u_j`` and
``M_L = e^{Γ_L} M_0 + Σ_j e^{Γ_L − Γ_j} u_j k_jᵀ``. Every exponent is ≤ 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.levels import fla_kernels
from nlstudio.models.levels.common import head_timescale_bias
from nlstudio.models.levels.matrix_memory import MatrixMemoryLevel

CHUNK = 64


def _pad_time(x: Tensor, pad: int) -> Tensor:
    if not pad:
        return x
    return F.pad(x, (0, pad)) if x.ndim == 3 else F.pad(x, (0, 0, 0, pad))


def chunked_delta_rule(q: Tensor, k: Tensor, v: Tensor, eta: Tensor, log_alpha: Tensor | None,
                       memory: Tensor, chunk: int = CHUNK) -> tuple[Tensor, Tensor, Tensor]:
    """Exact ``M_t = α_t M_{t−1}(I − η_t k_t k_tᵀ) + η_t v_t k_tᵀ`` (Gated DeltaNet), i.e.
    ``M_t = α_t M_{t−1} + u_t k_tᵀ`` with ``u_t = η_t (v_t − α_t M_{t−1} k_t)``, and
    ``y_t = M_t q_t``.

    q, k: ``[B, H, T, d_k]``; v: ``[B, H, T, d_v]``; eta, log_alpha: ``[B, H, T]`` (log_alpha
    None: α = 1); memory ``[B, H, d_v, d_k]``. Returns ``y [B, H, T, d_v]``, the surprises
    ``u [B, H, T, d_v]`` and the final memory.
    """
    b, h, t, dk = k.shape
    dv = v.shape[-1]
    if t == 0:
        empty = v.new_zeros(b, h, 0, dv)
        return empty, empty, memory
    n = -(-t // chunk)
    pad = n * chunk - t
    # Padding with k = v = η = 0 and log α = 0 leaves the memory untouched: exact.
    qc, kc, vc = (_pad_time(z, pad).view(b, h, n, chunk, z.shape[-1]) for z in (q, k, v))
    etac = _pad_time(eta, pad).view(b, h, n, chunk, 1)
    strict = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril(-1)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    kk = kc @ kc.mT
    qk = qc @ kc.mT
    if log_alpha is None:
        gam = None
        lower = (etac * kk).masked_fill(~strict, 0.0)
        read = qk.masked_fill(~causal, 0.0)
        rhs_k = etac * kc
        q_dec = qc
    else:
        gam = torch.cumsum(_pad_time(log_alpha, pad).view(b, h, n, chunk, 1), dim=3)  # Γ_j
        pair = gam - gam.mT  # Γ_j − Γ_i (≤ 0 on and below the diagonal)
        lower = etac * kk * pair.masked_fill(~strict, float("-inf")).exp()
        read = qk * pair.masked_fill(~causal, float("-inf")).exp()
        rhs_k = etac * gam.exp() * kc
        q_dec = qc * gam.exp()
    # One batched triangular solve: u = ū − w̄ M_0ᵀ with ū = T⁻¹ η V, w̄ = T⁻¹ η e^{Γ_j} K.
    # Solved in at least float32 (no half-precision triangular solve; better conditioned).
    work = torch.promote_types(q.dtype, torch.float32)
    eye = torch.eye(chunk, dtype=work, device=q.device)
    rhs = torch.cat((etac * vc, rhs_k), -1).to(work)
    solved = torch.linalg.solve_triangular(eye + lower.to(work), rhs, upper=False,
                                           unitriangular=True).to(q.dtype)
    u_bar, w_bar = solved[..., :dv], solved[..., dv:]
    if gam is None:
        end_weight = None
        end_decay = None
    else:
        end_weight = (gam[:, :, :, -1:] - gam).exp()  # e^{Γ_L − Γ_j}
        end_decay = gam[:, :, :, -1:, :].exp()  # e^{Γ_L}, [B, H, N, 1, 1]
    # The chunks as lists, unbound once: indexing ``z[:, :, c]`` under autograd would give each
    # chunk's backward a zero gradient as large as the whole call's (O(T) per chunk, O(T²) in
    # all); unbind's backward stacks the pieces' gradients once.
    u_bars, w_bars, q_decs, reads, ks = (z.unbind(2) for z in (u_bar, w_bar, q_dec, read, kc))
    if gam is not None:
        end_decays, end_weights = end_decay.unbind(2), end_weight.unbind(2)
    ys, us = [], []
    for c in range(n):  # sequential only across chunks
        u = u_bars[c] - w_bars[c] @ memory.mT
        ys.append(q_decs[c] @ memory.mT + reads[c] @ u)
        us.append(u)
        if gam is None:
            memory = memory + u.mT @ ks[c]
        else:
            memory = end_decays[c] * memory + (u * end_weights[c]).mT @ ks[c]
    y = torch.stack(ys, 2).reshape(b, h, n * chunk, dv)[:, :, :t]
    u = torch.stack(us, 2).reshape(b, h, n * chunk, dv)[:, :, :t]
    return y, u, memory


class DeltaLevel(MatrixMemoryLevel):
    kind = "delta"
    qkv_activation = "silu"  # DeltaNet / Gated DeltaNet: SiLU after the short convolution
    intra_chunk_matrices = 10  # K Kᵀ, Q Kᵀ, decays, the triangular system and its solution

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        self.gated = bool(self.option("gate"))
        self.chunk = CHUNK  # internal compute chunk: changes speed, never the result
        self.eta_proj = nn.Linear(d_model, heads)  # β_t = η σ(w_β·x_t + b_β)
        self.alpha_proj: nn.Linear | None = None
        if self.gated:
            self.alpha_proj = nn.Linear(d_model, heads)  # α_t = σ(w_α·x_t + b_α)
            with torch.no_grad():
                self.alpha_proj.weight.mul_(0.1)
                self.alpha_proj.bias.copy_(head_timescale_bias(heads))

    def rates(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """β_t (the step, ``eta`` in the code) and log α_t as ``[B, H, T]`` (log α None without
        the gate)."""
        eta = self.eta * torch.sigmoid(self.eta_proj(x)).transpose(1, 2)
        if self.alpha_proj is None:
            return eta, None
        return eta, F.logsigmoid(self.alpha_proj(x)).transpose(1, 2)

    def recur(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, memory: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
        eta, log_alpha = self.rates(x)
        if fla_kernels.use_fla(q, v):  # CUDA with flash-linear-attention: its kernels
            y, u, memory = fla_kernels.delta_rule(q, k, v, eta, log_alpha, memory)
        else:
            y, u, memory = chunked_delta_rule(q, k, v, eta, log_alpha, memory, self.chunk)
        return y, memory, u
