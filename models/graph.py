"""The level graph: the one home of its rules, below everything that draws, checks or runs it.

A model's levels are nodes between two fixed endpoints, ``input`` and ``output``; edges are
``[source, target]`` pairs of node names. This module holds what every layer asks about that
graph: the endpoints, the rule for a level id, topological order, reachability and cycle finding.
``nlstudio.models.assemble`` runs the levels in :func:`checked_order`; the core
(``nlstudio.graph``) turns :func:`cycles` and :func:`reachable` into fault messages for the
editor; the canvas asks :func:`reaches` before it adds an edge and :func:`depths` for a layout.

Pure functions on ids and edges, iterative throughout (no recursion), linear in the size of the
graph. The tolerant functions (:func:`topological_order`, :func:`cycles`, :func:`depths`,
:func:`reaches`) accept any half-edited document: edges to unknown nodes are ignored.
"""
from __future__ import annotations

import heapq
import re
from typing import Any, Iterable, Mapping

INPUT, OUTPUT = "input", "output"
#: The endpoints: names no level may take.
RESERVED = (INPUT, OUTPUT)
MAX_ID_LENGTH = 64
#: A level id: an identifier (it names a module of the model and a column of the run's CSVs).
ID_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_level_id(value: Any) -> bool:
    """Whether ``value`` may name a level: an identifier of at most :data:`MAX_ID_LENGTH`
    characters that is not an endpoint."""
    return (isinstance(value, str) and value not in RESERVED and len(value) <= MAX_ID_LENGTH
            and ID_PATTERN.fullmatch(value) is not None)


def _pairs(edges: Iterable[Iterable[Any]]) -> list[tuple[Any, Any]]:
    """The well-formed ``(source, target)`` pairs of ``edges`` (others are left out)."""
    out = []
    for edge in edges:
        edge = list(edge)
        if len(edge) == 2:
            out.append((edge[0], edge[1]))
    return out


def successors(nodes: Iterable[Any], edges: Iterable[Iterable[Any]]) -> dict[Any, list[Any]]:
    """``{node: [targets]}`` over ``nodes``, keeping only edges between two of them (in edge
    order, duplicates once)."""
    succ: dict[Any, list[Any]] = {n: [] for n in nodes}
    for src, dst in _pairs(edges):
        if src in succ and dst in succ and dst not in succ[src]:
            succ[src].append(dst)
    return succ


def reachable(start: Any, nbrs: Mapping[Any, Iterable[Any]]) -> set[Any]:
    """Every node reached from ``start`` through ``nbrs`` (``start`` included)."""
    seen, todo = {start}, [start]
    while todo:
        for n in nbrs.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def reaches(edges: Iterable[Iterable[Any]], start: Any, goal: Any) -> bool:
    """Whether a path of ``edges`` leads from ``start`` to ``goal``."""
    succ: dict[Any, list[Any]] = {}
    for src, dst in _pairs(edges):
        succ.setdefault(src, []).append(dst)
    return goal in reachable(start, succ)


def topological_order(level_ids: Iterable[Any], edges: Iterable[Iterable[Any]]) -> list[Any]:
    """Kahn's algorithm over the levels (endpoints and unknown nodes left out; among the levels
    ready at a step, the earliest in ``level_ids`` first). Levels on a cycle, and those after
    one, are left out: :func:`cycles` names them."""
    ids = list(dict.fromkeys(level_ids))  # a duplicated id is one node
    rank = {lid: i for i, lid in enumerate(ids)}
    succ = successors(ids, edges)
    indegree = dict.fromkeys(ids, 0)
    for targets in succ.values():
        for dst in targets:
            indegree[dst] += 1
    ready = [rank[lid] for lid in ids if indegree[lid] == 0]  # a heap: ties in id order
    order: list[Any] = []
    while ready:
        node = ids[heapq.heappop(ready)]
        order.append(node)
        for nxt in succ[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, rank[nxt])
    return order


def _strongly_connected(nodes: list[Any], succ: Mapping[Any, list[Any]]) -> list[list[Any]]:
    """Strongly connected components (iterative Tarjan)."""
    index: dict[Any, int] = {}
    low: dict[Any, int] = {}
    stack: list[Any] = []
    on_stack: set[Any] = set()
    out: list[list[Any]] = []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(succ[root]))]
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(succ[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
    return out


def _cycle_through(start: Any, members: set[Any], succ: Mapping[Any, list[Any]]) -> list[Any]:
    """The shortest cycle from ``start`` back to itself inside its strongly connected
    component (breadth-first), as ``[start, …, start]``."""
    parent: dict[Any, Any] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in succ[v]:
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise ValueError(f"{start!r} is on no cycle")


def cycles(level_ids: Iterable[Any], edges: Iterable[Iterable[Any]]) -> list[list[Any]]:
    """One cycle per strongly connected knot of levels, as ``[a, b, …, a]``: the shortest one
    through the knot's earliest level in ``level_ids``. Empty for a DAG; the last two entries of
    each cycle are its closing edge."""
    ids = list(dict.fromkeys(level_ids))
    rank = {lid: i for i, lid in enumerate(ids)}
    succ = successors(ids, edges)
    found = []
    for comp in _strongly_connected(ids, succ):
        if len(comp) > 1 or comp[0] in succ[comp[0]]:
            found.append(_cycle_through(min(comp, key=rank.__getitem__), set(comp), succ))
    found.sort(key=lambda cycle: rank[cycle[0]])
    return found


def depths(level_ids: Iterable[Any], edges: Iterable[Iterable[Any]]) -> dict[Any, int]:
    """Each level's longest-path distance from ``input`` (1 for a level fed by input only), for
    the levels ``input`` reaches through acyclic paths; others are left out."""
    ids = list(dict.fromkeys(level_ids))
    nodes = set(ids)
    preds: dict[Any, list[Any]] = {lid: [] for lid in ids}
    for src, dst in _pairs(edges):
        if dst in nodes and (src in nodes or src == INPUT):
            preds[dst].append(src)
    depth: dict[Any, int] = {INPUT: 0}
    for lid in topological_order(ids, edges):
        reached = [depth[p] for p in preds[lid] if p in depth]
        if reached:
            depth[lid] = 1 + max(reached)
    del depth[INPUT]
    return depth


def levels_in_order(model: Mapping[str, Any]) -> list[dict]:
    """The level dicts of a model (its ``levels`` and ``edges``) in the order the model runs
    them (topological; a level on or after a cycle follows in file order)."""
    levels = {str(lv["id"]): lv for lv in model["levels"]}
    order = topological_order(list(levels), model.get("edges", []))
    ordered = set(order)
    return [levels[lid] for lid in order] + [lv for lid, lv in levels.items()
                                             if lid not in ordered]


def checked_order(level_ids: list[str], edges: Iterable[Iterable[str]]
                  ) -> tuple[list[str], dict[str, list[str]]]:
    """The order a model runs its levels in, and each node's predecessors (``output``
    included, in edge order), for a graph that must be whole.

    Raises ``ValueError`` on a duplicate or reserved id, a dangling or malformed edge, a
    duplicate edge, an edge from input straight to output, a cycle (named), a level that
    ``input`` does not reach or that does not reach ``output``.
    """
    if len(set(level_ids)) != len(level_ids):
        raise ValueError(f"duplicate level ids in {level_ids}")
    if INPUT in level_ids or OUTPUT in level_ids:
        raise ValueError(f"'{INPUT}' and '{OUTPUT}' are reserved and cannot be level ids")
    known = set(level_ids)
    preds: dict[str, list[str]] = {n: [] for n in [*level_ids, OUTPUT]}
    succs: dict[str, list[str]] = {n: [] for n in [INPUT, *level_ids]}
    for edge in edges:
        edge = list(edge)
        if len(edge) != 2:
            raise ValueError(f"edge {edge!r} must be a [source, target] pair")
        src, dst = edge
        if src not in known and src != INPUT:
            raise ValueError(f"edge {edge!r}: unknown source {src!r}")
        if dst not in known and dst != OUTPUT:
            raise ValueError(f"edge {edge!r}: unknown target {dst!r}")
        if src == INPUT and dst == OUTPUT:
            raise ValueError(f"edge {edge!r} bypasses every level")
        if src in preds[dst]:
            raise ValueError(f"duplicate edge {edge!r}")
        preds[dst].append(src)
        succs[src].append(dst)
    if not preds[OUTPUT]:
        raise ValueError(f"no edge reaches '{OUTPUT}'")
    order = topological_order(level_ids, edges)
    if len(order) != len(level_ids):
        raise ValueError(f"the edges form a cycle: {' -> '.join(cycles(level_ids, edges)[0])}")
    from_input, to_output = reachable(INPUT, succs), reachable(OUTPUT, preds)
    for n in level_ids:
        if n not in from_input:
            raise ValueError(f"level {n!r} is unreachable from '{INPUT}'")
        if n not in to_output:
            raise ValueError(f"level {n!r} does not lead to '{OUTPUT}'")
    return order, preds
