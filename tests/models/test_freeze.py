"""The ``freeze`` ablation: a frozen level keeps reading and returning, and writes nothing."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from nlstudio.build import build_model as build_project_model
from nlstudio.build import build_task
from nlstudio.models import build_model
from nlstudio.models.inner_optim import OPTIMIZERS
from nlstudio.project import load_preset, preset_paths

V, D = 13, 8


def cms(lid: str, period, objective="task", optimizer=None) -> dict:
    return {"id": lid, "kind": "mlp", "period": period, "objective": objective, "expansion": 2,
            "optimizer": optimizer or {"name": "momentum", "eta": 0.2, "alpha": 0.5}}


def chain(*levels: dict) -> dict:
    ids = [lv["id"] for lv in levels]
    return {"d_model": D, "heads": 2, "levels": list(levels),
            "edges": [["input", ids[0]], *map(list, zip(ids, ids[1:])), [ids[-1], "output"]]}


def stream(steps: int, seed: int = 0):
    t = torch.randint(0, V, (2, steps + 1), generator=torch.Generator().manual_seed(seed))
    return t[:, :-1], t[:, 1:]


MEMORY = ("delta", "opt", "updates", "last_write")  # what a CMS level has learned


def same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("objective", ["task", "l2", "dot"])
@pytest.mark.parametrize("opt", ["momentum", "adam", "dgd", "m3", "delta_momentum"])
def test_a_frozen_cms_level_keeps_its_memory_and_the_others_learn(objective, opt):
    torch.manual_seed(0)
    spec = chain(cms("learns", 3), cms("frozen", 2, objective, {"name": opt}), cms("ffn", None))
    model = build_model(spec, vocab_size=V)
    x, y = stream(11)
    with torch.no_grad():
        _, before = model(x[:, :4], targets=y[:, :4])  # some writes already made
        for targets in (y[:, 4:], None):
            _, after = model(x[:, 4:], before, targets=targets, freeze=("frozen",))
            frozen, start = after["levels"]["frozen"], before["levels"]["frozen"]
            assert all(same(frozen[k], start[k]) for k in MEMORY), (objective, opt)
            assert frozen["t"] >= 10 and frozen["chunks"] == frozen["t"] // 2
            assert after["levels"]["learns"]["updates"] > before["levels"]["learns"]["updates"]


def test_writes_stay_on_their_multiples_after_a_freeze():
    torch.manual_seed(0)
    model = build_model(chain(cms("c", 3)), vocab_size=V)
    x, y = stream(9)
    _, s = model(x[:, :5], targets=y[:, :5], freeze=("c",))  # the chunk ending at 3 is skipped
    assert s["levels"]["c"]["updates"] == 0 and s["levels"]["c"]["chunks"] == 1
    assert not s["levels"]["c"]["grad"]["w1"].any()  # frozen tokens summed no gradient
    _, s = model(x[:, 5:], s, targets=y[:, 5:])
    assert s["levels"]["c"]["updates"] == 2 and s["levels"]["c"]["chunks"] == 3
    # the write at 6 took only position 5's gradient: the same as a stream whose targets
    # before 5 are ignored
    masked = y.clone()
    masked[:, :5] = -100
    _, ref = model(x, targets=masked)
    torch.testing.assert_close(s["levels"]["c"]["delta"]["w1"],
                               ref["levels"]["c"]["delta"]["w1"])


@pytest.mark.parametrize("grad", [False, True])
def test_every_parametric_level_frozen_is_a_model_whose_writes_are_disabled(grad):
    """Frozen from a fresh stream, a CMS level reads its initial weights W0 at every token: the
    same logits as a copy whose CMS levels are frozen in context (period null)."""
    levels = [cms("a", 2), {"id": "attn", "kind": "attention", "period": None},
              cms("b", 3, "l2", {"name": "sgd", "eta": 0.5}),
              cms("c", 4, "dot", {"name": "adam"}), cms("ffn", None)]
    torch.manual_seed(0)
    model = build_model(chain(*levels), vocab_size=V)
    no_writes = build_model(chain(*[{**lv, "period": None} if lv["kind"] == "mlp" else lv
                                    for lv in levels]), vocab_size=V)
    missing, unexpected = no_writes.load_state_dict(model.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"levels.b.wk", "levels.b.wv", "levels.c.wk",
                                               "levels.c.wv"}
    x, y = stream(14)
    parametric = ("a", "b", "c", "ffn")
    with torch.set_grad_enabled(grad):
        frozen, _ = model(x, targets=y, freeze=parametric)
        implicit, _ = model(x[:, :5], freeze=parametric)
        reference, _ = no_writes(x)
        learning, _ = model(x, targets=y)
    torch.testing.assert_close(frozen, reference)
    torch.testing.assert_close(implicit, reference[:, :5])
    assert not torch.allclose(learning, reference)  # the writes do change what it returns
    if grad:
        F.cross_entropy(frozen.flatten(0, 1), y.flatten()).backward()
        assert model.levels["a"].w1.grad.abs().sum() > 0  # the reads still train W0


def test_freeze_refuses_unknown_and_non_parametric_levels():
    model = build_model(chain({"id": "attn", "kind": "attention", "period": None},
                              cms("ffn", None)), vocab_size=V)
    x, _ = stream(4)
    with pytest.raises(ValueError, match=r"cannot freeze level\(s\) \['attn'\]"):
        model(x, freeze=("attn",))
    with pytest.raises(ValueError, match=r"cannot freeze unknown level\(s\) \['nope'\]"):
        model(x, freeze=("nope",))
    with pytest.raises(ValueError, match=r"cannot silence unknown"):
        model(x, silence=("nope",))
    torch.testing.assert_close(model(x, freeze=("ffn",))[0], model(x)[0])  # frequency 0


def _freezable(model) -> list[str]:
    """Parametric levels whose kind implements ``frozen`` and ``read`` (other engineers' kinds
    take them as their implementations land)."""
    out = []
    for lid, level in model.levels.items():
        if not level.info.parametric:
            continue
        if "frozen" not in inspect.signature(level.forward).parameters:
            pytest.skip(f"{level.info.name} does not take frozen= yet")
        try:
            level.read(level.init_state(1), torch.zeros(1, 1, level.d_model))
        except NotImplementedError:
            pytest.skip(f"{level.info.name} does not implement read() yet")
        out.append(lid)
    return out


@pytest.mark.parametrize("name", sorted(preset_paths()))
def test_every_preset_frozen_returns_what_its_memories_held(name):
    """Freezing every parametric level of a preset: what each memory returns (read()) after a
    stream is what it returned before it, with and without targets."""
    project = load_preset(name)
    task = build_task(project)
    torch.manual_seed(0)
    model = build_project_model(project, task)
    frozen = _freezable(model)
    g = torch.Generator().manual_seed(3)
    shape = (2, 20) if task.vocab_size else (2, 20, task.input_dim)
    x = torch.randint(0, task.vocab_size, shape, generator=g) if task.vocab_size \
        else torch.rand(shape, generator=g)
    probe = torch.randn(2, 5, model.d_model, generator=g)
    with torch.no_grad():
        _, start = model(x[:, :7])
        _, end = model(x[:, 7:], start, freeze=frozen)
    for lid in frozen:
        level = model.levels[lid]
        torch.testing.assert_close(level.read(end["levels"][lid], probe),
                                   level.read(start["levels"][lid], probe), rtol=0, atol=0)
