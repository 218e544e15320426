"""One segment of the inner pass of ``task`` CMS levels, by hand, when only MLP levels follow.

``NestedModel._segmented`` (models/assemble.py) runs the levels from the first ``task`` level on
(the *suffix*) once per segment: the segment's logits, then the gradient of its summed
cross-entropy w.r.t. each learning task level's pre-activation ``z1`` and output ``y``
(models/levels/cms_reads.py). A segment is short (a period, e.g. 16 tokens), so under autograd
most of its time is the graph's bookkeeping: about a hundred small nodes are recorded and
walked per segment, 32 times per 512 tokens at C = 16.

When every suffix level is an ``mlp`` level that is frozen in context (period null) or learns
from the task (:meth:`InnerPass.covers`), and nothing in the suffix is silenced, the segment is
computed here instead: the same forward (pre-norm residual blocks ``out = in + W2 σ(W1 RMSNorm(in))``
over the edge DAG, final RMSNorm, head) with no graph, then its backward written out:

- cross-entropy (sum over the targets, ``-100`` ignored): ``∂L/∂logits = softmax − onehot``;
- head: ``∂/∂h = ∂logits · E``; RMSNorm ``n = w ⊙ x r`` with ``r = (mean(x²) + ε)^{-1/2}``:
  ``∂x = r (w ⊙ ∂n − x r² mean(x ⊙ w ⊙ ∂n))``;
- each block, in reverse order: ``δ2 = ∂L/∂y = ∂L/∂out``, ``∂σ = δ2 W2``,
  ``δ1 = ∂L/∂z1 = σ'(z1) ⊙ ∂σ``, ``∂in = ∂out + RMSNorm'(δ1 W1)``, summed into the
  predecessors; ``W`` is the weight the block read (per-sequence dense, factored, or ``W0``).

Only what autograd would compute is computed: a block's input gradient only where a learning
task level lies upstream of it, and nothing for blocks the loss does not reach. The states
advance as the levels' own forward advances them (:meth:`MLPLevel.advanced`).
tests/models/test_cms_task_path.py pins this path against the autograd one in float64.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from nlstudio.models.graph import OUTPUT
from nlstudio.models.levels.cms import MLPLevel
from nlstudio.models.levels.cms_reads import (ChunkGradient, Factored, TaskRead, Weight,
                                               read_back, read_weight)
from nlstudio.models.precision import autocast_dtype

if TYPE_CHECKING:
    from nlstudio.models.assemble import NestedModel

IGNORE_INDEX = -100


class InnerPass:
    """The hand-written inner pass of ``model``'s suffix (see the module docstring)."""

    def __init__(self, suffix: list[str]):
        self.suffix = suffix  # not the model itself: no reference cycle through the module

    @staticmethod
    def covers(model: NestedModel, suffix: list[str]) -> bool:
        """Whether every level of ``suffix`` is an MLP block this pass computes (frozen in
        context, or learning from the task) with an RMSNorm before it."""
        norms = [model.norms[lid] for lid in suffix] + [model.final_norm]
        return all(isinstance(n, nn.RMSNorm) for n in norms) and all(
            isinstance(model.levels[lid], MLPLevel)
            and (model.levels[lid].period is None or model.levels[lid].needs_task_grad)
            for lid in suffix)

    def applies(self, h: Tensor, silence: frozenset) -> bool:
        """Whether this call can take the pass: no suffix level silenced, autocast off."""
        return not (silence & set(self.suffix)) and autocast_dtype(h.device) is None

    def step(self, model: NestedModel, outs: dict[str, Tensor], states: dict, weights: dict[str, dict[str, Weight]],
             targets: Tensor, sums: dict[str, ChunkGradient], freeze: frozenset,
             record: Record | None = None) -> tuple[Tensor, dict]:
        """One segment: ``outs`` the outputs before the suffix (the graph cut there),
        ``weights`` what each task level reads, ``sums`` the learning task levels' gradient
        sums (added to); ``record`` keeps the activations for :meth:`outer`. Returns the
        segment's logits and the suffix levels' new states."""
        states = dict(states)
        outs = dict(outs)
        acts = {}
        with torch.no_grad():
            for lid in self.suffix:
                level = model.levels[lid]
                inp = model._sum(lid, outs)
                x, r = _rms(model.norms[lid], inp)
                if level.period is None:
                    z1 = F.linear(x, level.w1)
                    hidden = F.silu(z1)
                    y = F.linear(hidden, level.w2)
                else:
                    w = weights[lid]
                    z1 = read_weight(x, level.w1.detach(), w["w1"])
                    hidden = F.silu(z1)
                    y = read_weight(hidden, level.w2.detach(), w["w2"])
                states[lid] = level.advanced(states[lid], x, hidden, lid in freeze)
                outs[lid] = inp + y
                acts[lid] = (inp, r, x, z1, hidden)
            final = model._sum(OUTPUT, outs)
            nf, rf = _rms(model.final_norm, final)
            head = model.embed.weight if model.tied else model.head.weight
            bias = None if model.tied else model.head.bias
            logits = F.linear(nf, head, bias)
            if sums:
                self._backward(model, logits, targets, final, rf, head, acts, weights, sums)
        if record is not None:
            record.add(acts, (final, rf, nf), logits)
        return logits, states

    def outer(self, model: NestedModel, record: Record, reads: dict[str, TaskRead],
              outs: dict[str, Tensor]) -> Tensor:
        """The call's logits (the segments', as :meth:`step` computed them) with the outer
        graph: one node whose backward is that of the suffix over all the call's tokens, to
        the outputs ``outs`` before the suffix (with their graph) and the suffix's parameters,
        each task level's reads ``reads`` with the weights its segments read (``W0 + Δ``, Δ
        detached: the gradient reaches ``W0``). Replaces a second forward of the suffix."""
        params = []
        for lid in self.suffix:
            params += [model.norms[lid].weight, model.levels[lid].w1, model.levels[lid].w2]
        head = model.embed.weight if model.tied else model.head.weight
        params += [model.final_norm.weight, head, None if model.tied else model.head.bias]
        keys = sorted({p for lid in [*self.suffix, OUTPUT] for p in model.preds[lid]}
                      - set(self.suffix))
        return _SuffixNode.apply(_Plan(self, model, record.done(), reads, keys),
                                 *[outs[k] for k in keys], *params)

    def _backward(self, model: NestedModel, logits: Tensor, targets: Tensor, final: Tensor, rf: Tensor,
                  head: Tensor, acts: dict, weights: dict, sums: dict[str, ChunkGradient]
                  ) -> None:
        learning = set(sums)
        # blocks whose input gradient is needed: a learning level lies upstream of them
        upstream = set()
        for lid in self.suffix:
            if any(p in learning or p in upstream for p in model.preds[lid]):
                upstream.add(lid)
        wanted = learning | upstream
        if not any(p in wanted for p in model.preds[OUTPUT]):
            return
        valid = targets != IGNORE_INDEX
        d_logits = torch.softmax(logits, -1)
        d_logits.scatter_add_(-1, targets.clamp_min(0).unsqueeze(-1),
                              torch.full_like(d_logits[..., :1], -1.0))
        d_logits.mul_(valid.unsqueeze(-1).to(d_logits.dtype))
        grad = {}
        _send(grad, model.preds[OUTPUT], wanted,
              _rms_back_(model.final_norm, final, rf, d_logits @ head))
        for lid in reversed(self.suffix):
            d_out = grad.pop(lid, None)
            if d_out is None:  # the loss does not reach this block's output
                continue
            level = model.levels[lid]
            inp, r, x, z1, hidden = acts[lid]
            w = weights.get(lid, {"w1": None, "w2": None})
            d_hidden = read_back(d_out, level.w2.detach(), w["w2"])
            d_z1 = _silu_back_(d_hidden, z1)
            if lid in learning:
                level.task_gradient((z1, None, x, hidden), d_z1, d_out, sums[lid])
            if lid in upstream:
                d_x = read_back(d_z1, level.w1.detach(), w["w1"])
                _send(grad, model.preds[lid], wanted,
                      _rms_back_(model.norms[lid], inp, r, d_x).add_(d_out))


def _silu_back_(d_hidden: Tensor, z1: Tensor) -> Tensor:
    """``δ1 = σ'(z1) ⊙ ∂σ`` written over ``d_hidden`` (a product just made for this: no second
    tensor of the hidden width, for the outer pass one of ``B·T·hidden`` floats)."""
    return torch.ops.aten.silu_backward.grad_input(d_hidden, z1, grad_input=d_hidden)


def _send(grad: dict[str, Tensor], preds: list[str], wanted: set | None, g: Tensor) -> None:
    """Adds ``g`` (the gradient of a sum of ``preds``' outputs) to each wanted predecessor
    (None: to each)."""
    for p in preds:
        if wanted is None or p in wanted:
            grad[p] = g if p not in grad else grad[p] + g


def _rms(norm: nn.RMSNorm, x: Tensor) -> tuple[Tensor, Tensor]:
    """``norm(x)`` and its ``r = (mean(x²) + ε)^{-1/2}`` (``[..., 1]``)."""
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
    n = x * r
    return (n if norm.weight is None else n.mul_(norm.weight)), r


def _rms_back_(norm: nn.RMSNorm, x: Tensor, r: Tensor, g: Tensor) -> Tensor:
    """``∂L/∂x`` of ``n = w ⊙ x r`` from ``g = ∂L/∂n``, written over ``g`` (every caller's is
    a product made for it and read no more: no fresh ``B·T·d`` tensors in the outer pass,
    whose writes to new memory measured slower than over a tensor just written)."""
    gw = g if norm.weight is None else g.mul_(norm.weight)
    dot = (gw * x).mean(-1, keepdim=True).mul_(r * r)
    return gw.addcmul_(x, dot, value=-1).mul_(r)


class Record:
    """The activations of a call's segments, kept for the outer backward (:meth:`done` joins
    them along the call's tokens)."""

    def __init__(self):
        self.acts: list[dict] = []
        self.heads: list[tuple] = []
        self.logits: list[Tensor] = []

    def add(self, acts: dict, head: tuple, logits: Tensor) -> None:
        self.acts.append(acts)
        self.heads.append(head)
        self.logits.append(logits)

    def done(self) -> tuple[dict, tuple, Tensor]:
        def join(pieces):
            return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
        acts = {lid: tuple(join([a[lid][i] for a in self.acts])
                           for i in range(len(self.acts[0][lid]))) for lid in self.acts[0]}
        head = tuple(join([h[i] for h in self.heads]) for i in range(3))
        return acts, head, join(self.logits)


class _Plan(NamedTuple):
    inner: InnerPass
    model: nn.Module
    record: tuple
    reads: dict
    keys: list


class _SuffixNode(torch.autograd.Function):
    """:meth:`InnerPass.outer`: the recorded logits forward, the suffix's backward by hand
    (the formulas of the module docstring over all tokens, with the parameters' gradients:
    ``∂W = Σ_{b,t} δ_t k_tᵀ`` per layer, ``∂w_norm = Σ ∂n ⊙ x r``; a task level's layers read
    per run and their gradient goes to ``W0``)."""

    @staticmethod
    def forward(ctx, plan: _Plan, *tensors: Tensor | None) -> Tensor:
        acts, head, logits = plan.record
        # the plan without the output: ctx → logits → its grad_fn → ctx would be a reference
        # cycle through autograd's C++ node, which Python's gc cannot free (a leak per call)
        ctx.plan = plan._replace(record=(acts, head, None))
        return logits  # computed by the segments, no input's storage

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        plan = ctx.plan
        inner, model, (acts, (final, rf, nf), _), reads, keys = plan
        need = ctx.needs_input_grad[1:]
        n_keys = len(keys)
        param_grads: list[Tensor | None] = []
        head = model.embed.weight if model.tied else model.head.weight

        def wgrad(delta: Tensor, key: Tensor) -> Tensor:  # Σ_{b,t} δ kᵀ
            return delta.reshape(-1, delta.shape[-1]).mT @ key.reshape(-1, key.shape[-1])

        def norm_grad(norm, d_n, x, r):
            return None if norm.weight is None else (d_n * x).mul_(r).sum((0, 1))

        d_nf = g @ head
        head_grads = [norm_grad(model.final_norm, d_nf, final, rf), wgrad(g, nf),
                      None if model.tied or model.head.bias is None else g.sum((0, 1))]
        grad = {}
        _send(grad, model.preds[OUTPUT], None, _rms_back_(model.final_norm, final, rf, d_nf))
        level_grads = {}
        for lid in reversed(inner.suffix):
            d_out = grad.pop(lid, None)
            if d_out is None:
                level_grads[lid] = [None, None, None]
                continue
            level = model.levels[lid]
            inp, r, x, z1, hidden = acts[lid]
            runs = reads.get(lid)
            d_hidden = _runs_back(d_out, level.w2, runs, "w2")
            d_z1 = _silu_back_(d_hidden, z1)
            d_x = _runs_back(d_z1, level.w1, runs, "w1")
            level_grads[lid] = [norm_grad(model.norms[lid], d_x, inp, r), wgrad(d_z1, x),
                                wgrad(d_out, hidden)]
            _send(grad, model.preds[lid], None,
                  _rms_back_(model.norms[lid], inp, r, d_x).add_(d_out))
        for lid in inner.suffix:
            param_grads += level_grads[lid]
        param_grads += head_grads
        out = [grad.get(k) for k in keys] + param_grads
        return None, *[o if n else None for o, n in zip(out, need)]


def _runs_back(g: Tensor, w0: Tensor, read: TaskRead | None, name: str) -> Tensor:
    """``g W`` per run of ``read`` (None: ``W0`` for every token). Consecutive runs on one
    anchor (``W0`` or a dense per-sequence anchor, the runs between two folds) read it in one
    matmul over all their tokens (one pass over the per-sequence weights instead of one per
    run), each run's factor part ``(g pᵀ) k`` then added on its own tokens."""
    if read is None:
        return g @ w0
    w0 = w0.detach()
    pieces, start, anchor, factored = [], 0, None, []
    runs = list(zip(read.runs, read.weights[name]))
    for i, ((s, e), w) in enumerate(runs):
        if isinstance(w, Factored):
            factored.append((s, e, w))
        nxt = runs[i + 1][1] if i + 1 < len(runs) else None
        anchor = w.anchor if isinstance(w, Factored) else w
        if nxt is not None and (nxt.anchor if isinstance(nxt, Factored) else nxt) is anchor:
            continue  # the next run reads the same anchor: one read for the group
        gs = g[:, start:e]
        gx = gs @ w0 if anchor is None else gs @ anchor
        for a, b, f in factored:
            # an out-of-place product (counted by FlopCounterMode, which skips baddbmm_)
            gx[:, a - start:b - start] += (g[:, a:b] @ f.p.mT) @ f.k
        pieces.append(gx)
        start, factored = e, []
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
