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

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.graph import OUTPUT
from nlstudio.models.levels.cms import MLPLevel
from nlstudio.models.levels.cms_reads import ChunkGradient, Weight, read_back, read_weight
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
             targets: Tensor, sums: dict[str, ChunkGradient], freeze: frozenset
             ) -> tuple[Tensor, dict]:
        """One segment: ``outs`` the outputs before the suffix (the graph cut there),
        ``weights`` what each task level reads, ``sums`` the learning task levels' gradient
        sums (added to). Returns the segment's logits and the suffix levels' new states."""
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
        return logits, states

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
              _rms_back(model.final_norm, final, rf, d_logits @ head))
        for lid in reversed(self.suffix):
            d_out = grad.pop(lid, None)
            if d_out is None:  # the loss does not reach this block's output
                continue
            level = model.levels[lid]
            inp, r, x, z1, hidden = acts[lid]
            w = weights.get(lid, {"w1": None, "w2": None})
            d_hidden = read_back(d_out, level.w2.detach(), w["w2"])
            d_z1 = torch.ops.aten.silu_backward(d_hidden, z1)
            if lid in learning:
                level.task_gradient((z1, None, x, hidden), d_z1, d_out, sums[lid])
            if lid in upstream:
                d_x = read_back(d_z1, level.w1.detach(), w["w1"])
                _send(grad, model.preds[lid], wanted,
                      d_out + _rms_back(model.norms[lid], inp, r, d_x))


def _send(grad: dict[str, Tensor], preds: list[str], wanted: set, g: Tensor) -> None:
    """Adds ``g`` (the gradient of a sum of ``preds``' outputs) to each wanted predecessor."""
    for p in preds:
        if p in wanted:
            grad[p] = g if p not in grad else grad[p] + g


def _rms(norm: nn.RMSNorm, x: Tensor) -> tuple[Tensor, Tensor]:
    """``norm(x)`` and its ``r = (mean(x²) + ε)^{-1/2}`` (``[..., 1]``)."""
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
    n = x * r
    return (n if norm.weight is None else n.mul_(norm.weight)), r


def _rms_back(norm: nn.RMSNorm, x: Tensor, r: Tensor, g: Tensor) -> Tensor:
    """``∂L/∂x`` of ``n = w ⊙ x r`` from ``g = ∂L/∂n``."""
    gw = g if norm.weight is None else g * norm.weight
    dot = (gw * x).mean(-1, keepdim=True).mul_(r * r)
    return (gw - x * dot).mul_(r)
