"""The explorables: the theory's five simulations as small, instant lessons (Qt-free cores).

One module per lesson; each holds the lesson's computation, built on the real code path (the
real inner optimizers, levels, presets, tasks, probes and trainer), and returns numpy arrays.

**One registry.** :data:`LESSONS` is the only list of lessons: number, module ``key``, the
core class (by name, imported on first use) and the texts for menus. The view of a lesson
lives in ``nlstudio.widgets.lessons.<key>`` and is named after its core: ``SpectrumLesson``
→ ``SpectrumView`` (the widgets package finds it by that rule; a test checks every lesson).

**One protocol.** Every core is a :class:`LessonCore`: the user steps through what it shows
with ``next()`` / ``back()`` / ``reset()``, ``step_count`` says where the lesson stands and
``done`` whether a next step exists. ``next()`` may compute (lesson 1 measures one more batch;
the view runs such a call in a worker thread); ``back()`` and ``reset()`` never compute. A
core may have more (lesson 5 trains its model through the real trainer first), but nothing
that steps it differently.

    from nlstudio.lessons import LESSONS, lesson_core
    for info in LESSONS: print(info.number, info.title)
    lesson = lesson_core(2)()           # an AssociativeMemoryLesson
    lesson.next(); lesson.back(); lesson.reset()
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class LessonCore(Protocol):
    """What every lesson's Qt-free core answers (see the module docstring)."""

    @property
    def step_count(self) -> int:
        """Steps taken since the start (0 at the start)."""

    @property
    def done(self) -> bool:
        """True when ``next()`` has nothing more to show."""

    def next(self) -> object:
        """Take one step (may compute); returns what the step produced, if anything."""

    def back(self) -> object:
        """Undo the last step (never computes); a no-op at the start."""

    def reset(self) -> None:
        """Back to the start (never computes)."""


@dataclass(frozen=True)
class LessonInfo:
    number: int
    key: str  # the module's name in this package and in nlstudio.widgets.lessons
    core: str  # the core class in nlstudio.lessons.<key>; its view is <core − "Lesson">View
    title: str
    summary: str  # one line for menus and the welcome page

    @property
    def view(self) -> str:
        """The view's class name in ``nlstudio.widgets.lessons.<key>``."""
        return self.core.removesuffix("Lesson") + "View"


LESSONS: tuple[LessonInfo, ...] = (
    LessonInfo(1, "spectrum", "SpectrumLesson", "Two timescales vs a spectrum",
               "Where a Transformer's and an NSAM's levels sit on the frequency axis, "
               "designed and measured."),
    LessonInfo(2, "associative", "AssociativeMemoryLesson", "Training is an associative memory",
               "A linear layer learns pairs one at a time: each step writes surprise ⊗ input."),
    LessonInfo(3, "optimizers", "OptimizerLesson", "Optimizers are memories too",
               "Six optimizers on one gradient stream: their paths, their memories, and what "
               "they forget."),
    LessonInfo(4, "attention_gd", "GradientStepLesson", "Linear attention is gradient descent",
               "Token by token, the real level's memory next to one GD step on its objective."),
    LessonInfo(5, "memory_loop", "MemoryLoopLesson", "Continuum memory vs two buckets",
               "A fact fades at each level's own rate, then returns: which level still "
               "held it?"),
)


def lesson_info(number: int) -> LessonInfo:
    for info in LESSONS:
        if info.number == number:
            return info
    raise KeyError(f"no lesson {number}; lessons are 1 to {len(LESSONS)}")


def lesson_by_key(key: str) -> LessonInfo:
    for info in LESSONS:
        if info.key == key:
            return info
    raise KeyError(f"no lesson module {key!r}")


def lesson_core(number: int) -> type:
    """The core class of lesson ``number`` (its module is imported on first use: the cores
    import torch, the menus need only the titles)."""
    info = lesson_info(number)
    return getattr(importlib.import_module(f"{__name__}.{info.key}"), info.core)


__all__ = ["LessonCore", "LessonInfo", "LESSONS", "lesson_info", "lesson_by_key",
           "lesson_core"]
