"""Tasks: data generated (or shipped with Python/scikit-learn), losses, metrics, evaluation.

``TASKS`` maps a project file's ``task.name`` to its class; each module registers one task.
"""
from __future__ import annotations

import importlib
import pkgutil

from nlstudio.tasks.base import IGNORE, Batch, EvalRow, Task, TaskParams

TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


_loaded = False


def _load_all() -> None:
    """Imports every task module once (a module imported directly earlier registers only
    itself, so a non-empty registry does not mean a complete one)."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def get_task(name: str) -> type[Task]:
    _load_all()
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; expected one of {', '.join(sorted(TASKS))}") from None


def all_tasks() -> dict[str, type[Task]]:
    _load_all()
    return dict(TASKS)


__all__ = ["IGNORE", "Batch", "EvalRow", "Task", "TaskParams", "TASKS", "register", "get_task",
           "all_tasks"]
