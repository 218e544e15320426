"""The complete chunks of one call of the self-modifying memory (depth 1, DGD, no momentum: every
preset's setting) as one autograd node with a hand-written backward.

The math is the general path's (levels/self_modifying.py ``_write`` with ``dgd_write``), chunk
after chunk; this node computes it with a fraction of the small ops (a chunk of 8 tokens is
overhead-bound) and builds no autograd graph per chunk. Only what depends on a chunk's anchor
memory runs in the sequential loop (forward: chunk by chunk; backward: in reverse); the reads
``W_mem q``, their gradients, the inputs' gradients, the gate readouts' gradients, the
backward's chunk-local coefficients and the probes' write norms are batched over all chunks.
Inputs and everything kept for the backward are chunk-major (``[J, N, ...]``, each chunk one
contiguous slab written in place by the loop), so a chunk's step touches a few small
contiguous blocks at every sequence length (per-chunk slices of ``[N, T, ...]`` tensors are
``T·D`` floats apart). At a head width of 64 and more (``_WIDE_HEAD``) a pass over the stacked
memories ``[N, 5D, D]`` costs more than a few more small ops, so the loops pass over them as
few times as they can: the forward takes the reads and the probes' write norms while the anchor
is cached, the backward updates ``∂/∂W_0`` in place with one GEMM per row block; narrower heads
batch those and keep fewer calls. ``tests/models/test_self_modifying_chunk.py`` checks outputs and
gradients against the general path in float64 and with ``gradcheck``; a second derivative
through the node raises instead of being wrong.

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

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from nlstudio.models.chunked import segsum
from nlstudio.models.precision import without_autocast


# Head width from which a pass over the stacked memories [N, 5D, D] costs more than a few more
# small ops per chunk: from it on, the forward reads and takes the probes' write norms in the
# loop (while the anchor is cached) and the backward writes ∂/∂W_0 with one baddbmm per row
# block (see there); narrower heads batch those after the loop and add products (fewer calls).
_WIDE_HEAD = 64  # measured: at 64 (d=256, 4 heads) the wide forms win, at 32 the narrow ones


@functools.lru_cache(maxsize=16)
def _below(c: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[C+1, C+1]``: 1 where row t > column s (the decays' log α_s enters every entry
    ``(t, s')`` with ``s' < s ≤ t``), 0 elsewhere."""
    return torch.ones(c + 1, c + 1, device=device, dtype=dtype).tril(-1)


class SelfModifyingChunks(torch.autograd.Function):
    """``apply(eta, w [N, 5D, D], x [J, N, C, D], q [J, N, C, D], r_eta [N, D], b_eta [N],
    r_alpha [N, D], b_alpha [N], eps)`` -> ``(w_new [N, 5D, D], reads [J, N, C, D],
    mem_steps [J, N], last_step [D, D])``: the memory after the J chunks, every chunk's reads at
    its anchor, and (not differentiable, for the probes) ``‖ΔW_mem‖²_F`` of every chunk and
    sequence and the last chunk's ``ΔW_mem`` of sequence 0."""

    @staticmethod
    @without_autocast
    def forward(ctx, eta_scale: float, w0, x, q, r_eta, b_eta, r_alpha, b_alpha, eps: float):
        n_chunks, n, c, d = x.shape
        new = x.new_empty
        ws = new(n_chunks + 1, n, 5 * d, d)  # the anchors W_0 .. W_J
        ws[0] = w0
        y = new(n_chunks, n, c, 4 * d)  # W_{k,v,η,α} x: k (before the norm), v, η, α pre-readouts
        keys = new(n_chunks, n, c, d)
        u = new(n_chunks, n, c, d)  # A_prev k − v: Rhs = β W_0 u (= β (A_prev W_0 k − v̂))
        nk = new(n_chunks, n, c, 1)  # max(‖W_k x‖, eps)
        s_eta, z_a, n2, beta = (new(n_chunks, n, c) for _ in range(4))
        dg = new(n_chunks, n, c + 1, c + 1)  # decays Π_{s<j≤t} α_j over [0, α_1..α_C]
        gram, lmat, lower = (new(n_chunks, n, c, c) for _ in range(3))
        err = new(n_chunks, n, c, 5 * d)
        reads = new(n_chunks, n, c, d)
        steps, step_mem = new(n_chunks, n), new(n, d, d)
        wide = d >= _WIDE_HEAD
        r_eta3, r_alpha3 = r_eta.unsqueeze(-1), r_alpha.unsqueeze(-1)
        b_eta3, b_alpha3 = b_eta.view(n, 1, 1), b_alpha.view(n, 1, 1)
        one = x.new_ones(())
        for j in range(n_chunks):
            w = ws[j]
            yj = torch.bmm(x[j], w[:, :4 * d].transpose(1, 2), out=y[j])
            kr, vv, er, ar = yj.split(d, dim=-1)
            nkj = torch.clamp_min(kr.norm(dim=-1, keepdim=True), eps, out=nk[j])
            k = torch.div(kr, nkj, out=keys[j])
            s = torch.sigmoid(torch.baddbmm(b_eta3, er, r_eta3).squeeze(-1), out=s_eta[j])
            za = torch.baddbmm(b_alpha3, ar, r_alpha3, out=z_a[j].unsqueeze(-1)).squeeze(-1)
            eta = s * eta_scale
            n2j = torch.linalg.vecdot(k, k, out=n2[j])
            bj = torch.div(eta, torch.addcmul(one, eta, n2j), out=beta[j]).unsqueeze(-1)
            dgj = torch.exp(segsum(F.pad(F.logsigmoid(za), (1, 0))), out=dg[j])
            uj = torch.mul(k, dgj[:, :c, :1], out=u[j]).sub_(vv)
            gramj = torch.bmm(k, k.transpose(1, 2), out=gram[j])
            lm = torch.mul(dgj[:, :c, 1:], gramj, out=lmat[j])  # (A_{t−1}/A_i)(k_i·k_t), i < t
            lo = torch.mul(lm, bj, out=lower[j])
            rhs = torch.bmm(uj * bj, w.transpose(1, 2))
            torch.linalg.solve_triangular(lo, rhs, upper=False, unitriangular=True, out=err[j])
            w_next = torch.mul(w, dgj[:, c, 0].view(n, 1, 1), out=ws[j + 1]).baddbmm_(
                err[j].transpose(1, 2), k * dgj[:, c, 1:].unsqueeze(-1), alpha=-1.0)
            if wide:  # the reads and the probes' ‖ΔW_mem‖_F while both memories are cached
                torch.bmm(q[j], w[:, 4 * d:].transpose(1, 2), out=reads[j])
                torch.sub(w_next[:, 4 * d:], w[:, 4 * d:], out=step_mem)
                torch.linalg.vector_norm(step_mem.flatten(1), dim=1, out=steps[j])

        if wide:
            last = step_mem[0].clone()
            steps.square_()
        else:
            torch.matmul(q, ws[:n_chunks, :, 4 * d:].transpose(-1, -2), out=reads)
            step_mems = ws[1:, :, 4 * d:] - ws[:n_chunks, :, 4 * d:]
            last = step_mems[-1, 0].clone()
            torch.sum(step_mems.square_(), (-2, -1), out=steps)
        ctx.meta = (eta_scale, eps)
        ctx.mark_non_differentiable(steps, last)
        ctx.save_for_backward(ws, x, q, r_eta, r_alpha, y, keys, u, nk, s_eta, z_a, n2, beta,
                              dg, gram, lmat, lower, err)
        return ws[n_chunks].clone(), reads, steps, last

    @staticmethod
    @without_autocast
    @once_differentiable
    def backward(ctx, g_new, g_reads, _g_steps, _g_last):
        eta_scale, eps = ctx.meta
        (ws, x, q, r_eta, r_alpha, y, keys, u, nk, s_eta, z_a, n2, beta, dg, gram, lmat, lower,
         err) = ctx.saved_tensors
        need = ctx.needs_input_grad  # eta, w, x, q, r_eta, b_eta, r_alpha, b_alpha, eps
        n_chunks, n, c, d = x.shape
        anchors = ws[:n_chunks]
        # batched over the chunks: every coefficient that does not depend on the incoming
        # gradient. What reads an anchor (∂/∂x, ∂/∂q) runs in the loop, while the anchor is in
        # the cache: a pass after the loop would read every anchor again from memory.
        g_reads = g_reads.contiguous()
        beta3 = beta.unsqueeze(-1)
        kend = keys * dg[:, :, c, 1:].unsqueeze(-1)  # A_C/A_i k_i
        a_prev_beta = dg[:, :, :c, :1] * beta3
        eta = s_eta * eta_scale
        inv_denom2 = (1 + eta * n2).square().reciprocal()
        d_zeta = eta * (1 - s_eta) * inv_denom2  # ∂z_η per ∂β: β = η/(1 + η‖k‖²), η = eta σ(z_η)
        beta_sq2 = beta.square().mul_(2.0).unsqueeze(-1)
        d_za = torch.sigmoid(-z_a)  # ∂ log σ(z_α) / ∂z_α
        radial_scale = (nk > eps).to(nk.dtype)  # the norm's floor passes no radial gradient
        below = _below(c, x.device, x.dtype)
        gx = x.new_empty(x.shape) if need[2] else None
        gq = q.new_empty(q.shape) if need[3] else None
        # ∂/∂W_0 = a_c g − grhsᵀ (β u) + gyᵀ x (+ g_readsᵀ q for W_mem), in place in g (no
        # fresh [N, 5D, D] per chunk). Wide heads: one baddbmm per row block over 2C stacked
        # tokens: one pass over g instead of three. Token rows [x; −β u; q] (``rhs``, batched
        # here) against [gy | ·; grhs; · | g_reads] (``lhs``, a buffer the loop fills): rows
        # 0..2C for W_{k,v,η,α}, rows C..3C for W_mem. torch runs a baddbmm into a row block
        # (not contiguous over the batch) as one GEMM per sequence, which only pays when those
        # are large: narrow heads take one baddbmm on g and add two products made in reused
        # buffers. Same products, same counted FLOPs either way.
        stacked = d >= _WIDE_HEAD
        if stacked:
            lhs = x.new_empty(n, 3 * c, 5 * d)
            gy = lhs[:, :c, :4 * d]  # ∂/∂(W_{k,v,η,α} x) of a chunk
            rhs = x.new_empty(n_chunks, n, 3 * c, d)
            rhs[:, :, :c], rhs[:, :, 2 * c:] = x, q
            torch.mul(u, beta3.neg(), out=rhs[:, :, c:2 * c])
            g_w = x.new_empty(n, 5 * d * d)  # ⟨g, W_0⟩ as a product in a reused buffer
        else:
            gy = x.new_empty(n, c, 4 * d)
            bu = u * beta3
            prod_a, prod_m = x.new_empty(n, 4 * d, d), x.new_empty(n, d, d)
        g_zeta, g_za = x.new_empty(n_chunks, n, c), x.new_empty(n_chunks, n, c)
        gdg = x.new_empty(n, c + 1, c + 1)
        grhs_buf = x.new_empty(n, c, 5 * d)
        r_eta3, r_alpha3 = r_eta.unsqueeze(1), r_alpha.unsqueeze(1)

        g = g_new.clone(memory_format=torch.contiguous_format)  # updated in place below
        for j in range(n_chunks - 1, -1, -1):
            w, k, dgj = anchors[j], keys[j], dg[j]
            # W_C = a_c W_0 − Errᵀ Kend
            if stacked:  # ∂/∂a_c
                torch.sum(torch.mul(g.flatten(1), w.flatten(1), out=g_w), 1, out=gdg[:, c, 0])
            else:
                torch.linalg.vecdot(g.flatten(1), w.flatten(1), out=gdg[:, c, 0])
            gerr = torch.bmm(kend[j], g.transpose(1, 2))  # −∂/∂Err
            gkend = torch.bmm(err[j], g)  # −∂/∂Kend
            gk = gkend * dgj[:, c, 1:].unsqueeze(-1)
            gk.neg_()
            torch.linalg.vecdot(gkend, k, out=gdg[:, c, 1:]).neg_()  # ∂/∂a_end
            # Err = T⁻¹ Rhs, T = I + lower:  grhs = −∂/∂Rhs
            # out= a contiguous buffer: torch then solves in place of the row-major layout
            # (without out= it makes two transposing copies of the right-hand side: 3x slower)
            grhs = torch.linalg.solve_triangular(lower[j].transpose(1, 2), gerr, upper=True,
                                                 unitriangular=True, out=grhs_buf)
            if stacked:
                lhs[:, c:2 * c].copy_(grhs)
            g_lower = torch.bmm(grhs, err[j].transpose(1, 2)).tril_(-1)  # ∂/∂lower
            # Rhs = β W_0 u, u = A_prev k − v:  gwu = −∂/∂(W_0 u) / β
            gwu = torch.bmm(grhs, w)
            g_beta = torch.linalg.vecdot(g_lower, lmat[j])
            g_beta -= torch.linalg.vecdot(gwu, u[j])
            g_l = g_lower.mul_(beta3[j])
            torch.mul(g_l, gram[j], out=gdg[:, :c, 1:])  # ∂/∂dmat
            g_gram = g_l * dgj[:, :c, 1:]
            gk.baddbmm_(g_gram + g_gram.transpose(1, 2), k)
            gk.addcmul_(gwu, a_prev_beta[j], value=-1.0)
            torch.linalg.vecdot(gwu, k, out=gdg[:, :c, 0]).mul_(beta[j]).neg_()  # ∂/∂a_prev
            # decays back to log α: ∂/∂ log α_m = Σ_{t ≥ m} Σ_{s < m} ∂dg[t, s] dg[t, s]
            part = torch.cumsum(gdg.mul_(dgj), dim=-1).mul_(below).sum(-2)
            # β = η / (1 + η‖k‖²), η = eta σ(z_η), α = σ(z_α), k = kr / max(‖kr‖, eps)
            gz = torch.mul(g_beta, d_zeta[j], out=g_zeta[j])
            gk.addcmul_(k, g_beta.unsqueeze(-1) * beta_sq2[j], value=-1.0)
            ga = torch.mul(part[:, :c], d_za[j], out=g_za[j])
            gyj = gy
            radial = torch.linalg.vecdot(k, gk).unsqueeze_(-1).mul_(radial_scale[j])
            torch.div(torch.addcmul(gk, k, radial, value=-1.0), nk[j], out=gyj[:, :, :d])
            torch.mul(gwu, beta3[j], out=gyj[:, :, d:2 * d])  # ∂/∂v = −(−gwu β)
            torch.mul(gz.unsqueeze(-1), r_eta3, out=gyj[:, :, 2 * d:3 * d])
            torch.mul(ga.unsqueeze(-1), r_alpha3, out=gyj[:, :, 3 * d:])
            if gx is not None:
                torch.bmm(gyj, w[:, :4 * d], out=gx[j])
            if gq is not None:
                torch.bmm(g_reads[j], w[:, 4 * d:], out=gq[j])
            # ∂/∂W_0 (the previous chunk's g): through a_c W_0, W_0 u, the generation, the reads
            g.mul_(dgj[:, c, 0].view(n, 1, 1))
            if stacked:
                lhs[:, 2 * c:, 4 * d:].copy_(g_reads[j])
                g[:, :4 * d].baddbmm_(lhs[:, :2 * c, :4 * d].transpose(1, 2), rhs[j, :, :2 * c])
                g[:, 4 * d:].baddbmm_(lhs[:, c:, 4 * d:].transpose(1, 2), rhs[j, :, c:])
            else:
                g.baddbmm_(grhs.transpose(1, 2), bu[j], alpha=-1.0)
                g[:, :4 * d] += torch.bmm(gyj.transpose(1, 2), x[j], out=prod_a)
                g[:, 4 * d:] += torch.bmm(g_reads[j].transpose(1, 2), q[j], out=prod_m)

        g_reta = g_ralpha = g_beta_ = g_balpha = None
        if need[4]:
            g_reta = torch.einsum("jnc,jncd->nd", g_zeta, y[..., 2 * d:3 * d])
        if need[5]:
            g_beta_ = g_zeta.sum((0, 2))
        if need[6]:
            g_ralpha = torch.einsum("jnc,jncd->nd", g_za, y[..., 3 * d:])
        if need[7]:
            g_balpha = g_za.sum((0, 2))
        return (None, g if need[1] else None, gx, gq, g_reta, g_beta_, g_ralpha, g_balpha, None)
