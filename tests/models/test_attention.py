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
