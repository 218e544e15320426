"""What the levels answer about themselves (models/levels/base.py): the one kind map, read(),
compute_chunk, state_floats, activation_floats_per_token; CMS (mlp) overrides."""
from __future__ import annotations

import pytest
import torch

from nlstudio.models import KINDS, LEVEL_CLASSES
from nlstudio.models.levels.base import Level, _numel

D, HEADS = 8, 2


def make(kind: str, **spec) -> Level:
    torch.manual_seed(0)
    return LEVEL_CLASSES[kind]({"id": "x", "kind": kind, **spec}, D, HEADS)


def cms(period, objective="task", optimizer=None, **kw) -> Level:
    return make("mlp", period=period, objective=objective, expansion=2,
                optimizer=optimizer or {"name": "momentum", "eta": 0.2, "alpha": 0.5}, **kw)


def test_the_registry_is_the_one_map_of_kinds():
    for kind, info in KINDS.items():
        cls = LEVEL_CLASSES[kind]
        assert issubclass(cls, Level) and cls.kind == kind, info.implementation
    with pytest.raises(KeyError, match="unknown level kind 'conv'"):
        LEVEL_CLASSES["conv"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_state_floats_is_the_real_state_of_every_kind(kind):
    level = make(kind)
    for batch in (1, 3):
        fresh = _numel(level.init_state(batch))
        if type(level).state_floats is Level.state_floats:
            assert level.state_floats(batch) == fresh
        else:  # chunked kinds also count the tokens a chunk keeps pending, CMS its DGD keys
            assert level.state_floats(batch) >= fresh
    assert level.activation_floats_per_token(64) >= 3 * D
    chunk = level.compute_chunk
    assert chunk is None or (isinstance(chunk, int) and chunk >= 1)
    assert (chunk is None) == (not KINDS[kind].parametric or level.period is None)


def test_non_parametric_levels_read_nothing():
    level = make("attention")
    assert level.read(level.init_state(1), torch.randn(1, 3, D)) is None
    assert level.compute_chunk is None


@pytest.mark.parametrize("objective", ["task", "l2", "dot"])
def test_cms_answers(objective):
    level = cms(4, objective)
    assert level.compute_chunk == 4
    assert level.activation_floats_per_token(100) == 3 * D + 2 * level.hidden
    dgd = cms(4, objective, {"name": "dgd", "eta": 0.1})
    fresh = _numel(dgd.init_state(2))
    assert dgd.state_floats(2) == fresh + 2 * 4 * (D + dgd.hidden)  # the chunk's keys
    frozen = make("mlp", period=None, expansion=2)
    assert frozen.compute_chunk is None and frozen.state_floats(5) == 0


@pytest.mark.parametrize("objective", ["task", "l2"])
def test_cms_read_is_what_the_level_returns_between_writes(objective):
    """Inside a chunk a CMS level returns exactly what its memory reads (no context): read()
    at the chunk's state equals the forward's output, before and after writes."""
    level = cms(3, objective)
    x = torch.randn(2, 9, D)
    state = level.init_state(2)
    for start in range(0, 9, 3):
        piece = x[:, start:start + 3]
        expected = level.read(state, piece)
        y, state = level(piece, state)
        torch.testing.assert_close(y, expected)
        if objective == "task":  # the model supplies the task gradient; a stand-in here
            state = level.accumulate(state, {n: torch.randn_like(g)
                                             for n, g in state["grad"].items()})
            state = level.write(state)
    assert state["updates"] == 3
    frozen = make("mlp", period=None, expansion=2)
    torch.testing.assert_close(frozen.read(frozen.init_state(2), x), frozen(x)[0])
