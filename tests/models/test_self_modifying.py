"""SelfModifyingLevel (HOPE, arXiv Eqs. 84–97) against an explicit per-token recurrence."""
import math

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models.levels.self_modifying import (ALPHA, ETA, K, MEM, V, SelfModifyingLevel,
                                                   dgd_write)

F64 = torch.float64


def make(period=4, depth=1, optimizer="dgd", objective="l2", momentum=False, conv=3, d=8,
         heads=2, eta=0.5, seed=0):
    torch.manual_seed(seed)
    spec = {"id": "hope", "kind": "self_modifying", "period": period, "depth": depth,
            "conv": conv, "momentum": momentum, "objective": objective,
            "optimizer": {"name": optimizer, "eta": eta}}
    level = SelfModifyingLevel(spec, d_model=d, heads=heads).to(F64)
    with torch.no_grad():  # livelier than the defaults, so every term matters
        if level.conv.weight is not None:
            level.conv.weight.normal_(0.0, 0.5)
        level.readout_bias[1].fill_(1.0)  # α ≈ 0.73
        if momentum:
            level.to_momentum.weight.normal_(0.0, 0.5)
    return level


def reference(level: SelfModifyingLevel, x: torch.Tensor, period: int) -> torch.Tensor:
    """Eqs. 84–90 token by token: generation, targets and gradients at the chunk's anchor;
    the erase term on the running memory; autograd for every inner gradient.

    ``dgd`` (the exact proximal step, see the module docstring), per layer with key x:
    ``W ← W(α I − η' x xᵀ) + η' u xᵀ``, η' = η / (1 + η‖x‖²), where the value u is v̂ for a
    matrix memory (both objectives), v̂ − k (ℓ2) or v̂ (dot) for the output layer of depth 2
    (key h = silu(W₂ k)), and −δ (the backpropagated surprise) for its hidden layer (key k).
    ``sgd``: ``W ← α W − η ∇L``. Momentum: the non-erase part goes through S, ``S ← μ S + …``.
    """
    b, t, d = x.shape
    h, dh = level.heads, d // level.heads
    xc, _ = level.conv(x)
    heads = lambda z: z.view(b, t, h, dh).transpose(1, 2)  # [B, H, T, dh]
    q = F.normalize(heads(level.to_q(xc)), dim=-1)
    xh = heads(xc)
    mu = torch.sigmoid(level.to_momentum(xc)) if level.use_momentum else None  # [B, T, H]
    residual = level.depth == 2

    def mem(ws, inp):  # ws [..., o, i] (per memory), inp [..., i]
        z = (ws[0] @ inp.unsqueeze(-1)).squeeze(-1)
        if not residual:
            return z
        return inp + (ws[1] @ F.silu(z).unsqueeze(-1)).squeeze(-1)

    w = [p.unsqueeze(0).expand(b, *p.shape).clone() for p in level.memory_init]  # [B,H,5,o,i]
    s = [torch.zeros_like(wl) for wl in w]
    anchor = [wl.clone() for wl in w]
    eye = torch.eye(dh, dtype=x.dtype)
    outer = lambda a, c: a.unsqueeze(-1) * c.unsqueeze(-2)
    outs = []
    for i in range(t):
        one = lambda m: [a[:, :, m] for a in anchor]
        xt = xh[:, :, i]
        k = F.normalize(mem(one(K), xt), dim=-1)
        v = mem(one(V), xt)
        eta = level.eta * torch.sigmoid((mem(one(ETA), xt) * level.readout[0]).sum(-1)
                                        + level.readout_bias[0])  # [B, H]
        alpha = torch.sigmoid((mem(one(ALPHA), xt) * level.readout[1]).sum(-1)
                              + level.readout_bias[1])
        outs.append(mem(one(MEM), q[:, :, i]))
        kk = k.unsqueeze(2).expand(b, h, 5, dh)  # the same key for all five memories
        v_hat = mem(anchor, v.unsqueeze(2))  # Eq. 84, a constant target [B, H, 5, dh]
        with torch.enable_grad():
            a = [al.detach().requires_grad_(True) for al in anchor]
            pred = mem(a, kk.detach())
            if level.objective == "l2":
                loss = 0.5 * ((pred - v_hat.detach()) ** 2).sum()
            else:
                loss = -(pred * v_hat.detach()).sum()
            grads = torch.autograd.grad(loss, a)
        e, al_ = eta.view(b, h, 1, 1, 1), alpha.view(b, h, 1, 1, 1)
        layers = []  # per layer: (key, step, the write's non-erase part)
        if not level.erase:
            layers = [(None, e, -e * grads[l]) for l in range(len(w))]
        elif not residual:
            step = e / (1 + e * (kk * kk).sum(-1)[..., None, None])
            layers = [(kk, step, step * outer(v_hat, kk))]
        else:
            step0 = e / (1 + e * (kk * kk).sum(-1)[..., None, None])
            hid = F.silu((anchor[0] @ kk.unsqueeze(-1)).squeeze(-1))  # [B, H, 5, dh]
            step1 = e / (1 + e * (hid * hid).sum(-1)[..., None, None])
            u1 = v_hat - kk if level.objective == "l2" else v_hat
            layers = [(kk, step0, -step0 * grads[0]), (hid, step1, step1 * outer(u1, hid))]
        for l, (key, step, write) in enumerate(layers):
            decay = al_ * eye
            if key is not None:
                decay = decay - step * outer(key, key)
            if level.use_momentum:
                s[l] = mu[:, i].view(b, h, 1, 1, 1) * s[l] + write
                w[l] = w[l] @ decay + s[l]
            else:
                w[l] = w[l] @ decay + write
        if (i + 1) % period == 0:
            anchor = [wl.clone() for wl in w]
    o = torch.stack(outs, dim=2).transpose(1, 2).reshape(b, t, d)
    return level.to_out(o)


@pytest.mark.parametrize("period", [1, 3])
@pytest.mark.parametrize("depth,optimizer,objective,momentum", [
    (1, "dgd", "l2", False), (2, "dgd", "l2", False), (1, "sgd", "l2", True),
    (2, "dgd", "dot", True), (1, "dgd", "dot", False), (2, "sgd", "l2", False)])
def test_chunked_level_equals_the_token_recurrence(period, depth, optimizer, objective,
                                                   momentum):
    level = make(period=period, depth=depth, optimizer=optimizer, objective=objective,
                 momentum=momentum)
    x = torch.randn(2, 10, 8, dtype=F64)
    with torch.no_grad():
        y, state = level(x)
        ref = reference(level, x, period)
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-10)
    assert state["updates"] == 10 // period


@pytest.mark.parametrize("objective", ["l2", "dot"])
def test_one_dgd_matrix_step_is_the_exact_proximal_step(objective):
    """Depth 1, dgd: ``M(αI − η' k kᵀ) + η' v̂ kᵀ`` with η' = η/(1 + η‖k‖²), for both objectives
    (DGD's erase is the quadratic part of ½‖Mk − v̂‖², so −⟨Mk, v̂⟩ gives the same step)."""
    level = make(period=1, depth=1, objective=objective, conv=0)
    x = torch.randn(1, 1, 8, dtype=F64)
    with torch.no_grad():
        _, state = level(x)
        w0 = level.memory_init[0].unsqueeze(0)  # [1, H, 5, dh, dh]
        xt = x.view(1, 2, 1, 4)
        y = (w0 @ xt.unsqueeze(-1)).squeeze(-1)  # [1, H, 5, dh]
        k, v = F.normalize(y[:, :, K], dim=-1), y[:, :, V]
        eta = level.eta * torch.sigmoid((y[:, :, ETA] * level.readout[0]).sum(-1)
                                        + level.readout_bias[0])
        alpha = torch.sigmoid((y[:, :, ALPHA] * level.readout[1]).sum(-1)
                              + level.readout_bias[1])
        v_hat = (w0 @ v[:, :, None, :, None]).squeeze(-1)  # [1, H, 5, dh]
        step = eta / (1 + eta * k.square().sum(-1))
        e, a = step.view(1, 2, 1, 1, 1), alpha.view(1, 2, 1, 1, 1)
        kk = k[:, :, None, :, None] * k[:, :, None, None, :]
        want = w0 @ (a * torch.eye(4, dtype=F64) - e * kk) + e * v_hat.unsqueeze(-1) * \
            k[:, :, None, None, :]
    torch.testing.assert_close(state["memories"][0], want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("chunk", [1, 5])
def test_dgd_settles_at_m_k_equal_v_hat(chunk):
    """Repeating one (k, v̂) pair with α = 1, the ℓ2 DGD write converges to ``M k = v̂`` (the
    error shrinks by 1/(1 + η‖k‖²) a token), not to v̂/2 as Eq. 88 read literally would."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 3, 4, dtype=F64, generator=g)
    k = F.normalize(torch.randn(2, 1, 4, dtype=F64, generator=g), dim=-1).expand(2, chunk, 4)
    v_hat = torch.randn(2, 1, 3, dtype=F64, generator=g).expand(2, chunk, 3)
    eta = torch.full((2, chunk), 0.5, dtype=F64)
    errors = []
    for _ in range(60 // chunk):
        w, _ = dgd_write(w, None, v_hat, k, eta, torch.zeros(2, chunk, dtype=F64))
        errors.append((w @ k[:, 0].unsqueeze(-1)).squeeze(-1) - v_hat[:, 0])
    torch.testing.assert_close(errors[-1], torch.zeros(2, 3, dtype=F64), rtol=0, atol=1e-9)
    ratio = errors[1].norm() / errors[0].norm()
    assert ratio == pytest.approx((1 / 1.5) ** chunk, rel=1e-9)


def test_dgd_is_the_one_rule_of_inner_optim():
    """One token of ``dgd_write`` is inner_optim's ``dgd`` step (Eq. 57, W(I − η' x xᵀ) −
    η' g ⊗ x) fed the value as ``g = −u``, plus the retention as decoupled weight decay."""
    from nlstudio.models.inner_optim import make_optimizer

    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, 5, 4, dtype=F64, generator=g)
    x = torch.randn(3, 1, 4, dtype=F64, generator=g)  # not unit: η' depends on ‖x‖
    u = torch.randn(3, 1, 5, dtype=F64, generator=g)
    alpha = torch.rand(3, 1, dtype=F64, generator=g) * 0.5 + 0.4
    for eta in (0.05, 0.7):
        got, _ = dgd_write(w, None, u, x, torch.full((3, 1), eta, dtype=F64), alpha.log())
        dgd = make_optimizer({"name": "dgd", "eta": eta})
        stepped, _ = dgd.step(w, -u.mT @ x, dgd.init(w), key=x[:, 0])
        want = stepped - (1 - alpha[..., None]) * w
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_dgd_objectives_coincide_for_a_matrix_memory_and_differ_under_sgd():
    x = torch.randn(2, 7, 8, dtype=F64)
    outs = {}
    for opt in ("dgd", "sgd"):
        for objective in ("l2", "dot"):
            level = make(period=2, depth=1, optimizer=opt, objective=objective)
            with torch.no_grad():
                outs[opt, objective] = level(x)[1]["memories"][0]
    torch.testing.assert_close(outs["dgd", "l2"], outs["dgd", "dot"], rtol=1e-12, atol=1e-13)
    assert not torch.allclose(outs["sgd", "l2"], outs["sgd", "dot"])


def test_chunk_approximation_error_grows_with_the_chunk():
    x = torch.randn(2, 64, 8, dtype=F64, generator=torch.Generator().manual_seed(11))
    exact_level = make(period=1, depth=2, eta=0.5)
    with torch.no_grad():
        exact, _ = exact_level(x)
        errors = {}
        for c in (2, 4, 8, 16):
            level = make(period=c, depth=2, eta=0.5)
            level.load_state_dict(exact_level.state_dict())
            y, _ = level(x)
            errors[c] = ((y - exact).norm() / exact.norm()).item()
    print("self_modifying relative error vs C=1:", {c: f"{e:.4f}" for c, e in errors.items()})
    assert all(math.isfinite(e) and e > 0 for e in errors.values())
    assert errors[2] < errors[4] < errors[16] and errors[2] < errors[8] < errors[16]


@pytest.mark.parametrize("splits", [(5, 7, 4), (1, 14, 1), (3, 3, 3, 7)])
@pytest.mark.parametrize("depth,momentum", [(1, False), (2, True)])
def test_a_stream_split_over_calls_equals_one_call(splits, depth, momentum):
    level = make(period=4, depth=depth, momentum=momentum)
    x = torch.randn(2, sum(splits), 8, dtype=F64)
    with torch.no_grad():
        y, one = level(x)
        parts, state, at = [], None, 0
        for n in splits:
            out, state = level(x[:, at:at + n], state)
            parts.append(out)
            at += n
    torch.testing.assert_close(torch.cat(parts, dim=1), y, rtol=1e-10, atol=1e-12)
    for a, b in zip(state["memories"], one["memories"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if momentum:
        for a, b in zip(state["momentum"], one["momentum"]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert state["updates"] == one["updates"] == sum(splits) // 4
    assert state["t"] == sum(splits)


def test_updates_count_chunks_and_write_norms_mark_chunk_ends():
    level = make(period=3, depth=2)
    x = torch.randn(2, 11, 8, dtype=F64)
    with torch.no_grad():
        state, counts = None, []
        for i in range(11):
            _, state = level(x[:, i:i + 1], state)
            counts.append(state["updates"])
            assert bool(state["write_norms"][0] > 0) == ((i + 1) % 3 == 0)
        assert counts == [(i + 1) // 3 for i in range(11)]
        _, st = level(x[:, :1])
        _, st = level(x[:, 1:], st)
    nonzero = (st["write_norms"] != 0).nonzero().flatten().tolist()
    assert nonzero == [i - 1 for i in range(1, 11) if (i + 1) % 3 == 0]
    probe = level.probe(st)
    assert probe.updates == 3 and probe.memory.shape == (4, 4) and probe.write.shape == (4, 4)


def test_gradients_reach_every_outer_parameter():
    level = make(period=2, depth=2, momentum=True)
    x = torch.randn(2, 9, 8, dtype=F64, requires_grad=True)
    y, state = level(x)
    (y.square().sum() + sum(w.square().sum() for w in state["memories"])).backward()
    for name, p in level.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("depth,momentum", [(1, False), (2, True)])
def test_gradcheck_through_the_writes(depth, momentum):
    level = make(period=2, depth=depth, momentum=momentum, d=4, heads=2, conv=2)
    names = [n for n, _ in level.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in level.parameters())
    x = torch.randn(1, 5, 4, dtype=F64, requires_grad=True)

    def f(x, *ps):
        y, _ = torch.func.functional_call(level, dict(zip(names, ps)), (x,))
        return y

    assert torch.autograd.gradcheck(f, (x, *params))


def test_construction_rejects_bad_specs():
    with pytest.raises(ValueError):
        SelfModifyingLevel({"kind": "self_modifying", "period": None}, 8, 2)
    with pytest.raises(ValueError):
        SelfModifyingLevel({"kind": "self_modifying", "period": 2,
                            "optimizer": {"name": "momentum"}}, 8, 2)
    with pytest.raises(ValueError):
        SelfModifyingLevel({"kind": "self_modifying", "period": 2, "depth": 3}, 8, 2)
