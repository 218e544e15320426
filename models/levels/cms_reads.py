"""How a CMS level with the ``task`` objective reads and learns inside ``NestedModel``.

A task level's weights are ``W = W0 + Δ`` per sequence, with Δ written exactly at multiples of
C and never differentiated through (models/levels/cms.py). NestedModel cuts a call into
segments at the write positions and runs two kinds of pass over them (models/assemble.py):

- the *inner* pass, segment by segment: the reads use ``W`` as a plain, detached tensor (no
  graph to ``W0``) and leave on a :class:`TaskRead`'s ``tape`` what the inner gradient needs:
  the pre-activation ``z1 = W1 x``, the output ``y = W2 σ(z1)`` and the two layers' inputs (their
  keys). With ``δ1 = ∂L/∂z1`` and ``δ2 = ∂L/∂y`` the chunk's gradient is
  ``∂L/∂W1 = Σ_t δ1_t x_tᵀ`` and ``∂L/∂W2 = Σ_t δ2_t σ(z1_t)ᵀ`` (per sequence), which
  :class:`ChunkGradient` keeps as these factors and multiplies out once per write, one batched
  matmul over the chunk's tokens (instead of a dense ``[B, h, d]`` gradient per segment);
- the *outer* pass, once over the whole call: :func:`linear_runs` reads each run of tokens with
  the weights that held there, and its backward gives ``∂/∂x`` and ``∂/∂W0`` only (Δ is
  detached). ``∂/∂W0 = Σ_{b,t} g_{b,t} x_{b,t}ᵀ`` is one matmul over all the call's tokens; the
  per-sequence ``∂/∂W`` that ``(W0 + Δ) x`` under autograd would build (and then sum over the
  batch) is never formed.

When only MLP blocks follow the first task level, models/task_pass.py computes both passes by
hand with the same reads (:func:`read_weight`, :func:`read_back`), without autograd's graph
per segment and without a second forward.

A run whose Δ is still zero (``updates == 0``: no write yet, e.g. the first chunk of a fresh
stream) reads ``W0`` itself, one matrix for the whole batch.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nlstudio.models.precision import autocast_dtype, full_precision, widen, without_autocast

Runs = tuple[tuple[int, int], ...]


class Factored(NamedTuple):
    """A fast weight kept as ``W = A + pᵀ k`` per sequence: the anchor ``A`` (``[B, d_out,
    d_in]``, or None: ``W0``) plus the SGD writes made since it, ``p [B, r, d_out]`` (``−η δ``)
    and ``k [B, r, d_in]`` (their keys), r tokens in all. A read costs ``x Aᵀ + (x kᵀ) p``:
    the memory traffic of one dense weight, and no dense weight is written per write; the level
    folds the factors into a new anchor once r reaches its fold rank (models/levels/cms.py)."""

    anchor: Tensor | None
    p: Tensor
    k: Tensor
    #: the buffers whose first rows ``p`` and ``k`` are (shared by every weight on them, with
    #: how many rows hold factors); None: no room to append in place
    buffers: "FactorBuffers | None" = None

    def dense(self, w0: Tensor) -> Tensor:
        """``A + pᵀ k`` as one tensor (``A`` = ``w0`` where there is no anchor)."""
        return torch.baddbmm(w0 if self.anchor is None else self.anchor, self.p.mT, self.k)


Weight = Tensor | Factored | None


class TaskRead(NamedTuple):
    """What a task level reads in one pass of the model.

    ``runs``: pieces ``[s, e)`` of the pass's tokens (together all of them, in order);
    ``weights``: per weight name, one entry per run: the per-sequence ``W0 + Δ`` (``[B, ...]``,
    detached, dense or :class:`Factored`) or None where Δ = 0 (``W0`` is read); ``outer``: the
    reads carry the outer graph to ``x`` and ``W0`` (else they reach ``x`` only); ``tape``: in the
    inner pass, a list the level appends ``(z1, y, x, σ(z1))`` to."""

    runs: Runs
    weights: dict[str, tuple[Weight, ...]]
    outer: bool
    tape: list | None = None


def linear_runs(x: Tensor, w0: Tensor, runs: Runs, ws: tuple[Weight, ...],
                outer: bool) -> Tensor:
    """``y_t = W x_t`` for ``x [B, T, d_in]``, with ``W`` the run's per-sequence weight
    (dense ``[B, d_out, d_in]``, :class:`Factored`, or None: ``w0 [d_out, d_in]``). ``outer``:
    differentiable w.r.t. ``x`` and ``w0`` (:class:`_RunsLinear`); otherwise w.r.t. ``x``
    only."""
    if outer and torch.is_grad_enabled() and (x.requires_grad or w0.requires_grad):
        groups = _groups(runs, ws)
        tensors = [t for g in groups for t in (g.anchor, g.p, g.k)]
        specs = tuple(g.spec for g in groups)
        low = autocast_dtype(x.device)
        if low is None:
            return _RunsLinear.apply(x, w0, specs, *tensors)
        # under autocast (bf16), autocast's rule for a linear layer by hand: the read computes
        # in bf16 (W0's gradient comes back through the cast, float32), and the node's own
        # matmuls see one dtype in the forward and the backward
        cast = [None if t is None else t.to(low) for t in tensors]
        with full_precision(x):
            return _RunsLinear.apply(x.to(low), w0.to(low), specs, *cast)
    if len(runs) == 1:  # one read of all of x (no slice: its backward would copy)
        return read_weight(x, w0.detach(), ws[0])
    return torch.cat([read_weight(x[:, s:e], w0.detach(), w)
                      for (s, e), w in zip(runs, ws)], 1)


def read_weight(x: Tensor, w0: Tensor, w: Weight) -> Tensor:
    """``x Wᵀ`` for one weight ``w`` (per-sequence dense, :class:`Factored`, or None: ``w0``),
    no outer graph to ``w0``."""
    anchor = w.anchor if isinstance(w, Factored) else w
    # a per-sequence anchor is read as ``(A xᵀ)ᵀ``: the same products with the weight in its
    # stored row-major order (x Aᵀ takes it transposed, ~1.4x slower for a short segment)
    y = F.linear(x, w0) if anchor is None else (anchor @ x.mT).mT.contiguous()
    if isinstance(w, Factored):
        y = y + (x @ w.k.mT) @ w.p
    return y


def read_back(g: Tensor, w0: Tensor, w: Weight) -> Tensor:
    """``g W``: the gradient w.r.t. ``x`` of :func:`read_weight` from ``g = ∂L/∂(x Wᵀ)``."""
    anchor = w.anchor if isinstance(w, Factored) else w
    gx = g @ w0 if anchor is None else g @ anchor
    if isinstance(w, Factored):
        gx = gx + (g @ w.p.mT) @ w.k
    return gx


class _Group(NamedTuple):
    """Consecutive runs that read one anchor: ``spec = (start, end, ((s, e, r), ...))`` with r
    the factor tokens run ``[s, e)`` sees; ``p``, ``k``: the last run's factors (every run's are
    a prefix of them: factors are only appended until the next anchor)."""

    spec: tuple
    anchor: Tensor | None
    p: Tensor | None
    k: Tensor | None


def _groups(runs: Runs, ws: tuple[Weight, ...]) -> list[_Group]:
    groups: list[list] = []
    for (s, e), w in zip(runs, ws):
        anchor = w.anchor if isinstance(w, Factored) else w
        if not groups or groups[-1][2] is not anchor:
            groups.append([s, e, anchor, [], None])
        group = groups[-1]
        group[1] = e
        group[3].append((s, e, w.p.shape[1] if isinstance(w, Factored) else 0))
        if isinstance(w, Factored):
            group[4] = w
    return [_Group((s, e, tuple(parts)), anchor, last and last.p, last and last.k)
            for s, e, anchor, parts, last in groups]


class _RunsLinear(torch.autograd.Function):
    """:func:`linear_runs` with the outer graph: gradients to ``x`` and ``W0``, none to the
    detached per-sequence weights (a write is not differentiated through).

    Per group of runs on one anchor ``A`` (None: ``W0``) with factors ``p, k``:
    ``Y = X Aᵀ + ((X kᵀ) ⊙ M) p`` with ``M[t, s] = 1`` where factor token s was written before
    token t's run; backward ``∂X = G A + ((G pᵀ) ⊙ M) k`` and ``∂W0 = Σ Gᵀ X`` over every token
    (only the anchor part reads W0: the factors are writes). Slicing happens here, outside
    autograd: a slice under autograd would give every piece a gradient as large as the call's.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w0: Tensor, specs: tuple, *tensors: Tensor | None) -> Tensor:
        ctx.specs, ctx.present = specs, [t is not None for t in tensors]
        ctx.save_for_backward(x, w0, *[t for t in tensors if t is not None])
        pieces = []
        for (s, e, parts), (anchor, p, k) in zip(specs, _triples(tensors)):
            xs = x[:, s:e]
            y = F.linear(xs, w0) if anchor is None else xs @ anchor.mT
            if p is not None:
                y = y.baddbmm_((xs @ k.mT) * _mask(parts, s, e, p), p)
            pieces.append(y)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)

    @staticmethod
    @without_autocast
    def backward(ctx, g: Tensor):
        x, w0, *saved = ctx.saved_tensors
        it = iter(saved)
        tensors = [next(it) if present else None for present in ctx.present]
        grad_x = grad_w0 = None
        if ctx.needs_input_grad[0]:
            pieces = []
            for (s, e, parts), (anchor, p, k) in zip(ctx.specs, _triples(tensors)):
                gs = g[:, s:e]
                gx = gs @ w0 if anchor is None else gs @ anchor
                if p is not None:
                    gx = gx.baddbmm_((gs @ p.mT) * _mask(parts, s, e, p), k)
                pieces.append(gx)
            grad_x = pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
        if ctx.needs_input_grad[1]:
            grad_w0 = g.reshape(-1, g.shape[-1]).mT @ x.reshape(-1, x.shape[-1])
        return grad_x, grad_w0, None, *[None] * len(tensors)


def _triples(tensors) -> list[tuple]:
    return [tuple(tensors[i:i + 3]) for i in range(0, len(tensors), 3)]


def _mask(parts: tuple, s: int, e: int, p: Tensor) -> Tensor:
    """``M [e − s, r]``: token t (of run ``[a, b)`` seeing r_run factor tokens) reads factor
    token j when ``j < r_run``."""
    rank = torch.cat([torch.full((b - a, 1), r, device=p.device) for a, b, r in parts])
    return (torch.arange(p.shape[1], device=p.device) < rank).to(p.dtype)


class ChunkGradient:
    """The inner gradient summed since the last write, per weight: a dense part (what a
    previous call left in ``state["grad"]``, or None: zero) plus factors ``(δ, k)`` whose
    product ``Σ δᵀ k`` is formed only when asked (at a write, or at the end of the call)."""

    def __init__(self, dense: dict[str, Tensor] | None):
        self.dense = dense
        self.factors: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def add(self, name: str, delta: Tensor, key: Tensor) -> None:
        # a sum of inner gradients is memory state: float32 under bf16 autocast
        self.factors.setdefault(name, []).append((widen(delta), widen(key)))

    def factored(self, name: str) -> tuple[Tensor, Tensor] | None:
        """``(δ [B, n, d_out], k [B, n, d_in])`` over the chunk's tokens when the sum is exactly
        ``Σ δᵀ k`` (no dense part, at least one token); None otherwise."""
        pairs = self.factors.get(name)
        if self.dense is not None or not pairs:
            return None
        if len(pairs) == 1:
            return pairs[0]
        return torch.cat([p[0] for p in pairs], 1), torch.cat([p[1] for p in pairs], 1)

    def dense_of(self, name: str, like: Tensor) -> Tensor:
        """The sum for ``name`` as one tensor shaped as ``like``."""
        base = None if self.dense is None else self.dense[name]
        pairs = self.factors.get(name)
        if not pairs:
            return torch.zeros_like(like) if base is None else base
        delta = pairs[0][0] if len(pairs) == 1 else torch.cat([p[0] for p in pairs], 1)
        key = pairs[0][1] if len(pairs) == 1 else torch.cat([p[1] for p in pairs], 1)
        with full_precision(key):  # state: float32 under bf16 autocast
            return delta.mT @ key if base is None else torch.baddbmm(base, delta.mT, key)

    def total(self, like: dict[str, Tensor]) -> dict[str, Tensor]:
        """The dense sums (shaped as ``like``); afterwards the sum restarts from zero."""
        out = {name: self.dense_of(name, ref) for name, ref in like.items()}
        self.clear()
        return out

    def clear(self) -> None:
        self.dense, self.factors = None, {}


def factored_sq_norm(delta: Tensor, key: Tensor) -> Tensor:
    """``‖Σ_t δ_t k_tᵀ‖²_F`` per sequence without forming the sum:
    ``Σ_{s,t} (δ_s·δ_t)(k_s·k_t)`` from two ``n × n`` Gram matrices."""
    return ((delta @ delta.mT) * (key @ key.mT)).sum((-2, -1)).clamp_min(0)


def norm_from_change(w0: Tensor, tokens: int) -> bool:
    """Whether an SGD write of ``tokens`` factor tokens folded onto a dense weight shaped as
    ``w0`` forms its change ``pᵀk`` (one matmul, then a sum of squares over the weight) for
    its norm rather than using :func:`factored_sq_norm`: when the two ``tokens × tokens`` Gram
    matrices cost more than a few passes over the weight (``tokens² (d_in + d_out) >
    8 d_in d_out``, e.g. a 64-token chunk at d = 64, hidden 256)."""
    return tokens * tokens * sum(w0.shape) > 8 * w0.shape[0] * w0.shape[1]


def sgd_write(cur: Weight, pair: tuple[Tensor, Tensor], eta: float, w0: Tensor, fold_rank: int,
              fold: bool) -> tuple[Weight, Tensor, Tensor]:
    """SGD's write ``W⁺ = W − η Σ_t δ_t k_tᵀ`` on ``cur`` (dense, :class:`Factored`, or None:
    ``w0``) from the chunk's factors ``pair = (δ, k)``: kept as factors until ``fold_rank``
    factor tokens (or ``fold``), then folded into a dense anchor. Returns the new weight, the
    write's squared norm per sequence and the write of sequence 0 (``[d_out, d_in]``, or a
    :class:`PendingWrite` that forms it when asked)."""
    p, k = -eta * pair[0], pair[1]
    rank = p.shape[1] + (cur.p.shape[1] if isinstance(cur, Factored) else 0)
    fold = fold or rank >= fold_rank
    if fold and not isinstance(cur, Factored) and norm_from_change(w0, p.shape[1]):
        # a long chunk folded at once: the change pᵀk as one tensor gives the new weight and
        # the write's norm (its Gram matrices would cost more)
        change = p.mT @ k
        sq = torch.linalg.vector_norm(change.flatten(1), dim=1).square()  # no temporary
        return change.add_(w0 if cur is None else cur), sq, PendingWrite(p[0], k[0])
    new = _appended(cur, p, k, fold_rank)
    return (new.dense(w0) if fold else new), eta * eta * factored_sq_norm(*pair), \
        PendingWrite(p[0], k[0])


class FactorBuffers:
    """Preallocated factor rows ``p [N, room, d_out]``, ``k [N, room, d_in]`` shared by a run
    of writes onto one anchor; ``rows``: how many hold factors."""

    def __init__(self, p: Tensor, k: Tensor, rows: int):
        self.p, self.k, self.rows = p, k, rows


def _appended(cur: Weight, p: Tensor, k: Tensor, room: int) -> Factored:
    """``cur`` (dense, None or :class:`Factored`) with the factors ``p, k`` appended. A run of
    writes onto one anchor fills buffers of ``room`` rows in place (each write copies its own
    rows only, not all the factors so far): the weights of earlier writes are views of the
    buffers' first rows, which later writes leave as they are. Only the latest weight on the
    buffers appends there (its rows are all the filled ones); any other, or full buffers,
    start new buffers."""
    old = cur if isinstance(cur, Factored) else Factored(cur, p[:, :0], k[:, :0])
    r, n = old.p.shape[1], p.shape[1]
    buf = old.buffers
    if buf is None or buf.rows != r or r + n > buf.p.shape[1]:  # new buffers, cur's rows first
        size = max(room, r + n)
        buf = FactorBuffers(p.new_empty(p.shape[0], size, p.shape[2]),
                            k.new_empty(k.shape[0], size, k.shape[2]), r)
        buf.p[:, :r], buf.k[:, :r] = old.p, old.k
    buf.p[:, r:r + n], buf.k[:, r:r + n] = p, k
    buf.rows = r + n
    return Factored(old.anchor, buf.p[:, :r + n], buf.k[:, :r + n], buf)


class PendingWrite(NamedTuple):
    """Sequence 0's SGD write ``pᵀ k`` (``p [r, d_out]``, ``k [r, d_in]``) not yet formed: a
    call that writes many times keeps only its last write in the state's ``last_write``, so
    :meth:`MLPLevel.settle` forms that one alone."""

    p: Tensor
    k: Tensor

    def dense(self) -> Tensor:
        return self.p.mT @ self.k


def formed(write: Tensor | PendingWrite | None) -> Tensor | None:
    """A write as one tensor (a :class:`PendingWrite` multiplied out)."""
    return write.dense() if isinstance(write, PendingWrite) else write
