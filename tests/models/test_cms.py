"""The ``mlp`` kind: frozen blocks and CMS levels (NeurIPS Eq. 31)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models import OPTIMIZERS, build_model
from nlstudio.models.levels.cms import MLPLevel, local_grads
from nlstudio.models.registry import ALL_OPTIMIZERS

V, D = 11, 8


def chain_spec(*levels: dict, tie: bool = True) -> dict:
    ids = [lv["id"] for lv in levels]
    edges = [["input", ids[0]], *[[a, b] for a, b in zip(ids, ids[1:])], [ids[-1], "output"]]
    return {"d_model": D, "heads": 2, "levels": list(levels), "edges": edges,
            "tie_embeddings": tie}


def cms(lid: str, period, objective: str = "task", opt: dict | None = None, **kw) -> dict:
    return {"id": lid, "kind": "mlp", "period": period, "objective": objective,
            "optimizer": opt or {"name": "sgd", "eta": 0.5}, "expansion": 2, **kw}


def stream(batch: int, steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (batch, steps + 1), generator=g)
    return tokens[:, :-1].clone(), tokens[:, 1:].clone()


def fast_w1(state: dict, lid: str) -> torch.Tensor:
    return state["levels"][lid]["delta"]["w1"].clone()


# -- when writes happen -------------------------------------------------------------------------
def test_writes_exactly_at_multiples_of_period_token_by_token():
    torch.manual_seed(0)
    model = build_model(chain_spec(cms("fast", 3), cms("slow", None)), vocab_size=V)
    x, y = stream(2, 13)
    state = model.init_state(2)
    w1_slow = model.levels["slow"].w1.detach().clone()
    for i in range(13):
        before = fast_w1(state, "fast")
        _, state = model(x[:, i:i + 1], state, targets=y[:, i:i + 1])
        t = i + 1
        changed = not torch.equal(before, fast_w1(state, "fast"))
        assert changed == (t % 3 == 0), f"token {i}: changed={changed}"
        fast = state["levels"]["fast"]
        assert fast["updates"] == t // 3
        assert (fast["write_norms"][0] > 0) == (t % 3 == 0)
        slow = model.probe(state)["slow"]
        assert slow.updates == 0 and torch.equal(slow.memory, w1_slow)
        assert torch.count_nonzero(slow.write_norms) == 0
    assert state["t"] == 13


@pytest.mark.parametrize("lengths", [(2, 5, 1, 4, 3), (4, 11), (1, 1, 13)])
def test_writes_at_multiples_when_calls_start_mid_period(lengths):
    torch.manual_seed(1)
    model = build_model(chain_spec(cms("a", 4), cms("b", 6, opt={"name": "momentum",
                                                                "eta": 0.1})), vocab_size=V)
    total = sum(lengths)
    x, y = stream(2, total, seed=3)
    state, t0 = model.init_state(2), 0
    for n in lengths:
        before = {lid: fast_w1(state, lid) for lid in "ab"}
        _, state = model(x[:, t0:t0 + n], state, targets=y[:, t0:t0 + n])
        for lid, c in (("a", 4), ("b", 6)):
            lv = state["levels"][lid]
            crosses = (t0 + n) // c > t0 // c
            assert torch.equal(before[lid], lv["delta"]["w1"]) != crosses
            expect = torch.tensor([(t0 + i + 1) % c == 0 for i in range(n)])
            assert torch.equal(lv["write_norms"] > 0, expect), (lid, t0, n)
            assert lv["updates"] == (t0 + n) // c
        t0 += n


def test_frozen_level_never_changes_in_context_even_under_no_grad():
    torch.manual_seed(0)
    model = build_model(chain_spec(cms("f", None)), vocab_size=V)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = stream(2, 9)
    for ctx in (torch.enable_grad(), torch.no_grad()):
        with ctx:
            _, state = model(x, targets=y)
            _, state = model(x, state, targets=y)
        probe = model.probe(state)["f"]
        assert probe.updates == 0 and probe.write is None
        assert torch.count_nonzero(probe.write_norms) == 0
        assert torch.equal(probe.memory, params["levels.f.w1"])
        assert "delta" not in state["levels"]["f"]
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n])


def test_cms_level_learns_under_no_grad_and_returns_plain_tensors():
    torch.manual_seed(0)
    model = build_model(chain_spec(cms("a", 2)), vocab_size=V)
    x, y = stream(2, 6)
    with torch.no_grad():
        logits, state = model(x, targets=y)
    assert not logits.requires_grad
    assert state["levels"]["a"]["updates"] == 3
    assert torch.count_nonzero(state["levels"]["a"]["delta"]["w1"]) > 0
    assert not state["levels"]["a"]["delta"]["w1"].requires_grad
    assert all(p.grad is None for p in model.parameters())


# -- the task objective --------------------------------------------------------------------------
def reference_logits(model, tokens, w1, w2):
    """embed -> h + W2 σ(W1 RMSNorm(h)) -> RMSNorm -> tied head, written out independently."""
    h = model.embed.weight[tokens]
    x = F.rms_norm(h, (D,), model.norms["a"].weight)
    y = F.silu(x @ w1.transpose(-1, -2)) @ w2.transpose(-1, -2)
    return F.rms_norm(h + y, (D,), model.final_norm.weight) @ model.embed.weight.T


def ce_sum(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")


def test_task_inner_gradient_is_gradient_of_chunk_cross_entropy():
    torch.manual_seed(0)
    eta = 0.3
    model = build_model(chain_spec(cms("a", 4, opt={"name": "sgd", "eta": eta})),
                        vocab_size=V).double()
    x, y = stream(3, 6, seed=5)
    y[1, 2] = -100  # an ignored target contributes nothing
    _, state = model(x, targets=y)  # write at t = 4, tokens 4..5 accumulated
    lv = state["levels"]["a"]
    w0 = {n: getattr(model.levels["a"], n).detach().expand(3, -1, -1).clone() for n in ("w1", "w2")}

    # Chunk 0 at W0: the write is −η Σ_t ∇ CE_t (sgd), per sequence.
    w = {n: t.clone().requires_grad_() for n, t in w0.items()}
    valid = y[:, :4].clone()
    loss = F.cross_entropy(reference_logits(model, x[:, :4], w["w1"], w["w2"]).flatten(0, 1),
                           valid.flatten(), reduction="sum", ignore_index=-100)
    g = torch.autograd.grad(loss, [w["w1"], w["w2"]])
    torch.testing.assert_close(lv["delta"]["w1"], -eta * g[0])
    torch.testing.assert_close(lv["delta"]["w2"], -eta * g[1])

    # Chunk 1 (partial) at W0 + Δ: the accumulated sum, not written yet.
    w = {n: (w0[n] + lv["delta"][n]).clone().requires_grad_() for n in w0}
    loss = ce_sum(reference_logits(model, x[:, 4:], w["w1"], w["w2"]), y[:, 4:])
    g = torch.autograd.grad(loss, [w["w1"], w["w2"]])
    torch.testing.assert_close(lv["grad"]["w1"], g[0])
    torch.testing.assert_close(lv["grad"]["w2"], g[1])


def test_outer_gradient_flows_through_reads_only():
    torch.manual_seed(0)
    model = build_model(chain_spec(cms("a", 4, opt={"name": "momentum", "eta": 0.2})),
                        vocab_size=V).double()
    x, y = stream(2, 10, seed=2)
    logits, state = model(x, targets=y)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params)

    # The fast weights each chunk read, fixed (detached) to what the model wrote.
    _, s4 = model(x[:, :4], targets=y[:, :4])
    _, s8 = model(x[:, 4:8], s4, targets=y[:, 4:8])
    level = model.levels["a"]
    pieces = []
    for (a, b), st in (((0, 4), None), ((4, 8), s4), ((8, 10), s8)):
        d1 = 0 if st is None else st["levels"]["a"]["delta"]["w1"].detach()
        d2 = 0 if st is None else st["levels"]["a"]["delta"]["w2"].detach()
        pieces.append(reference_logits(model, x[:, a:b], level.w1 + d1, level.w2 + d2))
    ref = torch.cat(pieces, 1)
    torch.testing.assert_close(logits, ref)
    ref_loss = F.cross_entropy(ref.flatten(0, 1), y.flatten())
    for p, g, r in zip(params, grads, torch.autograd.grad(ref_loss, params)):
        torch.testing.assert_close(g, r)


def test_standalone_task_level_refuses_to_read_across_a_write():
    level = MLPLevel(cms("a", 4), D, 2)
    x = torch.randn(1, 6, D)
    y, st = level(x[:, :4])
    assert st["t"] == 4 and level.write_due(st)
    with pytest.raises(ValueError, match="multiple of 4"):
        level(x[:, 4:], st)
    with pytest.raises(ValueError, match="multiple of 4"):
        level(x)
    st = level.write(level.accumulate(st, {"w1": torch.ones(1, 2 * D, D), "w2": None}))
    assert st["updates"] == 1
    torch.testing.assert_close(st["delta"]["w1"], torch.full((1, 2 * D, D), -0.5))
    level(x[:, 4:], st)


# -- the l2 / dot objectives ---------------------------------------------------------------------
@pytest.mark.parametrize("objective", ["l2", "dot"])
def test_local_gradients_match_autograd(objective):
    torch.manual_seed(0)
    w1 = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    k, v = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    out = F.silu(k @ w1.transpose(-1, -2)) @ w2.transpose(-1, -2)
    loss = (out - v).pow(2).sum() if objective == "l2" else -(out * v).sum()
    ref = torch.autograd.grad(loss, [w1, w2])
    g1, g2, hidden = local_grads(w1, w2, k, v, objective)
    torch.testing.assert_close(g1, ref[0])
    torch.testing.assert_close(g2, ref[1])
    torch.testing.assert_close(hidden, F.silu(k @ w1.transpose(-1, -2)))


def _opt_params():
    names = ["sgd", "momentum", "dgd"]
    return [pytest.param(n, marks=pytest.mark.skipif(n not in OPTIMIZERS, reason=f"{n} missing"))
            for n in names]


@pytest.mark.parametrize("objective", ["l2", "dot"])
@pytest.mark.parametrize("opt", _opt_params())
def test_gradcheck_through_local_writes(objective, opt):
    torch.manual_seed(0)
    level = MLPLevel({"id": "m", "kind": "mlp", "period": 2, "objective": objective,
                      "optimizer": {"name": opt, "eta": 0.3}, "expansion": 1}, 3, 1).double()
    names = [n for n, _ in level.named_parameters()]
    assert set(names) == {"w1", "w2", "wk", "wv"}
    x = torch.randn(1, 5, 3, dtype=torch.float64, requires_grad=True)

    def f(x, *params):
        y, st = torch.func.functional_call(level, dict(zip(names, params)), (x,))
        assert st["updates"] == 2
        return y, st["delta"]["w1"], st["delta"]["w2"]

    params = [p.detach().clone().requires_grad_() for p in level.parameters()]
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("objective", ["l2", "dot"])
def test_local_objective_split_calls_equal_one_call(objective):
    torch.manual_seed(0)
    level = MLPLevel(cms("m", 3, objective, {"name": "momentum", "eta": 0.05}), D, 2)
    x = torch.randn(2, 11, D)
    y, st = level(x)
    assert st["updates"] == 3
    assert torch.equal(st["write_norms"] > 0, torch.tensor([(i + 1) % 3 == 0 for i in range(11)]))
    ys, s = [], None
    for a, b in ((0, 2), (2, 7), (7, 11)):
        out, s = level(x[:, a:b], s)
        ys.append(out)
    torch.testing.assert_close(torch.cat(ys, 1), y)
    torch.testing.assert_close(s["delta"]["w1"], st["delta"]["w1"])
    probe = level.probe(s)
    torch.testing.assert_close(probe.memory, level.w1 + st["delta"]["w1"][0])
    assert probe.updates == 3 and probe.write.shape == (2 * D, D)


# -- every inner optimizer as the CMS rule; test-time learning is real ----------------------------
ICL_HYPER = {
    "sgd": {"eta": 0.1},
    "momentum": {"eta": 0.05, "alpha": 0.9},
    "adam": {"eta": 0.01},
    "dgd": {"eta": 0.01},  # the erase term scales with ‖x‖² ≈ d_model: a small η
    "delta_momentum": {"eta": 0.05},
    "dmgd": {"eta": 0.05},
    "m3": {"eta": 0.01},
}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.skipif(n not in OPTIMIZERS, reason=f"{n} not registered"))
    for n in ALL_OPTIMIZERS])
def test_each_inner_optimizer_learns_a_repeated_stream_in_context(name):
    """An untrained model whose only level is a CMS level: the stream cycles through a fixed
    random permutation of the vocabulary (a fixed next-token map). Only the in-context writes
    can make the second half easier than the first."""
    vocab, steps, batch = 16, 128, 4
    torch.manual_seed(0)
    spec = {"d_model": 32, "heads": 1, "tie_embeddings": False, "edges": [
        ["input", "cms"], ["cms", "output"]], "levels": [
        {"id": "cms", "kind": "mlp", "period": 4, "objective": "task",
         "optimizer": {"name": name, **ICL_HYPER[name]}}]}
    model = build_model(spec, vocab_size=vocab)
    g = torch.Generator().manual_seed(1)
    x = torch.stack([torch.randperm(vocab, generator=g) for _ in range(batch)])
    x = x.repeat(1, steps // vocab)
    y = torch.roll(x, -1, 1)
    with torch.no_grad():
        logits, state = model(x, targets=y)
        frozen = build_model({**spec, "levels": [{**spec["levels"][0], "period": None}]},
                             vocab_size=vocab)
        frozen.load_state_dict(model.state_dict())
        frozen_logits, _ = frozen(x)
    assert state["levels"]["cms"]["updates"] == steps // 4
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(batch, steps)
    first, second = ce[:, :steps // 2].mean().item(), ce[:, steps // 2:].mean().item()
    frozen_ce = F.cross_entropy(frozen_logits.flatten(0, 1), y.flatten()).item()
    # Measured (seed 0): second/first ≈ 0.34-0.41 for every rule.
    assert second < 0.6 * first, (first, second)
    assert second < 0.6 * frozen_ce, (frozen_ce, second)


def test_kind_defaults_for_the_inner_optimizer_apply_when_the_spec_leaves_them_out():
    from nlstudio.models.levels.linear_attention import LinearAttentionLevel

    level = LinearAttentionLevel({"id": "la", "kind": "linear_attention"}, 16, 2)
    assert level.eta == 1.0  # one exact GD step, not the sgd default of 0.1
    level = LinearAttentionLevel({"id": "la", "kind": "linear_attention",
                                  "optimizer": {"name": "sgd", "eta": 0.5}}, 16, 2)
    assert level.eta == 0.5


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "m3"])
def test_a_chunk_is_one_step_of_the_level_optimizer_on_its_summed_gradient(name):
    """The documented reading of Eq. 31 for stateful rules: a write is ONE step of the level's
    inner optimizer on the sum of the chunk's per-token gradients (the optimizer's state
    advances once per chunk, at the level's own frequency). For SGD this is Eq. 31's per-token
    sum exactly; for momentum it differs from stepping the momentum at every token."""
    torch.manual_seed(0)
    hyper = {"sgd": {"eta": 0.3}, "momentum": {"eta": 0.3, "alpha": 0.7},
             "adam": {"eta": 0.05}, "m3": {"eta": 0.05, "chunk": 2}}[name]
    level = MLPLevel(cms("c", 3, opt={"name": name, **hyper}), D, 2)
    opt = OPTIMIZERS[name].bind(**hyper)
    g = torch.Generator().manual_seed(5)
    state = level.init_state(2)
    w0, opt_state = level.w1.detach().expand(2, -1, -1), opt.init(state["delta"]["w1"])
    w, per_token_w, per_token_state = w0, w0, opt.init(state["delta"]["w1"])
    for _chunk in range(3):
        grads = [torch.randn(2, 2 * D, D, generator=g) for _ in range(3)]
        for grad in grads:  # what the model does: the chunk's per-token gradients are summed
            state = level.accumulate(state, {"w1": grad, "w2": None})
        state = level.write({**state, "t": state["t"] + 3})
        w, opt_state = opt.step(w, sum(grads), opt_state)
        torch.testing.assert_close(level.w1 + state["delta"]["w1"], w)
        # Eq. 31 read literally: one optimizer update per token, all at the chunk's weights,
        # summed into one write
        updates = []
        for grad in grads:
            new, per_token_state = opt.step(per_token_w, grad, per_token_state)
            updates.append(new - per_token_w)
        per_token_w = per_token_w + sum(updates)
    same = torch.allclose(per_token_w, w, atol=1e-6)
    assert same == (name == "sgd")


# -- DGD with the local objectives: one rule, fixed point M(k) = v ------------------------------
@pytest.mark.parametrize("objective", ["l2", "dot"])
def test_dgd_local_write_of_the_output_layer_is_the_exact_proximal_regression(objective):
    """One token, the output layer: W2⁺ = W2 (I − η' h hᵀ) + η' v hᵀ, η' = η/(1 + η‖h‖²),
    the minimiser of ½‖W h − v‖² + ‖W − W2‖²/(2η) (checked against the normal equations)."""
    torch.manual_seed(0)
    eta = 0.3
    level = MLPLevel({"id": "m", "kind": "mlp", "period": 1, "objective": objective,
                      "optimizer": {"name": "dgd", "eta": eta}, "expansion": 1}, 3, 1).double()
    x = torch.randn(1, 1, 3, dtype=torch.float64)
    with torch.no_grad():
        _, st = level(x)
        k, v = x @ level.wk.T, x @ level.wv.T
        h = F.silu(k @ level.w1.T)[0, 0]
        w2 = level.w2
        new_w2 = level.w2 + st["delta"]["w2"][0]
        # the proximal problem's normal equations: W (I + η h hᵀ) = W2 + η v hᵀ
        want = torch.linalg.solve((torch.eye(3, dtype=torch.float64) + eta * torch.outer(h, h)).T,
                                  (w2 + eta * torch.outer(v[0, 0], h)).T).T
    torch.testing.assert_close(new_w2, want)


def test_dgd_with_l2_settles_at_the_value_not_half_of_it():
    """Repeating one (k, v) pair, DGD + ℓ2 drives the memory's read-out M(k) to v (the paper's
    Eq. 88 as printed, with the ℓ2 gradient in DGD's surprise slot, would stop at v/2)."""
    torch.manual_seed(0)
    d = 4
    level = MLPLevel({"id": "m", "kind": "mlp", "period": 1, "objective": "l2",
                      "optimizer": {"name": "dgd", "eta": 0.5}, "expansion": 2}, d, 1).double()
    x = torch.randn(1, 1, d, dtype=torch.float64).repeat(1, 300, 1)
    with torch.no_grad():
        _, st = level(x)
        k, v = x[:, :1] @ level.wk.T, x[:, :1] @ level.wv.T
        w = level.fast_weights(st)
        mk = F.silu(k @ w["w1"].transpose(-1, -2)) @ w["w2"].transpose(-1, -2)
    assert st["updates"] == 300
    torch.testing.assert_close(mk, v, atol=1e-6, rtol=0)
    assert (v.abs() > 0.05).any()  # v/2 would fail the comparison above
