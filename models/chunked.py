"""Chunk-wise (anchor-state) writes of deep memories, shared by ``titans``, ``self_modifying`` and
the CMS levels.

These functions are the reference math of a chunk, differentiated by autograd. ``titans`` runs
all complete chunks of a call as one node with a hand-written backward instead
(models/levels/titans_chunk.py), and so does ``self_modifying`` with depth 1, DGD and no
momentum (models/levels/self_modifying_chunk.py); the tests pin both to the composition of the
functions here in float64.

A chunk of C tokens is written at once: every token's inner gradient is taken at the memory
as it was when the chunk started (the *anchor*, arXiv Eq. 90), and the per-token recurrence
inside the chunk collapses into weighted sums of those gradients.

The memory is an MLP ``M(x)`` given as a stack of per-layer weights ``W_l [..., out, in]``
(leading dimensions are batch dimensions: one memory per sequence/head/...):

    h_0 = x,  z_l = W_l h_{l−1},  h_l = silu(z_l) (hidden layers),  M(x) = z_L (+ x if residual)

The per-token gradient of a layer is the outer product ``U_t = δ_t h_{t,l−1}ᵀ`` (NeurIPS §3:
"writes input → local surprise"), with ``δ`` from an analytic backward (:func:`mlp_backward`);
everything is built from differentiable torch ops, so the outer loss differentiates through the
writes.

The recurrence of one chunk, for tokens t = 1..C with anchor gradients U_t, is

    S_t = μ_t S_{t−1} − θ_t U_t                       (momentum / surprise; optional)
    M_t = M_{t−1} (a_t I − b_t x̂_t x̂_tᵀ) + S_t         (retention a_t, DGD erase b_t; optional)

(without momentum ``S_t = −θ_t U_t``). Titans (Titans §3): a_t = 1 − α_t, μ_t = η_t, b = 0.
HOPE / DGD (the exact proximal step, see levels/self_modifying.py): a_t = α_t,
θ_t = b_t = η'_t = η_t / (1 + η_t‖x_t‖²), x̂ = x (the layer's own input), U_t = −u_t x_tᵀ for
the value u_t the layer regresses onto.
:func:`collapse` turns the gates of a chunk into coefficient matrices (segment sums in log
space, O(C²)); :func:`chunk_write` then forms the chunk-end memory and momentum, each as one
batched matmul per layer ``(δ ⊙ c)ᵀ H``; the erase term is a unit lower-triangular solve.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nlstudio.models.precision import without_autocast


# ------------------------------------------------------------------------------------------
# the memory MLP and its analytic backward

@dataclass
class MLPTrace:
    """What :func:`mlp_backward` needs from a forward pass."""

    inputs: list[Tensor]  # h_{l−1}: the input of every layer, [..., n, in_l]
    preacts: list[Tensor]  # z_l of every hidden layer (for silu')


def mlp_forward(weights: Sequence[Tensor], x: Tensor, residual: bool
                ) -> tuple[Tensor, MLPTrace]:
    """``M(x)`` for ``x [..., n, in]`` and weights ``[..., out, in]`` (broadcast over leading
    dims)."""
    h = x
    inputs, preacts = [], []
    last = len(weights) - 1
    for l, w in enumerate(weights):
        inputs.append(h)
        # (W hᵀ)ᵀ rather than h Wᵀ: autograd then hands back ∂/∂W contiguous (not transposed),
        # which keeps every weight-sized op of the backward a dense streaming pass; the
        # activations are made token-major again so elementwise ops never mix layouts.
        z = torch.matmul(w, h.transpose(-1, -2)).transpose(-1, -2).contiguous()
        if l < last:
            preacts.append(z)
            h = F.silu(z)
        else:
            h = z
    if residual:
        h = h + x
    return h, MLPTrace(inputs, preacts)


def mlp_backward(weights: Sequence[Tensor], trace: MLPTrace, g_out: Tensor) -> list[Tensor]:
    """``δ_l = ∂ℓ/∂z_l`` of every layer given ``g_out = ∂ℓ/∂M(x)`` per token (the residual path
    adds nothing to weight gradients). ``δ_{l} = (δ_{l+1} W_{l+1}) ⊙ silu'(z_l)``."""
    deltas = [g_out]
    delta = g_out
    for l in range(len(weights) - 2, -1, -1):
        delta = silu_grad(torch.matmul(delta, weights[l + 1]), trace.preacts[l])
        deltas.append(delta)
    deltas.reverse()
    return deltas


def silu_grad(g: Tensor, z: Tensor) -> Tensor:
    """``g ⊙ silu'(z)``: the backward of a silu layer, differentiable (any order)."""
    return _SiluGrad.apply(g, z)


class _SiluGrad(torch.autograd.Function):
    """``g ⊙ silu'(z)`` as torch's fused ``silu_backward`` kernel, made differentiable (the outer
    loss differentiates through the inner gradient): ∂/∂g = silu'(z), ∂/∂z = g ⊙ silu''(z).
    The backward is built from differentiable ops, so higher derivatives work too."""

    @staticmethod
    def forward(ctx, g: Tensor, z: Tensor) -> Tensor:
        ctx.save_for_backward(g, z)
        return torch.ops.aten.silu_backward(g, z)

    @staticmethod
    @without_autocast
    def backward(ctx, gy: Tensor):
        g, z = ctx.saved_tensors
        g_g = _SiluGrad.apply(gy, z) if ctx.needs_input_grad[0] else None
        g_z = None
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(z)
            # silu''(z) = s (1 − s) (2 + z (1 − 2 s))
            g_z = gy * g * (s * (1 - s) * (2 + z * (1 - 2 * s)))
        return g_g, g_z


# ------------------------------------------------------------------------------------------
# collapsed gates

@functools.lru_cache(maxsize=64)
def _tril_masks(c: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Where a ``C×C`` matrix is *not* strictly lower / *not* lower triangular (constant boolean
    masks, cached per size and device)."""
    lower = torch.ones(c, c, dtype=torch.bool, device=device).tril()
    return ~lower.tril(-1), ~lower


def segsum(x: Tensor) -> Tensor:
    """``out[..., t, s] = Σ_{s<j≤t} x_j`` for s ≤ t, −inf above the diagonal (exact: no
    difference of cumulative sums, so no cancellation)."""
    c = x.shape[-1]
    above_strict, above = _tril_masks(c, x.device)
    xx = x.unsqueeze(-1).expand(*x.shape, c)  # xx[..., t, s] = x_t
    out = torch.cumsum(xx.masked_fill(above_strict, 0.0), dim=-2)
    return out.masked_fill(above, float("-inf"))


@dataclass
class EndCoefficients:
    """The chunk-end memory and momentum as coefficients of the anchor state and gradients:
    ``M_C = keep M_0 + from_s0 S_0 − Σ_i grad_i U_i``, ``S_C = s_keep S_0 − Σ_i s_grad_i U_i``."""

    keep: Tensor  # [...]
    grad: Tensor  # [..., C]
    from_s0: Tensor | None = None  # [...]
    s_keep: Tensor | None = None  # [...]
    s_grad: Tensor | None = None  # [..., C]

    def unbind(self, dim: int) -> list["EndCoefficients"]:
        """One set of coefficients per index of ``dim`` (a leading dim, e.g. the chunk index):
        a single ``unbind`` per field keeps the backward to one stack per field."""
        fields = [f.unbind(dim) if f is not None else None
                  for f in (self.keep, self.grad, self.from_s0, self.s_keep, self.s_grad)]
        n = len(fields[0])
        return [EndCoefficients(*(f[j] if f is not None else None for f in fields))
                for j in range(n)]


@dataclass
class Coefficients:
    """The chunk recurrence as coefficients (tokens 0-based, rows/cols over the chunk).

    After token τ (inclusive), without the erase term:
    ``M_τ = keep[τ] M_0 + from_s0[τ] S_0 − Σ_{i≤τ} grad[τ, i] U_i``.
    """

    keep: Tensor  # [..., C]        Π_{j≤τ} a_j
    decay: Tensor  # [..., C, C]    D[τ, s] = Π_{s<j≤τ} a_j (0 above the diagonal)
    grad: Tensor  # [..., C, C]     coefficient of U_i in M_τ
    from_s0: Tensor | None  # [..., C]   coefficient of S_0 in M_τ (momentum only)
    s_keep: Tensor | None  # [...]      Π_j μ_j: S_0 in S_C
    s_grad: Tensor | None  # [..., C]   coefficient of U_i in S_C

    def end(self) -> EndCoefficients:
        """The chunk end memory's coefficients (the last row)."""
        return EndCoefficients(self.keep[..., -1], self.grad[..., -1, :],
                               None if self.from_s0 is None else self.from_s0[..., -1],
                               self.s_keep, self.s_grad)


def collapse(log_a: Tensor, theta: Tensor, log_mu: Tensor | None = None) -> Coefficients:
    """Coefficients of the chunk recurrence from per-token gates ``[..., C]`` (log retention
    ``log a_t``, step ``θ_t``, log momentum decay ``log μ_t`` or None for no momentum)."""
    decay = torch.exp(segsum(log_a))
    keep = torch.exp(torch.cumsum(log_a, dim=-1))
    if log_mu is None:
        # S_t = −θ_t U_t: U_i enters M_τ through the retention of the tokens after it.
        return Coefficients(keep, decay, decay * theta.unsqueeze(-2), None, None, None)
    mom = torch.exp(segsum(log_mu))  # Mu[s, i] = Π_{i<j≤s} μ_j
    grad = torch.matmul(decay, mom) * theta.unsqueeze(-2)  # Σ_s D[τ,s] Mu[s,i] θ_i
    s_prefix = torch.exp(torch.cumsum(log_mu, dim=-1))  # Π_{j≤s} μ_j
    from_s0 = torch.matmul(decay, s_prefix.unsqueeze(-1)).squeeze(-1)
    return Coefficients(keep, decay, grad, from_s0, s_prefix[..., -1], theta * mom[..., -1, :])


def collapse_end(log_a: Tensor, theta: Tensor, log_mu: Tensor | None = None) -> EndCoefficients:
    """Only the chunk-end coefficients: O(C) without momentum, one O(C²) row product with it."""
    # Π_{i<j≤C} a_j from an exclusive suffix sum (exact, no difference of prefix sums)
    suffix = torch.flip(torch.cumsum(torch.flip(log_a, (-1,)), dim=-1), (-1,))
    keep = torch.exp(suffix[..., 0])
    after = torch.exp(torch.cat((suffix[..., 1:], torch.zeros_like(suffix[..., :1])), dim=-1))
    if log_mu is None:
        return EndCoefficients(keep, theta * after)
    mom = torch.exp(segsum(log_mu))
    grad = torch.matmul(after.unsqueeze(-2), mom).squeeze(-2) * theta
    s_prefix = torch.exp(torch.cumsum(log_mu, dim=-1))
    return EndCoefficients(keep, grad, (after * s_prefix).sum(-1), s_prefix[..., -1],
                           theta * mom[..., -1, :])


# ------------------------------------------------------------------------------------------
# chunk-end writes

def _col(x: Tensor) -> Tensor:
    return x.unsqueeze(-1).unsqueeze(-1)


def _minus_outer_sum(acc: Tensor, coeff: Tensor, x: Tensor) -> Tensor:
    """``acc − coeffᵀ x``: the weighted gradient sum Σ_t c_t δ_t x_tᵀ as one batched matmul."""
    if acc.dim() == 3 and coeff.dim() == 3 and x.dim() == 3:
        return torch.baddbmm(acc, coeff.transpose(1, 2), x, alpha=-1.0)
    return acc - torch.matmul(coeff.transpose(-1, -2), x)


def write_plain(m0: Tensor, s0: Tensor | None, delta: Tensor, x: Tensor, end: EndCoefficients
                ) -> tuple[Tensor, Tensor | None]:
    """The memory (and momentum) after a chunk without the erase term, for one layer.

    ``m0, s0 [..., o, i]`` anchor weight and momentum; ``delta [..., C, o]`` and ``x [..., C, i]``
    the factors of the anchor gradients U_t = δ_t x_tᵀ; ``end`` broadcasts against the weights'
    leading dims. ``M_C = keep M_0 + σ S_0 − Σ_i c_i U_i``, ``S_C = s_keep S_0 − Σ_i d_i U_i``.
    """
    if m0.dim() == 3 and x.dim() == 3 and end.keep.dim() == 1:  # the hot path: fused writes
        if s0 is None:
            return _DecayedWrite.apply(m0, end.keep, end.grad, delta, x), None
        return _DecayedMomentumWrite.apply(m0, s0, end.keep, end.from_s0, end.s_keep, end.grad,
                                           end.s_grad, delta, x)
    acc = m0 * _col(end.keep)
    if s0 is not None:
        acc = torch.addcmul(acc, s0, _col(end.from_s0))
    m = _minus_outer_sum(acc, delta * end.grad.unsqueeze(-1), x)
    if s0 is None:
        return m, None
    return m, _minus_outer_sum(s0 * _col(end.s_keep), delta * end.s_grad.unsqueeze(-1), x)


def _bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-batch Frobenius inner product ``⟨a_n, b_n⟩`` of ``[N, o, i]`` tensors."""
    return torch.linalg.vecdot(a.flatten(-2), b.flatten(-2))


class _DecayedWrite(torch.autograd.Function):
    """``M = keep M_0 − (δ ⊙ c)ᵀ x`` for ``[N, o, i]`` weights, ``c [N, C]``: one autograd node
    with a hand-written backward that touches each weight-sized tensor as few times as possible
    (the write is memory-bound). The backward uses differentiable ops only, so higher
    derivatives work too."""

    @staticmethod
    def forward(ctx, m0, keep, c, delta, x):
        cm = delta * c.unsqueeze(-1)
        m = torch.baddbmm(m0 * _col(keep), cm.transpose(1, 2), x, alpha=-1.0)
        ctx.save_for_backward(m0, keep, c, delta, x)
        return m

    @staticmethod
    @without_autocast
    def backward(ctx, gm):
        m0, keep, c, delta, x = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_m0 = gm * _col(keep) if need[0] else None
        g_keep = _bdot(gm, m0) if need[1] else None
        g_c = g_delta = g_x = None
        if need[2] or need[3]:
            g_cm = -torch.bmm(x, gm.transpose(1, 2))  # ∂/∂(δ ⊙ c)
            g_c = (g_cm * delta).sum(-1) if need[2] else None
            g_delta = g_cm * c.unsqueeze(-1) if need[3] else None
        if need[4]:
            g_x = -torch.bmm(delta * c.unsqueeze(-1), gm)
        return g_m0, g_keep, g_c, g_delta, g_x


class _DecayedMomentumWrite(torch.autograd.Function):
    """``M = keep M_0 + σ S_0 − (δ ⊙ c)ᵀ x``, ``S = s_keep S_0 − (δ ⊙ d)ᵀ x`` in one node (see
    :class:`_DecayedWrite`)."""

    @staticmethod
    def forward(ctx, m0, s0, keep, sig, s_keep, c, d, delta, x):
        m = m0 * _col(keep)
        m.addcmul_(s0, _col(sig))
        m.baddbmm_((delta * c.unsqueeze(-1)).transpose(1, 2), x, alpha=-1.0)
        s = torch.baddbmm(s0 * _col(s_keep), (delta * d.unsqueeze(-1)).transpose(1, 2), x,
                          alpha=-1.0)
        ctx.save_for_backward(m0, s0, keep, sig, s_keep, c, d, delta, x)
        return m, s

    @staticmethod
    @without_autocast
    def backward(ctx, gm, gs):
        m0, s0, keep, sig, s_keep, c, d, delta, x = ctx.saved_tensors
        need = ctx.needs_input_grad
        if gm is None:
            gm = torch.zeros_like(m0)
        if gs is None:
            gs = torch.zeros_like(s0)
        g_m0 = gm * _col(keep) if need[0] else None
        g_s0 = None
        if need[1]:
            g_s0 = gm * _col(sig)
            g_s0.addcmul_(gs, _col(s_keep))
        g_keep = _bdot(gm, m0) if need[2] else None
        g_sig = _bdot(gm, s0) if need[3] else None
        g_skeep = _bdot(gs, s0) if need[4] else None
        g_c = g_d = g_delta = g_x = None
        if need[5] or need[6] or need[7]:
            g_cm = -torch.bmm(x, gm.transpose(1, 2))  # ∂/∂(δ ⊙ c), ∂/∂(δ ⊙ d)
            g_cs = -torch.bmm(x, gs.transpose(1, 2))
            g_c = (g_cm * delta).sum(-1) if need[5] else None
            g_d = (g_cs * delta).sum(-1) if need[6] else None
            if need[7]:
                g_delta = g_cm * c.unsqueeze(-1)
                g_delta.addcmul_(g_cs, d.unsqueeze(-1))
        if need[8]:
            g_x = torch.bmm(delta * c.unsqueeze(-1), gm)
            g_x.baddbmm_(delta * d.unsqueeze(-1), gs)
            g_x.neg_()
        return g_m0, g_s0, g_keep, g_sig, g_skeep, g_c, g_d, g_delta, g_x


def chunk_write(m0: Tensor, s0: Tensor | None, delta: Tensor, x: Tensor, co: Coefficients,
                erase: Tensor | None = None, x_hat: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
    """:func:`write_plain`, plus the DGD erase ``− b_t (M_{t−1} x̂_t) x̂_tᵀ`` when ``erase``
    (``b_t [..., C]``) is given; ``x_hat`` (default ``x``; any norm) are the keys it
    erases along. Needs the full :class:`Coefficients` (the erase reads the running memory)."""
    end = co.end()
    if erase is None:
        return write_plain(m0, s0, delta, x, end)
    e = _erase_reads(m0, s0, delta, x, co, erase, x_hat)
    coeff_e = e * (co.decay[..., -1, :] * erase).unsqueeze(-1)
    if x_hat is None:
        # same keys: fold the erase into the gradient sum (one matmul)
        acc = m0 * _col(end.keep)
        if s0 is not None:
            acc = torch.addcmul(acc, s0, _col(end.from_s0))
        m = _minus_outer_sum(acc, delta * end.grad.unsqueeze(-1) + coeff_e, x)
        s = None
        if s0 is not None:
            s = _minus_outer_sum(s0 * _col(end.s_keep), delta * end.s_grad.unsqueeze(-1), x)
        return m, s
    m, s = write_plain(m0, s0, delta, x, end)
    return _minus_outer_sum(m, coeff_e, x_hat), s


def _erase_reads(m0, s0, delta, x, co: Coefficients, erase: Tensor, x_hat) -> Tensor:
    """``e_t = M_{t−1} x̂_t`` for every token of the chunk, ``[..., C, o]``.

    With the running memory written out through the coefficients,
    ``e_t = keep_{t−1} M_0 x̂_t + σ_{t−1} S_0 x̂_t − Σ_{i<t} grad[t−1,i] (x_i·x̂_t) δ_i
    − Σ_{s<t} D[t−1,s] b_s (x̂_s·x̂_t) e_s``: a unit lower-triangular system in e.
    """
    xh = x if x_hat is None else x_hat

    def shift(rows: Tensor) -> Tensor:  # row t ← row t−1, row 0 ← 0 (M_{t−1} for token t)
        return torch.cat((torch.zeros_like(rows[..., :1, :]), rows[..., :-1, :]), dim=-2)

    keep_prev = torch.cat((torch.ones_like(co.keep[..., :1]), co.keep[..., :-1]), dim=-1)
    rhs = torch.matmul(xh, m0.transpose(-1, -2)) * keep_prev.unsqueeze(-1)
    if s0 is not None:
        sig_prev = torch.cat((torch.zeros_like(co.from_s0[..., :1]), co.from_s0[..., :-1]), dim=-1)
        rhs = rhs + torch.matmul(xh, s0.transpose(-1, -2)) * sig_prev.unsqueeze(-1)
    gram_hx = torch.matmul(xh, x.transpose(-1, -2))  # [t, i] = x̂_t · x_i
    rhs = rhs - torch.matmul(shift(co.grad) * gram_hx, delta)
    gram_hh = gram_hx if x_hat is None else torch.matmul(xh, xh.transpose(-1, -2))
    lower = shift(co.decay) * erase.unsqueeze(-2) * gram_hh  # strictly lower triangular
    batch = torch.broadcast_shapes(lower.shape[:-2], rhs.shape[:-2])
    lower = lower.expand(*batch, *lower.shape[-2:])
    rhs = rhs.expand(*batch, *rhs.shape[-2:])
    return torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
