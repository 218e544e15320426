"""TitansLevel against an explicit per-token recurrence (autograd for every inner gradient),
with the architecture of Titans §4.4 written out by hand: the causal depthwise convolution and
SiLU on q, k, v, L2-normalised q and k, RMSNorm and SiLU gate before the output projection."""
import math

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models.levels.titans import TitansLevel

F64 = torch.float64


def make(period=4, depth=2, optimizer=None, objective="l2", d=8, heads=2, expansion=2, seed=0,
         conv=3):
    torch.manual_seed(seed)
    spec = {"id": "mem", "kind": "titans", "period": period, "depth": depth,
            "expansion": expansion, "objective": objective, "conv": conv,
            "optimizer": optimizer or {"name": "momentum", "eta": 0.4, "alpha": 0.9}}
    level = TitansLevel(spec, d_model=d, heads=heads).to(F64)
    with torch.no_grad():  # livelier gates than the defaults, so the test sees every term
        level.to_gates.weight.normal_(0.0, 0.5)
        level.to_gates.bias.view(-1, heads)[1].fill_(-1.0)  # forget α ≈ 0.27
        level.out_gate.norm.weight.normal_(1.0, 0.3)
        if level.conv.weight is not None:
            level.conv.weight.normal_(0.0, 0.5)
    return level


def causal_conv(level: TitansLevel, z: torch.Tensor) -> torch.Tensor:
    """``y_t = Σ_i w_i ⊙ z_{t−i}`` from a fresh stream (zero history), by hand."""
    if level.conv.weight is None:
        return z
    w = level.conv.weight[:, 0]
    width = w.shape[-1]
    out = torch.zeros_like(z)
    for t in range(z.shape[1]):
        for i in range(min(width, t + 1)):
            out[:, t] += w[:, width - 1 - i] * z[:, t - i]
    return out


def output(level: TitansLevel, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``W_o (RMSNorm(o) ⊙ SiLU(W_g x))`` with the per-head RMSNorm by hand; o ``[B, H, T, dh]``."""
    b, h, t, dh = o.shape
    eps = torch.finfo(o.dtype).eps
    normed = o * torch.rsqrt(o.square().mean(-1, keepdim=True) + eps) * level.out_gate.norm.weight
    gated = normed.transpose(1, 2).reshape(b, t, h * dh) * F.silu(level.out_gate.gate(x))
    return level.to_out(gated)


def reference(level: TitansLevel, x: torch.Tensor, period: int) -> torch.Tensor:
    """Titans §3 token by token: gradients at the chunk's anchor, reads of the anchor."""
    b, t, d = x.shape
    h, dh = level.heads, d // level.heads
    q, k, v = F.silu(causal_conv(level, level.to_qkv(x))).chunk(3, dim=-1)
    heads = lambda z: z.view(b, t, h, dh).transpose(1, 2)  # [B, H, T, dh]
    q, k, v = F.normalize(heads(q), dim=-1), F.normalize(heads(k), dim=-1), heads(v)
    z = level.to_gates(x).view(b, t, -1, h)  # θ, α, (η) per head
    theta = level.eta * torch.sigmoid(z[:, :, 0])  # [B, T, H]
    alpha = torch.sigmoid(z[:, :, 1])
    eta = level.momentum_scale * torch.sigmoid(z[:, :, 2]) if level.use_momentum else \
        torch.zeros_like(theta)

    def memory(ws, inp):
        hid = inp
        for i, w in enumerate(ws):
            hid = hid @ w.transpose(-1, -2)
            if i < len(ws) - 1:
                hid = F.silu(hid)
        return hid + inp if len(ws) > 1 else hid

    w = [p.unsqueeze(0).expand(b, *p.shape).clone() for p in level.memory_init]
    s = [torch.zeros_like(wl) for wl in w]
    anchor = [wl.clone() for wl in w]
    outs = []
    for i in range(t):
        outs.append(memory(anchor, q[:, :, i:i + 1]))
        with torch.enable_grad():
            a = [wl.detach().requires_grad_(True) for wl in anchor]
            pred = memory(a, k[:, :, i:i + 1].detach())
            target = v[:, :, i:i + 1].detach()
            if level.objective == "l2":
                loss = ((pred - target) ** 2).sum()
            else:
                loss = -(pred * target).sum()
            grads = torch.autograd.grad(loss, a)
        gate = lambda g: g[:, i].view(b, h, 1, 1)
        for l in range(len(w)):
            s[l] = gate(eta) * s[l] - gate(theta) * grads[l]
            w[l] = (1 - gate(alpha)) * w[l] + s[l]
        if (i + 1) % period == 0:
            anchor = [wl.clone() for wl in w]
    return output(level, torch.cat(outs, dim=2), x)


@pytest.mark.parametrize("period", [1, 3, 4])
@pytest.mark.parametrize("depth,objective", [(1, "l2"), (2, "l2"), (3, "dot")])
def test_chunked_level_equals_the_token_recurrence(period, depth, objective):
    level = make(period=period, depth=depth, objective=objective)
    x = torch.randn(2, 11, 8, dtype=F64)
    with torch.no_grad():
        y, state = level(x)
        ref = reference(level, x, period)
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-10)
    assert state["updates"] == 11 // period


def test_sgd_has_no_momentum_and_equals_the_recurrence():
    level = make(period=2, optimizer={"name": "sgd", "eta": 0.3})
    assert not level.use_momentum
    x = torch.randn(2, 9, 8, dtype=F64)
    with torch.no_grad():
        y, state = level(x)
        ref = reference(level, x, 2)
    assert "momentum" not in state
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-10)


def test_chunk_approximation_error_grows_with_the_chunk():
    x = torch.randn(2, 64, 8, dtype=F64, generator=torch.Generator().manual_seed(7))
    exact_level = make(period=1, optimizer={"name": "momentum", "eta": 0.2, "alpha": 0.9})
    with torch.no_grad():
        exact, _ = exact_level(x)
        errors = {}
        for c in (2, 4, 8, 16):
            level = make(period=c, optimizer={"name": "momentum", "eta": 0.2, "alpha": 0.9})
            level.load_state_dict(exact_level.state_dict())
            y, _ = level(x)
            errors[c] = ((y - exact).norm() / exact.norm()).item()
    print("titans relative error vs C=1:", {c: f"{e:.4f}" for c, e in errors.items()})
    assert all(math.isfinite(e) and e > 0 for e in errors.values())
    assert errors[2] < errors[4] < errors[16] and errors[2] < errors[8] < errors[16]


@pytest.mark.parametrize("splits", [(5, 7, 4), (1, 14, 1), (3, 3, 3, 7), (16,)])
def test_a_stream_split_over_calls_equals_one_call(splits):
    level = make(period=4, depth=2)
    x = torch.randn(2, sum(splits), 8, dtype=F64)
    with torch.no_grad():
        y, one = level(x)
        parts, state, at = [], None, 0
        for n in splits:
            out, state = level(x[:, at:at + n], state)
            parts.append(out)
            at += n
    torch.testing.assert_close(torch.cat(parts, dim=1), y, rtol=1e-10, atol=1e-12)
    for a, b in zip(state["weights"], one["weights"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(state["momentum"], one["momentum"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert state["updates"] == one["updates"] == sum(splits) // 4
    assert state["t"] == sum(splits)


def test_updates_count_chunks_and_write_norms_mark_chunk_ends():
    level = make(period=3)
    x = torch.randn(2, 13, 8, dtype=F64)
    with torch.no_grad():
        state, counts = None, []
        for i in range(13):
            _, state = level(x[:, i:i + 1], state)
            counts.append(state["updates"])
            assert bool(state["write_norms"][0] > 0) == ((i + 1) % 3 == 0)
        assert counts == [(i + 1) // 3 for i in range(13)]
        # one call starting mid-chunk (2 pending tokens): chunks end at stream positions 2, 5, ...
        _, st = level(x[:, :2])
        _, st = level(x[:, 2:], st)
    nonzero = (st["write_norms"] != 0).nonzero().flatten().tolist()
    assert nonzero == [i - 2 for i in range(2, 13) if (i + 1) % 3 == 0]
    probe = level.probe(st)
    assert probe.updates == 4 and probe.memory.shape == (8, 4) and probe.write.shape == (8, 4)
    assert probe.write_norms.shape == (11,)


@pytest.mark.parametrize("optimizer", [None, {"name": "sgd", "eta": 0.3}])
def test_gradients_reach_every_outer_parameter(optimizer):
    level = make(period=2, depth=2, optimizer=optimizer)
    x = torch.randn(2, 9, 8, dtype=F64, requires_grad=True)
    y, state = level(x)
    (y.square().sum() + sum(w.square().sum() for w in state["weights"])).backward()
    for name, p in level.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_gradcheck_through_the_writes():
    level = make(period=2, depth=2, d=4, heads=2, expansion=1)
    names = [n for n, _ in level.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in level.parameters())
    x = torch.randn(1, 5, 4, dtype=F64, requires_grad=True)

    def f(x, *ps):
        y, _ = torch.func.functional_call(level, dict(zip(names, ps)), (x,))
        return y

    assert torch.autograd.gradcheck(f, (x, *params))


def test_construction_rejects_bad_specs():
    with pytest.raises(ValueError):
        TitansLevel({"kind": "titans", "period": 0}, 8, 2)
    with pytest.raises(ValueError):
        TitansLevel({"kind": "titans", "period": 4, "optimizer": {"name": "adam"}}, 8, 2)
    with pytest.raises(ValueError):
        TitansLevel({"kind": "titans", "period": 4}, 9, 2)
