"""The level graph (nlstudio.models.graph): one home for order, reachability, cycles, ids."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlstudio.models import graph
from nlstudio.models.graph import (INPUT, OUTPUT, checked_order, cycles, depths, is_level_id,
                                   levels_in_order, reaches, topological_order)


@st.composite
def random_graphs(draw):
    """Levels l0…l(n−1) and random edges among them and the endpoints (cycles allowed)."""
    n = draw(st.integers(1, 7))
    ids = [f"l{i}" for i in range(n)]
    nodes = [INPUT, *ids, OUTPUT]
    edges = draw(st.lists(st.tuples(st.sampled_from(nodes), st.sampled_from(nodes)),
                          max_size=14))
    return ids, [list(e) for e in edges]


def _level_edges(ids, edges):
    return [(a, b) for a, b in edges if a in ids and b in ids]


@settings(max_examples=150, deadline=None)
@given(random_graphs())
def test_order_respects_every_edge_and_misses_exactly_the_levels_on_or_after_a_cycle(g):
    ids, edges = g
    order = topological_order(ids, edges)
    assert len(order) == len(set(order))
    pos = {lid: i for i, lid in enumerate(order)}
    for a, b in _level_edges(ids, edges):
        if a in pos and b in pos:
            assert pos[a] < pos[b]
    found = cycles(ids, edges)
    assert (len(order) == len(ids)) == (not found)
    for cycle in found:  # every reported cycle is a closed walk along real edges
        assert cycle[0] == cycle[-1] and not set(cycle) & set(order)
        for a, b in zip(cycle, cycle[1:]):
            assert [a, b] in edges
    missing = set(ids) - set(order)
    on_cycles = {n for c in found for n in c}
    # a level is left out iff a cycle reaches it
    for lid in missing:
        assert any(reaches(edges, c, lid) or c == lid for c in on_cycles)


@settings(max_examples=150, deadline=None)
@given(random_graphs())
def test_depth_is_the_longest_path_from_input(g):
    ids, edges = g
    d = depths(ids, edges)
    order = topological_order(ids, edges)
    for lid, depth in d.items():
        assert depth >= 1 and lid in order and reaches(edges, INPUT, lid)
        preds = [a for a, b in edges if b == lid and (a == INPUT or a in d)]
        assert depth == 1 + max((0 if p == INPUT else d[p]) for p in preds)


def test_checked_order_and_its_messages():
    order, preds = checked_order(["b", "a"], [["input", "a"], ["a", "b"], ["input", "b"],
                                              ["b", "output"]])
    assert order == ["a", "b"] and preds["b"] == ["a", "input"] and preds["output"] == ["b"]
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        checked_order(["a", "b"], [["input", "a"], ["a", "b"], ["b", "a"], ["b", "output"]])
    with pytest.raises(ValueError, match="reserved"):
        checked_order(["input"], [])
    with pytest.raises(ValueError, match="duplicate edge"):
        checked_order(["a"], [["input", "a"], ["a", "output"], ["a", "output"]])
    with pytest.raises(ValueError, match="bypasses"):
        checked_order(["a"], [["input", "a"], ["a", "output"], ["input", "output"]])


def test_cycles_start_at_the_earliest_level_and_are_shortest():
    edges = [["a", "b"], ["b", "c"], ["c", "a"], ["c", "b"], ["d", "d"]]
    assert cycles(["a", "b", "c", "d"], edges) == [["a", "b", "c", "a"], ["d", "d"]]
    assert cycles(["c", "b", "a"], edges) == [["c", "b", "c"]]


def test_tolerant_helpers_take_half_edited_documents():
    edges = [["input", "a"], ["a", "ghost"], ["a"], ["a", "b", "c"], ["b", "a"], ["a", "b"]]
    assert topological_order(["a", "a", "b"], edges) == []  # a ⇄ b: both left out
    assert reaches(edges, "input", "ghost") and not reaches(edges, "b", "input")
    assert depths(["a", "z"], [["input", "a"], ["q", "z"]]) == {"a": 1}
    model = {"levels": [{"id": "x"}, {"id": "y"}, {"id": "z"}],
             "edges": [["y", "x"], ["z", "z"]]}
    assert [lv["id"] for lv in levels_in_order(model)] == ["y", "x", "z"]


@pytest.mark.parametrize("value, ok", [
    ("a", True), ("_x1", True), ("x" * 64, True), ("x" * 65, False), ("1st", False),
    ("a-b", False), ("a.b", False), ("", False), ("é", False), ("input", False),
    ("output", False), (3, False), (None, False)])
def test_level_id_rule(value, ok):
    assert is_level_id(value) is ok


def test_the_graph_sits_below_everything_and_the_core_has_no_import_cycle():
    source = graph.__file__
    text = open(source, encoding="utf-8").read()
    assert "import torch" not in text and "nlstudio." not in text.split('"""', 2)[2]
    # nlstudio.graph imports nlstudio.schema (its short_repr); the schema used to import
    # nlstudio.graph back: now it asks the model layer's graph
    code = ("import sys, nlstudio.schema; print('nlstudio.graph' in sys.modules); "
            "import nlstudio.graph; print(nlstudio.graph.topological_order is "
            "nlstudio.schema.topological_order)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
