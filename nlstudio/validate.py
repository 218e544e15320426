"""Validation of a project document, in stages, each on the raw document:

1. header: an object, ``format``, ``version`` (a newer version is refused before anything else
   is read: never half-loaded; older ones are upgraded by :data:`MIGRATIONS`);
2. a bounded scan of every value (JSON types only, finite numbers, depth/size limits, no
   absolute paths), so no later stage sees a pathological input;
3. the schema: the sections (``nlstudio.schema``), then each level on its own (its kind and
   optimizer pick its model, so one bad level never hides another) and the task
   (``get_task(name).Params``, then the task built against ``train`` for the settings that
   depend on it, e.g. a segment longer than ``seq_len``);
4. the graph (``nlstudio.graph``) as soon as the ids and edges themselves are well formed, and
   ``heads`` dividing ``d_model``.
"""
from __future__ import annotations

import functools
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from nlstudio import schema
from nlstudio.faults import Fault, ProjectError, faults_of, json_path
from nlstudio.graph import graph_faults
from nlstudio.models.inner_optim import OPTIMIZERS
from nlstudio.models.registry import KINDS
from nlstudio.schema import (FORMAT, VERSION, LevelSpec, ModelSection, Project, RawProject,
                             TaskSection, level_model, short_repr)
from nlstudio.tasks import all_tasks, get_task
from nlstudio.tasks._util import TaskConfigError

MAX_DEPTH = 32
MAX_VALUES = 200_000
MAX_STRING = 1 << 20
MAX_FAULTS = 100
MAX_INT = 2**63

#: ``MIGRATIONS[v](doc) -> doc`` upgrades a version-``v`` document to version ``v + 1``
#: (defined beside the format versions, in ``nlstudio.schema``).
MIGRATIONS: dict[int, Callable[[dict], dict]] = schema.MIGRATIONS


_SECTIONS = {(): Project, ("model",): ModelSection, ("train",): schema.TrainSection,
             ("train", "optimizer"): schema.OuterOptimizer}


def _section_extra(loc: tuple) -> str:
    section = _SECTIONS.get(tuple(loc[:-1]))
    known = f" (expected: {', '.join(section.model_fields)})" if section else ""
    return f"unknown field '{loc[-1]}'{known}"


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
    if version < VERSION and any(v not in MIGRATIONS for v in range(version, VERSION)):
        return [Fault("version", f"unknown version {version}; this NL Studio reads version "
                                 f"{VERSION}")], doc
    return [], doc


def _migrate(doc: dict) -> tuple[list[Fault], dict]:
    """Upgrade an older (already scanned, so plain JSON) document one version at a time."""
    version = doc["version"]
    while version < VERSION:
        try:
            doc = MIGRATIONS[version](json.loads(json.dumps(doc)))
        except Exception as exc:  # noqa: BLE001 - a migration that fails is a fault of the file
            return [Fault("version", f"cannot upgrade from version {version}: {exc}")], doc
        version += 1
        doc["version"] = version
    return [], doc


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
            if len(value) > MAX_VALUES - seen:
                fatal.append(Fault("", f"the document is too large (more than {MAX_VALUES} "
                                       f"values)"))
                break
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


# ---- stage 3: levels and task -------------------------------------------------------------
def check_level(raw: Any, i: int) -> tuple[list[Fault], LevelSpec | None]:
    at = ("model", "levels", i)
    if not isinstance(raw, dict):
        return [Fault(json_path(at), "must be an object (a level)")], None
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
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
        elif not isinstance(name, str) or name not in OPTIMIZERS:
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
        return faults + faults_of(exc, at, extra), None


@functools.lru_cache(maxsize=32)
def _task_fit(name: str, params_json: str, seq_len: int, seed: int, steps: int
              ) -> tuple[str, str] | tuple[int | None, int | None, int]:
    """Build the task once against ``train``: ``(field, message)`` when its settings do not
    fit, else ``(vocab_size, input_dim, n_outputs)``. Cached: the GUI validates every edit."""
    try:
        task = construct_task(get_task(name), json.loads(params_json), seq_len, seed, steps, None)
    except TaskConfigError as exc:
        return (exc.field, exc.message)
    except Exception as exc:  # noqa: BLE001 - the GUI's live validation must never crash
        return ("", f"the task cannot be built with these settings: {exc}")
    return (task.vocab_size, task.input_dim, task.n_outputs)


def construct_task(cls, params: Any, seq_len: int, seed: int, steps: int | None,
                   base_dir: Path | None):
    """``cls(params, seq_len=, seed=)`` plus the keywords its constructor names."""
    kwargs: dict[str, Any] = {"seq_len": seq_len, "seed": seed}
    accepted = inspect.signature(cls.__init__).parameters
    if "total_steps" in accepted and steps is not None:
        kwargs["total_steps"] = steps
    if "base_dir" in accepted and base_dir is not None:
        kwargs["base_dir"] = base_dir
    return cls(params, **kwargs)


def _check_task(raw: Any) -> tuple[list[Fault], TaskSection | None]:
    if not isinstance(raw, dict):
        return [], None  # reported by the section schema
    tasks = all_tasks()
    name = raw.get("name")
    if not isinstance(name, str) or name not in tasks:
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
        return faults_of(exc, ("task",), extra), None
    except Exception as exc:  # noqa: BLE001 - a task's own validator failing is still a fault
        return [Fault("task", f"the settings of task '{name}' cannot be checked: {exc}")], None


# ---- the validator --------------------------------------------------------------------------
_FILE_SUFFIXES = ("_file", "_path", "_dir")


def _validate(doc: Any) -> tuple[list[Fault], Project | None]:
    faults, doc = _header(doc)
    if faults:
        return faults, None
    fatal, path_faults = _scan(doc)
    if fatal:
        return fatal, None
    if doc["version"] != VERSION:
        upgrade_faults, doc = _migrate(doc)
        if upgrade_faults:
            return upgrade_faults, None
    raw: RawProject | None = None
    try:
        raw = RawProject.model_validate(doc)
        faults = []
    except ValidationError as exc:
        faults = faults_of(exc, (), _section_extra)
    model = doc["model"] if isinstance(doc.get("model"), dict) else {}
    level_faults, levels = _check_levels(model.get("levels"))
    task_faults, task = _check_task(doc.get("task"))
    faults += level_faults + task_faults + _cross_checks(doc, model, task)
    faults += _check_graph(model, faults)
    # a path refused as absolute is reported once, not again by the section it is in
    flagged = {f.path for f in path_faults}
    faults = path_faults + [f for f in faults if f.path not in flagged]
    if faults or raw is None or task is None:
        return faults[:MAX_FAULTS], None
    project = Project(
        app_version=raw.app_version, name=raw.name, description=raw.description,
        model=ModelSection(d_model=raw.model.d_model, heads=raw.model.heads, levels=levels,
                           edges=raw.model.edges, tie_embeddings=raw.model.tie_embeddings),
        task=task, train=raw.train, view=raw.view)
    return [], project


def _check_levels(raw_levels: Any) -> tuple[list[Fault], list[LevelSpec | None]]:
    """Each level on its own (the list itself is checked by RawProject)."""
    faults: list[Fault] = []
    levels: list[LevelSpec | None] = []
    if isinstance(raw_levels, list) and len(raw_levels) <= schema.MAX_LEVELS:
        for i, raw_level in enumerate(raw_levels):
            level_faults, level = check_level(raw_level, i)
            faults += level_faults
            levels.append(level)
    return faults, levels


def _section(cls: type, value: Any) -> Any:
    """``cls`` validated from ``value``, or None (its faults are reported by RawProject)."""
    if not isinstance(value, dict):
        return None
    try:
        return cls.model_validate(value)
    except ValidationError:
        return None


def _cross_checks(doc: dict, model: dict, task: TaskSection | None) -> list[Fault]:
    """Faults between sections, checked whenever the fields involved are valid."""
    faults: list[Fault] = []
    train = _section(schema.TrainSection, doc.get("train", {}))
    sizes = _section(schema.ModelSizes, {k: model[k] for k in schema.ModelSizes.model_fields
                                         if k in model})
    if task is not None and train is not None and sizes is not None:
        faults += _fit_task(task, train, sizes.tie_embeddings)
    if sizes is not None and sizes.d_model % sizes.heads:
        faults.append(Fault("model.heads", f"must divide d_model ({sizes.d_model} is not "
                                           f"divisible by {sizes.heads})"))
    return faults


def _check_graph(model: dict, faults: list[Fault]) -> list[Fault]:
    """Graph faults, as soon as every level id and every edge is well formed (a level with
    other faults still has its place in the graph)."""
    raw_levels, edges = model.get("levels"), model.get("edges")
    if not isinstance(raw_levels, list) or not isinstance(edges, list) or \
            not 0 < len(raw_levels) <= schema.MAX_LEVELS:
        return []
    ids = [lv.get("id") if isinstance(lv, dict) else None for lv in raw_levels]
    if not all(schema.is_level_id(x) for x in ids):
        return []
    if any(f.path == "model.edges" or f.path.startswith("model.edges[") for f in faults):
        return []
    return [Fault(path, message) for path, message in graph_faults(ids, edges)]


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
