"""The level graph of a project: checks and order. Pure functions on ids and ``[src, dst]``
edges; ``input`` and ``output`` are the fixed endpoints. Iterative throughout (no recursion),
linear in the size of the graph."""
from __future__ import annotations

import heapq

from nlstudio.schema import short_repr

INPUT, OUTPUT = "input", "output"


def topological_order(level_ids: list[str], edges: list[list[str]]) -> list[str]:
    """Kahn's algorithm over the levels (endpoints left out; ties in the order of
    ``level_ids``). Levels on a cycle are left out: check the graph first."""
    rank = {lid: i for i, lid in enumerate(level_ids)}
    succs: dict[str, list[str]] = {lid: [] for lid in level_ids}
    indegree = dict.fromkeys(level_ids, 0)
    for src, dst in edges:
        if src in rank and dst in rank:
            succs[src].append(dst)
            indegree[dst] += 1
    ready = [rank[lid] for lid in level_ids if indegree[lid] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = level_ids[heapq.heappop(ready)]
        order.append(node)
        for nxt in succs[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, rank[nxt])
    return order


def levels_in_order(model: dict) -> list[dict]:
    """The level dicts of a model document in the order the model runs them (topological;
    a level on a cycle follows in file order)."""
    levels = {str(lv["id"]): lv for lv in model["levels"]}
    order = topological_order(list(levels), model.get("edges", []))
    ordered = set(order)
    return [levels[lid] for lid in order] + [lv for lid, lv in levels.items()
                                             if lid not in ordered]


def depth_ranks(level_ids: list[str], edges: list[list[str]]) -> dict[str, int]:
    """Each level's longest-path distance from ``input`` (1 for a level fed by input only):
    the column the canvas draws it in."""
    preds: dict[str, list[str]] = {lid: [] for lid in level_ids}
    for src, dst in edges:
        if src in preds and dst in preds:
            preds[dst].append(src)
    rank: dict[str, int] = {}
    for lid in topological_order(level_ids, edges):
        rank[lid] = 1 + max((rank[p] for p in preds[lid]), default=0)
    return rank


def _sccs(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
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


def _cycle_through(start: str, members: set[str], succ: dict[str, list[str]]) -> list[str]:
    """The shortest cycle from ``start`` back to itself inside its strongly connected
    component (breadth-first), as ``[start, …, start]``."""
    parent: dict[str, str] = {}
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


def _reach(start: str, nbrs: dict[str, list[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for n in nbrs[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def graph_faults(ids: list[str], edges: list[list[str]]) -> list[tuple[str, str]]:
    """``(json_path, message)`` for every fault of the graph: duplicate ids, edges to unknown
    nodes, into ``input`` or out of ``output``, duplicate edges, cycles (each named), levels
    that ``input`` does not reach or that do not reach ``output``, no path at all."""
    faults: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for i, lid in enumerate(ids):
        if lid in first:
            faults.append((f"model.levels[{i}].id",
                           f"duplicate id '{lid}' (also model.levels[{first[lid]}])"))
        else:
            first[lid] = i
    succ: dict[str, list[str]] = {n: [] for n in [INPUT, *first, OUTPUT]}
    pred: dict[str, list[str]] = {n: [] for n in succ}
    edge_at: dict[tuple[str, str], int] = {}
    for k, (src, dst) in enumerate(edges):
        ok = True
        if src == OUTPUT:
            faults.append((f"model.edges[{k}][0]", "an edge cannot leave 'output'"))
            ok = False
        elif src not in succ:
            faults.append((f"model.edges[{k}][0]", f"unknown node {short_repr(src)}: not a "
                                                   f"level id, 'input' or 'output'"))
            ok = False
        if dst == INPUT:
            faults.append((f"model.edges[{k}][1]", "an edge cannot enter 'input'"))
            ok = False
        elif dst not in succ:
            faults.append((f"model.edges[{k}][1]", f"unknown node {short_repr(dst)}: not a "
                                                   f"level id, 'input' or 'output'"))
            ok = False
        if not ok:
            continue
        if (src, dst) == (INPUT, OUTPUT):
            faults.append((f"model.edges[{k}]", "an edge from input straight to output "
                                                "bypasses every level"))
        elif (src, dst) in edge_at:
            faults.append((f"model.edges[{k}]", f"duplicate edge {src} → {dst} (same as "
                                                f"model.edges[{edge_at[(src, dst)]}])"))
        else:
            edge_at[(src, dst)] = k
            succ[src].append(dst)
            pred[dst].append(src)
    levels_only = {n: [w for w in succ[n] if w in first] for n in first}
    for comp in _sccs(list(first), levels_only):
        if len(comp) > 1 or comp[0] in levels_only[comp[0]]:
            cycle = _cycle_through(min(comp, key=first.__getitem__), set(comp), levels_only)
            k = edge_at[(cycle[-2], cycle[-1])]
            faults.append((f"model.edges[{k}]", "closes a cycle: " + " → ".join(cycle) +
                           " (levels must form a DAG from input to output)"))
    from_input, to_output = _reach(INPUT, succ), _reach(OUTPUT, pred)
    if OUTPUT not in from_input:
        faults.append(("model.edges", "no path from input to output"))
    for lid, i in first.items():
        if lid not in from_input:
            faults.append((f"model.levels[{i}]", f"level '{lid}' is not reachable from input "
                                                 f"(add an edge into it)"))
        if lid not in to_output:
            faults.append((f"model.levels[{i}]", f"level '{lid}' does not reach output (add an "
                                                 f"edge out of it)"))
    return faults
