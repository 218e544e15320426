"""What a run is set up from, before the trainer steps: the validated project (parsed once,
here), its device, its outer optimizer, and the text of the run's project copy.

Every function here is pure set-up; :mod:`nlstudio.trainer` uses them, and the lessons share
:func:`make_outer_optimizer` so lesson 5 trains with the trainer's own optimizer.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from nlstudio.printable import printable
from nlstudio.project import Project, ProjectError, dumps, load_project, parse_project
from nlstudio.schema import OuterOptimizer


class TrainError(RuntimeError):
    """A run that cannot start (bad device, a folder in use); the message says why, on one
    printable line (a folder name with control characters cannot reach a terminal raw)."""

    def __init__(self, message: str):
        super().__init__(printable(message, 2000))


def resolve_device(name: str | None) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("device 'cuda' was asked for, but no CUDA GPU is available "
                         "(use --device cpu or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise TrainError(f"unknown device {printable(name, 40)!r}; use auto, cpu or cuda")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def as_project(project) -> tuple[Project, Path | None]:
    """A validated Project (parsed once, here) and the folder its relative paths resolve
    against (the project file's, when it came from a file)."""
    if isinstance(project, (str, os.PathLike)):
        path = Path(project)
        return load_project(path), path.resolve().parent
    if isinstance(project, dict):
        return parse_project(project), None
    if isinstance(project, Project):
        return project, project.path.parent if project.path else None
    raise TrainError(f"cannot train a {type(project).__name__}: give a project file, a "
                     "project dict or a Project")


def make_outer_optimizer(spec, params) -> torch.optim.Optimizer:
    """The outer optimizer of ``spec``: a Project, its ``train.optimizer``, or a project
    dict (validated here)."""
    if isinstance(spec, Project):
        spec = spec.train.optimizer
    elif isinstance(spec, dict):
        spec = OuterOptimizer(**((spec.get("train") or {}).get("optimizer") or {}))
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, weight_decay=spec.weight_decay,
                           momentum=spec.momentum)


def with_train(project: Project, **changes) -> Project:
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return project
    copy = project.model_copy(update={"train": project.train.model_copy(update=changes)})
    copy._path = project.path
    return copy


def project_text(project: Project) -> str:
    """The run's copy of its project, as text that UTF-8 can store (checked before the run
    folder exists, so a project that cannot be saved leaves nothing behind)."""
    text = dumps(project)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProjectError(project.path.name if project.path else "<project>", "",
                           f"holds text UTF-8 cannot store ({exc.reason})") from None
    return text
