"""The (gated) delta rule: a matrix memory that erases before it writes.

Per head, one GD step of size η_t on ½‖M k_t − v_t‖² after a decay α_t (arXiv Eq. 88 with a
matrix memory; DeltaNet / Gated DeltaNet):

    M_t = M_{t−1} (α_t I − η_t k_t k_tᵀ) + η_t v_t k_tᵀ = α_t M_{t−1} + u_t k_tᵀ,
    u_t = η_t (v_t − M_{t−1} k_t)                       (the surprise, written on key k_t)
    y_t = M_t q_t

with η_t = η·σ(w_η·x_t + b_η) and, when the gate is on, α_t = σ(w_α·x_t + b_α) (else 1);
q and k are L2-normalised so the step is stable for η_t < 2.

Computed exactly chunk-wise (the WY/UT form of DeltaNet's chunked training). Inside a chunk with
cumulative log-decays Γ (Γ_0 = 0 at its start) the surprises satisfy the unit lower-triangular
system

    u_j + η_j Σ_{i<j} e^{Γ_{j−1} − Γ_i} (k_j·k_i) u_i = η_j (v_j − e^{Γ_{j−1}} M_0 k_j),

solved once for all chunks (its right side is affine in the chunk-start memory M_0, so only a
few matmuls per chunk remain sequential). Then
``y_t = e^{Γ_t} M_0 q_t + Σ_{j≤t} e^{Γ_t − Γ_j} (k_j·q_t) u_j`` and
``M_L = e^{Γ_L} M_0 + Σ_j e^{Γ_L − Γ_j} u_j k_jᵀ``. Every exponent is ≤ 0.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.levels.common import MatrixMemoryLevel, head_timescale_bias

CHUNK = 64


def _pad_time(x: Tensor, pad: int) -> Tensor:
    if not pad:
        return x
    return F.pad(x, (0, pad)) if x.ndim == 3 else F.pad(x, (0, 0, 0, pad))


def chunked_delta_rule(q: Tensor, k: Tensor, v: Tensor, eta: Tensor, log_alpha: Tensor | None,
                       memory: Tensor, chunk: int = CHUNK) -> tuple[Tensor, Tensor, Tensor]:
    """Exact ``M_t = α_t M_{t−1} + u_t k_tᵀ``, ``u_t = η_t (v_t − M_{t−1} k_t)``, ``y_t = M_t q_t``.

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
        gam_prev = gam - _pad_time(log_alpha, pad).view(b, h, n, chunk, 1)  # Γ_{j−1}
        decay = (gam_prev - gam.mT).masked_fill(~strict, float("-inf")).exp()
        lower = etac * kk * decay
        read = qk * (gam - gam.mT).masked_fill(~causal, float("-inf")).exp()
        rhs_k = etac * gam_prev.exp() * kc
        q_dec = qc * gam.exp()
    # One batched triangular solve: u = ū − w̄ M_0ᵀ with ū = T⁻¹ η V, w̄ = T⁻¹ η e^{Γ_{j−1}} K.
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
    ys, us = [], []
    for c in range(n):  # sequential only across chunks
        u = u_bar[:, :, c] - w_bar[:, :, c] @ memory.mT
        ys.append(q_dec[:, :, c] @ memory.mT + read[:, :, c] @ u)
        us.append(u)
        if gam is None:
            memory = memory + u.mT @ kc[:, :, c]
        else:
            memory = end_decay[:, :, c] * memory + (u * end_weight[:, :, c]).mT @ kc[:, :, c]
    y = torch.stack(ys, 2).reshape(b, h, n * chunk, dv)[:, :, :t]
    u = torch.stack(us, 2).reshape(b, h, n * chunk, dv)[:, :, :t]
    return y, u, memory


class DeltaLevel(MatrixMemoryLevel):
    kind = "delta"

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        self.gated = bool(self.option("gate"))
        self.chunk = CHUNK  # internal compute chunk: changes speed, never the result
        self.eta_proj = nn.Linear(d_model, heads)  # η_t = η σ(w_η·x_t + b_η)
        self.alpha_proj: nn.Linear | None = None
        if self.gated:
            self.alpha_proj = nn.Linear(d_model, heads)  # α_t = σ(w_α·x_t + b_α)
            with torch.no_grad():
                self.alpha_proj.weight.mul_(0.1)
                self.alpha_proj.bias.copy_(head_timescale_bias(heads))

    def rates(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """η_t and log α_t as ``[B, H, T]`` (log α None without the gate)."""
        eta = self.eta * torch.sigmoid(self.eta_proj(x)).transpose(1, 2)
        if self.alpha_proj is None:
            return eta, None
        return eta, F.logsigmoid(self.alpha_proj(x)).transpose(1, 2)

    def forward(self, x: Tensor, state: dict[str, Any] | None = None
                ) -> tuple[Tensor, dict[str, Any]]:
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        q, k, v, history = self.project_stream(x, state["conv"])
        eta, log_alpha = self.rates(x)
        y, u, memory = chunked_delta_rule(q, k, v, eta, log_alpha, state["M"], self.chunk)
        return self.finish(y, memory, state, u, k, history)
