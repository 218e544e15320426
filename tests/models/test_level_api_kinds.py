"""The agreed Level API in the in-context memory kinds (TEAM.md): ``forward(..., frozen=True)``,
``read(state, x)``, ``compute_chunk``, ``state_floats`` and ``activation_floats_per_token``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models.levels import LEVEL_CLASSES
from nlstudio.models.levels.common import merge_heads, tensor_floats
from nlstudio.models.levels.self_modifying import MEM

F64 = torch.float64
D, H = 8, 2
#: one configuration per kind (and the variants whose state or math differ)
MEMORIES = {
    "linear_attention": {"gate": "scalar"},
    "linear_vector": {"kind": "linear_attention", "gate": "vector"},
    "delta": {"gate": True},
    "titans": {"period": 3, "depth": 2},
    "titans_matrix": {"kind": "titans", "period": 1, "depth": 1, "optimizer": {"name": "sgd"}},
    "self_modifying": {"period": 3, "depth": 2, "momentum": True},
    "self_matrix": {"kind": "self_modifying", "period": 1, "depth": 1},
}
WRITE_EVERY_TOKEN = ("linear_attention", "delta")  # read after the token's write


def make(name: str, conv: int = 4, seed: int = 0, d: int = D, heads: int = H):
    cfg = dict(MEMORIES.get(name, {}))
    kind = cfg.pop("kind", name)
    torch.manual_seed(seed)
    level = LEVEL_CLASSES[kind]({"id": "lv", "kind": kind, "conv": conv, **cfg}, d, heads)
    level = level.to(F64)
    with torch.no_grad():
        if level.conv.weight is not None:  # a filter that mixes the past for real
            level.conv.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed))
        if kind == "titans":
            level.to_gates.weight.normal_(0.0, 0.5)
            level.to_gates.bias.view(-1, heads)[1].fill_(-1.0)
    return level


def x_(b: int, t: int, seed: int = 1, d: int = D) -> torch.Tensor:
    return torch.randn(b, t, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def memory_tensors(state: dict) -> dict[str, torch.Tensor]:
    """Every tensor of the in-context memory: fast weights and momenta."""
    out = {}
    for key in ("M", "weights", "memories", "momentum"):
        value = state.get(key)
        if isinstance(value, torch.Tensor):
            out[key] = value
        elif isinstance(value, tuple):
            out.update({f"{key}{i}": v for i, v in enumerate(value)})
    return out


# ---- frozen ---------------------------------------------------------------------------------
def hand_read(level, state: dict, x: torch.Tensor) -> torch.Tensor:
    """What the fixed memory returns for tokens of ``x`` (no convolution), written out from
    the equations of each kind."""
    b, t, d = x.shape
    dh = d // level.heads
    heads = lambda z: z.view(b, t, level.heads, dh).transpose(1, 2)  # [B, H, T, dh]
    kind = level.kind
    if kind in WRITE_EVERY_TOKEN:
        q = level.q_proj(x)
        q = F.silu(q) if kind == "delta" else q
        o = F.normalize(heads(q), dim=-1) @ state["M"].mT  # M q_t
        return level.out_proj(merge_heads(o))
    if kind == "titans":
        q = F.normalize(heads(F.silu(level.to_qkv(x)[..., :d])), dim=-1)
        ws = state["weights"]  # [B, H, out, in] per layer
        hid = q
        for i, w in enumerate(ws):
            hid = hid @ w.mT
            if i < len(ws) - 1:
                hid = F.silu(hid)
        o = hid + q if len(ws) > 1 else hid
        eps = torch.finfo(F64).eps
        o = o * torch.rsqrt(o.square().mean(-1, keepdim=True) + eps) * level.out_gate.norm.weight
        return level.to_out(merge_heads(o) * F.silu(level.out_gate.gate(x)))
    # self_modifying: o_t = M_mem(q_t), M(x) = W x (depth 1) or x + W₁ silu(W₂ x) (depth 2)
    q = F.normalize(heads(level.to_q(x)), dim=-1)
    ws = [m[:, :, MEM] for m in state["memories"]]
    z = q @ ws[0].mT
    o = z if len(ws) == 1 else q + F.silu(z) @ ws[1].mT
    return level.to_out(merge_heads(o))


@pytest.mark.parametrize("name", sorted(MEMORIES))
def test_frozen_writes_nothing_and_reads_the_fixed_memory(name):
    level = make(name, conv=0)
    with torch.no_grad():
        _, state = level(x_(2, 5))  # a memory that has been written, mid-chunk for C = 3
        before = {k: v.clone() for k, v in memory_tensors(state).items()}
        x = x_(2, 7, seed=2)
        y, new = level(x, state, frozen=True)
        want = hand_read(level, state, x)
    for key, value in memory_tensors(new).items():
        assert torch.equal(value, before[key]), key  # memory, momentum, inner memories
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-12)
    assert new["t"] == 12 and new["updates"] == state["updates"]
    assert new["write_norms"].shape == (7,) and not new["write_norms"].any()
    if "pending" in state:  # bookkeeping advances: the pending chunk's inputs
        assert new["pending"].shape[1] == 12 % level.chunk


@pytest.mark.parametrize("name", sorted(MEMORIES))
def test_a_frozen_stream_split_over_calls_equals_one_frozen_call(name):
    level = make(name, conv=4)
    with torch.no_grad():
        _, state = level(x_(2, 4))
        x = x_(2, 9, seed=3)
        y, one = level(x, state, frozen=True)
        y1, s1 = level(x[:, :2], state, frozen=True)
        y2, s2 = level(x[:, 2:], s1, frozen=True)
    torch.testing.assert_close(torch.cat((y1, y2), 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2["conv"], one["conv"])
    # ... and after a frozen stretch the memory writes on as if the stretch were read only
    with torch.no_grad():
        _, a = level(x_(2, 6, seed=4), one)
        _, b = level(x_(2, 6, seed=4), s2)
    for key, value in memory_tensors(a).items():
        torch.testing.assert_close(memory_tensors(b)[key], value, rtol=1e-12, atol=1e-12)


def test_attention_cannot_be_frozen_and_reads_nothing():
    level = make("attention")
    with pytest.raises(ValueError, match="cannot be frozen"):
        level(x_(1, 3), frozen=True)
    assert level.read(level.init_state(1), x_(1, 3)) is None
    assert level.compute_chunk is None


# ---- read -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MEMORIES))
def test_read_is_what_the_forward_returns_at_each_token(name):
    """Without a convolution: C = 1 kinds read after their write (``y_t = read(state after
    t)``); chunked kinds read the last completed write (``y_t = read(state before t)``, the
    state's weights being the anchor of t's chunk, whatever C)."""
    level = make(name, conv=0)
    x = x_(2, 8)
    with torch.no_grad():
        state = level.init_state(2)
        for t in range(8):
            before = state
            y, state = level(x[:, t:t + 1], state)
            read_from = state if level.kind in WRITE_EVERY_TOKEN else before
            torch.testing.assert_close(level.read(read_from, x[:, t:t + 1]), y,
                                       rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(MEMORIES))
def test_read_sees_no_context_and_writes_nothing(name):
    """With a convolution, ``read`` reads each token alone: the same as a frozen call of that
    token from a zero convolution history; batched probe queries never mix."""
    level = make(name, conv=4)
    with torch.no_grad():
        _, state = level(x_(2, 7))
        kept = {k: v.clone() for k, v in memory_tensors(state).items()}
        probes = x_(2, 5, seed=9)
        got = level.read(state, probes)
        fresh = {**state, "conv": torch.zeros_like(state["conv"])}
        for i in range(5):
            want, _ = level(probes[:, i:i + 1], fresh, frozen=True)
            torch.testing.assert_close(got[:, i:i + 1], want, rtol=1e-10, atol=1e-12)
        one = level.read(state, probes[:, 2:3])
    torch.testing.assert_close(one, got[:, 2:3], rtol=1e-12, atol=1e-13)
    for key, value in memory_tensors(state).items():
        assert torch.equal(value, kept[key])
    assert got.shape == (2, 5, D) and not got.requires_grad


# ---- sizes ----------------------------------------------------------------------------------
def test_compute_chunk_of_every_kind():
    assert make("delta").compute_chunk == 64
    assert make("linear_attention").compute_chunk == 64
    assert make("linear_vector").compute_chunk == 16  # the vector gate's internal chunk
    assert make("titans").compute_chunk == 3
    assert make("self_modifying").compute_chunk == 3


@pytest.mark.parametrize("name", ["titans", "self_modifying", "self_matrix"])
def test_state_floats_is_the_largest_state_of_a_chunked_memory(name):
    level = make(name)
    c = level.chunk
    with torch.no_grad():
        _, state = level(x_(3, c - 1))  # the most pending tokens a state can hold
    floats = tensor_floats({k: v for k, v in state.items() if k not in ("write_norms",)})
    assert level.state_floats(3) == floats
    assert level.state_floats(3) == 3 * level.state_floats(1)


def saved_floats_per_token(level, x: torch.Tensor) -> float:
    """Floats of the distinct storages autograd keeps for the backward pass, per token."""
    sizes = {}

    def pack(t):
        storage = t.untyped_storage()
        sizes[storage.data_ptr()] = storage.nbytes() // t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        level(x)
    return sum(sizes.values()) / (x.shape[0] * x.shape[1])


@pytest.mark.parametrize("name,extra", [
    ("attention", {"window": 8}), ("linear_attention", {}), ("linear_vector", {}),
    ("delta", {}), ("titans", {}), ("titans", {"period": 8, "depth": 3}),
    ("self_modifying", {}), ("self_matrix", {"period": 16}),
])
def test_activation_estimate_is_close_to_what_autograd_keeps(name, extra):
    """The estimate build.py's memory check uses: within [0.7, 1.6] of what autograd really
    saves (the level's input, norm and output are counted by it and not by this measure)."""
    cfg = {**MEMORIES.get(name, {}), **extra}
    kind = cfg.pop("kind", name)
    torch.manual_seed(0)
    level = LEVEL_CLASSES[kind]({"id": "lv", "kind": kind, **cfg}, 32, 2)
    t = 96
    measured = saved_floats_per_token(level, torch.randn(2, t, 32, requires_grad=True))
    estimate = level.activation_floats_per_token(t)
    assert 0.7 <= estimate / measured <= 1.6, (estimate, round(measured))
