"""Linear attention level: the chunk-wise parallel form equals one GD step on −⟨M k, v⟩ per
token; streams split over calls; gradients; probes."""
from __future__ import annotations

import pytest
import torch

from nlstudio.models.levels.common import merge_heads
from nlstudio.models.levels.linear_attention import LinearAttentionLevel, chunked_linear_attention

F64 = torch.float64
GATES = ("none", "scalar", "vector")


def _level(gate: str = "none", eta: float = 1.0, d_model: int = 12, heads: int = 2,
           seed: int = 0) -> LinearAttentionLevel:
    torch.manual_seed(seed)
    spec = {"id": "lin", "kind": "linear_attention", "period": 1, "gate": gate,
            "optimizer": {"name": "sgd", "eta": eta}}
    return LinearAttentionLevel(spec, d_model, heads).double()


def _x(b: int, t: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _reference(level: LinearAttentionLevel, x: torch.Tensor):
    """Per token: decay, then one GD step (η from the optimizer) on L(M) = −⟨M k_t, v_t⟩ with the
    gradient from autograd, then read y_t = M_t q_t. Returns outputs, memories, writes."""
    q, k, v = level.project(x)
    log_a = level.log_decay(x)
    b, h, t, dk = k.shape
    m = torch.zeros(b, h, v.shape[-1], dk, dtype=F64)
    ys, writes = [], []
    for i in range(t):
        if log_a is not None:
            m = m * log_a[:, :, i].exp().unsqueeze(-2)  # a_t on the key dimension
        with torch.enable_grad():
            leaf = m.detach().requires_grad_()
            loss = -((leaf @ k[:, :, i].detach().unsqueeze(-1)).squeeze(-1)
                     * v[:, :, i].detach()).sum()
            (grad,) = torch.autograd.grad(loss, leaf)
        m_new = m - level.eta * grad
        writes.append(m_new - m)
        m = m_new
        ys.append((m @ q[:, :, i].unsqueeze(-1)).squeeze(-1))
    y = torch.stack(ys, 2)
    return level.out_proj(merge_heads(y)), m, torch.stack(writes, 2)


@pytest.mark.parametrize("gate", GATES)
def test_equals_per_token_gd_loop(gate):
    level = _level(gate, eta=1.0)
    level.chunk = 8  # several chunks and a partial one
    x = _x(2, 21, 12)
    with torch.no_grad():
        y, state = level(x)
        y_ref, m_ref, writes = _reference(level, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state["M"], m_ref, rtol=1e-10, atol=1e-10)
    # Probe data: per-token write norms (summed over heads, batch mean), the latest write.
    norms = writes.flatten(-2).norm(dim=-1).sum(1).mean(0)
    torch.testing.assert_close(state["write_norms"], norms, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state["last_write"], writes[0, 0, -1], rtol=1e-10, atol=1e-12)


def test_eta_scales_the_write():
    x = _x(1, 10, 12)
    with torch.no_grad():
        y1, s1 = _level("scalar", eta=1.0)(x)
        y3, s3 = _level("scalar", eta=0.3)(x)
        y_ref, m_ref, _ = _reference(_level("scalar", eta=0.3), x)
    torch.testing.assert_close(s3["M"], 0.3 * s1["M"])
    torch.testing.assert_close(y3, 0.3 * y1)
    torch.testing.assert_close(y3, y_ref)


@pytest.mark.parametrize("gate", GATES)
def test_chunk_size_does_not_change_results(gate):
    x = _x(2, 45, 12, seed=2)
    outs = []
    for chunk in (1, 7, 16, 64):
        level = _level(gate)
        level.chunk = chunk
        with torch.no_grad():
            outs.append(level(x))
    for y, st in outs[1:]:
        torch.testing.assert_close(y, outs[0][0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(st["M"], outs[0][1]["M"], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("cuts", [(70,), (13, 77), (1, 101, 106)])
def test_split_stream_equals_one_call(gate, cuts):
    level = _level(gate)
    x = _x(2, 150, 12, seed=3)  # 150: not a multiple of the internal chunk
    with torch.no_grad():
        y_full, s_full = level(x)
        parts, state, start = [], None, 0
        for end in (*cuts, 150):
            y, state = level(x[:, start:end], state)
            parts.append(y)
            start = end
    torch.testing.assert_close(torch.cat(parts, 1), y_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state["M"], s_full["M"], rtol=1e-10, atol=1e-10)
    assert state["t"] == state["updates"] == 150
    assert state["write_norms"].shape == (150 - cuts[-1],)


def test_state_is_not_mutated_and_empty_call():
    level = _level("vector")
    x = _x(1, 9, 12)
    with torch.no_grad():
        _, s1 = level(x)
        m_before = s1["M"].clone()
        y, s2 = level(x[:, :0], s1)
        _, s3 = level(x, s1)
    assert y.shape == (1, 0, 12) and torch.equal(s2["M"], m_before)
    assert torch.equal(s1["M"], m_before) and s1["t"] == 9 and s3["t"] == 18


@pytest.mark.parametrize("gate", GATES)
def test_gradients_reach_every_parameter(gate):
    level = _level(gate)
    level.chunk = 4
    x = _x(2, 11, 12).requires_grad_()
    y, state = level(x)
    (y.square().sum() + state["M"].square().sum()).backward()
    for name, p in level.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("gate", GATES)
def test_gradcheck_through_the_writes(gate):
    level = _level(gate, d_model=4, heads=2, seed=5)
    level.chunk = 3
    x = _x(1, 7, 4, seed=6).requires_grad_()
    m0 = torch.randn(1, 2, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    m0.requires_grad_()
    params = dict(level.named_parameters())
    names = list(params)

    def f(x_, m_, *ps):
        state = level.init_state(1, dtype=F64)
        state["M"] = m_
        y, st = torch.func.functional_call(level, dict(zip(names, ps)), (x_, state))
        return y, st["M"]

    inputs = (x, m0, *[p.detach().clone().requires_grad_() for p in params.values()])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_kernel_handles_long_decays_without_overflow():
    """Pairwise log-decays keep every exponent ≤ 0, so a gate near 0 cannot overflow."""
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(1, 1, 40, 3, generator=g) for _ in range(3))
    log_a = torch.full((1, 1, 40, 3), -30.0)  # a ≈ 1e-13 per token
    y, m = chunked_linear_attention(q, k, v, log_a, torch.zeros(1, 1, 3, 3), chunk=16)
    assert torch.isfinite(y).all() and torch.isfinite(m).all()
    # With such a gate the memory holds only the current token: y_t ≈ v_t ⟨k_t, q_t⟩.
    torch.testing.assert_close(y, v * (k * q).sum(-1, keepdim=True), rtol=1e-4, atol=1e-5)


def test_probe_shapes_and_counts():
    level = _level("scalar", d_model=12, heads=3)
    with torch.no_grad():
        _, state = level(_x(2, 30, 12))
        _, state = level(_x(2, 7, 12, seed=9), state)
    probe = level.probe(state)
    assert probe.memory.shape == (4, 4) and probe.write.shape == (4, 4)
    assert torch.equal(probe.memory, state["M"][0, 0])
    assert probe.updates == 37 and probe.write_norms.shape == (7,)
    assert (probe.write_norms > 0).all()
    assert not probe.memory.requires_grad
    fresh = level.probe(level.init_state(2))
    assert fresh.updates == 0 and fresh.write is None and (fresh.memory == 0).all()


def test_rejects_bad_specs():
    with pytest.raises(ValueError, match="period"):
        LinearAttentionLevel({"kind": "linear_attention", "period": 4}, 8, 2)
    with pytest.raises(ValueError, match="optimizer"):
        LinearAttentionLevel({"kind": "linear_attention", "optimizer": {"name": "adam"}}, 8, 2)
    with pytest.raises(ValueError, match="gate"):
        LinearAttentionLevel({"kind": "linear_attention", "gate": "both"}, 8, 2)
    with pytest.raises(ValueError, match="divisible"):
        LinearAttentionLevel({"kind": "linear_attention"}, 10, 4)
