"""The level kinds, one module each. ``LEVEL_CLASSES[kind]`` is the class that builds a level.

Which class implements a kind is registry data (``KindInfo.implementation`` in
``models/registry.py``, the one map of kinds); this mapping only imports it. Classes are
imported on first use of their kind, so importing the package stays cheap and a kind's module
is only loaded when a model uses it. Any import error of a kind's module (a missing module
included) is raised as is, never hidden.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from nlstudio.models.levels.base import Level, LevelProbe
from nlstudio.models.registry import KINDS, kind_info


class _LevelClasses(Mapping):
    """Read-only ``{kind: Level subclass}`` that imports a kind's module when it is looked up."""

    def __getitem__(self, kind: str) -> type[Level]:
        module, name = kind_info(kind).implementation.split(":")  # KeyError: unknown kind
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)

    def __contains__(self, kind: object) -> bool:  # without importing anything
        return kind in KINDS

    def __iter__(self) -> Iterator[str]:
        return iter(KINDS)

    def __len__(self) -> int:
        return len(KINDS)

    def __repr__(self) -> str:
        return f"LEVEL_CLASSES({', '.join(KINDS)})"


LEVEL_CLASSES: Mapping[str, type[Level]] = _LevelClasses()

__all__ = ["LEVEL_CLASSES", "Level", "LevelProbe"]
