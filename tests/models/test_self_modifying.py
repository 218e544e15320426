"""SelfModifyingLevel (HOPE, arXiv Eqs. 84–97) against an explicit per-token recurrence."""
import math

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models.levels.self_modifying import ALPHA, ETA, K, MEM, V, SelfModifyingLevel

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
    the erase term on the running memory; autograd for every inner gradient."""
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
        kk = k.unsqueeze(2)  # the same key for all five memories
        with torch.enable_grad():
            a = [al.detach().requires_grad_(True) for al in anchor]
            pred = mem(a, kk.detach())
            v_hat = mem(anchor, v.unsqueeze(2)).detach()  # Eq. 84, a constant target
            if level.objective == "l2":
                loss = 0.5 * ((pred - v_hat) ** 2).sum()
            else:
                loss = -(pred * v_hat).sum()
            grads = torch.autograd.grad(loss, a)
        keys = [kk.expand(b, h, 5, dh)]
        if residual:
            hidden = F.silu((anchor[0] @ kk.unsqueeze(-1)).squeeze(-1))
            keys.append(F.normalize(hidden, dim=-1))
        e = eta.view(b, h, 1, 1, 1)
        for l in range(len(w)):
            decay = alpha.view(b, h, 1, 1, 1) * eye
            if level.erase:
                decay = decay - e * keys[l].unsqueeze(-1) * keys[l].unsqueeze(-2)
            if level.use_momentum:
                s[l] = mu[:, i].view(b, h, 1, 1, 1) * s[l] - e * grads[l]
                w[l] = w[l] @ decay + s[l]
            else:
                w[l] = w[l] @ decay - e * grads[l]
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


def test_dot_objective_writes_plus_eta_vhat_k():
    """Eq. 92 derived from −⟨Mk, v̂⟩: one matrix step is M(αI − η k kᵀ) + η v̂ kᵀ."""
    level = make(period=1, depth=1, objective="dot", conv=0)
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
        e, a = eta.view(1, 2, 1, 1, 1), alpha.view(1, 2, 1, 1, 1)
        kk = k[:, :, None, :, None] * k[:, :, None, None, :]
        want = w0 @ (a * torch.eye(4, dtype=F64) - e * kk) + e * v_hat.unsqueeze(-1) * \
            k[:, :, None, None, :]
    torch.testing.assert_close(state["memories"][0], want)


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
