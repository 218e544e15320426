"""flash-linear-attention's kernels (models/levels/fla_kernels.py) against our PyTorch chunked
forms: outputs, final memory, surprises, gradients, streaming over two calls; gated and ungated
delta rule, the three linear-attention gates, and the levels' own dispatch hook.

Two ways to run the same comparisons (:func:`compare_all`):

- on CUDA with fla installed (``pip install nlstudio[gpu]``): the real kernels, float32, to TF32
  accuracy (fla's dots use TF32 tensor cores);
- without a GPU, with fla and Triton installed: Triton's CPU interpreter (``TRITON_INTERPRET=1``)
  runs fla's very kernels on CPU tensors, in a subprocess (the variable must be set before
  Triton compiles anything), with two shims that only the interpreter needs
  (:func:`interpreter_shims`). Agreement there is to float32 rounding.

Without fla / Triton (CI) everything here skips at once.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models.levels import fla_kernels
from nlstudio.models.levels.delta import DeltaLevel, chunked_delta_rule
from nlstudio.models.levels.linear_attention import (LinearAttentionLevel,
                                                     chunked_linear_attention)

HAVE_FLA = all(importlib.util.find_spec(m) is not None for m in ("fla", "triton"))
HAVE_CUDA = torch.cuda.is_available()


# -- the comparisons (shared by the CUDA and the interpreter runs) ----------------------------
def _inputs(b, h, t, d, gate, seed, device):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    q, k = F.normalize(r(b, h, t, d), dim=-1), F.normalize(r(b, h, t, d), dim=-1)
    v, memory = r(b, h, t, d), 0.3 * r(b, h, d, d)
    eta = torch.rand(b, h, t, generator=g)
    if gate is None:
        log = None
    elif gate == "scalar" or gate is True:
        log = F.logsigmoid(r(b, h, t) + 2.0)
        log = log if gate is True else log[..., None]
    else:  # vector
        log = F.logsigmoid(r(b, h, t, d) + 2.0)
    out = [q, k, v, eta, log, memory]
    return [None if z is None else z.to(device).requires_grad_() for z in out]


def _diffs(got, want) -> float:
    """Max over the pairs of ``max |a − b| / max(1, max |b|)`` (absolute below 1, relative to
    the largest entry above)."""
    assert len(got) == len(want)
    assert all((a is None) == (b is None) for a, b in zip(got, want))
    return max(((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()
               for a, b in zip(got, want) if a is not None)


def _run(fn, inputs, splits):
    """``fn`` over the time axis in ``splits`` consecutive calls (the memory carried), then
    the gradients of a fixed random read-out of every output and of the final memory."""
    q, k, v, eta, log, memory = inputs
    outs, start, m = [], 0, memory
    extras = []
    for n in splits:
        sl = slice(start, start + n)
        y, *rest, m = fn(q[:, :, sl], k[:, :, sl], v[:, :, sl], eta[:, :, sl],
                         None if log is None else log[:, :, sl], m)
        outs.append(y)
        extras += rest
        start += n
    y = torch.cat(outs, 2)
    g = torch.Generator().manual_seed(7)
    wy = torch.randn(y.shape, generator=g).to(y.device)
    wm = torch.randn(m.shape, generator=g).to(m.device)
    loss = (y * wy).sum() + (m * wm).sum()
    wanted = [z for z in inputs if z is not None]
    grads = torch.autograd.grad(loss, wanted, allow_unused=True)  # eta: delta only
    u = torch.cat(extras, 2) if extras else None
    return y.detach(), m.detach(), u, grads


def _delta_fla(q, k, v, eta, log, m):
    return fla_kernels.delta_rule(q, k, v, eta, log, m)


def _delta_ref(q, k, v, eta, log, m):
    return chunked_delta_rule(q, k, v, eta, log, m)


def _lin_fla(q, k, v, eta, log, m):  # eta unused: linear attention's v comes scaled
    return fla_kernels.linear_attention(q, k, v, log, m)


def _lin_ref(q, k, v, eta, log, m):
    return chunked_linear_attention(q, k, v, log, m)


def compare_kernels(device, d=16, t=100, splits=((100,), (37, 63))) -> dict[str, float]:
    """Max abs differences, fla vs ours, per case: ``{case: diff}`` over outputs, final memory,
    surprises and every input's gradient."""
    out = {}
    cases = [("delta", g, _delta_fla, _delta_ref) for g in (None, True)]
    cases += [("linear_attention", g, _lin_fla, _lin_ref) for g in (None, "scalar", "vector")]
    for kind, gate, fla_fn, ref_fn in cases:
        for split in splits:
            inputs = _inputs(2, 2, t, d, gate, seed=len(out), device=device)
            got, want = _run(fla_fn, inputs, split), _run(ref_fn, inputs, split)
            name = f"{kind}[gate={gate}, calls={'+'.join(map(str, split))}]"
            out[name + " y"] = _diffs([got[0]], [want[0]])
            out[name + " M"] = _diffs([got[1]], [want[1]])
            if want[2] is not None:
                out[name + " u"] = _diffs([got[2]], [want[2]])
            out[name + " grads"] = _diffs(got[3], want[3])
    return out


def compare_levels(device, force: bool = False) -> dict[str, float]:
    """The levels' own hook: one level forward + backward with fla and with
    ``NLSTUDIO_FLA=0``; outputs, the state (memory, write norms, last write) and parameter
    gradients. ``force``: take the fla path on any device (the interpreter run)."""
    out = {}
    specs = [("delta", DeltaLevel, {"gate": g}) for g in (False, True)]
    specs += [("linear_attention", LinearAttentionLevel, {"gate": g})
              for g in ("none", "scalar", "vector")]
    real_use, real_fns = fla_kernels.use_fla, (fla_kernels.delta_rule,
                                                fla_kernels.linear_attention)
    calls = []

    def counted(fn):
        return lambda *a: calls.append(1) or fn(*a)
    for kind, cls, opts in specs:
        torch.manual_seed(0)
        level = cls({"id": "lv", "kind": kind, "period": 1, "conv": 4, **opts}, 32, 2).to(device)
        x = torch.randn(2, 70, 32, device=device)
        results = []
        for fla_on in (True, False):
            os.environ[fla_kernels.ENV_SWITCH] = "1" if fla_on else "0"
            if force:
                fla_kernels.use_fla = (lambda q, v: True) if fla_on else (lambda q, v: False)
            fla_kernels.delta_rule, fla_kernels.linear_attention = map(counted, real_fns)
            calls.clear()
            try:
                y, state = level(x)
                y2, state = level(x[:, :33], state)  # streaming: a second call
                g = torch.Generator().manual_seed(3)
                wy, wm = (torch.randn(z.shape, generator=g).to(device) for z in (y, state["M"]))
                loss = (y * wy).sum() + (y2 * wy[:, :33]).sum() + (state["M"] * wm).sum()
                grads = torch.autograd.grad(loss, list(level.parameters()), allow_unused=True)
                results.append((y, y2, state, grads))
            finally:
                os.environ.pop(fla_kernels.ENV_SWITCH, None)
                fla_kernels.use_fla = real_use
                fla_kernels.delta_rule, fla_kernels.linear_attention = real_fns
            assert len(calls) == (2 if fla_on else 0), (kind, fla_on, len(calls))
        (y, y2, s, gr), (ry, ry2, rs, rgr) = results
        name = f"level {kind}{opts}"
        out[name + " y"] = _diffs([y, y2], [ry, ry2])
        out[name + " state"] = _diffs([s["M"], s["write_norms"], s["last_write"]],
                                      [rs["M"], rs["write_norms"], rs["last_write"]])
        out[name + " grads"] = _diffs([g for g in gr if g is not None],
                                      [g for g in rgr if g is not None])
    return out


# -- the interpreter run ---------------------------------------------------------------------
def interpreter_shims() -> None:
    """What fla's kernels need to run under Triton 3.x's CPU interpreter, and nothing else:

    - the autotuner benchmarks its configs through a GPU driver (none here): keep one config;
    - the interpreter runs ``for i in range(n)`` with Python ints, where compiled Triton gives
      tensors (fla calls ``i.to(tl.int64)`` on them): make those loop variables tensors."""
    import ast
    import builtins

    import triton.runtime.autotuner as autotuner
    import triton.runtime.interpreter as interpreter

    prune = autotuner.Autotuner.prune_configs
    autotuner.Autotuner.prune_configs = lambda self, kwargs: prune(self, kwargs)[:1]

    def tensor_range(*args):
        ends = [int(a.handle.data.item()) if hasattr(a, "handle") else int(a) for a in args]
        for i in builtins.range(*ends):
            yield interpreter._implicit_cvt(i)

    class RangeToTensor(ast.NodeTransformer):
        def visit_For(self, node):
            self.generic_visit(node)
            it = node.iter
            if (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                    and it.func.id == "range"):
                it.func = ast.Name(id="_nl_tensor_range", ctx=ast.Load())
            return node

    transform = interpreter.FunctionRewriter._transform_ast

    def transform_ast(self, src):
        tree = ast.fix_missing_locations(RangeToTensor().visit(transform(self, src)))
        self.fn.__globals__.setdefault("_nl_tensor_range", tensor_range)
        return tree

    interpreter.FunctionRewriter._transform_ast = transform_ast


def _interpreter_main() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    torch.set_num_threads(1)
    interpreter_shims()
    found = fla_kernels.fla_unavailable()
    if found is not None:
        print(json.dumps({"error": found}))
        return
    result = compare_kernels("cpu")
    result.update(compare_levels("cpu", force=True))
    print(json.dumps(result))


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FLA, reason="flash-linear-attention / triton not installed")
@pytest.mark.skipif(HAVE_CUDA, reason="CUDA present: the real kernels are compared instead")
def test_fla_kernels_match_ours_under_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    env.pop(fla_kernels.ENV_SWITCH, None)
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    # every case ran: 5 kernels x 2 splits x (y, M, grads), delta's surprises, 5 levels x 3
    assert len(result) == 5 * 2 * 3 + 2 * 2 + 5 * 3
    bad = {k: v for k, v in result.items() if not v <= 2e-5}
    assert not bad, bad


# -- CUDA -------------------------------------------------------------------------------------
cuda_fla = pytest.mark.skipif(not (HAVE_CUDA and HAVE_FLA), reason="needs CUDA and fla")


@cuda_fla
@pytest.mark.parametrize("d", [16, 64])
def test_fla_kernels_match_ours_on_cuda(d):
    torch.backends.cuda.matmul.allow_tf32 = False  # our reference in true float32
    result = compare_kernels("cuda", d=d, t=300, splits=((300,), (130, 170)))
    bad = {k: v for k, v in result.items() if not v <= 2e-2}  # TF32 in fla's dots
    assert not bad, bad


@cuda_fla
def test_levels_dispatch_to_fla_on_cuda_and_agree():
    assert fla_kernels.fla_unavailable() is None
    q = torch.zeros(1, 1, 4, 32, device="cuda")
    assert fla_kernels.use_fla(q, q)
    assert not fla_kernels.use_fla(q.double(), q.double())
    assert not fla_kernels.use_fla(q[..., :8], q[..., :8])
    result = compare_levels("cuda")
    bad = {k: v for k, v in result.items() if not v <= 2e-2}
    assert not bad, bad


def test_dispatch_rule_without_cuda(monkeypatch):
    """On the CPU the PyTorch path is always taken (fla or not), and NLSTUDIO_FLA=0 switches
    fla off everywhere."""
    q = torch.zeros(1, 1, 4, 32)
    assert not fla_kernels.use_fla(q, q)
    monkeypatch.setenv(fla_kernels.ENV_SWITCH, "0")
    assert fla_kernels.switched_off()
    monkeypatch.setenv(fla_kernels.ENV_SWITCH, "1")
    assert not fla_kernels.switched_off()
    why = fla_kernels.fla_unavailable()
    assert (why is None) == HAVE_FLA
    if why is not None:  # CI: one printable line that says what is missing
        assert "\n" not in why and why.startswith("flash-linear-attention not usable")


@pytest.mark.skipif(not HAVE_FLA, reason="flash-linear-attention / triton not installed")
def test_a_changed_internal_fla_function_turns_the_path_off(monkeypatch):
    """fla's internal functions are checked by keyword: a release that renames one is refused
    (and the PyTorch path taken), not called with the wrong arguments."""
    monkeypatch.setitem(fla_kernels._KEYWORDS, "chunk_fwd_o", {"q", "no_such_keyword"})
    fla_kernels._fla.cache_clear()
    try:
        why = fla_kernels.fla_unavailable()
        assert why is not None and "chunk_fwd_o" in why and "no_such_keyword" in why
        assert not fla_kernels.use_fla(torch.zeros(1, 1, 4, 32), torch.zeros(1, 1, 4, 32))
    finally:
        monkeypatch.undo()
        fla_kernels._fla.cache_clear()
    assert fla_kernels.fla_unavailable() is None


if __name__ == "__main__":
    _interpreter_main()
