"""The short causal convolution on q, k, v (option ``conv``) of attention, linear attention,
delta and titans levels: the conv's input history is state, so a stream split over calls gives
the outputs and state of one call; width 0 is no convolution at all."""
from __future__ import annotations

import pytest
import torch

from nlstudio.models.levels import LEVEL_CLASSES

F64 = torch.float64
KINDS = {"attention": {"window": 3}, "linear_attention": {"gate": "scalar"},
         "delta": {"gate": True}, "titans": {"period": 3}}


def make(kind: str, conv: int, seed: int = 0):
    torch.manual_seed(seed)
    spec = {"id": "lv", "kind": kind, "conv": conv, **KINDS[kind]}
    level = LEVEL_CLASSES[kind](spec, 8, 2).to(F64)
    if level.conv.weight is not None:
        with torch.no_grad():  # a filter that mixes the past for real
            level.conv.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed))
    return level


def x_(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, 8, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _tensors(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and key not in ("write_norms", "attn_map"):
            out[key] = value
        elif isinstance(value, tuple):
            out.update({f"{key}{i}": v for i, v in enumerate(value)})
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("cuts", [(1, 2, 3), (5, 6), (2, 11)])
def test_a_stream_split_over_calls_equals_one_call(kind, cuts):
    level = make(kind, conv=4)
    x = x_(2, 13)
    with torch.no_grad():
        y, one = level(x)
        parts, state, start = [], None, 0
        for end in (*cuts, 13):
            out, state = level(x[:, start:end], state)
            parts.append(out)
            start = end
    torch.testing.assert_close(torch.cat(parts, 1), y, rtol=1e-10, atol=1e-12)
    assert state["conv"].shape == (2, 3, 24)  # the last 3 q, k, v projections
    for key, value in _tensors(one).items():
        torch.testing.assert_close(_tensors(state)[key], value, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_convolution_reaches_back_exactly_width_minus_one_tokens(kind):
    """Changing token 0 changes q, k, v at tokens 0..3 only: with a window of 3 attention sees
    it up to token 5 (keys 0..3) and never again; titans reads chunk 0's write from token 3 on."""
    level = make(kind, conv=4)
    x = x_(1, 9)
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        y, _ = level(x)
        y2, _ = level(x2)
    changed = ((y - y2).abs().amax(-1) > 1e-12)[0]
    assert changed[:4].all()
    if kind == "attention":  # window 6: token 0 is out of sight from token 6 on
        assert changed[:6].all() and not changed[6:].any()
    if kind == "titans":  # chunk 0 (tokens 0-2) is written at token 2 and read from token 3 on
        assert changed.all()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_width_zero_has_no_parameters_and_equals_the_identity_filter(kind):
    plain = make(kind, conv=0)
    assert plain.conv.weight is None
    assert not any("conv" in n for n, _ in plain.named_parameters())
    ident = make(kind, conv=4)
    ident.load_state_dict({**plain.state_dict(), "conv.weight": ident.conv.weight * 0},
                          strict=True)
    with torch.no_grad():
        ident.conv.weight[:, 0, -1] = 1.0  # newest tap 1: y_t = x_t
        x = x_(2, 10)
        y0, s0 = plain(x)
        y1, s1 = ident(x)
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-13)
    assert s0["conv"].shape == (2, 0, 24)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_fresh_filter_is_the_identity(kind):
    torch.manual_seed(0)
    level = LEVEL_CLASSES[kind]({"id": "lv", "kind": kind, **KINDS[kind]}, 8, 2)
    assert level.conv.width == 4  # the registry default for new levels
    w = level.conv.weight.detach()
    assert torch.equal(w[:, 0, -1], torch.ones(24)) and not w[:, 0, :-1].any()
