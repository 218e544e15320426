"""build_model / NestedModel (docs/internals.md §3)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models import KINDS, LEVEL_CLASSES, LevelProbe, NestedModel, build_model
from nlstudio.models.graph import checked_order
from nlstudio.models.levels.cms import MLPLevel

V, D = 13, 8


def mlp(lid: str, period=None, objective: str = "task", **kw) -> dict:
    return {"id": lid, "kind": "mlp", "period": period, "objective": objective,
            "optimizer": {"name": "momentum", "eta": 0.2, "alpha": 0.5}, "expansion": 2, **kw}


def spec(levels: list[dict], edges: list[list[str]], **kw) -> dict:
    return {"d_model": D, "heads": 2, "levels": levels, "edges": edges, **kw}


def chain(*levels: dict) -> dict:
    ids = [lv["id"] for lv in levels]
    return spec(list(levels), [["input", ids[0]], *[[a, b] for a, b in zip(ids, ids[1:])],
                               [ids[-1], "output"]])


MIXED = chain(mlp("cms", 3), mlp("frozen"))
DIAMOND = spec([mlp("a", 2), mlp("b", 5, "l2"), mlp("c", None), mlp("d", 4, "dot")],
               [["input", "a"], ["input", "b"], ["a", "c"], ["b", "c"], ["a", "d"],
                ["c", "output"], ["d", "output"]])


def tokens(batch: int, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, V, (batch, steps + 1), generator=g)
    return t[:, :-1].clone(), t[:, 1:].clone()


# -- graph ------------------------------------------------------------------------------------
def test_topological_order_and_predecessors():
    order, preds = checked_order(["d", "c", "b", "a"], [
        ["input", "a"], ["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"], ["d", "output"]])
    assert order == ["a", "c", "b", "d"]
    assert preds["d"] == ["b", "c"] and preds["output"] == ["d"] and preds["a"] == ["input"]


@pytest.mark.parametrize("edges, message", [
    ([["input", "a"], ["a", "b"], ["b", "c"], ["c", "b"], ["c", "output"]],
     r"cycle: (b -> c -> b|c -> b -> c)"),
    ([["input", "a"], ["a", "output"], ["b", "c"], ["c", "output"]], "'b' is unreachable"),
    ([["input", "a"], ["a", "output"], ["a", "b"], ["b", "c"]], "'b' does not lead to"),
    ([["input", "a"], ["a", "zz"], ["a", "output"]], "unknown target 'zz'"),
    ([["input", "a"], ["a", "b"], ["b", "c"]], "no edge reaches 'output'"),
])
def test_bad_graphs_are_refused_with_the_culprit_named(edges, message):
    with pytest.raises(ValueError, match=message):
        build_model(spec([mlp("a"), mlp("b"), mlp("c")], edges), vocab_size=V)


def test_level_classes_cover_every_kind_and_ids_must_name_modules():
    assert set(LEVEL_CLASSES) == set(KINDS)
    assert LEVEL_CLASSES["mlp"] is MLPLevel and "mlp" in LEVEL_CLASSES
    assert "conv" not in LEVEL_CLASSES
    with pytest.raises(KeyError, match="unknown level kind"):
        LEVEL_CLASSES["conv"]
    with pytest.raises(ValueError, match="cannot name a module"):
        build_model(chain(mlp("a.b")), vocab_size=V)
    with pytest.raises(ValueError, match="unknown kind 'conv'"):
        build_model(chain({"id": "a", "kind": "conv"}), vocab_size=V)
    with pytest.raises(ValueError, match="exactly one of"):
        build_model(MIXED)


# -- one call = split calls ----------------------------------------------------------------------
@pytest.mark.parametrize("opt", [None, {"name": "dgd", "eta": 0.05}])
@pytest.mark.parametrize("cuts", [(7,), (2, 9), (1, 6, 8)])
def test_split_calls_give_the_same_logits_and_state(cuts, opt):
    torch.manual_seed(0)
    levels = [dict(lv, optimizer=opt or lv["optimizer"]) for lv in MIXED["levels"]]
    model = build_model({**MIXED, "levels": levels}, vocab_size=V)
    x, y = tokens(2, 11)
    full, state = model(x, targets=y)
    parts, s = [], None
    for a, b in zip((0, *cuts), (*cuts, 11)):
        out, s = model(x[:, a:b], s, targets=y[:, a:b])
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), full)
    assert s["t"] == state["t"] == 11
    for key in ("delta", "grad"):
        for n in ("w1", "w2"):
            torch.testing.assert_close(s["levels"]["cms"][key][n], state["levels"]["cms"][key][n])
    assert s["levels"]["cms"]["updates"] == 3


def test_default_targets_are_the_next_tokens_of_the_stream():
    """Without targets the last position waits for its target (the next call's first token):
    its write is not committed yet (tests/models/test_streaming.py has the split property)."""
    torch.manual_seed(0)
    model = build_model(MIXED, vocab_size=V)
    x, _ = tokens(2, 8)
    implicit, s1 = model(x)
    explicit, s2 = model(x, targets=F.pad(x[:, 1:], (0, 1), value=-100))
    torch.testing.assert_close(implicit, explicit)
    assert s1["t"] == s2["t"] == 8 and torch.equal(s1["pending"], x[:, 7:])
    assert s1["levels"]["cms"]["t"] == 7 and s2["levels"]["cms"]["t"] == 8
    torch.testing.assert_close(s1["levels"]["cms"]["grad"]["w1"], s2["levels"]["cms"]["grad"]["w1"])
    _, s3 = model(x, targets=F.pad(x[:, 1:], (0, 1), value=0))  # one more target changes it
    assert not torch.allclose(s1["levels"]["cms"]["grad"]["w1"], s3["levels"]["cms"]["grad"]["w1"])


def test_segments_follow_write_positions_and_no_task_level_means_one_pass():
    torch.manual_seed(0)
    model = build_model(chain(mlp("a", 4), mlp("b", 6), mlp("c", 5, "l2")), vocab_size=V)
    calls = {lid: [] for lid in "abc"}
    for lid, level in model.levels.items():
        level.register_forward_hook(lambda m, args, out, lid=lid: calls[lid].append(
            (args[1]["t"], args[0].shape[1])))
    x, y = tokens(1, 14)
    _, s = model(x[:, :2], targets=y[:, :2])
    for c in calls.values():
        c.clear()
    model(x[:, 2:], s, targets=y[:, 2:])  # stream positions 2..15: cuts at 4, 6, 8, 12
    # while training: once per segment on a graph cut at the task levels' input (the inner
    # pass: inner gradients, writes, states), then once over the whole call from the states
    # it started with (the outer pass, which carries the outer graph)
    assert calls["a"] == [(2, 2), (4, 2), (6, 2), (8, 4), (12, 2), (2, 12)]
    assert calls["c"] == calls["a"]
    for c in calls.values():
        c.clear()
    with torch.no_grad():  # evaluation: once per segment
        model(x[:, 2:], s, targets=y[:, 2:])
    assert calls["a"] == [(2, 2), (4, 2), (6, 2), (8, 4), (12, 2)]

    frozen_and_local = build_model(chain(mlp("p"), mlp("q", 3, "dot")), vocab_size=V)
    seen = []
    frozen_and_local.levels["q"].register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    frozen_and_local(x)
    assert len(seen) == 1


def test_feature_inputs():
    torch.manual_seed(0)
    model = build_model(MIXED, input_dim=5, n_outputs=3)
    x = torch.randn(2, 9, 5)
    y = torch.randint(0, 3, (2, 9))
    logits, state = model(x, targets=y)
    assert logits.shape == (2, 9, 3) and state["levels"]["cms"]["updates"] == 3
    a, s = model(x[:, :4], targets=y[:, :4])
    b, s = model(x[:, 4:], s, targets=y[:, 4:])
    torch.testing.assert_close(torch.cat((a, b), 1), logits)
    # No targets: still written at the multiples of C, with a zero task gradient.
    _, s = model(x)
    assert s["levels"]["cms"]["updates"] == 3
    assert torch.count_nonzero(s["levels"]["cms"]["delta"]["w1"]) == 0
    with pytest.raises(ValueError, match="n_outputs"):
        build_model(MIXED, input_dim=5)


# -- training reaches everything -----------------------------------------------------------------
def assert_all_params_get_gradients(model: NestedModel, inputs, targets):
    logits, _ = model(inputs, targets=targets)
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum()]
    assert not missing, missing


def test_gradients_reach_every_parameter_of_a_dag_of_mlp_levels():
    torch.manual_seed(0)
    model = build_model(DIAMOND, vocab_size=V)
    assert {"levels.b.wk", "levels.b.wv", "levels.d.wk"} <= dict(model.named_parameters()).keys()
    x, y = tokens(2, 12)
    assert_all_params_get_gradients(model, x, y)


def test_untied_head_and_gradients():
    torch.manual_seed(0)
    model = build_model({**MIXED, "tie_embeddings": False}, vocab_size=V)
    assert model.head is not None and model.head.weight.shape == (V, D)
    x, y = tokens(2, 7)
    assert_all_params_get_gradients(model, x, y)
    tied = build_model(MIXED, vocab_size=V)
    assert tied.head is None and "head.weight" not in tied.state_dict()


def test_transformer_preset_shape():
    pytest.importorskip("nlstudio.models.levels.attention")
    torch.manual_seed(0)
    model = build_model(chain({"id": "attn", "kind": "attention", "period": None},
                              mlp("ff1"), mlp("ff2")), vocab_size=V)
    x, y = tokens(2, 10)
    assert_all_params_get_gradients(model, x, y)
    a, s = model(x[:, :6], targets=y[:, :6])
    b, _ = model(x[:, 6:], s, targets=y[:, 6:])
    torch.testing.assert_close(torch.cat((a, b), 1), model(x, targets=y)[0])


def test_nsam_preset_shape():
    pytest.importorskip("nlstudio.models.levels.self_modifying")
    torch.manual_seed(0)
    model = build_model(chain({"id": "fast", "kind": "self_modifying", "period": 2},
                              mlp("mid", 3), mlp("slow2", 6), mlp("slow")), vocab_size=V)
    x, y = tokens(2, 12)
    assert_all_params_get_gradients(model, x, y)
    a, s = model(x[:, :5], targets=y[:, :5])
    b, s = model(x[:, 5:], s, targets=y[:, 5:])
    torch.testing.assert_close(torch.cat((a, b), 1), model(x, targets=y)[0])
    assert s["levels"]["mid"]["updates"] == 4 and s["levels"]["slow2"]["updates"] == 2


# -- silence, probes, no_grad ---------------------------------------------------------------------
def test_silence():
    torch.manual_seed(0)
    model = build_model(DIAMOND, vocab_size=V)
    x, y = tokens(2, 9)
    with torch.no_grad():
        full, _ = model(x, targets=y)
        one, _ = model(x, targets=y, silence=("c",))
        none, s = model(x, targets=y, silence=tuple(model.order))
        # Every level silenced, each node passes its input on: c = a + b = 2·emb, d = a = emb,
        # output = c + d = 3·emb.
        ref = F.linear(model.final_norm(3 * model.embed(x)), model.embed.weight)
    assert not torch.allclose(full, one)
    torch.testing.assert_close(none, ref)
    assert s["t"] == 9 and s["levels"]["a"]["updates"] == 4  # silenced levels still keep time
    with pytest.raises(ValueError, match="unknown level"):
        model(x, silence=("nope",))

    chain_model = build_model({**MIXED, "tie_embeddings": False}, vocab_size=V)
    with torch.no_grad():
        none, _ = chain_model(x, targets=y, silence=("cms", "frozen"))
        full, _ = chain_model(x, targets=y, silence=("frozen",))
        ref = chain_model.head(chain_model.final_norm(chain_model.embed(x)))
    torch.testing.assert_close(none, ref)  # embedding -> norm -> head
    assert not torch.allclose(full, ref)


def test_probe_and_state():
    torch.manual_seed(0)
    model = build_model(DIAMOND, vocab_size=V)
    x, y = tokens(3, 10)
    state = model.init_state(3)
    assert state["t"] == 0 and set(state["levels"]) == set(model.order)
    _, state = model(x, state, targets=y)
    probes = model.probe(state)
    assert set(probes) == {"a", "b", "c", "d"}
    assert all(isinstance(p, LevelProbe) for p in probes.values())
    assert [probes[k].updates for k in "abcd"] == [5, 2, 0, 2]
    assert probes["a"].memory.shape == (2 * D, D) and probes["a"].write.shape == (2 * D, D)
    assert probes["a"].write_norms.shape == (10,)
    assert torch.equal(probes["a"].write_norms > 0, torch.arange(1, 11) % 2 == 0)
    assert probes["c"].write is None and not probes["c"].write_norms.any()
    detached = NestedModel.detach_state(state)
    assert not detached["levels"]["b"]["delta"]["w1"].requires_grad
    assert state["levels"]["b"]["delta"]["w1"].requires_grad  # l2 writes carry the graph


def test_state_passed_in_is_not_mutated():
    torch.manual_seed(0)
    model = build_model(MIXED, vocab_size=V)
    x, y = tokens(1, 6)
    _, s = model(x[:, :2], targets=y[:, :2])
    snapshot = {k: (v.clone() if torch.is_tensor(v) else v)
                for k, v in s["levels"]["cms"].items() if k not in ("delta", "grad", "opt", "keys")}
    delta = s["levels"]["cms"]["delta"]["w1"].clone()
    model(x[:, 2:], s, targets=y[:, 2:])
    assert s["t"] == 2 and s["levels"]["cms"]["t"] == snapshot["t"] == 2
    assert torch.equal(s["levels"]["cms"]["delta"]["w1"], delta)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    model = build_model(DIAMOND, vocab_size=V).double()
    x, y = tokens(2, 9)
    cpu, s_cpu = model(x, targets=y)
    gpu, s_gpu = model.cuda()(x.cuda(), targets=y.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu)
    torch.testing.assert_close(s_gpu["levels"]["a"]["delta"]["w1"].cpu(),
                               s_cpu["levels"]["a"]["delta"]["w1"])
