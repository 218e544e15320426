"""One chunk of the Titans memory as one autograd node: the anchor's forward on the chunk's keys,
the inner gradient, the chunk-end write (with momentum) and the chunk's read, with a
hand-written backward.

The math is that of models/chunked.py (``mlp_forward``, ``mlp_backward``, ``write_plain``); this
module only computes it with fewer passes over memory: activations stay feature-major
(``[N, features, C]``, so every layer is ``W X`` with no transposed copies), ``silu'`` and its
derivative come from the saved pre-activations, the gradients of a layer's weights from the
write, the inner gradient, the keys' forward and the read are accumulated into one buffer, and
no autograd graph is built per chunk. ``tests/models/test_titans_chunk.py`` checks forward and
backward against the autograd composition of ``mlp_forward``/``mlp_backward``/``write_plain`` in
float64 (``gradcheck``). The backward is written for first derivatives (the outer training
step); a second derivative through it raises.

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


class TitansChunk(torch.autograd.Function):
    """``forward(ctx, l2, keep, sig, s_keep, c, d, kT, bias, qT, *weights_then_momenta)`` ->
    ``(*new_weights, *new_momenta, read)``.

    ``keep, sig, s_keep [N]``, ``c, d [N, C]`` are the chunk-end coefficients
    (``chunked.EndCoefficients``; ``sig, s_keep, d`` and the momenta are None/absent without
    momentum), ``kT, bias [N, d, C]`` feature-major (views of token-major tensors are fine),
    ``qT [N, d, Cq]``. ``l2``: the objective's gradient is ``Z_{L−1} + bias`` (else ``bias``)."""

    @staticmethod
    @without_autocast
    def forward(ctx, l2, keep, sig, s_keep, c, d, kT, bias, qT, *mem):
        momentum = sig is not None
        depth = len(mem) // 2 if momentum else len(mem)
        ws, ss = list(mem[:depth]), list(mem[depth:]) if momentum else []
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
        # the chunk's write
        cc = c.unsqueeze(1)
        dd = d.unsqueeze(1) if momentum else None
        kk = keep.view(-1, 1, 1)
        new_w, new_s, es, fs = [], [], [], []
        for l in range(depth):
            w = ws[l] * kk
            es.append(deltas[l] * cc)
            if momentum:
                w.addcmul_(ss[l], sig.view(-1, 1, 1))
                fs.append(deltas[l] * dd)
                new_s.append(torch.baddbmm(ss[l] * s_keep.view(-1, 1, 1), fs[l],
                                           xs[l].transpose(1, 2), alpha=-1.0))
            new_w.append(w.baddbmm_(es[l], xs[l].transpose(1, 2), alpha=-1.0))
        # the read (read before write: the anchor), token-major
        xq, zq = [qT], []
        for l in range(last):
            zq.append(torch.bmm(ws[l], xq[l]))
            xq.append(F.silu(zq[l]))
        read = torch.bmm(xq[last].transpose(1, 2), ws[last].transpose(1, 2))

        ctx.meta = (l2, depth, momentum)
        ctx.save_for_backward(keep, sig, s_keep, c, d, *ws, *ss, *xs, *zs[:last], *deltas,
                              *ps[:last], *xq, *zq, *es, *fs)
        return (*new_w, *new_s, read)

    @staticmethod
    @without_autocast
    @once_differentiable
    def backward(ctx, *grads):
        l2, depth, momentum = ctx.meta
        last = depth - 1
        saved = list(ctx.saved_tensors)

        def take(n):
            out = saved[:n]
            del saved[:n]
            return out

        keep, sig, s_keep, c, d = take(5)
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
        gw_new = list(grads[:depth])
        gs_new = list(grads[depth:2 * depth]) if momentum else [None] * depth
        g_read = grads[-1]
        need = ctx.needs_input_grad  # l2, keep, sig, s_keep, c, d, kT, bias, qT, *mem

        kk = keep.view(-1, 1, 1)
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
            if gwn is not None:
                gw[l] = gwn * kk
                g_keep += _bdot(gwn, ws[l])
                if momentum:
                    g_sig += _bdot(gwn, ss[l])
                    gs[l] = gwn * sig.view(-1, 1, 1)
                ge = torch.bmm(gwn, xs[l])  # −∂/∂E
                g_c -= (ge * deltas[l]).sum(1)
                g_delta[l] = ge.mul_(-cc)
                gx_write[l] = torch.bmm(gwn.transpose(1, 2), es[l])
            if momentum and gsn is not None:
                g_skeep += _bdot(gsn, ss[l])
                gs[l] = gsn * s_keep.view(-1, 1, 1) if gs[l] is None else \
                    gs[l].addcmul_(gsn, s_keep.view(-1, 1, 1))
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
                if gx_write[l] is not None:  # W_lᵀ γ − (−∂/∂X_l of the write)
                    gx = torch.baddbmm(gx_write[l], ws[l].transpose(1, 2), gamma, beta=-1.0)
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

        return (None, g_keep if need[1] else None, g_sig if need[2] else None,
                g_skeep if need[3] else None, g_c if need[4] else None,
                g_d if need[5] else None, g_k if need[6] else None,
                g_bias if need[7] else None, g_q if need[8] else None, *gw,
                *(gs if momentum else ()))
