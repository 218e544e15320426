"""The level graph's faults, as the editor shows them: one ``(json_path, message)`` per fault.

The graph itself (endpoints, the level-id rule, order, reachability, cycles) lives in
``nlstudio.models.graph``; this module re-exports what the GUI asks of it (widgets never import
``nlstudio.models`` directly) and adds only the wording and the JSON paths of the faults.
"""
from __future__ import annotations

from nlstudio.models.graph import (ID_PATTERN, INPUT, MAX_ID_LENGTH, OUTPUT, RESERVED, cycles,
                                   depths, is_level_id, levels_in_order, reachable, reaches,
                                   topological_order)
from nlstudio.schema import short_repr

__all__ = ["graph_faults", "INPUT", "OUTPUT", "RESERVED", "ID_PATTERN", "MAX_ID_LENGTH",
           "is_level_id", "levels_in_order", "reaches", "depths", "topological_order"]


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
    for cycle in cycles(list(first), list(edge_at)):
        k = edge_at[(cycle[-2], cycle[-1])]
        faults.append((f"model.edges[{k}]", "closes a cycle: " + " → ".join(cycle) +
                       " (levels must form a DAG from input to output)"))
    from_input, to_output = reachable(INPUT, succ), reachable(OUTPUT, pred)
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
