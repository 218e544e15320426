"""NL Studio: a desktop lab for nested memories.

The core's public API (Qt-free); see docs in README.md::

    import nlstudio
    project = nlstudio.load_project("hope.nlproj")
    model = nlstudio.build_model(project)
    run = nlstudio.train(project, out="runs/x", steps=200, on_event=print)
    run = nlstudio.load_run("runs/x")
    for token in nlstudio.generate("runs/x", prompt="def ", tokens=100): ...

Attributes are imported lazily so that ``nlstudio --version`` and the CLI's argument errors
answer without paying for ``import torch``.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "ProjectError": ("nlstudio.project", "ProjectError"),
    "load_project": ("nlstudio.project", "load_project"),
    "save_project": ("nlstudio.project", "save_project"),
    "build_model": ("nlstudio.build", "build_model"),
    "train": ("nlstudio.trainer", "train"),
    "Trainer": ("nlstudio.trainer", "Trainer"),
    "load_run": ("nlstudio.runs", "load_run"),
    "generate": ("nlstudio.generation", "generate"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nlstudio' has no attribute {name!r}")
