"""One chunk of the self-modifying memory (depth 1, DGD, no momentum: every preset's setting) as
one autograd node with a hand-written backward.

The math is the general path's (levels/self_modifying.py ``_write`` with ``dgd_write``); this
node computes it with a fraction of the small ops (a chunk of 8 tokens is overhead-bound) and
builds no autograd graph per chunk. ``tests/models/test_self_modifying_chunk.py`` checks
outputs and gradients against the general path in float64 and with ``gradcheck``; a second
derivative through the node raises instead of being wrong.

Per sequence and head, with the five stacked memories ``W = [W_k; W_v; W_η; W_α; W_mem]``
(``[5·D, D]``) at the chunk's anchor, chunk inputs ``x [C, D]`` and queries ``q [C, D]``:

    k_t = normalize(W_k x_t),  v_t = W_v x_t,  η_t = eta·σ(r_η·W_η x_t + b_η),
    log α_t = log σ(r_α·W_α x_t + b_α),  v̂_t = W v_t,  read_t = W_mem q_t
    W_t = α_t W_{t−1} − err_t k_tᵀ,  err_t = β_t (W_{t−1} k_t − v̂_t),  β_t = η_t/(1 + η_t‖k_t‖²)

(the exact DGD step ``W_{t−1}(α_t I − β_t k kᵀ) + β_t v̂ kᵀ``). With ``A_t = Π_{j≤t} α_j`` the
running reads are ``W_{t−1} k_t = A_{t−1} W_0 k_t − Σ_{i<t} (A_{t−1}/A_i)(k_i·k_t) err_i``, so
``(I + diag(β) L) Err = diag(β)(diag(A_prev) W_0 K − V̂)`` with L strictly lower triangular
(one C×C unit-triangular solve), and ``W_C = A_C W_0 − Errᵀ diag(A_C/A_i) K``. Every decay
``A_t/A_s`` is an entry of ``exp(segsum)`` over ``[0, log α_1..C]`` (no difference of
cumulative sums), and the backward sums its gradient over the same ranges.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from nlstudio.models.chunked import segsum
from nlstudio.models.precision import without_autocast


def _rows(v: Tensor) -> Tensor:
    return v.unsqueeze(-1)


class SelfModifyingChunk(torch.autograd.Function):
    """``apply(eta, w [N, 5D, D], x [N, C, D], q [N, C, D], r_eta [N, D], b_eta [N],
    r_alpha [N, D], b_alpha [N], eps)`` -> ``(w_new [N, 5D, D], read [N, C, D])``."""

    @staticmethod
    @without_autocast
    def forward(ctx, eta_scale: float, w, x, q, r_eta, b_eta, r_alpha, b_alpha, eps: float):
        n, rows, d = w.shape
        c = x.shape[1]
        w4, wq = w[:, :4 * d], w[:, 4 * d:]
        y = torch.bmm(x, w4.transpose(1, 2))  # [N, C, 4D]: k, v, η, α pre-readouts
        kr, vv, er, ar = y.split(d, dim=-1)
        read = torch.bmm(q, wq.transpose(1, 2))
        norm = kr.norm(dim=-1, keepdim=True)
        nk = norm.clamp_min(eps)
        k = kr / nk
        s_eta = torch.sigmoid(torch.bmm(er, _rows(r_eta)).squeeze(-1) + _rows(b_eta))
        eta = s_eta * eta_scale
        z_a = torch.bmm(ar, _rows(r_alpha)).squeeze(-1) + _rows(b_alpha)
        la = F.logsigmoid(z_a)
        n2 = k.square().sum(-1)
        beta = eta / (1 + eta * n2)
        kv = torch.cat((k, vv), dim=1)  # [N, 2C, D]: predictions W_0 k and targets v̂ = W v
        pv = torch.bmm(kv, w.transpose(1, 2))
        pk, vh = pv[:, :c], pv[:, c:]
        # decays: dg[t, s] = Π_{s<j≤t} α_j over [0, α_1..α_C]
        dg = torch.exp(segsum(F.pad(la, (1, 0))))  # [N, C+1, C+1]
        a_c, a_end, a_prev, dmat = dg[:, c, 0], dg[:, c, 1:], dg[:, :c, 0], dg[:, :c, 1:]
        gram = torch.bmm(k, k.transpose(1, 2))
        lmat = dmat * gram  # strictly lower: (A_{t−1}/A_i)(k_i·k_t), i < t
        lower = lmat * _rows(beta)
        b0 = pk * _rows(a_prev) - vh
        err = torch.linalg.solve_triangular(lower, b0 * _rows(beta), upper=False,
                                            unitriangular=True)
        kend = k * _rows(a_end)
        w_new = torch.baddbmm(w * a_c.view(-1, 1, 1), err.transpose(1, 2), kend, alpha=-1.0)

        ctx.meta = (eta_scale, d, c)
        ctx.save_for_backward(w, x, q, r_eta, r_alpha, k, nk, norm > eps, vv, er, ar, s_eta,
                              eta, z_a, n2, beta, pk, dg, gram, lmat, lower, b0, err, kend)
        return w_new, read

    @staticmethod
    @without_autocast
    @once_differentiable
    def backward(ctx, g_new, g_read):
        eta_scale, d, c = ctx.meta
        (w, x, q, r_eta, r_alpha, k, nk, unclamped, vv, er, ar, s_eta, eta, z_a, n2, beta, pk,
         dg, gram, lmat, lower, b0, err, kend) = ctx.saved_tensors
        need = ctx.needs_input_grad  # eta, w, x, q, r_eta, b_eta, r_alpha, b_alpha, eps
        # ∂/∂W by row block: [k, v, η, α] from the generation, [mem] from the read; then the
        # whole-W terms (a strided in-place baddbmm on a row block would loop per sequence)
        g_gen = g_mem = None
        gx = gq = g_reta = g_beta_ = g_ralpha = g_balpha = None
        if g_new is not None:
            a_c = dg[:, c, 0]
            a_end, a_prev, dmat = dg[:, c, 1:], dg[:, :c, 0], dg[:, :c, 1:]
            ga_c = torch.linalg.vecdot(g_new.flatten(1), w.flatten(1))
            # W_C = a_c W_0 − Errᵀ Kend
            gerr = torch.bmm(kend, g_new.transpose(1, 2)).neg_()  # [N, C, 5D]
            gkend = torch.bmm(err, g_new).neg_()  # [N, C, D]
            gk = gkend * _rows(a_end)
            ga_end = (gkend * k).sum(-1)
            # Err = T⁻¹ Rhs, T = I + lower
            grhs = torch.linalg.solve_triangular(lower.transpose(1, 2), gerr, upper=True,
                                                 unitriangular=True)
            g_lower = torch.bmm(grhs, err.transpose(1, 2)).neg_().tril_(-1)
            g_beta = (g_lower * lmat).sum(-1) + (grhs * b0).sum(-1)
            g_l = g_lower * _rows(beta)
            gdmat = g_l * gram
            g_gram = g_l * dmat
            gk.baddbmm_(g_gram + g_gram.transpose(1, 2), k)
            # Rhs = β (a_prev W_0 K − V̂)
            gb0 = grhs * _rows(beta)
            ga_prev = (gb0 * pk).sum(-1)
            gpv = torch.cat((gb0 * _rows(a_prev), gb0.neg()), dim=1)  # ∂/∂[W_0 k; v̂]
            kv = torch.cat((k, vv), dim=1)
            gkv = torch.bmm(gpv, w)
            g_whole = torch.baddbmm(g_new * a_c.view(-1, 1, 1), gpv.transpose(1, 2), kv)
            gk += gkv[:, :c]
            gvv = gkv[:, c:]
            # decays: every used entry of dg, then back to log α through the segment sums
            gdg = torch.zeros_like(dg)
            gdg[:, c, 0] = ga_c
            gdg[:, c, 1:] = ga_end
            gdg[:, :c, 0] = ga_prev
            gdg[:, :c, 1:] = gdmat
            gsg = gdg.mul_(dg)
            # ∂/∂ log α_j = Σ_{t ≥ j} Σ_{s < j} gsg[t, s]
            part = torch.cumsum(gsg, dim=-1)
            part = torch.flip(torch.cumsum(torch.flip(part, (-2,)), dim=-2), (-2,))
            g_la = part.diagonal(offset=-1, dim1=-2, dim2=-1)
            # β = η / (1 + η‖k‖²)
            denom = 1 + eta * n2
            g_eta = g_beta / denom.square()
            gk.addcmul_(k, _rows(g_beta * beta.square()), value=-2.0)
            g_zeta = g_eta * eta * (1 - s_eta)
            g_za = g_la * torch.sigmoid(-z_a)
            ger = _rows(g_zeta) * r_eta.unsqueeze(1)
            gar = _rows(g_za) * r_alpha.unsqueeze(1)
            g_reta = torch.bmm(g_zeta.unsqueeze(1), er).squeeze(1)
            g_beta_ = g_zeta.sum(-1)
            g_ralpha = torch.bmm(g_za.unsqueeze(1), ar).squeeze(1)
            g_balpha = g_za.sum(-1)
            # k = kr / max(‖kr‖, eps)
            radial = (k * gk).sum(-1, keepdim=True) * unclamped
            gkr = (gk - k * radial) / nk
            gy = torch.cat((gkr, gvv, ger, gar), dim=-1)  # [N, C, 4D]
            gx = torch.bmm(gy, w[:, :4 * d])
            g_gen = torch.bmm(gy.transpose(1, 2), x)
        if g_read is not None:
            g_mem = torch.bmm(g_read.transpose(1, 2), q)
            gq = torch.bmm(g_read, w[:, 4 * d:])
        n = w.shape[0]
        gw = torch.cat((g_gen if g_gen is not None else w.new_zeros(n, 4 * d, d),
                        g_mem if g_mem is not None else w.new_zeros(n, d, d)), dim=1)
        if g_new is not None:
            gw += g_whole
        return (None, gw if need[1] else None, gx if need[2] else None,
                gq if need[3] else None, g_reta if need[4] else None,
                g_beta_ if need[5] else None, g_ralpha if need[6] else None,
                g_balpha if need[7] else None, None)
