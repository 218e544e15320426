"""Delta-rule level: the chunk-wise WY/UT form equals the Gated DeltaNet recurrence
``M_t = α_t M_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ`` token by token (float64); streams split
over calls; gradients; probes; frozen writes and the read."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models.levels.common import merge_heads
from nlstudio.models.levels.delta import DeltaLevel, chunked_delta_rule

F64 = torch.float64
GATES = (False, True)


def _level(gate: bool = True, eta: float = 1.0, d_model: int = 12, heads: int = 2,
           seed: int = 0, conv: int = 4) -> DeltaLevel:
    torch.manual_seed(seed)
    spec = {"id": "delta", "kind": "delta", "period": 1, "gate": gate, "conv": conv,
            "optimizer": {"name": "sgd", "eta": eta}}
    level = DeltaLevel(spec, d_model, heads).double()
    with torch.no_grad():  # data-dependent rates that actually vary (not all near 1)
        level.eta_proj.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
        if level.alpha_proj is not None:
            level.alpha_proj.weight.mul_(10.0)
            level.alpha_proj.bias.fill_(1.0)
        if level.conv.weight is not None:  # a filter that mixes the past for real
            level.conv.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed))
    return level


def _x(b: int, t: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _qkv(level: DeltaLevel, x: torch.Tensor):
    """q, k, v by hand: projections, the causal depthwise convolution (zero history), SiLU,
    then L2 norms of q and k (DeltaNet / Gated DeltaNet)."""
    b, t, d = x.shape
    proj = torch.cat((level.q_proj(x), level.k_proj(x), level.v_proj(x)), -1)  # [B, T, 3d]
    if level.conv.weight is not None:
        w = level.conv.weight[:, 0]  # [3d, width], w[:, -1] multiplies x_t
        width = w.shape[-1]
        conv = torch.zeros_like(proj)
        for i in range(t):
            for j in range(width):
                if i - j >= 0:
                    conv[:, i] += w[:, width - 1 - j] * proj[:, i - j]
        proj = conv
    heads = lambda z: z.view(b, t, level.heads, -1).transpose(1, 2)
    q, k, v = (heads(F.silu(z)) for z in proj.chunk(3, -1))
    return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v


def _reference(level: DeltaLevel, x: torch.Tensor):
    """Gated DeltaNet token by token, as printed: ``M_t = α_t M_{t−1}(I − β_t k_t k_tᵀ) +
    β_t v_t k_tᵀ`` (α = 1 without the gate), then ``y_t = M_t q_t``. Returns outputs, memories
    and the writes ``M_t − α_t M_{t−1}`` (= u_t k_tᵀ)."""
    q, k, v = _qkv(level, x)
    beta = level.eta * torch.sigmoid(level.eta_proj(x)).transpose(1, 2)  # [B, H, T]
    alpha = (torch.sigmoid(level.alpha_proj(x)).transpose(1, 2) if level.alpha_proj is not None
             else torch.ones_like(beta))
    b, h, t, dk = k.shape
    eye = torch.eye(dk, dtype=F64)
    m = torch.zeros(b, h, v.shape[-1], dk, dtype=F64)
    ys, writes = [], []
    for i in range(t):
        a, bt = alpha[:, :, i, None, None], beta[:, :, i, None, None]
        kt, vt = k[:, :, i].unsqueeze(-1), v[:, :, i].unsqueeze(-1)
        new = a * m @ (eye - bt * kt @ kt.mT) + bt * vt @ kt.mT
        writes.append(new - a * m)
        m = new
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


def test_eta_bounds_the_step_and_rates_are_data_dependent():
    level = _level(True, eta=0.7)
    x = _x(2, 10, 12)
    with torch.no_grad():
        eta, log_alpha = level.rates(x)
    assert eta.shape == log_alpha.shape == (2, 2, 10)
    assert (eta > 0).all() and (eta < 0.7).all() and eta.std() > 0.01
    assert (log_alpha < 0).all() and log_alpha.std() > 0.01
    assert _level(False).rates(x)[1] is None


def test_unit_step_on_a_unit_key_stores_the_value_exactly():
    """With η_t = 1 and α = 1 the delta rule overwrites: M_t k_t = v_t right after the write."""
    g = torch.Generator().manual_seed(11)
    k = torch.nn.functional.normalize(torch.randn(1, 1, 6, 4, generator=g, dtype=F64), dim=-1)
    v = torch.randn(1, 1, 6, 3, generator=g, dtype=F64)
    m0 = torch.randn(1, 1, 3, 4, generator=g, dtype=F64)
    for t in range(1, 7):
        _, _, m = chunked_delta_rule(k[:, :, :t], k[:, :, :t], v[:, :, :t],
                                     torch.ones(1, 1, t, dtype=F64), None, m0, chunk=4)
        torch.testing.assert_close(m[0, 0] @ k[0, 0, t - 1], v[0, 0, t - 1])


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
    level = _level(True)
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


def test_kernel_handles_strong_decay_without_overflow():
    """Every exponent of the chunked form is ≤ 0, so a gate near 0 cannot overflow."""
    g = torch.Generator().manual_seed(8)
    q, k = (torch.nn.functional.normalize(torch.randn(1, 1, 40, 3, generator=g), dim=-1)
            for _ in range(2))
    v = torch.randn(1, 1, 40, 3, generator=g)
    eta = torch.full((1, 1, 40), 0.5)
    y, u, m = chunked_delta_rule(q, k, v, eta, torch.full((1, 1, 40), -30.0),
                                 torch.zeros(1, 1, 3, 3), chunk=16)
    assert torch.isfinite(y).all() and torch.isfinite(m).all()
    # The gate decays the erase term too (Gated DeltaNet), so with α_t ≈ e⁻³⁰ nothing of the
    # past is erased or kept: u_t = β (v_t − α_t M_{t−1} k_t) ≈ β v_t, y_t = u_t ⟨k_t, q_t⟩.
    torch.testing.assert_close(u, 0.5 * v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, u * (k * q).sum(-1, keepdim=True), rtol=1e-4, atol=1e-5)


def test_the_gate_decays_the_erase_term_too():
    """Gated DeltaNet's form: with β_t = 1 the write replaces what the decayed memory recalls
    for k_t, so ``M_t k_t = v_t`` whatever α_t; the form that decays only the old memory
    (``α M + β (v − M k) kᵀ``) would leave ``v_t − (1 − α_t) M_{t−1} k_t``."""
    g = torch.Generator().manual_seed(12)
    k = torch.nn.functional.normalize(torch.randn(1, 2, 9, 4, generator=g, dtype=F64), dim=-1)
    v = torch.randn(1, 2, 9, 4, generator=g, dtype=F64)
    log_alpha = torch.log(torch.rand(1, 2, 9, generator=g, dtype=F64) * 0.8 + 0.1)
    m0 = torch.randn(1, 2, 4, 4, generator=g, dtype=F64)
    for t in range(1, 10):
        _, _, m = chunked_delta_rule(k[:, :, :t], k[:, :, :t], v[:, :, :t],
                                     torch.ones(1, 2, t, dtype=F64), log_alpha[:, :, :t], m0,
                                     chunk=4)
        torch.testing.assert_close((m @ k[:, :, t - 1].unsqueeze(-1)).squeeze(-1),
                                   v[:, :, t - 1], rtol=1e-10, atol=1e-10)


def test_probe_shapes_and_counts():
    level = _level(True, d_model=12, heads=3)
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
        DeltaLevel({"kind": "delta", "period": 2}, 8, 2)
    with pytest.raises(ValueError, match="optimizer"):
        DeltaLevel({"kind": "delta", "optimizer": {"name": "momentum"}}, 8, 2)
    with pytest.raises(ValueError, match="divisible"):
        DeltaLevel({"kind": "delta"}, 10, 4)
    assert DeltaLevel({"kind": "delta"}, 8, 2).gated  # registry default: gate on


@pytest.mark.parametrize("gate", [False, True])
def test_backward_work_is_linear_in_the_number_of_chunks(gate):
    """The chunk loop reads its chunks from tensors unbound once: no per-chunk index node,
    whose backward would write a zero gradient as large as the whole call for every chunk
    (O(T²) work; it made the level 1.5x slower per token at T = 2048 than at 512)."""
    level = _level(gate=gate)
    level.chunk = 4
    y, _ = level(_x(2, 64, 12))  # 16 chunks
    seen, stack, kinds = set(), [y.grad_fn], {}
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        kinds[type(node).__name__] = kinds.get(type(node).__name__, 0) + 1
        stack.extend(fn for fn, _ in node.next_functions)
    per_chunk_index = {k: n for k, n in kinds.items() if k.startswith("SelectBackward") and n >= 16}
    assert not per_chunk_index, per_chunk_index
    assert kinds.get("UnbindBackward0", 0) >= 5
