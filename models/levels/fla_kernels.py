"""flash-linear-attention's Triton chunk kernels for ``delta`` and ``linear_attention`` on CUDA.

When it is taken (:func:`use_fla`, asked by ``DeltaLevel.recur`` and
``LinearAttentionLevel.recur`` before their PyTorch chunked form):

- the tensors are on a CUDA device (never on the CPU: there the PyTorch path is the only one);
- ``fla`` (``pip install nlstudio[gpu]``: flash-linear-attention >= 0.6, which brings fla-core
  and Triton) imports, with the internal functions used below (:func:`fla_unavailable` says why
  not, once);
- the recurrence runs in float32, bfloat16 or float16 (float64, used by the identity tests, has
  no fla kernel);
- the head width is 16 ≤ d ≤ 256 (fla's state kernels stop at 256; below 16 a Triton dot tile
  is wider than the head);
- it is not switched off: environment variable ``NLSTUDIO_FLA=0`` (also ``off``, ``false``,
  ``no``) keeps every call on the PyTorch path, e.g. to compare the two or to rule fla out.

Frozen calls never reach ``recur`` (they only read the memory), so they are unaffected. The
PyTorch path (``chunked_delta_rule``, ``chunked_linear_attention``) stays the reference and the
fallback; tests/models/test_fla_kernels.py checks on CUDA that both agree (outputs, final
memory, gradients, streaming) and, without a GPU, runs these very functions under Triton's CPU
interpreter.

Conventions mapped here, in one place: fla's tensors are ``[B, T, H, D]`` (ours ``[B, H, T, D]``);
its state is ``S [K, V]`` (ours ``M [d_v, d_k]``: the transpose); its read is scaled by ``scale``
(default ``1/√d_k``; our ``y_t = M_t q_t`` is unscaled, so ``scale=1``); its ``g`` is the
natural log-decay (our ``log α`` / ``log a``); q, k arrive L2-normalised (fla's in-kernel
normalisation stays off); its ``beta`` is our step ``η_t``.

The delta rule also returns the surprises ``u_t = β_t (v_t − α_t M_{t−1} k_t)`` (the level's
``write_norms`` and ``last_write`` come from them on every call). fla's public
``chunk_(gated_)delta_rule`` does not return them, but its forward computes them: the "new
values" ``v_new`` of ``chunk_gated_delta_rule_fwd_h``, stored before the gate's decay to the
chunk end. :class:`_DeltaRule` therefore runs fla's own forward steps (WY representation, state
pass, output) keeping ``v_new``, and fla's own backward (``chunk_gated_delta_rule_bwd``); the
surprises carry no gradient (they are only read under ``no_grad``). This leans on fla's internal
functions: if a release moves them, the import check fails and the PyTorch path is taken.

Precision: fla's float32 kernels run their dots on TF32 tensor cores where the card has them
(Ampere and later), so on CUDA the two paths agree to TF32 accuracy (about 1e-3 relative), not
to float32 rounding; under the interpreter (no TF32) they agree to float32 rounding.
"""
from __future__ import annotations

import functools
import inspect
import os
from contextlib import nullcontext

import torch
from torch import Tensor

ENV_SWITCH = "NLSTUDIO_FLA"
_OFF = {"0", "off", "false", "no"}
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MIN_HEAD, MAX_HEAD = 16, 256
FLA_CHUNK = 64  # fla's chunk length (its kernels' BT); independent of the levels' own chunk


@functools.cache
def _fla() -> dict | str:
    """fla's functions used here, or the one-line reason they are not available."""
    try:
        from fla.ops.common.chunk_delta_h import chunk_gated_delta_rule_fwd_h
        from fla.ops.common.chunk_o import chunk_fwd_o
        from fla.ops.gated_delta_rule.chunk import chunk_gated_delta_rule_bwd
        from fla.ops.gated_delta_rule.chunk_fwd import chunk_gated_delta_rule_fwd_intra
        from fla.ops.gla import chunk_gla
        from fla.ops.simple_gla import chunk_simple_gla
        from fla.ops.utils import chunk_local_cumsum
        from fla.ops.utils.constant import RCP_LN2
    except Exception as exc:  # ImportError, or a Triton that fails at import: never fatal
        return f"flash-linear-attention not usable: {type(exc).__name__}: {exc}".splitlines()[0]
    found = dict(locals())
    for name, keywords in _KEYWORDS.items():  # internal functions: did a release change them?
        missing = keywords - set(inspect.signature(found[name]).parameters)
        if missing:
            return (f"flash-linear-attention's {name} takes no {', '.join(sorted(missing))} "
                    f"(written for fla 0.6)")
    return found


#: the keyword arguments passed to each fla function below
_KEYWORDS = {
    "chunk_local_cumsum": {"chunk_size", "scale"},
    "chunk_gated_delta_rule_fwd_intra": {"k", "v", "g", "beta", "chunk_size"},
    "chunk_gated_delta_rule_fwd_h": {"k", "w", "u", "g", "initial_state", "output_final_state",
                                     "chunk_size"},
    "chunk_fwd_o": {"q", "k", "v", "h", "g", "scale", "chunk_size"},
    "chunk_gated_delta_rule_bwd": {"q", "k", "v", "g", "beta", "A", "scale", "initial_state",
                                   "do", "dht", "chunk_size"},
    "chunk_simple_gla": {"g", "scale", "initial_state", "output_final_state", "state_v_first"},
    "chunk_gla": {"g", "scale", "initial_state", "output_final_state", "state_v_first"},
}


def fla_unavailable() -> str | None:
    """None when fla's kernels import, else why not (one line)."""
    found = _fla()
    return found if isinstance(found, str) else None


def switched_off() -> bool:
    """``NLSTUDIO_FLA=0`` (or off / false / no) in the environment."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in _OFF


def use_fla(q: Tensor, v: Tensor) -> bool:
    """Whether a call with queries ``q [B, H, T, d_k]`` and values ``v [B, H, T, d_v]`` runs on
    fla's kernels (the rule in the module docstring)."""
    return (q.is_cuda and q.dtype in _DTYPES
            and MIN_HEAD <= q.shape[-1] <= MAX_HEAD and MIN_HEAD <= v.shape[-1] <= MAX_HEAD
            and not switched_off() and fla_unavailable() is None)


def _on_device(x: Tensor):
    """Triton launches on the current CUDA device: make it the tensors' one (fla's
    ``input_guard`` does the same for its public functions)."""
    return torch.cuda.device(x.device) if x.is_cuda else nullcontext()


def _to_fla(x: Tensor) -> Tensor:
    """``[B, H, T, ...]`` -> fla's ``[B, T, H, ...]``."""
    return x.transpose(1, 2)


class _DeltaRule(torch.autograd.Function):
    """fla's chunked gated delta rule that also returns its surprises (module docstring).
    Inputs in fla's layout; ``g`` the natural log-decay (zeros for DeltaNet); ``h0 [B, H, K, V]``.
    Returns ``(o, final state [B, H, K, V], surprises)``."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0):
        with _on_device(q):
            return _DeltaRule._forward(ctx, q, k, v, beta, g, h0)

    @staticmethod
    def _forward(ctx, q, k, v, beta, g, h0):
        f = _fla()
        q, k, v, beta, h0 = (x.contiguous() for x in (q, k, v, beta, h0))
        # fla's kernels take the in-chunk cumulative log-decay in base 2
        g = f["chunk_local_cumsum"](g.contiguous(), chunk_size=FLA_CHUNK, scale=f["RCP_LN2"])
        w, u, a = f["chunk_gated_delta_rule_fwd_intra"](k=k, v=v, g=g, beta=beta,
                                                        chunk_size=FLA_CHUNK)
        h, v_new, final = f["chunk_gated_delta_rule_fwd_h"](
            k=k, w=w, u=u, g=g, initial_state=h0, output_final_state=True,
            chunk_size=FLA_CHUNK)
        o = f["chunk_fwd_o"](q=q, k=k, v=v_new, h=h, g=g, scale=1.0, chunk_size=FLA_CHUNK)
        ctx.save_for_backward(q, k, v, beta, g, a, h0)
        ctx.mark_non_differentiable(v_new)
        return o.to(q.dtype), final.to(h0.dtype), v_new

    @staticmethod
    def backward(ctx, do, dht, _dv_new):
        q, k, v, beta, g, a, h0 = ctx.saved_tensors
        with _on_device(q):
            dq, dk, dv, db, dg, dh0, _, _ = _fla()["chunk_gated_delta_rule_bwd"](
                q=q, k=k, v=v, g=g, beta=beta, A=a, scale=1.0, initial_state=h0,
                do=do.contiguous(), dht=dht.contiguous(), chunk_size=FLA_CHUNK)
        return dq, dk, dv, db, dg, dh0


@torch.compiler.disable  # Triton kernels and an autograd.Function: as fla's own entry points
def delta_rule(q: Tensor, k: Tensor, v: Tensor, eta: Tensor, log_alpha: Tensor | None,
               memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``chunked_delta_rule`` (models/levels/delta.py) on fla's kernels: same arguments (q, k
    L2-normalised ``[B, H, T, d_k]``, v ``[B, H, T, d_v]``, eta / log_alpha ``[B, H, T]``,
    memory ``[B, H, d_v, d_k]``), same returns ``(y, u, final memory)``."""
    if q.shape[2] == 0:
        empty = v.new_zeros(*v.shape[:2], 0, v.shape[-1])
        return empty, empty, memory
    # DeltaNet (no gate) runs on the gated kernels with log α = 0: the same math, and the
    # float32 path fla supports (its chunk_delta_rule refuses float32 "on some platforms")
    g = (q.new_zeros(q.shape[0], q.shape[2], q.shape[1]) if log_alpha is None
         else _to_fla(log_alpha))
    o, final, u = _DeltaRule.apply(_to_fla(q), _to_fla(k), _to_fla(v), _to_fla(eta), g,
                                   memory.mT)
    return _to_fla(o), _to_fla(u), final.mT.to(memory.dtype)


@torch.compiler.disable  # Triton kernels and an autograd.Function: as fla's own entry points
def linear_attention(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor | None, memory: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """``chunked_linear_attention`` (models/levels/linear_attention.py) on fla's kernels: same
    arguments (v already scaled by η; log_a ``[B, H, T, 1 or d_k]`` or None), same returns
    ``(y, final memory)``. No gate or one per head: ``chunk_simple_gla``; one per key
    dimension: ``chunk_gla``. Both keep the state as ``[V, K]`` here (``state_v_first``)."""
    if q.shape[2] == 0:
        return v.new_zeros(*v.shape[:2], 0, v.shape[-1]), memory
    f = _fla()
    h0 = memory.float()  # fla's GLA asserts a float32 initial state
    args = dict(scale=1.0, initial_state=h0, output_final_state=True, state_v_first=True)
    q, k, v = _to_fla(q), _to_fla(k), _to_fla(v)
    if log_a is None or log_a.shape[-1] == 1:
        g = None if log_a is None else _to_fla(log_a[..., 0])
        o, final = f["chunk_simple_gla"](q, k, v, g=g, **args)
    else:
        o, final = f["chunk_gla"](q, k, v, g=_to_fla(log_a), **args)
    return _to_fla(o), final.to(memory.dtype)
