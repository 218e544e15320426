"""The Titans memory's chunks as autograd nodes: per chunk, the anchor's forward on the chunk's
keys, the inner gradient, the chunk-end write (with momentum) and the chunk's read, with a
hand-written backward.

The math is that of models/chunked.py (``mlp_forward``, ``mlp_backward``, ``write_plain``); this
module only computes it with fewer passes over memory: activations stay feature-major
(``[N, features, C]``, so every layer is ``W X`` with no transposed copies), ``silu'`` and its
derivative come from the saved pre-activations, the gradients of a layer's weights from the
write, the inner gradient, the keys' forward and the read are accumulated into one buffer, and
no autograd graph is built per chunk. :class:`TitansChunks` runs all complete chunks of a call
in one node: the chunk loop (:func:`_chunk_forward`) runs inside the node's forward and,
reversed (:func:`_chunk_backward`), inside its backward, so no per-chunk slicing, stacking or
gradient routing goes through autograd. ``tests/models/test_titans_chunk.py`` checks it,
forward and backward, against the autograd composition of ``mlp_forward``/``mlp_backward``/
``write_plain`` chained chunk by chunk in float64 (``gradcheck``). The backward is written for first derivatives (the
outer training step); a second derivative through it raises.

Per chunk, with layers ``W_l [N, o_l, i_l]``, keys ``X_0 = kᵀ [N, d, C]``:

    Z_l = W_l X_l,  X_{l+1} = silu(Z_l)                       (keys through the anchor)
    g = Z_{L−1} + b   (ℓ2: b = k − v with the residual, −v without; dot: g = b = −v)
    δ_{L−1} = g,  P_l = W_{l+1}ᵀ δ_{l+1},  δ_l = P_l ⊙ silu'(Z_l)  (the inner gradient's factors)
    W_l ← keep W_l + σ S_l − (δ_l ⊙ c) X_lᵀ,  S_l ← s_keep S_l − (δ_l ⊙ d) X_lᵀ   (the write)
    read = M'(q) without the residual (the caller adds q), token-major ``[N, C, d]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from nlstudio.models.precision import without_autocast

_silu_bw = torch.ops.aten.silu_backward


def _silu2(z: Tensor) -> Tensor:
    """``silu''(z) = σ(1 − σ)(2 + z(1 − 2σ))``."""
    s = torch.sigmoid(z)
    w = s.mul(-2.0).add_(1.0).mul_(z).add_(2.0)
    return w.mul_(torch.addcmul(s, s, s, value=-1.0))


def _bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-batch Frobenius inner product of ``[N, o, i]`` tensors."""
    return torch.linalg.vecdot(a.flatten(-2), b.flatten(-2))


def _col(x: Tensor) -> Tensor:
    return x.view(-1, 1, 1)


def _wide(w: Tensor) -> bool:
    """A layer with more outputs than inputs (``[N, o, i]``, o > i): its write's per-token
    coefficients scale its inputs X ``[N, i, C]``, the smaller factor, rather than δ
    ``[N, o, C]`` (fewer passes over memory, in the forward and the backward)."""
    return w.shape[1] > w.shape[2]


def _wide_write_backward(l, momentum, gwn, gsn, keep, sig, s_keep, cc, dd, ws, ss, xs, deltas,
                         gw, gs, g_delta, gx_write, g_keep, g_sig, g_skeep, g_c, g_d):
    """The write's backward of a wide layer (:func:`_wide`), written as
    ``W' = keep W + σ S − δ (X ⊙ c)ᵀ``, ``S' = s_keep S − δ (X ⊙ d)ᵀ``: with ``A = gW'ᵀ δ``,
    ``B = gS'ᵀ δ`` (``[N, i, C]``), ``∂/∂δ = −gW' (X ⊙ c) − gS' (X ⊙ d)``,
    ``−∂/∂X = A ⊙ c + B ⊙ d``, ``∂/∂c = −Σ_i X ⊙ A``, ``∂/∂d = −Σ_i X ⊙ B``. Fills the lists
    and accumulates into the coefficient gradients in place."""
    x, delta = xs[l], deltas[l]
    if gwn is not None:
        gw[l] = gwn * _col(keep)
        g_keep += _bdot(gwn, ws[l])
        if momentum:
            g_sig += _bdot(gwn, ss[l])
            gs[l] = gwn * _col(sig)
        a = torch.bmm(gwn.transpose(1, 2), delta)
        g_c -= (a * x).sum(1)
        g_delta[l] = torch.bmm(gwn, x * -cc)
        gx_write[l] = a.mul_(cc)
    if momentum and gsn is not None:
        g_skeep += _bdot(gsn, ss[l])
        gs[l] = gsn * _col(s_keep) if gs[l] is None else gs[l].addcmul_(gsn, _col(s_keep))
        b = torch.bmm(gsn.transpose(1, 2), delta)
        g_d -= (b * x).sum(1)
        if g_delta[l] is None:
            g_delta[l] = torch.bmm(gsn, x * -dd)
        else:
            g_delta[l].baddbmm_(gsn, x * -dd)
        gx_write[l] = b.mul_(dd) if gx_write[l] is None else gx_write[l].addcmul_(b, dd)


def _chunk_forward(l2: bool, keep, sig, s_keep, c, d, kT, bias, qT, ws, ss, read_out=None):
    """One chunk: ``(new_weights, new_momenta, read, saved)``; ``saved`` is what
    :func:`_chunk_backward` needs. ``read_out``: where to write the read (``[N, C, d]``, may
    be a strided slice of a larger buffer)."""
    momentum = sig is not None
    depth = len(ws)
    last = depth - 1
    # keys through the anchor
    xs, zs = [kT], []
    for l in range(depth):
        if l == last and not l2:
            break  # the dot objective's gradient does not read the memory's output
        z = torch.bmm(ws[l], xs[l])
        zs.append(z)
        if l < last:
            xs.append(F.silu(z))
    g = zs[last].add_(bias) if l2 else bias
    # the inner gradient's factors δ_l (and P_l for the backward)
    deltas, ps = [None] * depth, [None] * depth
    deltas[last] = g
    for l in range(last - 1, -1, -1):
        ps[l] = torch.bmm(ws[l + 1].transpose(1, 2), deltas[l + 1])
        deltas[l] = _silu_bw(ps[l], zs[l])
    # the chunk's write (each new tensor written in place: one pass fewer per product). The
    # per-token coefficients scale the smaller factor of (δ ⊙ c) Xᵀ = δ (X ⊙ c)ᵀ: δ for a
    # layer with fewer outputs than inputs, X for a wide one (:func:`_wide`)
    cc = c.unsqueeze(1)
    dd = d.unsqueeze(1) if momentum else None
    new_w, new_s, es, fs = [], [], [], []
    for l in range(depth):
        wide = _wide(ws[l])
        w = ws[l] * _col(keep)
        # E = δ ⊙ c (kept for the backward), or None for a wide layer
        es.append(None if wide else deltas[l] * cc)
        if momentum:
            w.addcmul_(ss[l], _col(sig))
            fs.append(None if wide else deltas[l] * dd)
            s = ss[l] * _col(s_keep)
            if wide:
                s.baddbmm_(deltas[l], (xs[l] * dd).transpose(1, 2), alpha=-1.0)
            else:
                s.baddbmm_(fs[l], xs[l].transpose(1, 2), alpha=-1.0)
            new_s.append(s)
        if wide:
            new_w.append(w.baddbmm_(deltas[l], (xs[l] * cc).transpose(1, 2), alpha=-1.0))
        else:
            new_w.append(w.baddbmm_(es[l], xs[l].transpose(1, 2), alpha=-1.0))
    # the read (read before write: the anchor), token-major
    xq, zq = [qT], []
    for l in range(last):
        zq.append(torch.bmm(ws[l], xq[l]))
        xq.append(F.silu(zq[l]))
    read = torch.bmm(xq[last].transpose(1, 2), ws[last].transpose(1, 2), out=read_out)
    saved = (*ws, *ss, *xs, *zs[:last], *deltas, *ps[:last], *xq, *zq, *es, *fs)
    return new_w, new_s, read, saved


def _chunk_backward(l2: bool, momentum: bool, depth: int, keep, sig, s_keep, c, d, saved,
                    gw_new, gs_new, g_read):
    """The gradients of one chunk's inputs given those of its outputs (``gw_new``,
    ``gs_new``: lists with None where no gradient flows; ``g_read`` ``[N, C, d]`` or None):
    ``(g_keep, g_sig, g_skeep, g_c, g_d, g_k, g_bias, g_q, gw, gs)``, ``g_k, g_bias, g_q``
    feature-major ``[N, d, C]``."""
    last = depth - 1
    saved = list(saved)

    def take(n):
        out = saved[:n]
        del saved[:n]
        return out

    ws = take(depth)
    ss = take(depth) if momentum else []
    xs = take(depth)
    zs = take(last)
    deltas = take(depth)
    ps = take(last)
    xq = take(depth)
    zq = take(last)
    es = take(depth)  # E_l = δ_l ⊙ c
    fs = take(depth) if momentum else []  # F_l = δ_l ⊙ d
    if not momentum:
        gs_new = [None] * depth

    kk = _col(keep)
    cc = c.unsqueeze(1)
    dd = d.unsqueeze(1) if momentum else None
    g_keep = keep.new_zeros(keep.shape)
    g_sig = sig.new_zeros(sig.shape) if momentum else None
    g_skeep = s_keep.new_zeros(s_keep.shape) if momentum else None
    g_c = c.new_zeros(c.shape)
    g_d = d.new_zeros(d.shape) if momentum else None
    gw = [None] * depth  # ∂/∂W_l, accumulated in place
    gs = [None] * depth
    g_delta = [None] * depth
    gx_write = [None] * depth  # −∂/∂X_l through the write (sign folded: fewer passes)

    def add_w(l, a, b):  # gw[l] += a bᵀ
        if gw[l] is None:
            gw[l] = torch.bmm(a, b.transpose(1, 2))
        else:
            gw[l].baddbmm_(a, b.transpose(1, 2))

    # the write: W' = keep W + σ S − E Xᵀ, S' = s_keep S − F Xᵀ (E = δ ⊙ c, F = δ ⊙ d)
    for l in range(depth):
        gwn, gsn = gw_new[l], gs_new[l]
        if _wide(ws[l]):  # the same gradients with the coefficients on X's side
            _wide_write_backward(l, momentum, gwn, gsn, keep, sig, s_keep, cc, dd, ws, ss, xs,
                                 deltas, gw, gs, g_delta, gx_write, g_keep, g_sig, g_skeep,
                                 g_c, g_d)
            continue
        if gwn is not None:
            gw[l] = gwn * kk
            g_keep += _bdot(gwn, ws[l])
            if momentum:
                g_sig += _bdot(gwn, ss[l])
                gs[l] = gwn * _col(sig)
            ge = torch.bmm(gwn, xs[l])  # −∂/∂E
            g_c -= (ge * deltas[l]).sum(1)
            g_delta[l] = ge.mul_(-cc)
            gx_write[l] = torch.bmm(gwn.transpose(1, 2), es[l])
        if momentum and gsn is not None:
            g_skeep += _bdot(gsn, ss[l])
            gs[l] = gsn * _col(s_keep) if gs[l] is None else \
                gs[l].addcmul_(gsn, _col(s_keep))
            gf = torch.bmm(gsn, xs[l])  # −∂/∂F
            g_d -= (gf * deltas[l]).sum(1)
            g_delta[l] = gf.mul_(-dd) if g_delta[l] is None else \
                g_delta[l].addcmul_(gf, dd, value=-1.0)
            if gx_write[l] is None:
                gx_write[l] = torch.bmm(gsn.transpose(1, 2), fs[l])
            else:
                gx_write[l].baddbmm_(gsn.transpose(1, 2), fs[l])

    # the inner gradient's chain: δ_l = silu_bw(P_l, Z_l), P_l = W_{l+1}ᵀ δ_{l+1}
    gz_delta = [None] * depth  # ∂/∂Z_l through silu'(Z_l) in δ_l
    for l in range(last):
        if g_delta[l] is None:
            continue
        gz_delta[l] = (g_delta[l] * ps[l]).mul_(_silu2(zs[l]))
        gp = _silu_bw(g_delta[l], zs[l])
        add_w(l + 1, deltas[l + 1], gp)
        gd_next = torch.bmm(ws[l + 1], gp)
        g_delta[l + 1] = gd_next if g_delta[l + 1] is None else g_delta[l + 1].add_(gd_next)

    g_bias = g_delta[last]  # g = Z_{L−1} + bias (ℓ2) or bias (dot)
    # the keys' forward, top-down; γ = ∂/∂Z_l
    gamma = g_bias if l2 else None
    g_k = None
    for l in range(last, -1, -1):
        if gamma is not None:
            add_w(l, gamma, xs[l])
            if gx_write[l] is not None:  # W_lᵀ γ − (−∂/∂X_l of the write), in place
                gx = gx_write[l].baddbmm_(ws[l].transpose(1, 2), gamma, beta=-1.0)
            else:
                gx = torch.bmm(ws[l].transpose(1, 2), gamma)
        else:
            gx = None if gx_write[l] is None else gx_write[l].neg_()
        if l == 0:
            g_k = gx
            break
        # X_l = silu(Z_{l−1})
        if gx is not None:
            gamma = _silu_bw(gx, zs[l - 1])
            if gz_delta[l - 1] is not None:
                gamma.add_(gz_delta[l - 1])
        else:
            gamma = gz_delta[l - 1]

    # the read: read = (W_{L−1} silu(… W_0 q))ᵀ
    g_q = None
    if g_read is not None:
        gamma = g_read.transpose(1, 2)  # feature-major view
        for l in range(last, -1, -1):
            add_w(l, gamma, xq[l])
            gx = torch.bmm(ws[l].transpose(1, 2), gamma)
            if l == 0:
                g_q = gx
            else:
                gamma = _silu_bw(gx, zq[l - 1])
    return g_keep, g_sig, g_skeep, g_c, g_d, g_k, g_bias, g_q, gw, gs


class TitansChunks(torch.autograd.Function):
    """All complete chunks of a call, in order, as one node: ``forward(ctx, l2, keep, sig,
    s_keep, c, d, k, bias, q, *weights_then_momenta)`` -> ``(*new_weights, *new_momenta, read,
    sq_norms, last_write)``.

    Per chunk j of ``F``: ``keep, sig, s_keep [N, F]``, ``c, d [N, F, C]`` (the chunk-end
    coefficients; ``sig, s_keep, d`` and the momenta None/absent without momentum); ``k, bias,
    q [N, F·C, d]`` token-major (views are fine); the weights (and momenta) are the memory
    before the first chunk. Outputs: the memory after the last chunk, the reads ``[N, F·C, d]``
    (each chunk reads its anchor; without the residual), and, not differentiable,
    ``sq_norms [F, N]`` (``‖M_after − M_before‖²`` of each chunk over all layers) and
    ``last_write`` (the last chunk's change of layer 0 for memory 0)."""

    @staticmethod
    @without_autocast
    def forward(ctx, l2, keep, sig, s_keep, c, d, k, bias, q, *mem):
        momentum = sig is not None
        depth = len(mem) // 2 if momentum else len(mem)
        ws, ss = list(mem[:depth]), list(mem[depth:]) if momentum else []
        n, full, cs = c.shape
        read = k.new_empty(n, full * cs, q.shape[-1])
        saved, sq_norms, last_write = [], [], None
        for j in range(full):
            sl = slice(j * cs, (j + 1) * cs)
            new_w, new_s, _, kept = _chunk_forward(
                l2, keep[:, j], sig[:, j] if momentum else None,
                s_keep[:, j] if momentum else None, c[:, j], d[:, j] if momentum else None,
                k[:, sl].transpose(1, 2), bias[:, sl].transpose(1, 2), q[:, sl].transpose(1, 2),
                ws, ss, read_out=read[:, sl])
            saved.extend(kept)
            # the change of the whole memory (all layers, all heads)
            sq_norms.append(sum(torch.linalg.vector_norm(a - b, dim=(-2, -1)).square()
                                for a, b in zip(new_w, ws)))
            if j == full - 1:
                last_write = new_w[0][0] - ws[0][0]
            ws, ss = new_w, new_s
        sq_norms = torch.stack(sq_norms)
        ctx.meta = (l2, depth, momentum, full, cs, len(saved) // full)
        ctx.dim = k.shape[-1]
        # an unused output's gradient stays None (the last chunk's write is then not
        # differentiated at all) rather than a tensor of zeros
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(keep, sig, s_keep, c, d, *saved)
        ctx.mark_non_differentiable(sq_norms, last_write)
        return (*ws, *ss, read, sq_norms, last_write)

    @staticmethod
    @without_autocast
    @once_differentiable
    def backward(ctx, *grads):
        l2, depth, momentum, full, cs, per = ctx.meta
        keep, sig, s_keep, c, d, *saved = ctx.saved_tensors
        gw = list(grads[:depth])
        gs = list(grads[depth:2 * depth]) if momentum else None
        g_read = grads[2 * depth if momentum else depth]
        per_chunk = {name: [None] * full for name in ("keep", "sig", "skeep", "c", "d", "k",
                                                      "bias", "q")}
        for j in range(full - 1, -1, -1):
            sl = slice(j * cs, (j + 1) * cs)
            outs = _chunk_backward(
                l2, momentum, depth, keep[:, j], sig[:, j] if momentum else None,
                s_keep[:, j] if momentum else None, c[:, j], d[:, j] if momentum else None,
                saved[j * per:(j + 1) * per], gw, gs,
                None if g_read is None else g_read[:, sl])
            *coeffs, gw, gs = outs
            for name, g in zip(per_chunk, coeffs):
                per_chunk[name][j] = g

        def stacked(name):  # per-chunk coefficient gradients [N(, C)] -> [N, F(, C)]
            return None if per_chunk[name][0] is None else torch.stack(per_chunk[name], dim=1)

        def tokens(name):  # per-chunk feature-major [N, d, C] -> token-major [N, F·C, d]
            parts = per_chunk[name]  # None where no gradient reached the chunk (e.g. the keys
            if all(p is None for p in parts):  # of a last chunk whose write is unused)
                return None
            zero = c.new_zeros(c.shape[0], ctx.dim, cs)
            return torch.cat([(zero if p is None else p).transpose(1, 2) for p in parts], dim=1)

        need = ctx.needs_input_grad  # l2, keep, sig, s_keep, c, d, k, bias, q, *mem
        names = ("keep", "sig", "skeep", "c", "d")
        coeff_grads = [stacked(name) if need[i + 1] else None for i, name in enumerate(names)]
        return (None, *coeff_grads, tokens("k") if need[6] else None,
                tokens("bias") if need[7] else None, tokens("q") if need[8] else None, *gw,
                *(gs if momentum else ()))
