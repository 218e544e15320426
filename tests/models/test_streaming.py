"""Streams that don't care where they are cut (NestedModel._stream).

With ``targets=None`` and token inputs, a sequence fed in any number of calls of any lengths,
one token per call included, gives the logits and the final state of one call (≤ 1e-5
relative, float32), for every bundled preset and every level kind, with and without
gradients. These tests pin only that split property, never a level's numbers.
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlstudio.build import build_model as build_project_model
from nlstudio.build import build_task
from nlstudio.models import KINDS, build_model
from nlstudio.project import load_preset, preset_paths

N = 24  # tokens per test stream
RTOL = 1e-5
#: Per-call observations that the level contract defines for "the last call" (the write norms
#: of its tokens, attention's map of its queries): not state that a split must reproduce.
PER_CALL = {"write_norms", "attn_map"}


def flat(obj, path=""):
    if torch.is_tensor(obj):
        return {path: obj}
    out = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        if k not in PER_CALL:
            out.update(flat(v, f"{path}/{k}"))
    if not torch.is_tensor(obj) and not isinstance(obj, (dict, list, tuple)):
        out[path] = obj
    return out


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, what
    if not a.dtype.is_floating_point:
        assert torch.equal(a, b), what
        return
    err = (a.detach() - b.detach()).double().norm()
    assert err <= RTOL * b.detach().double().norm() + 1e-7, f"{what}: {err:.3g}"


def assert_same_stream(split, whole) -> None:
    (logits_a, state_a), (logits_b, state_b) = split, whole
    assert_close(logits_a, logits_b, "logits")
    fa, fb = flat(state_a), flat(state_b)
    assert fa.keys() == fb.keys()
    for key, value in fb.items():
        if torch.is_tensor(value):
            assert_close(fa[key], value, key)
        else:
            assert fa[key] == value, key


def run_split(model, x, cuts, **kw):
    parts, state = [], None
    for a, b in zip((0, *cuts), (*cuts, x.shape[1])):
        out, state = model(x[:, a:b], state, **kw)
        parts.append(out)
    return torch.cat(parts, 1), state


cut_points = st.sets(st.integers(1, N - 1), max_size=N - 1).map(sorted).map(tuple)


# -- every preset ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def preset_model(name: str):
    project = load_preset(name)
    task = build_task(project)
    torch.manual_seed(0)
    model = build_project_model(project, task)
    g = torch.Generator().manual_seed(1)
    if task.vocab_size is not None:
        x = torch.randint(0, task.vocab_size, (2, N), generator=g)
    else:
        x = torch.rand(2, N, task.input_dim, generator=g)
    return model, x


@functools.lru_cache(maxsize=None)
def whole(subject, name: str, grad: bool):
    """One call over the whole stream of ``subject(name)`` (a model and its stream)."""
    model, x = subject(name)
    with torch.set_grad_enabled(grad):
        return model(x)


PRESETS = sorted(preset_paths())


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_streams_one_token_per_call(name):
    model, x = preset_model(name)
    with torch.no_grad():
        split = run_split(model, x, tuple(range(1, N)))
    assert_same_stream(split, whole(preset_model, name, False))


# -- every level kind alone ---------------------------------------------------------------------
V, D = 11, 8


def alone(level: dict, **kw) -> dict:
    return {"d_model": D, "heads": 2, "levels": [{"id": "x", **level}],
            "edges": [["input", "x"], ["x", "output"]], **kw}


CMS = {"kind": "mlp", "period": 3, "expansion": 2}
SINGLE = {
    **{kind: alone({"kind": kind}) for kind in KINDS},
    "cms_task_momentum": alone({**CMS, "objective": "task",
                                "optimizer": {"name": "momentum", "eta": 0.3, "alpha": 0.5}}),
    "cms_task_dgd": alone({**CMS, "objective": "task", "optimizer": {"name": "dgd", "eta": 0.3}}),
    "cms_task_adam": alone({**CMS, "objective": "task", "optimizer": {"name": "adam"}}),
    "cms_l2": alone({**CMS, "objective": "l2", "optimizer": {"name": "sgd", "eta": 0.05}}),
    # a level that mixes positions reads a task level's output: whole segments are held back
    "cms_then_attention": {
        "d_model": D, "heads": 2,
        "levels": [{"id": "c", **CMS, "period": 4, "objective": "task",
                    "optimizer": {"name": "sgd", "eta": 0.5}},
                   {"id": "a", "kind": "attention", "period": None},
                   {"id": "d", **CMS, "period": 6, "objective": "task",
                    "optimizer": {"name": "sgd", "eta": 0.5}}],
        "edges": [["input", "c"], ["c", "a"], ["a", "d"], ["d", "output"]]},
}


@functools.lru_cache(maxsize=None)
def single_model(name: str):
    torch.manual_seed(0)
    model = build_model(SINGLE[name], vocab_size=V)
    x = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(2))
    return model, x


CASES = [pytest.param(preset_model, name, id=f"preset-{name}") for name in PRESETS] + \
    [pytest.param(single_model, name, id=f"alone-{name}") for name in sorted(SINGLE)]


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("subject, name", CASES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=cut_points)
def test_every_preset_and_every_level_kind_alone_streams_cut_anywhere(subject, name, grad,
                                                                       cuts):
    model, x = subject(name)
    with torch.set_grad_enabled(grad):
        split = run_split(model, x, cuts)
    assert_same_stream(split, whole(subject, name, grad))
    if grad:  # the split logits carry the outer graph like one call's
        assert split[0].requires_grad


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_every_level_kind_alone_streams_one_token_per_call(name):
    model, x = single_model(name)
    with torch.enable_grad():
        split = run_split(model, x, tuple(range(1, N)))
        assert_same_stream(split, whole(single_model, name, True))
        split[0].square().mean().backward()  # the outer graph of a split stream is usable


# -- the state ---------------------------------------------------------------------------------
def test_the_pending_position_is_in_the_state_and_completes_its_write_when_its_target_comes():
    model, x = single_model("cms_task_momentum")  # C = 3
    with torch.no_grad():
        _, s = model(x[:, :3])
        assert s["t"] == 3 and torch.equal(s["pending"], x[:, 2:3])
        assert s["levels"]["x"]["t"] == 2 and s["levels"]["x"]["updates"] == 0
        _, s = model(x[:, 3:4], s)  # token 3 is position 2's target: the write at 3 happens
        assert s["t"] == 4 and torch.equal(s["pending"], x[:, 3:4])
        assert s["levels"]["x"]["t"] == 3 and s["levels"]["x"]["updates"] == 1
        empty, same = model(x[:, :0], s)
        assert empty.shape == (2, 0, V) and same["t"] == 4
    mixed, _ = single_model("cms_then_attention")  # pending back to the last write position
    with torch.no_grad():
        _, s = mixed(x[:, :11])
    assert s["t"] == 11 and s["pending"].shape == (2, 3) and s["levels"]["c"]["t"] == 8


def test_explicit_targets_commit_a_pending_position_first():
    model, x = single_model("cms_task_dgd")
    y = F.pad(x[:, 1:], (0, 1), value=-100)
    with torch.no_grad():
        whole = model(x, targets=y)
        a, s = model(x[:, :7])
        b, s = model(x[:, 7:], s, targets=y[:, 7:])
    assert "pending" not in s and s["levels"]["x"]["t"] == N
    assert_same_stream((torch.cat((a, b), 1), s), whole)


def test_feature_inputs_and_models_without_task_levels_hold_nothing_back():
    model, x = preset_model("digits_stream")
    with torch.no_grad():
        _, s = model(x)
    assert "pending" not in s and s["levels"]["cms_mid"]["t"] == N
    model, x = single_model("delta")
    with torch.no_grad():
        _, s = model(x)
    assert "pending" not in s and s["levels"]["x"]["t"] == N
