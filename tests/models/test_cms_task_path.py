"""The fast path of CMS levels with the ``task`` objective (models/levels/cms_reads.py and
NestedModel._segmented) against the semantics written out directly, in float64.

The reference reads ``W = W0 + Δ`` per sequence and segment (Δ detached), takes each segment's
inner gradient with autograd w.r.t. per-sequence copies of ``W`` on a graph cut at the first
task level's input, writes with the level's inner optimizer at every multiple of C (one step on
the chunk's summed gradient, Eq. 31), and builds the outer logits segment by segment with the
graph to ``W0`` and the prefix. The model instead reads dense or factored weights (SGD writes
kept as ``A + pᵀk`` up to a fold rank), keeps inner gradients as factors, and runs the outer
pass once per call: both must agree to float64 round-off, for every fold rank and inner
optimizer, across calls that stop mid-chunk.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models import OPTIMIZERS, build_model
from nlstudio.models.levels import cms_reads
from nlstudio.models.levels.cms import MLPLevel
from nlstudio.models.levels.cms_reads import (ChunkGradient, Factored, PendingWrite,
                                              factored_sq_norm, linear_runs, sgd_write)
from nlstudio.models.task_pass import InnerPass

V, D, B = 11, 16, 3
TASK = {"a": 2, "b": 6}  # the task levels and their periods
HYPER = {"sgd": {"eta": 0.3}, "momentum": {"eta": 0.2, "alpha": 0.6}, "dgd": {"eta": 0.05}}


def model_spec(opt: str) -> dict:
    """s (l2 CMS, the prefix) → a (task, C=2) → m (frozen mlp) → b (task, C=6) → output."""
    def task(lid):
        return {"id": lid, "kind": "mlp", "period": TASK[lid], "objective": "task",
                "optimizer": {"name": opt, **HYPER[opt]}, "expansion": 2}
    levels = [{"id": "s", "kind": "mlp", "period": 2, "objective": "l2",
               "optimizer": {"name": "sgd", "eta": 0.1}, "expansion": 2},
              task("a"), {"id": "m", "kind": "mlp", "period": None, "expansion": 2}, task("b")]
    ids = ["input", "s", "a", "m", "b", "output"]
    return {"d_model": D, "heads": 2, "levels": levels,
            "edges": [[x, y] for x, y in zip(ids, ids[1:])]}


def read(x, w):
    hidden = F.silu(x @ w["w1"].mT)
    return hidden @ w["w2"].mT, hidden


def reference(model, x, y, state):
    """One call of the segmented task pass, written out: logits (with the outer graph) and the
    task levels' new states (only the entries compared below)."""
    t0 = state["t"]
    levels = {lid: dict(state["levels"][lid]) for lid in TASK}
    h0 = model.embed(x)
    ys, _ = model.levels["s"](model.norms["s"](h0), state["levels"]["s"])
    h1 = h0 + ys
    steps = x.shape[1]
    cuts = sorted({steps} | {p for p in range(1, steps) for c in TASK.values()
                             if (t0 + p) % c == 0})
    norms = {lid: torch.zeros(steps, dtype=torch.float64) for lid in TASK}
    parts = []

    def suffix(h, w, keys=None):
        xa = model.norms["a"](h)
        ya, ha = read(xa, w["a"])
        h = h + ya
        ym, _ = model.levels["m"](model.norms["m"](h))
        h = h + ym
        xb = model.norms["b"](h)
        yb, hb = read(xb, w["b"])
        if keys is not None:
            keys.update(a=(xa, ha), b=(xb, hb))
        return F.linear(model.final_norm(h + yb), model.embed.weight)

    start = 0
    for end in cuts:
        w0 = {lid: {n: getattr(model.levels[lid], n) for n in ("w1", "w2")} for lid in TASK}
        outer = {lid: {n: w0[lid][n] + levels[lid]["delta"][n].detach() for n in w0[lid]}
                 for lid in TASK}
        parts.append(suffix(h1[:, start:end], outer))
        leaves = {lid: {n: (w0[lid][n].detach() + levels[lid]["delta"][n]).detach()
                        .requires_grad_() for n in w0[lid]} for lid in TASK}
        keys: dict = {}
        loss = F.cross_entropy(suffix(h1[:, start:end].detach(), leaves, keys).flatten(0, 1),
                               y[:, start:end].flatten(), reduction="sum")
        flat = [leaves[lid][n] for lid in TASK for n in ("w1", "w2")]
        grads = iter(torch.autograd.grad(loss, flat))
        for lid, c in TASK.items():
            lv = levels[lid]
            lv["grad"] = {n: lv["grad"][n] + next(grads) for n in ("w1", "w2")}
            k1, k2 = keys[lid]
            lv["keys"] = {"w1": torch.cat((lv["keys"]["w1"], k1.detach()), 1),
                          "w2": torch.cat((lv["keys"]["w2"], k2.detach()), 1)}
            if (t0 + end) % c:
                continue
            level, sq = model.levels[lid], 0.0
            delta, opt = {}, {}
            for n in ("w1", "w2"):
                base = getattr(level, n).detach()
                cur = base + lv["delta"][n]
                key = lv["keys"][n] if level.uses_key else None
                new, opt[n] = level.optimizer.step(cur, lv["grad"][n], lv["opt"][n], key=key)
                change = new - cur
                sq = sq + change.flatten(1).pow(2).sum(1)
                if n == "w1":
                    lv["last_write"] = change[0]
                delta[n] = new - base
            lv.update(delta=delta, opt=opt, updates=lv["updates"] + 1,
                      grad={n: torch.zeros_like(g) for n, g in lv["grad"].items()},
                      keys={n: k[:, :0] for n, k in lv["keys"].items()})
            norms[lid][end - 1] = sq.sqrt().mean()
        start = end
    for lid in TASK:
        levels[lid]["write_norms"] = norms[lid]
    return torch.cat(parts, 1), levels


def compare_call(model, x, y, state):
    mix = torch.randn(*x.shape, V, dtype=torch.float64)  # a generic outer loss
    params = list(model.parameters())
    logits, new = model(x, state, targets=y)
    got = torch.autograd.grad((logits * mix).sum(), params, allow_unused=True)
    ref_logits, ref = reference(model, x, y, state)
    want = torch.autograd.grad((ref_logits * mix).sum(), params, allow_unused=True)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-12)
    for (name, _), g, r in zip(model.named_parameters(), got, want):
        if r is None:
            assert g is None or not g.any(), name
        else:
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12, msg=name)
    for lid in TASK:
        lv, rv = new["levels"][lid], ref[lid]
        assert lv["updates"] == rv["updates"], lid
        for key in ("delta", "grad"):
            for n in ("w1", "w2"):
                torch.testing.assert_close(lv[key][n], rv[key][n], rtol=1e-9, atol=1e-12,
                                           msg=f"{lid} {key} {n}")
                assert not lv[key][n].requires_grad
        for n, m in rv["opt"].items():
            for k, v in m.items():
                torch.testing.assert_close(lv["opt"][n][k], v, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(lv["write_norms"], rv["write_norms"], rtol=1e-9, atol=1e-12)
        if rv.get("last_write") is not None:
            torch.testing.assert_close(lv["last_write"], rv["last_write"], rtol=1e-9,
                                       atol=1e-12)
    return new


@pytest.mark.parametrize("fold", ["every write", "every write, change formed",
                                  "never in a call"])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "dgd"])
def test_task_path_matches_the_written_out_semantics(opt, fold, monkeypatch):
    monkeypatch.setattr(MLPLevel, "fold_rank", staticmethod(
        lambda w0: 10 ** 6 if fold == "never in a call" else 1))
    # SGD's write norm from the change pᵀk formed densely, or from the factors' Gram matrices
    monkeypatch.setattr(cms_reads, "norm_from_change",
                        lambda w0, tokens: fold == "every write, change formed")
    torch.manual_seed(0)
    model = build_model(model_spec(opt), vocab_size=V).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (B, 17), generator=g)
    y = torch.randint(0, V, (B, 17), generator=g)
    state = model.init_state(B)
    for a, b in ((0, 9), (9, 17)):  # the first call stops mid-chunk of both levels
        state = model.detach_state(compare_call(model, x[:, a:b], y[:, a:b], state))
    assert state["levels"]["a"]["updates"] == 8 and state["levels"]["b"]["updates"] == 2


def test_factored_weights_are_what_reads_see_between_folds(monkeypatch):
    """With a fold rank of 4 tokens and period 2, SGD writes stay factored for one write and
    are folded at the next: the model's weights are then a mix of anchors and factors."""
    seen = []
    original = MLPLevel.task_write

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append(type(out[1]["w1"]).__name__)
        return out

    monkeypatch.setattr(MLPLevel, "task_write", spy)
    monkeypatch.setattr(MLPLevel, "fold_rank", staticmethod(lambda w0: 4))
    torch.manual_seed(0)
    model = build_model(model_spec("sgd"), vocab_size=V).double()
    g = torch.Generator().manual_seed(2)
    x, y = (torch.randint(0, V, (B, 12), generator=g) for _ in range(2))
    compare_call(model, x, y, model.init_state(B))
    assert "Factored" in seen and "Tensor" in seen


# -- the pieces ------------------------------------------------------------------------------
def test_linear_runs_equals_dense_reads_and_gradcheck():
    """Runs on W0, on a dense weight, and on factors growing over one anchor: values equal the
    dense reads ``x (A + pᵀk)ᵀ``. The weights are ``W0 + Δ`` with Δ detached (a dense anchor is
    ``W0 + Δ_A`` materialised), so gradients reach x and W0 only, W0 through every token."""
    torch.manual_seed(0)
    dt = torch.float64
    b, d_in, d_out = 2, 3, 4
    x = torch.randn(b, 9, d_in, dtype=dt, requires_grad=True)
    w0 = torch.randn(d_out, d_in, dtype=dt, requires_grad=True)
    delta_a = torch.randn(b, d_out, d_in, dtype=dt)
    anchor = (w0 + delta_a).detach()
    p, k = torch.randn(b, 3, d_out, dtype=dt), torch.randn(b, 3, d_in, dtype=dt)
    runs = ((0, 2), (2, 3), (3, 5), (5, 7), (7, 9))
    ws = (None, Factored(None, p[:, :1], k[:, :1]), anchor, Factored(anchor, p[:, :2], k[:, :2]),
          Factored(anchor, p, k))

    def dense(w):  # W0 + Δ with Δ detached
        if w is None:
            return w0.expand(b, -1, -1)
        if isinstance(w, Factored):
            return w0 + (0 if w.anchor is None else delta_a) + w.p.mT @ w.k
        return w0 + delta_a

    want = torch.cat([x[:, s:e] @ dense(w).mT for (s, e), w in zip(runs, ws)], 1)
    for outer in (True, False):
        torch.testing.assert_close(linear_runs(x, w0, runs, ws, outer), want)
    assert torch.autograd.gradcheck(lambda x: linear_runs(x, w0.detach(), runs, ws, True), (x,))
    mix = torch.randn_like(want)
    gx, gw = torch.autograd.grad((linear_runs(x, w0, runs, ws, True) * mix).sum(), (x, w0))
    rx, rw = torch.autograd.grad((want * mix).sum(), (x, w0))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)


def test_outer_read_back_groups_runs_on_one_anchor():
    """The by-hand outer backward's ``g W`` per run (models/task_pass.py ``_runs_back``), which
    reads each anchor once for all the runs on it: equal to ``g (W0 + Δ)`` run by run, for runs
    on W0 with and without factors, a dense anchor alone, factors growing over it, a second
    anchor, and a single run."""
    from nlstudio.models.levels.cms_reads import TaskRead
    from nlstudio.models.task_pass import _runs_back

    torch.manual_seed(0)
    dt = torch.float64
    b, d_in, d_out = 2, 3, 4
    w0 = torch.randn(d_out, d_in, dtype=dt)
    a1, a2 = (w0 + torch.randn(b, d_out, d_in, dtype=dt) for _ in range(2))
    p, k = torch.randn(b, 5, d_out, dtype=dt), torch.randn(b, 5, d_in, dtype=dt)
    runs = ((0, 2), (2, 3), (3, 6), (6, 7), (7, 9), (9, 10), (10, 12))
    ws = (None, Factored(None, p[:, :1], k[:, :1]), Factored(None, p[:, :3], k[:, :3]), a1,
          Factored(a1, p[:, :2], k[:, :2]), Factored(a1, p, k), a2)

    def dense(w):
        if w is None:
            return w0.expand(b, -1, -1)
        return w.dense(w0) if isinstance(w, Factored) else w

    g = torch.randn(b, 12, d_out, dtype=dt)
    want = torch.cat([g[:, s:e] @ dense(w) for (s, e), w in zip(runs, ws)], 1)
    got = _runs_back(g, w0, TaskRead(runs, {"w1": ws}, outer=True), "w1")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for i, run in enumerate(runs):  # each run alone (a group of one)
        s, e = run
        torch.testing.assert_close(
            _runs_back(g[:, s:e], w0, TaskRead(((0, e - s),), {"w1": (ws[i],)}, outer=True),
                       "w1"), want[:, s:e], rtol=1e-12, atol=1e-12)


def test_chunk_gradient_factors_and_dense_sum():
    torch.manual_seed(0)
    deltas = [torch.randn(2, n, 4, dtype=torch.float64) for n in (1, 3)]
    keys = [torch.randn(2, n, 5, dtype=torch.float64) for n in (1, 3)]
    want = sum(dl.mT @ k for dl, k in zip(deltas, keys))
    like = torch.zeros(2, 4, 5, dtype=torch.float64)
    acc = ChunkGradient(None)
    assert acc.factored("w1") is None
    torch.testing.assert_close(acc.dense_of("w1", like), like)
    for dl, k in zip(deltas, keys):
        acc.add("w1", dl, k)
    dl, k = acc.factored("w1")
    torch.testing.assert_close(dl.mT @ k, want)
    torch.testing.assert_close(acc.total({"w1": like})["w1"], want)
    assert acc.factored("w1") is None  # total() restarts the sum
    base = torch.randn(2, 4, 5, dtype=torch.float64)
    acc = ChunkGradient({"w1": base})
    acc.add("w1", deltas[0], keys[0])
    assert acc.factored("w1") is None  # a dense part: no pure factor form
    torch.testing.assert_close(acc.dense_of("w1", like), base + deltas[0].mT @ keys[0])


def test_factored_norm_is_the_norm_of_the_sum():
    torch.manual_seed(0)
    dl, k = torch.randn(3, 7, 5, dtype=torch.float64), torch.randn(3, 7, 4, dtype=torch.float64)
    want = (dl.mT @ k).flatten(1).pow(2).sum(1)
    torch.testing.assert_close(factored_sq_norm(dl, k), want)
    torch.testing.assert_close(factored_sq_norm(dl[:, :1] * 0, k[:, :1]), torch.zeros(3,
                               dtype=torch.float64))


@pytest.mark.parametrize("change_formed", [False, True])
def test_sgd_writes_append_factors_in_place_and_equal_dense_writes(change_formed, monkeypatch):
    """A run of SGD writes onto one anchor fills shared buffers: every weight (the latest and
    the earlier ones, which later writes must leave as they are, and one written from an
    earlier weight rather than the latest) equals its dense ``W − η Σ δᵀk``; the fold, the
    write norms and sequence 0's last write (formed when asked) too."""
    monkeypatch.setattr(cms_reads, "norm_from_change", lambda w0, tokens: change_formed)
    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(4, 5, dtype=torch.float64, generator=g)
    eta, fold_rank = 0.3, 6
    chunks = [(torch.randn(2, 2, 4, dtype=torch.float64, generator=g),
               torch.randn(2, 2, 5, dtype=torch.float64, generator=g)) for _ in range(4)]
    cur, dense, seen = None, w0.expand(2, 4, 5), []
    for i, (dl, k) in enumerate(chunks):
        new, sq, last = sgd_write(cur, (dl, k), eta, w0, fold_rank, fold=False)
        change = -eta * dl.mT @ k
        dense = dense + change
        seen.append((new, dense))
        torch.testing.assert_close(sq, change.flatten(1).pow(2).sum(1))
        last = last.dense() if isinstance(last, PendingWrite) else last
        torch.testing.assert_close(last, change[0])
        assert isinstance(new, Factored) == (i != 2)  # the third write reaches the fold rank
        cur = new
    for new, want in seen:  # the earlier weights are untouched by the later appends
        torch.testing.assert_close(new.dense(w0) if isinstance(new, Factored) else new, want)
    branch, _, _ = sgd_write(seen[0][0], chunks[2], eta, w0, fold_rank, fold=False)
    torch.testing.assert_close(branch.dense(w0), seen[0][1] - eta * chunks[2][0].mT @ chunks[2][1])
    torch.testing.assert_close(seen[1][0].dense(w0), seen[1][1])  # the branch wrote elsewhere


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_inner_optimizer_runs_the_fast_path_like_the_reference_write(name):
    """One call, one level, each optimizer: the model's write equals one optimizer step on the
    chunk's summed gradient at W0 + Δ (the factored sum is multiplied out for every rule but
    SGD)."""
    torch.manual_seed(0)
    spec = {"d_model": 8, "heads": 1, "edges": [["input", "c"], ["c", "output"]],
            "levels": [{"id": "c", "kind": "mlp", "period": 3, "objective": "task",
                        "optimizer": {"name": name}, "expansion": 2}]}
    model = build_model(spec, vocab_size=V).double()
    x = torch.randint(0, V, (2, 7))
    y = torch.randint(0, V, (2, 7))
    _, st = model(x[:, :3], targets=y[:, :3])
    level = model.levels["c"]
    w = {n: getattr(level, n).detach().expand(2, -1, -1).clone().requires_grad_()
         for n in ("w1", "w2")}
    h = model.embed(x[:, :3])
    out, hidden = read(model.norms["c"](h), w)
    logits = F.linear(model.final_norm(h + out), model.embed.weight)
    grads = torch.autograd.grad(F.cross_entropy(logits.flatten(0, 1), y[:, :3].flatten(),
                                                reduction="sum"), [w["w1"], w["w2"]])
    keys = {"w1": model.norms["c"](h).detach(), "w2": hidden.detach()}
    for n, g in zip(("w1", "w2"), grads):
        init = level.optimizer.init(st["levels"]["c"]["delta"][n])
        new, _ = level.optimizer.step(w[n].detach(), g, init, key=keys[n])
        torch.testing.assert_close(getattr(level, n) + st["levels"]["c"]["delta"][n], new)


# -- the inner pass by hand (models/task_pass.py) against autograd's -------------------------
def dag_spec(tied: bool) -> dict:
    """input → s (l2 CMS, prefix) → a (task, C=3) → {m (frozen mlp), b (task, C=4)} → c (task,
    C=3, reads m + b) → output, which also reads a and m: sums of predecessors everywhere."""
    def task(lid, c, opt="sgd"):
        return {"id": lid, "kind": "mlp", "period": c, "objective": "task",
                "optimizer": {"name": opt, "eta": 0.2}, "expansion": 2}
    levels = [{"id": "s", "kind": "mlp", "period": 2, "objective": "l2",
               "optimizer": {"name": "sgd", "eta": 0.1}, "expansion": 2},
              task("a", 3), {"id": "m", "kind": "mlp", "period": None, "expansion": 2},
              task("b", 4, "momentum"), task("c", 3, "dgd")]
    edges = [["input", "s"], ["s", "a"], ["a", "m"], ["a", "b"], ["m", "c"], ["b", "c"],
             ["c", "output"], ["a", "output"], ["m", "output"]]
    return {"d_model": D, "heads": 2, "levels": levels, "edges": edges,
            "tie_embeddings": tied}


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("freeze", [(), ("b",), ("a",)])
def test_inner_pass_by_hand_equals_autograd(tied, freeze, monkeypatch):
    """The same calls through the hand-written inner pass and through autograd's (the model
    without it): logits, outer gradients and every state entry agree in float64, on a DAG with
    sums of predecessors, a frozen task level, an untied head and ignored targets."""
    calls = []
    original = InnerPass.step

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InnerPass, "step", spy)
    torch.manual_seed(0)
    model = build_model(dag_spec(tied), vocab_size=V).double()
    by_hand = model._inner_pass
    assert by_hand is not None
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, V, (B, 14), generator=g)
    y = torch.randint(0, V, (B, 14), generator=g)
    y[0, 2:5] = -100
    y[1, 7] = -100
    states = {"hand": model.init_state(B), "autograd": model.init_state(B)}
    params = list(model.parameters())
    for a, b in ((0, 5), (5, 14)):
        out = {}
        for path in states:
            model._inner_pass = by_hand if path == "hand" else None
            before = len(calls)
            logits, new = model(x[:, a:b], states[path], targets=y[:, a:b], freeze=freeze)
            assert (len(calls) > before) == (path == "hand")
            mix = torch.randn(*logits.shape, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(a))
            out[path] = logits, torch.autograd.grad((logits * mix).sum(), params,
                                                    allow_unused=True), new
            states[path] = model.detach_state(new)
        (lh, gh, sh), (la, ga, sa) = out["hand"], out["autograd"]
        torch.testing.assert_close(lh, la, rtol=1e-10, atol=1e-12)
        for (name, _), u, v in zip(model.named_parameters(), gh, ga):
            assert (u is None) == (v is None), name
            if u is not None:
                torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-12, msg=name)
        assert_same_state(sh, sa)
    assert states["hand"]["levels"]["a"]["updates"] == (0 if "a" in freeze else 4)


def assert_same_state(got, want, path="state"):
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for k in want:
            assert_same_state(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=path)
    else:
        assert got == want, path


def test_inner_pass_by_hand_covers_only_mlp_suffixes():
    """A suffix with a level that mixes positions (attention) takes autograd's inner pass; a
    silenced suffix level or autocast do too, call by call."""
    spec = dag_spec(True)
    spec["levels"][2] = {"id": "m", "kind": "attention", "period": None}
    assert build_model(spec, vocab_size=V)._inner_pass is None
    model = build_model(dag_spec(True), vocab_size=V)
    h = torch.zeros(1)
    assert model._inner_pass.applies(h, frozenset())
    assert not model._inner_pass.applies(h, frozenset({"m"}))
    assert model._inner_pass.applies(h, frozenset({"s"}))  # the prefix is not the pass's
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not model._inner_pass.applies(h, frozenset())


@pytest.mark.parametrize("affine", [True, False])
def test_by_hand_norm_and_silu_backward_in_place_equal_autograd(affine):
    """The by-hand pass's RMSNorm and SiLU backward, written over their incoming gradient,
    against autograd (float64)."""
    from nlstudio.models.task_pass import _rms, _rms_back_, _silu_back_
    torch.manual_seed(0)
    norm = torch.nn.RMSNorm(6, elementwise_affine=affine).double()
    if affine:
        torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 6, dtype=torch.float64)
    want, = torch.autograd.grad(norm(x), x, g)
    n, r = _rms(norm, x.detach())
    torch.testing.assert_close(n, norm(x).detach())
    g_in = g.clone()
    got = _rms_back_(norm, x.detach(), r, g_in)
    torch.testing.assert_close(got, want)
    assert got.data_ptr() == g_in.data_ptr()  # written over the incoming gradient
    z = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    want, = torch.autograd.grad(F.silu(z), z, g)
    g_in = g.clone()
    torch.testing.assert_close(_silu_back_(g_in, z.detach()), want)
