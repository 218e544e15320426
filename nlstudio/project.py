"""Project files (``*.nlproj``): the public API (docs/internals.md §4).

A project file is versioned UTF-8 JSON: ``nlstudio.schema`` holds its pydantic models,
``nlstudio.validate`` checks a document (every fault as ``Fault(path, message)``), this module
reads and writes files and the bundled presets. ``ProjectError`` is the one exception type of an
invalid or unreadable project: ``str(err) == "hope.nlproj: model.levels[1].period: must be a
positive integer or null"``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nlstudio
from nlstudio import fileio, resources
from nlstudio.faults import Fault, ProjectError, json_path
from nlstudio.schema import FORMAT, VERSION, Project, short_repr
from nlstudio.untrusted import FileRefused, read_bytes
from nlstudio.validate import (MIGRATIONS, check_document, check_level, construct_task,
                               parse_project)

__all__ = ["ProjectError", "Fault", "Project", "load_project", "save_project", "parse_project",
           "check_document", "project_to_dict", "default_level", "new_project", "preset_paths",
           "load_preset", "loads", "dumps", "construct_task", "MIGRATIONS",
           "DEFAULT_TASK"]

DEFAULT_TASK = "kv_stream"
MAX_FILE_BYTES = 16 << 20


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
        value = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
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
    where = _lone_surrogate(value)
    if where is not None:
        raise ProjectError(source, where, "holds a lone surrogate escape (such as \\ud800), "
                                          "which is not text and cannot be saved as UTF-8")
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The JSON path of the first string (key or value) that UTF-8 cannot encode, if any."""
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return json_path(loc) or "(the document)"
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not _encodable(key):
                    return json_path(loc + (key,))
                stack.append((sub, loc + (key,)))
        elif isinstance(item, list):
            stack.extend((sub, loc + (i,)) for i, sub in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def load_project(path: str | os.PathLike) -> Project:
    """Read and validate a project file; ``project.path`` remembers where it came from.
    Only a regular file is opened (a FIFO or a device is refused before opening)."""
    path = Path(path)
    source = path.name or str(path)
    try:
        data = read_bytes(path, MAX_FILE_BYTES)
    except FileRefused as exc:
        if "too large" in exc.reason:
            raise ProjectError(source, "", f"the file is too large for a project (over "
                                           f"{MAX_FILE_BYTES >> 20} MiB)") from None
        raise ProjectError(source, "", f"cannot read the file: it {exc.reason}") from None
    except OSError as exc:
        raise ProjectError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProjectError(source, "", f"not UTF-8 text (byte {exc.start})") from None
    project = parse_project(loads(text, source), source)
    project._path = path.absolute()
    return project


def project_to_dict(project: Project | dict) -> dict:
    """The project as the JSON-ready dict of the file format, every default written out
    (except ``train.precision`` at its default ``fp32``: nlstudio/schema.py says why).
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
    path = Path(path)
    if not isinstance(project, Project):
        project = parse_project(project, path.name)
    text = dumps(project)
    where = _lone_surrogate(json.loads(text))
    if where is not None:  # refused before a byte is written
        raise ProjectError(path.name, where, "holds a lone surrogate (such as \\ud800), which "
                                             "is not text and cannot be saved as UTF-8")
    try:
        fileio.atomic_write_text(path, text)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot save {path}: {exc.strerror or exc}") from exc


# ---- building blocks for the GUI and the presets --------------------------------------------
def default_level(kind: str, level_id: str) -> dict:
    """A new level of ``kind`` with the kind's defaults and its default optimizer."""
    faults, level = check_level({"id": level_id, "kind": kind}, 0)
    if faults or level is None:
        fault = faults[0]
        raise ProjectError("<level>", fault.path.removeprefix("model.levels[0]."), fault.message)
    return level.spec()


def new_project() -> dict:
    """A minimal valid document for File → New: input → one frozen MLP → output."""
    doc = {"format": FORMAT, "version": VERSION, "name": "Untitled",
           "model": {"levels": [default_level("mlp", "mlp")],
                     "edges": [["input", "mlp"], ["mlp", "output"]]},
           "task": {"name": DEFAULT_TASK}, "view": {"positions": {"mlp": [180.0, 0.0]}}}
    return project_to_dict(parse_project(doc))


def preset_paths() -> dict[str, Path]:
    """``{name: path}`` of the bundled presets (``resources/presets/*.nlproj``)."""
    folder = resources.path("presets")
    return {p.stem: p for p in sorted(folder.glob("*.nlproj"))}


def load_preset(name: str) -> Project:
    """A bundled preset by name (``"nsam"`` or ``"nsam.nlproj"``)."""
    stem = name.removesuffix(".nlproj")
    paths = preset_paths()
    if stem not in paths:
        raise ProjectError(f"{stem}.nlproj", "", f"no bundled preset named '{stem}'; presets: "
                                                 f"{', '.join(paths) or 'none'}")
    return load_project(paths[stem])
