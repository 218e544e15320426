"""Project files (``*.nlproj``): validation, load/save, presets (docs/internals.md §4).

A project file is versioned JSON (``nlstudio.schema`` holds its pydantic models). Every fault
is reported as ``Fault(path, message)`` with ``path`` the JSON path (``model.levels[1].period``)
and ``message`` in plain English; ``ProjectError`` carries one of them with the file's name.

Validation runs in stages, each on the raw document:

1. header: an object, ``format``, ``version`` (a newer version is refused before anything else
   is read: never half-loaded);
2. a bounded scan of every value (JSON types only, finite numbers, depth/size limits, no
   absolute paths), so no later stage sees a pathological input;
3. the schema: sections, then each level on its own (kind → the model of that kind and
   optimizer) and the task (``get_task(name).Params``, then the task built against
   ``train.seq_len`` for the settings that depend on it);
4. the graph (ids, edges, cycles, reachability) and ``heads`` dividing ``d_model``, as soon as
   the ids and edges themselves are well formed.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import ValidationError

import nlstudio
from nlstudio import schema
from nlstudio.models.inner_optim import OPTIMIZERS
from nlstudio.models.registry import KINDS
from nlstudio.schema import (FORMAT, VERSION, LevelSpec, ModelSection, Project, RawProject,
                             TaskSection, level_model, short_repr)

__all__ = ["ProjectError", "Fault", "Project", "load_project", "save_project", "parse_project",
           "check_document", "project_to_dict", "default_level", "new_project", "preset_paths",
           "load_preset", "MIGRATIONS", "DEFAULT_TASK"]

DEFAULT_TASK = "kv_stream"
MAX_FILE_BYTES = 16 << 20
MAX_DEPTH = 32
MAX_VALUES = 200_000
MAX_STRING = 1 << 20
MAX_FAULTS = 100
MAX_INT = 2**63

#: ``MIGRATIONS[v](doc) -> doc`` upgrades a version-``v`` document to version ``v + 1``.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


@dataclass(frozen=True)
class Fault:
    path: str  # JSON path, "" for the document itself
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ProjectError(ValueError):
    """A project that cannot be read or is invalid: ``str(err)`` is ``"file: path: message"``."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.message = source, path, message
        super().__init__(f"{source}: {Fault(path, message)}")

    @classmethod
    def from_fault(cls, source: str, fault: Fault) -> "ProjectError":
        return cls(source, fault.path, fault.message)


# ---- JSON paths and plain-English messages ------------------------------------------------
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def json_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def fmt_number(value: Any) -> str:
    """A bound as people write it: 0 not 0.0, 1e-05, 0.999."""
    if isinstance(value, float):
        text = f"{value:g}"
        return text if float(text) == value else repr(value)
    return str(value)


def _got(err: dict) -> str:
    value = err.get("input")
    if isinstance(value, (int, float, str, bool)) or value is None:
        return f" (got {json.dumps(value) if not isinstance(value, str) else short_repr(value)})"
    return ""


def _length(n: Any, bound: str) -> str:
    if n == 2:
        return "must be a pair of two values"
    if n == 1 and bound == "at least":
        return "must not be empty"
    return f"must have {bound} {n} items"


_MESSAGES: dict[str, Callable[[dict, dict], str]] = {
    "missing": lambda e, c: "is required",
    "int_type": lambda e, c: "must be an integer" + _got(e),
    "int_from_float": lambda e, c: "must be an integer" + _got(e),
    "int_parsing": lambda e, c: "must be an integer" + _got(e),
    "float_type": lambda e, c: "must be a number" + _got(e),
    "float_parsing": lambda e, c: "must be a number" + _got(e),
    "finite_number": lambda e, c: "must be a finite number",
    "bool_type": lambda e, c: "must be true or false" + _got(e),
    "bool_parsing": lambda e, c: "must be true or false" + _got(e),
    "string_type": lambda e, c: "must be a string" + _got(e),
    "string_too_short": lambda e, c: ("must not be empty" if c.get("min_length") == 1
                                      else f"must have at least {c.get('min_length')} characters"),
    "string_too_long": lambda e, c: f"is too long (at most {c.get('max_length')} characters)",
    "too_short": lambda e, c: _length(c.get("min_length"), "at least"),
    "too_long": lambda e, c: _length(c.get("max_length"), "at most"),
    "list_type": lambda e, c: "must be a list",
    "dict_type": lambda e, c: "must be an object",
    "model_type": lambda e, c: "must be an object",
    "model_attributes_type": lambda e, c: "must be an object",
    "none_required": lambda e, c: "must be null",
    "literal_error": lambda e, c: f"must be {c.get('expected')}" + _got(e),
    "greater_than": lambda e, c: f"must be greater than {fmt_number(c.get('gt'))}" + _got(e),
    "less_than": lambda e, c: f"must be less than {fmt_number(c.get('lt'))}" + _got(e),
    "less_than_equal": lambda e, c: f"must be at most {fmt_number(c.get('le'))}" + _got(e),
    "greater_than_equal": lambda e, c: (
        "must be a positive integer" if c.get("ge") == 1 and isinstance(e.get("input"), int)
        else f"must be at least {fmt_number(c.get('ge'))}") + _got(e),
}


def translate(err: dict, prefix: tuple = (),
              extra: Callable[[tuple], str] | None = None) -> Fault:
    """One pydantic error as a Fault: the JSON path and a message without pydantic's words."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        message = extra(loc) if extra else f"unknown field '{loc[-1] if loc else '?'}'"
    elif kind in _MESSAGES:
        message = _MESSAGES[kind](err, ctx)
    else:
        message = str(err.get("msg", "is invalid"))
        for noise in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(noise)
        message = message.replace("Input should be", "must be")
    return Fault(json_path(prefix + loc), message)


def _faults_of(exc: ValidationError, prefix: tuple = (),
               extra: Callable[[tuple], str] | None = None) -> list[Fault]:
    return [translate(e, prefix, extra) for e in exc.errors(include_url=False)]


_SECTIONS = {(): Project, ("model",): ModelSection, ("train",): schema.TrainSection,
             ("train", "optimizer"): schema.OuterOptimizer}


def _section_extra(loc: tuple) -> str:
    section = _SECTIONS.get(tuple(loc[:-1]))
    known = f" (expected: {', '.join(section.model_fields)})" if section else ""
    return f"unknown field '{loc[-1]}'{known}"


# ---- stage 2: a bounded scan of the raw values --------------------------------------------
# Absolute POSIX, home, Windows drive and UNC paths, and file: URLs.
_ABSOLUTE = re.compile(r"(?:/[^\s/]|~[^\s]*/|[A-Za-z]:[\\/]|\\\\|file:)")
_PROSE = {("name",), ("description",)}


def _scan(doc: dict) -> tuple[list[Fault], list[Fault]]:
    """(fatal faults, absolute-path faults). Iterative: no recursion, bounded work."""
    fatal: list[Fault] = []
    paths: list[Fault] = []
    stack: list[tuple[Any, tuple, int]] = [(doc, (), 0)]
    seen = 0
    while stack and len(fatal) < MAX_FAULTS:
        value, loc, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            fatal.append(Fault("", f"the document is too large (more than {MAX_VALUES} values)"))
            break
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                fatal.append(Fault(json_path(loc), f"is nested too deeply (more than "
                                                   f"{MAX_DEPTH} levels)"))
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            children = []
            for key, item in items:
                if isinstance(value, dict) and not isinstance(key, str):
                    fatal.append(Fault(json_path(loc), f"has a key that is not a string "
                                                       f"({short_repr(key)})"))
                    continue
                children.append((item, loc + (key,), depth + 1))
            stack.extend(reversed(children))
        elif isinstance(value, str):
            if len(value) > MAX_STRING:
                fatal.append(Fault(json_path(loc), f"is too long ({len(value)} characters; at "
                                                   f"most {MAX_STRING})"))
            elif loc not in _PROSE and _ABSOLUTE.match(value):
                paths.append(Fault(json_path(loc), f"absolute paths are not allowed in a project "
                                                   f"file ({short_repr(value)}); give a path "
                                                   f"relative to the project's folder"))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not -MAX_INT < value < MAX_INT:
                fatal.append(Fault(json_path(loc), "is too large a number"))
        elif isinstance(value, float):
            if not math.isfinite(value):
                fatal.append(Fault(json_path(loc), "must be a finite number (NaN and infinity "
                                                   "are not JSON)"))
        else:
            fatal.append(Fault(json_path(loc), f"is not a JSON value "
                                               f"({type(value).__name__})"))
    return fatal, paths


# ---- stage 1: header ------------------------------------------------------------------------
def _header(doc: Any) -> tuple[list[Fault], Any]:
    if not isinstance(doc, dict):
        found = "a list" if isinstance(doc, list) else short_repr(doc)
        return [Fault("", f"a project must be a JSON object, found {found}")], doc
    fmt = doc.get("format")
    if fmt != FORMAT:
        if "format" not in doc:
            return [Fault("format", f"is required: this is not an NL Studio project "
                                    f"(expected \"format\": \"{FORMAT}\")")], doc
        return [Fault("format", f"not an NL Studio project: format is {short_repr(fmt)}, "
                                f"expected '{FORMAT}'")], doc
    if "version" not in doc:
        return [Fault("version", f"is required (this NL Studio reads version {VERSION})")], doc
    version = doc["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        return [Fault("version", f"must be an integer, found {short_repr(version)} (this NL "
                                 f"Studio reads version {VERSION})")], doc
    if version > VERSION:
        return [Fault("version", f"was written by a newer NL Studio (version {version}); this "
                                 f"one reads version {VERSION}")], doc
    while version < VERSION:
        if version not in MIGRATIONS:
            return [Fault("version", f"unknown version {version}; this NL Studio reads version "
                                     f"{VERSION}")], doc
        doc = MIGRATIONS[version](json.loads(json.dumps(doc)))
        version += 1
        doc["version"] = version
    return [], doc


# ---- stage 3: levels and task -------------------------------------------------------------
def _check_level(raw: Any, i: int) -> tuple[list[Fault], LevelSpec | None]:
    at = ("model", "levels", i)
    if not isinstance(raw, dict):
        return [Fault(json_path(at), "must be an object (a level)")], None
    kind = raw.get("kind")
    if kind not in KINDS:
        if "kind" not in raw:
            message = f"is required (one of {', '.join(KINDS)})"
        else:
            message = f"unknown level kind {short_repr(kind)}; expected one of {', '.join(KINDS)}"
        return [Fault(json_path(at + ("kind",)), message)], None
    info = KINDS[kind]
    faults: list[Fault] = []
    opt_name = info.default_optimizer
    raw_opt = raw.get("optimizer")
    if info.parametric and isinstance(raw_opt, dict):
        name = raw_opt.get("name")
        allowed = [n for n in info.optimizers if n in OPTIMIZERS]
        where = json_path(at + ("optimizer", "name"))
        if "name" not in raw_opt:
            faults.append(Fault(where, f"is required (one of {', '.join(allowed)})"))
        elif name not in OPTIMIZERS:
            faults.append(Fault(where, f"unknown optimizer {short_repr(name)}; expected one of "
                                       f"{', '.join(OPTIMIZERS)}"))
        elif name not in info.optimizers:
            faults.append(Fault(where, f"optimizer '{name}' is not allowed for kind '{kind}' "
                                       f"(allowed: {', '.join(allowed)})"))
        else:
            opt_name = name
    if info.parametric and opt_name not in OPTIMIZERS:
        return faults + [Fault(json_path(at + ("optimizer",)),
                               f"the optimizer '{opt_name}' is not available")], None
    model = level_model(kind, opt_name)
    options = [o.name for o in info.options]

    def extra(loc: tuple) -> str:
        if loc[:1] == ("optimizer",):
            names = [h.name for h in OPTIMIZERS[opt_name].hyper]
            return (f"unknown hyper-parameter '{loc[-1]}' for optimizer '{opt_name}' "
                    f"(expected: {', '.join(names) or 'none'})")
        return (f"unknown option '{loc[-1]}' for kind '{kind}' (its options: "
                f"{', '.join(options) or 'none'})")

    candidate = raw
    if faults:  # optimizer name already reported: check the rest against the default optimizer
        candidate = {k: v for k, v in raw.items() if k != "optimizer"}
    try:
        level = model.model_validate(candidate)
        return faults, None if faults else level
    except ValidationError as exc:
        return faults + _faults_of(exc, at, extra), None


@functools.lru_cache(maxsize=32)
def _task_fit(name: str, params_json: str, seq_len: int, seed: int, steps: int
              ) -> tuple[str, str] | tuple[int | None, int | None, int]:
    """Build the task once against ``train``: ``(field, message)`` when its settings do not
    fit, else ``(vocab_size, input_dim, n_outputs)``. Cached: the GUI validates every edit."""
    from nlstudio.tasks import get_task
    from nlstudio.tasks._util import TaskConfigError

    try:
        task = construct_task(get_task(name), json.loads(params_json), seq_len, seed, steps, None)
    except TaskConfigError as exc:
        return (exc.field, exc.message)
    except (ValueError, TypeError, OSError, OverflowError, MemoryError) as exc:
        return ("", str(exc))
    return (task.vocab_size, task.input_dim, task.n_outputs)


def construct_task(cls, params: Any, seq_len: int, seed: int, steps: int | None,
                   base_dir: Path | None):
    """``cls(params, seq_len=, seed=)`` plus the keywords its constructor names."""
    import inspect

    kwargs: dict[str, Any] = {"seq_len": seq_len, "seed": seed}
    accepted = inspect.signature(cls.__init__).parameters
    if "total_steps" in accepted and steps is not None:
        kwargs["total_steps"] = steps
    if "base_dir" in accepted and base_dir is not None:
        kwargs["base_dir"] = base_dir
    return cls(params, **kwargs)


def _check_task(raw: Any) -> tuple[list[Fault], TaskSection | None]:
    from nlstudio.tasks import all_tasks

    if not isinstance(raw, dict):
        return [], None  # reported by the section schema
    tasks = all_tasks()
    name = raw.get("name")
    if name not in tasks:
        message = ("is required" if "name" not in raw
                   else f"unknown task {short_repr(name)}") + f"; expected one of " \
                                                              f"{', '.join(sorted(tasks))}"
        return [Fault("task.name", message)], None
    params_cls = tasks[name].Params
    fields = list(params_cls.model_fields)

    def extra(loc: tuple) -> str:
        return (f"unknown setting '{loc[-1]}' for task '{name}' (its settings: "
                f"{', '.join(fields) or 'none'})")

    params = {k: v for k, v in raw.items() if k != "name"}
    try:
        return [], TaskSection(name=name, params=params_cls.model_validate_json(
            json.dumps(params), strict=True))
    except ValidationError as exc:
        return _faults_of(exc, ("task",), extra), None


# ---- stage 4: graph -------------------------------------------------------------------------
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


def _cycle_in(comp: list[str], succ: dict[str, list[str]], order: dict[str, int]) -> list[str]:
    """One cycle through the first (in file order) node of a strongly connected component."""
    members = set(comp)
    start = min(comp, key=order.__getitem__)
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
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start, start]  # unreachable for a real component


def _check_graph(ids: list[str], edges: list[list[str]]) -> list[Fault]:
    faults: list[Fault] = []
    first: dict[str, int] = {}
    for i, lid in enumerate(ids):
        if lid in first:
            faults.append(Fault(f"model.levels[{i}].id", f"duplicate id '{lid}' (also "
                                                         f"model.levels[{first[lid]}])"))
        else:
            first[lid] = i
    succ: dict[str, list[str]] = {n: [] for n in ["input", *first, "output"]}
    pred: dict[str, list[str]] = {n: [] for n in succ}
    edge_at: dict[tuple[str, str], int] = {}
    for k, (src, dst) in enumerate(edges):
        ok = True
        if src == "output":
            faults.append(Fault(f"model.edges[{k}][0]", "an edge cannot leave 'output'"))
            ok = False
        elif src not in succ:
            faults.append(Fault(f"model.edges[{k}][0]", f"unknown node {short_repr(src)}: not "
                                                        f"a level id, 'input' or 'output'"))
            ok = False
        if dst == "input":
            faults.append(Fault(f"model.edges[{k}][1]", "an edge cannot enter 'input'"))
            ok = False
        elif dst not in succ:
            faults.append(Fault(f"model.edges[{k}][1]", f"unknown node {short_repr(dst)}: not "
                                                        f"a level id, 'input' or 'output'"))
            ok = False
        if not ok:
            continue
        if (src, dst) == ("input", "output"):
            faults.append(Fault(f"model.edges[{k}]", "an edge from input straight to output "
                                                     "bypasses every level"))
        elif (src, dst) in edge_at:
            faults.append(Fault(f"model.edges[{k}]", f"duplicate edge {src} → {dst} (same as "
                                                     f"model.edges[{edge_at[(src, dst)]}])"))
        else:
            edge_at[(src, dst)] = k
            succ[src].append(dst)
            pred[dst].append(src)
    order = {lid: i for i, lid in enumerate(first)}
    for comp in _sccs(list(first), {n: [w for w in succ[n] if w in order] for n in order}):
        if len(comp) > 1 or comp[0] in succ[comp[0]]:
            cycle = _cycle_in(comp, succ, order)
            k = edge_at[(cycle[-2], cycle[-1])]
            faults.append(Fault(f"model.edges[{k}]", "closes a cycle: " + " → ".join(cycle) +
                                " (levels must form a DAG from input to output)"))
    from_input, to_output = _reach("input", succ), _reach("output", pred)
    if "output" not in from_input:
        faults.append(Fault("model.edges", "no path from input to output"))
    for lid, i in first.items():
        if lid not in from_input:
            faults.append(Fault(f"model.levels[{i}]", f"level '{lid}' is not reachable from "
                                                      f"input (add an edge into it)"))
        if lid not in to_output:
            faults.append(Fault(f"model.levels[{i}]", f"level '{lid}' does not reach output "
                                                      f"(add an edge out of it)"))
    return faults


def _reach(start: str, nbrs: dict[str, list[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for n in nbrs[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


# ---- the validator --------------------------------------------------------------------------
def _validate(doc: Any) -> tuple[list[Fault], Project | None]:
    faults, doc = _header(doc)
    if faults:
        return faults, None
    fatal, faults = _scan(doc)
    if fatal:
        return fatal, None
    raw: RawProject | None = None
    try:
        raw = RawProject.model_validate(doc)
    except ValidationError as exc:
        faults += _faults_of(exc, (), _section_extra)
    bad = {f.path for f in faults}
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    raw_levels = model.get("levels")
    levels: list[LevelSpec | None] = []
    if isinstance(raw_levels, list) and len(raw_levels) <= schema.MAX_LEVELS:
        for i, raw_level in enumerate(raw_levels):
            level_faults, level = _check_level(raw_level, i)
            faults += level_faults
            levels.append(level)
    task_faults, task = _check_task(doc.get("task"))
    faults += task_faults
    train = _section(schema.TrainSection, doc.get("train", {}))
    sizes = _section(schema.ModelSizes, {k: model[k] for k in schema.ModelSizes.model_fields
                                         if k in model})
    if task is not None and train is not None and sizes is not None:
        faults += _fit_task(task, train, sizes.tie_embeddings)
    if sizes is not None and sizes.d_model % sizes.heads:
        faults.append(Fault("model.heads", f"must divide d_model ({sizes.d_model} is not "
                                           f"divisible by {sizes.heads})"))
    ids = [lv.get("id") if isinstance(lv, dict) else None for lv in raw_levels or []] \
        if isinstance(raw_levels, list) else []
    ids_ok = ids and all(isinstance(x, str) and schema._ID_RE.fullmatch(x)
                         and x not in schema.RESERVED_IDS for x in ids)
    edges_ok = isinstance(model.get("edges"), list) and not any(
        p == "model.edges" or p.startswith("model.edges[") for p in bad)
    if ids_ok and edges_ok and len(ids) <= schema.MAX_LEVELS:
        faults += _check_graph(ids, model["edges"])
    flagged = {f.path for f in faults if f.message.startswith("absolute paths")}
    faults = [f for f in faults if f.path not in flagged or f.message.startswith("absolute")]
    if faults or raw is None or task is None:
        return faults[:MAX_FAULTS], None
    project = Project(
        app_version=raw.app_version, name=raw.name, description=raw.description,
        model=ModelSection(d_model=raw.model.d_model, heads=raw.model.heads, levels=levels,
                           edges=raw.model.edges, tie_embeddings=raw.model.tie_embeddings),
        task=task, train=raw.train, view=raw.view)
    return [], project


_FILE_SUFFIXES = ("_file", "_path", "_dir")


def _section(cls: type, value: Any) -> Any:
    """``cls`` validated from ``value``, or None (its faults are reported by RawProject)."""
    if not isinstance(value, dict):
        return None
    try:
        return cls.model_validate(value)
    except ValidationError:
        return None


def _fit_task(task: TaskSection, train: schema.TrainSection, tie: bool) -> list[Fault]:
    """Faults of the task against ``train`` (e.g. a segment longer than ``seq_len``) and of a
    tied head whose task predicts other classes than its input tokens."""
    params = task.params.model_dump(mode="json")
    if any(v is not None for k, v in params.items() if k.endswith(_FILE_SUFFIXES)):
        return []  # data files resolve beside the project file: checked when the task is built
    fit = _task_fit(task.name, json.dumps(params, sort_keys=True), train.seq_len, train.seed,
                    train.steps)
    if isinstance(fit[0], str):
        field, message = fit
        return [Fault(f"task.{field}" if field else "task", str(message))]
    vocab, _, n_out = fit
    if vocab is not None and tie and n_out != vocab:
        return [Fault("model.tie_embeddings", f"must be false for task '{task.name}': its head "
                                              f"predicts {n_out} classes, not the {vocab} input "
                                              f"tokens")]
    return []


def check_document(doc: Any) -> list[Fault]:
    """Every fault of a project document (``[]`` when valid); the GUI's live validation."""
    try:
        return _validate(doc)[0]
    except (RecursionError, OverflowError, MemoryError) as exc:
        return [Fault("", f"the document cannot be validated ({type(exc).__name__})")]


def parse_project(doc: Any, source: str = "<project>") -> Project:
    """A validated :class:`Project`; raises :class:`ProjectError` with the first fault."""
    try:
        faults, project = _validate(doc)
    except (RecursionError, OverflowError, MemoryError) as exc:
        raise ProjectError(source, "", f"the document cannot be validated "
                                       f"({type(exc).__name__})") from None
    if faults:
        raise ProjectError.from_fault(source, faults[0])
    assert project is not None
    return project


# ---- files ------------------------------------------------------------------------------------
def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {short_repr(key)} in an object")
        out[key] = value
    return out


def loads(text: str, source: str = "<project>") -> Any:
    """JSON text → Python, refusing NaN/Infinity and duplicate keys; errors as ProjectError."""
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ProjectError(source, "", f"not valid JSON: {exc.msg} (line {exc.lineno}, column "
                                       f"{exc.colno})") from None
    except RecursionError:
        raise ProjectError(source, "", "not a valid project: nested too deeply") from None
    except MemoryError:
        raise ProjectError(source, "", "not a valid project: too large to read") from None
    except ValueError as exc:
        message = str(exc)
        if "integer string conversion" in message:
            message = "a number has too many digits"
        raise ProjectError(source, "", f"not valid JSON: {message}") from None


def load_project(path: str | os.PathLike) -> Project:
    path = Path(path)
    source = path.name or str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ProjectError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ProjectError(source, "", f"the file is too large for a project (over "
                                       f"{MAX_FILE_BYTES >> 20} MiB)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProjectError(source, "", f"not UTF-8 text (byte {exc.start})") from None
    project = parse_project(loads(text, source), source)
    project._path = path.absolute()
    return project


def project_to_dict(project: Project | dict) -> dict:
    """The project as the JSON-ready dict of the file format, every default written out.
    ``parse_project(project_to_dict(p))`` gives ``p`` back; key order is fixed."""
    if not isinstance(project, Project):
        project = parse_project(project)
    return {
        "format": FORMAT,
        "version": VERSION,
        "app_version": nlstudio.__version__,
        "name": project.name,
        "description": project.description,
        "model": project.model_spec(),
        "task": project.task.model_dump(),
        "train": project.train.model_dump(mode="json"),
        "view": project.view.model_dump(mode="json"),
    }


def _pretty(value: Any, indent: int = 0) -> str:
    """JSON with two-space indents whose short lists of scalars (edges, positions) stay on
    one line, so a project reads and diffs well by hand."""
    if isinstance(value, list) and not any(isinstance(v, dict) for v in value):
        flat = json.dumps(value, ensure_ascii=False)
        if len(flat) <= 72:
            return flat
    if isinstance(value, (dict, list)) and value:
        pad = "  " * (indent + 1)
        if isinstance(value, dict):
            items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, indent + 1)}"
                     for k, v in value.items()]
        else:
            items = [pad + _pretty(v, indent + 1) for v in value]
        brackets = "{}" if isinstance(value, dict) else "[]"
        return brackets[0] + "\n" + ",\n".join(items) + "\n" + "  " * indent + brackets[1]
    return json.dumps(value, ensure_ascii=False)


def dumps(project: Project | dict) -> str:
    """The file text of a project (UTF-8 JSON, canonical key order and layout)."""
    return _pretty(project_to_dict(project)) + "\n"


def save_project(project: Project | dict, path: str | os.PathLike) -> None:
    """Validate, then write atomically (temporary file in the same folder, fsync, rename):
    a failure leaves the previous file as it was and raises OSError saying why."""
    from nlstudio.fileio import atomic_write_text

    path = Path(path)
    if not isinstance(project, Project):
        project = parse_project(project, path.name)
    text = dumps(project)
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot save {path}: {exc.strerror or exc}") from exc


# ---- building blocks for the GUI and the presets --------------------------------------------
def default_level(kind: str, level_id: str) -> dict:
    """A new level of ``kind`` with the kind's defaults and its default optimizer."""
    faults, level = _check_level({"id": level_id, "kind": kind}, 0)
    if faults or level is None:
        fault = faults[0]
        raise ProjectError("<level>", fault.path.removeprefix("model.levels[0]."), fault.message)
    return level.spec()


def layout_positions(project: Project, dx: float = 180.0) -> dict[str, list[float]]:
    """Canvas positions: x by topological rank (longest path from input), y left to the
    canvas (it places levels by period)."""
    rank: dict[str, int] = {}
    preds: dict[str, list[str]] = {lv.id: [] for lv in project.levels}
    for src, dst in project.model.edges:
        if dst in preds and src in preds:
            preds[dst].append(src)
    for lid in project.topological_order():
        rank[lid] = 1 + max((rank[p] for p in preds[lid]), default=0)
    return {lid: [dx * r, 0.0] for lid, r in rank.items()}


def new_project() -> dict:
    """A minimal valid document for File → New: input → one frozen MLP → output."""
    doc = {"format": FORMAT, "version": VERSION, "name": "Untitled",
           "model": {"levels": [default_level("mlp", "mlp")],
                     "edges": [["input", "mlp"], ["mlp", "output"]]},
           "task": {"name": DEFAULT_TASK}, "view": {"positions": {"mlp": [180.0, 0.0]}}}
    return project_to_dict(parse_project(doc))


def preset_paths() -> dict[str, Path]:
    """``{name: path}`` of the bundled presets (``resources/presets/*.nlproj``)."""
    from nlstudio import resources

    folder = resources.path("presets")
    return {p.stem: p for p in sorted(folder.glob("*.nlproj"))}


def load_preset(name: str) -> Project:
    stem = name.removesuffix(".nlproj")
    paths = preset_paths()
    if stem not in paths:
        raise ProjectError(f"{stem}.nlproj", "", f"no bundled preset named '{stem}'; presets: "
                                                 f"{', '.join(paths) or 'none'}")
    return load_project(paths[stem])
