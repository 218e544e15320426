"""Attention level, and the shared building blocks of models/levels/common.py."""
from __future__ import annotations

import math

import pytest
import torch

from nlstudio.models.levels.common import (CausalConv1d, apply_rope, l2_normalize, merge_heads,
                                           split_heads)


# ---------------------------------------------------------------------------- common blocks
def test_split_merge_heads_roundtrip_and_layout():
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(0))
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4) and h.is_contiguous()
    assert torch.equal(h[1, 2, 4], x[1, 4, 8:12])
    assert torch.equal(merge_heads(h), x)
    with pytest.raises(ValueError):
        split_heads(x, 5)


def test_l2_normalize_unit_norm_and_zero_safe():
    x = torch.randn(3, 4, 7, generator=torch.Generator().manual_seed(1))
    n = l2_normalize(x)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(3, 4))
    torch.testing.assert_close(n * x.norm(dim=-1, keepdim=True), x)
    z = l2_normalize(torch.zeros(2, 3))
    assert torch.isfinite(z).all() and (z == 0).all()


def test_rope_is_relative_and_norm_preserving():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2, 1, 8, generator=g, dtype=torch.float64)
    k = torch.randn(1, 2, 1, 8, generator=g, dtype=torch.float64)

    def score(pq: int, pk: int) -> torch.Tensor:
        rq = apply_rope(q, torch.tensor([pq]))
        rk = apply_rope(k, torch.tensor([pk]))
        return (rq * rk).sum(-1)

    # <R(p) q, R(s) k> depends only on p - s.
    torch.testing.assert_close(score(7, 3), score(104, 100))
    torch.testing.assert_close(score(0, 0), (q * k).sum(-1))
    x = torch.randn(2, 3, 6, 8, generator=g, dtype=torch.float64)
    r = apply_rope(x, torch.arange(10, 16))
    torch.testing.assert_close(r.norm(dim=-1), x.norm(dim=-1))
    # Split positions continue: rotating [0..5] at once equals two calls with absolute positions.
    whole = apply_rope(x, torch.arange(6))
    parts = torch.cat((apply_rope(x[:, :, :2], torch.arange(2)),
                       apply_rope(x[:, :, 2:], torch.arange(2, 6))), dim=2)
    torch.testing.assert_close(whole, parts)


def test_rope_odd_head_dim_leaves_last_channel():
    x = torch.randn(1, 1, 4, 5, generator=torch.Generator().manual_seed(3))
    r = apply_rope(x, torch.arange(4))
    assert torch.equal(r[..., -1], x[..., -1])
    assert not torch.allclose(r[..., :4], x[..., :4])


def test_causal_conv_matches_reference_and_splits():
    torch.manual_seed(4)
    conv = CausalConv1d(3, 4).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(3, 1, 4, dtype=torch.float64))
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    y, hist = conv(x)
    w = conv.weight[:, 0]  # [C, width], w[:, -1] multiplies x_t
    ref = torch.zeros_like(x)
    for t in range(9):
        for i in range(4):
            if t - i >= 0:
                ref[:, t] += w[:, 3 - i] * x[:, t - i]
    torch.testing.assert_close(y, ref)
    assert torch.equal(hist, x[:, -3:])
    y1, h1 = conv(x[:, :2])
    y2, h2 = conv(x[:, 2:7], h1)
    y3, _ = conv(x[:, 7:], h2)
    torch.testing.assert_close(torch.cat((y1, y2, y3), 1), y)


@pytest.mark.parametrize("width", [0, 1])
def test_causal_conv_identity_widths(width):
    conv = CausalConv1d(3, width)
    x = torch.randn(2, 5, 3)
    y, hist = conv(x)
    assert torch.equal(y, x) and hist.shape == (2, 0, 3)
    assert not list(conv.parameters())


def test_causal_conv_identity_init():
    conv = CausalConv1d(4, 3)
    x = torch.randn(1, 6, 4)
    torch.testing.assert_close(conv(x)[0], x)


# ---------------------------------------------------------------------------- attention level
from nlstudio.models.levels.attention import AttentionLevel  # noqa: E402

F64 = torch.float64


def _level(window=None, d_model: int = 12, heads: int = 3, seed: int = 0) -> AttentionLevel:
    torch.manual_seed(seed)
    spec = {"id": "att", "kind": "attention", "period": None, "window": window}
    return AttentionLevel(spec, d_model, heads).double()


def _x(b: int, t: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _reference(level: AttentionLevel, x: torch.Tensor, allowed: torch.Tensor):
    """Naive softmax attention with RoPE at positions 0..T−1 and an explicit [T, T] mask."""
    t = x.shape[1]
    pos = torch.arange(t)
    q = apply_rope(split_heads(level.q_proj(x), level.heads), pos)
    k = apply_rope(split_heads(level.k_proj(x), level.heads), pos)
    v = split_heads(level.v_proj(x), level.heads)
    scores = q @ k.mT / math.sqrt(level.d_head)
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return level.out_proj(merge_heads(weights @ v)), weights


def test_full_attention_equals_naive_softmax():
    level = _level()
    x = _x(2, 19, 12)
    with torch.no_grad():
        y, state = level(x)
        ref, weights = _reference(level, x, torch.ones(19, 19, dtype=torch.bool).tril())
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    # Probe: head 0 / batch 0 attention map, normalised over every visible key.
    torch.testing.assert_close(state["attn_map"], weights[0, 0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("window", [1, 4, 30])
def test_window_equals_banded_mask(window):
    level = _level(window)
    x = _x(2, 23, 12, seed=2)
    i = torch.arange(23)
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
    with torch.no_grad():
        y, state = level(x)
        ref, _ = _reference(level, x, band)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    assert state["k"].shape[2] == min(window - 1, 23)  # all a later query can still see


@pytest.mark.parametrize("window", [None, 5, 40])
@pytest.mark.parametrize("lengths", [(37, 43), (1, 64, 15), (50, 3, 27)])
def test_split_stream_equals_one_call(window, lengths):
    level = _level(window)
    x = _x(2, sum(lengths), 12, seed=3)
    with torch.no_grad():
        y_full, s_full = level(x)
        parts, state, start = [], None, 0
        for n in lengths:
            y, state = level(x[:, start:start + n], state)
            parts.append(y)
            start += n
    torch.testing.assert_close(torch.cat(parts, 1), y_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state["k"], s_full["k"])
    assert state["t"] == state["updates"] == sum(lengths)
    assert state["write_norms"].shape == (lengths[-1],)


def test_fast_path_uses_is_causal_and_masks_only_when_needed(monkeypatch):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("is_causal", False), kwargs.get("attn_mask") is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    level = _level()
    with torch.no_grad():
        _, state = level(_x(1, 6, 12))  # fresh stream, full attention: is_causal fast path
        level(_x(1, 3, 12), state)  # continuing a stream: a mask over cache + new tokens
        _level(4)(_x(1, 6, 12))  # sliding window: a banded mask
    assert calls == [(True, False), (False, True), (False, True)]


def test_gradients_reach_every_parameter():
    for window in (None, 3):
        level = _level(window)
        x = _x(2, 9, 12).requires_grad_()
        y, state = level(x)
        y2, _ = level(x, state)  # through the cache as well
        (y.square().sum() + y2.square().sum()).backward()
        for name, p in level.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_probe_shapes_and_counts():
    level = _level(d_model=12, heads=3)
    with torch.no_grad():
        _, state = level(_x(2, 80, 12))
        _, state = level(_x(2, 10, 12, seed=5), state)
    probe = level.probe(state)
    assert probe.write is None and probe.updates == 90
    assert probe.memory.shape == (10, 64)  # last ≤ 64 queries × last ≤ 64 keys
    assert (probe.memory >= 0).all() and (probe.memory.sum(-1) <= 1 + 1e-9).all()
    assert (probe.memory[:, -1][:-1] == 0).all()  # causal: the newest key is only seen by itself
    assert probe.write_norms.shape == (10,) and (probe.write_norms > 0).all()
    # write norm of token t = Σ_heads mean_batch ‖[k_t; v_t]‖
    x = _x(2, 4, 12, seed=6)
    with torch.no_grad():
        _, st = level(x)
        k = apply_rope(split_heads(level.k_proj(x), 3), torch.arange(4))
        v = split_heads(level.v_proj(x), 3)
    torch.testing.assert_close(st["write_norms"],
                               torch.cat((k, v), -1).norm(dim=-1).sum(1).mean(0))
    fresh = level.probe(level.init_state(2))
    assert fresh.memory is None and fresh.updates == 0 and fresh.write_norms.shape == (0,)


def test_window_cache_is_bounded_and_state_not_mutated():
    level = _level(6)
    with torch.no_grad():
        _, s1 = level(_x(1, 20, 12))
        k1 = s1["k"].clone()
        _, s2 = level(_x(1, 20, 12, seed=7), s1)
    assert s2["k"].shape[2] == 5 and torch.equal(s1["k"], k1) and s1["t"] == 20


def test_rejects_bad_specs():
    with pytest.raises(ValueError, match="period"):
        AttentionLevel({"kind": "attention", "period": 1}, 8, 2)
    with pytest.raises(ValueError, match="window"):
        AttentionLevel({"kind": "attention", "window": 0}, 8, 2)
