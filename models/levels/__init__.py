"""The level kinds, one module each. ``LEVEL_CLASSES[kind]`` is the class that builds a level.

Classes are imported on first use of their kind, so importing the package stays cheap and a
kind's module is only loaded when a model uses it. Any import error of a kind's module
(a missing module included) is raised as is, never hidden.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from nlstudio.models.levels.base import Level, LevelProbe

#: kind -> (module inside this package, class name)
_WHERE: dict[str, tuple[str, str]] = {
    "attention": ("attention", "AttentionLevel"),
    "linear_attention": ("linear_attention", "LinearAttentionLevel"),
    "delta": ("delta", "DeltaLevel"),
    "titans": ("titans", "TitansLevel"),
    "self_modifying": ("self_modifying", "SelfModifyingLevel"),
    "mlp": ("cms", "MLPLevel"),
}


class _LevelClasses(Mapping):
    """Read-only ``{kind: Level subclass}`` that imports a kind's module when it is looked up."""

    def __getitem__(self, kind: str) -> type[Level]:
        try:
            module, name = _WHERE[kind]
        except KeyError:
            raise KeyError(f"unknown level kind {kind!r}; expected one of "
                           f"{', '.join(_WHERE)}") from None
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)

    def __contains__(self, kind: object) -> bool:  # without importing anything
        return kind in _WHERE

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)

    def __repr__(self) -> str:
        return f"LEVEL_CLASSES({', '.join(_WHERE)})"


LEVEL_CLASSES: Mapping[str, type[Level]] = _LevelClasses()

__all__ = ["LEVEL_CLASSES", "Level", "LevelProbe"]
