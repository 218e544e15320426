"""The editing vocabulary of a model graph: each function is one undoable edit of a Document.

The canvas gestures and the inspector call these; each builds the new document with a pure
function of the old one and pushes it through ``Document.edit`` (one QUndoCommand per edit).
"""
from __future__ import annotations

from typing import Any, Iterable

from nlstudio import project as core
from nlstudio.catalog import KINDS, OPTIMIZERS, all_tasks
from nlstudio.graph import ID_PATTERN, INPUT, MAX_ID_LENGTH, OUTPUT, RESERVED, depths, reaches
from nlstudio.widgets.document import Document

COLUMN = 250.0        # horizontal spacing of the automatic layout
KEEP = object()       # "leave the period as it is"


# ---- pure helpers on the document dict --------------------------------------------------------
def _levels(data: dict) -> list[dict]:
    return data.setdefault("model", {}).setdefault("levels", [])


def _edges(data: dict) -> list[list[str]]:
    return data.setdefault("model", {}).setdefault("edges", [])


def _positions(data: dict) -> dict[str, list[float]]:
    return data.setdefault("view", {}).setdefault("positions", {})


def _find(data: dict, level_id: str) -> dict:
    for level in _levels(data):
        if level.get("id") == level_id:
            return level
    raise KeyError(level_id)


def unique_id(data: dict, kind: str) -> str:
    used = {lv.get("id") for lv in data.get("model", {}).get("levels", [])}
    n = 1
    while f"{kind}_{n}" in used:
        n += 1
    return f"{kind}_{n}"


def id_problem(data: dict, new_id: str, old_id: str | None = None) -> str | None:
    """Why ``new_id`` cannot name a level (None if it can)."""
    if not new_id:
        return "an id cannot be empty"
    if not ID_PATTERN.fullmatch(new_id):
        return "use letters, digits and _ (not starting with a digit)"
    if len(new_id) > MAX_ID_LENGTH:
        return f"an id has at most {MAX_ID_LENGTH} characters"
    if new_id in RESERVED:
        return f"'{new_id}' is reserved for the graph's {new_id} node"
    if new_id != old_id and any(lv.get("id") == new_id
                                for lv in data.get("model", {}).get("levels", [])):
        return f"another level is already called '{new_id}'"
    return None


def connect_problem(data: dict, src: str, dst: str) -> str | None:
    """Why the edge src → dst is not allowed (None if it is)."""
    edges = data.get("model", {}).get("edges", [])
    if src == dst:
        return "a level cannot feed itself"
    if src == OUTPUT or dst == INPUT:
        return "edges run from left (outputs) to right (inputs)"
    if any(list(e) == [src, dst] for e in edges):
        return f"{src} → {dst} is already connected"
    if reaches(edges, dst, src):
        return f"{src} → {dst} would create a cycle ({dst} already feeds {src})"
    return None


def auto_x(data: dict) -> dict[str, float]:
    """Horizontal positions for levels the file places nowhere: by depth from the input; a
    level that input does not reach through the graph takes a column of its own after them."""
    model = data.get("model", {})
    levels = [lv.get("id") for lv in model.get("levels", [])]
    depth = depths(levels, model.get("edges", []))
    next_free = max(depth.values(), default=0) + 1
    xs: dict[str, float] = {}
    for level_id in levels:
        if level_id not in depth:
            depth[level_id] = next_free
            next_free += 1
        xs[level_id] = (depth[level_id] - 1) * COLUMN
    return xs


def _place(data: dict, level_id: str, x: float) -> None:
    """Store a level's horizontal position. Its height is its period, so the stored y stays
    0.0 (the core's convention: "y is left to the canvas")."""
    _positions(data)[level_id] = [round(float(x), 1), 0.0]


def kind_title(kind: str) -> str:
    return KINDS[kind].title if kind in KINDS else kind


# ---- edits -------------------------------------------------------------------------------------
def add_level(document: Document, kind: str, x: float, period: Any = KEEP) -> str | None:
    """Add a level of ``kind`` at ``x`` (its period from the drop height, if given)."""
    new_id = unique_id(document.data, kind)

    def mutate(data: dict) -> None:
        level = core.default_level(kind, new_id)
        if period is not KEEP:
            level["period"] = period
        _levels(data).append(level)
        _place(data, new_id, x)

    if document.edit(f"Add {kind_title(kind)} level", mutate):
        return new_id
    return None


def delete(document: Document, level_ids: Iterable[str] = (),
           edges: Iterable[tuple[str, str]] = ()) -> bool:
    """Remove levels (with their edges and positions) and edges, as one command."""
    gone = {i for i in level_ids if i not in RESERVED}
    cut = {tuple(e) for e in edges}
    if not gone and not cut:
        return False

    def mutate(data: dict) -> None:
        data["model"]["levels"] = [lv for lv in _levels(data) if lv.get("id") not in gone]
        data["model"]["edges"] = [e for e in _edges(data)
                                  if not (set(e) & gone) and tuple(e) not in cut]
        positions = _positions(data)
        for level_id in gone:
            positions.pop(level_id, None)

    parts = []
    if gone:
        parts.append(f"{len(gone)} level" + ("s" if len(gone) > 1 else ""))
    edge_count = len(cut - {e for e in cut if set(e) & gone})
    if edge_count:
        parts.append(f"{edge_count} edge" + ("s" if edge_count > 1 else ""))
    return document.edit("Delete " + " and ".join(parts or ["edges"]), mutate)


def connect(document: Document, src: str, dst: str) -> str | None:
    """Add the edge src → dst; returns why it was refused, or None when it was added."""
    problem = connect_problem(document.data, src, dst)
    if problem:
        return problem

    def mutate(data: dict) -> None:
        _edges(data).append([src, dst])

    document.edit(f"Connect {src} → {dst}", mutate)
    return None


def disconnect(document: Document, src: str, dst: str) -> bool:
    return delete(document, edges=[(src, dst)])


def move_levels(document: Document, moves: dict[str, tuple[float, Any]],
                merge_key: Any = None) -> bool:
    """One command for a whole drag: ``{id: (x, period or KEEP)}`` (``merge_key``: repeated
    keyboard nudges of the same levels merge)."""
    def mutate(data: dict) -> None:
        for level_id, (x, period) in moves.items():
            level = _find(data, level_id)
            if period is not KEEP:
                level["period"] = period
            _place(data, level_id, x)

    n = len(moves)
    periods = [m[1] for m in moves.values() if m[1] is not KEEP]
    verb = "Move" if not periods else "Change period of"
    return document.edit(f"{verb} {n} level" + ("s" if n > 1 else "") if n != 1
                         else f"{verb} {next(iter(moves))}", mutate, merge_key=merge_key)


def set_level_field(document: Document, level_id: str, keys: tuple[str, ...], value: Any,
                    merge: bool = True) -> bool:
    """Set ``level[keys[0]][keys[1]]…``; consecutive edits of the same field merge."""
    def mutate(data: dict) -> None:
        target = _find(data, level_id)
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value

    label = ".".join(keys)
    return document.edit(f"Set {level_id}.{label}", mutate,
                         merge_key=("level", level_id, keys) if merge else None)


def set_optimizer(document: Document, level_id: str, name: str) -> bool:
    """Switch a level's inner optimizer, keeping the hyper-parameters both rules share."""
    def mutate(data: dict) -> None:
        level = _find(data, level_id)
        old = dict(level.get("optimizer") or {})
        new: dict[str, Any] = {"name": name}
        if name in OPTIMIZERS:
            info = KINDS.get(level.get("kind"))
            kind_defaults = info.optimizer_overrides(name) if info else {}
            for h in OPTIMIZERS[name].hyper:
                new[h.name] = old.get(h.name, kind_defaults.get(h.name, h.default))
        level["optimizer"] = new

    return document.edit(f"Set {level_id} optimizer to {name}", mutate)


def rename_level(document: Document, old: str, new: str) -> str | None:
    """Rename a level everywhere (edges, positions); returns the problem, or None."""
    if old == new:
        return None
    problem = id_problem(document.data, new, old)
    if problem:
        return problem

    def mutate(data: dict) -> None:
        _find(data, old)["id"] = new
        data["model"]["edges"] = [[new if n == old else n for n in e] for e in _edges(data)]
        positions = data.get("view", {}).get("positions", {})
        if old in positions:
            positions[new] = positions.pop(old)

    document.edit(f"Rename {old} to {new}", mutate, rename=(old, new))
    return None


def set_project_field(document: Document, keys: tuple[str, ...], value: Any,
                      merge: bool = True) -> bool:
    """Set a project-level value such as ("model", "d_model") or ("train", "optimizer", "lr")."""
    def mutate(data: dict) -> None:
        target = data
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value

    return document.edit("Set " + ".".join(keys), mutate,
                         merge_key=("project", keys) if merge else None)


def set_task(document: Document, name: str) -> bool:
    """Switch the task; its settings start at the task's defaults."""
    params: dict[str, Any] = {}
    try:
        cls = all_tasks().get(name)
        if cls is not None:
            params = cls.Params().model_dump(mode="json")
    except Exception:  # a task with required settings: the core names what is missing
        params = {}

    def mutate(data: dict) -> None:
        data["task"] = {"name": name, **params}

    return document.edit(f"Set task to {name}", mutate)
