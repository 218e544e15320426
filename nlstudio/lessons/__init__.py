"""The explorables: the theory's five simulations as small, instant lessons (Qt-free cores).

One module per lesson; each holds the lesson's computation as plain classes and functions
that return numpy arrays, built on the real code path (the real inner optimizers, levels,
presets, tasks and probes). The views live in ``nlstudio.widgets.lessons``.

    from nlstudio.lessons import LESSONS
    for info in LESSONS: print(info.number, info.title)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LessonInfo:
    number: int
    key: str  # the core module's name in this package
    title: str
    summary: str  # one line for menus and the welcome page


LESSONS: tuple[LessonInfo, ...] = (
    LessonInfo(1, "spectrum", "Two timescales vs a spectrum",
               "Where a Transformer's and an NSAM's levels sit on the frequency axis, "
               "designed and measured."),
    LessonInfo(2, "associative", "Training is an associative memory",
               "A linear layer learns pairs one at a time: each step writes surprise ⊗ input."),
    LessonInfo(3, "optimizers", "Optimizers are memories too",
               "Six optimizers on one gradient stream: their paths, their memories, and what "
               "they forget."),
    LessonInfo(4, "attention_gd", "Linear attention is gradient descent",
               "Token by token, the real level's memory next to one GD step on its objective."),
    LessonInfo(5, "memory_loop", "Continuum memory vs two buckets",
               "A fact fades at each level's own rate, then returns: which level still "
               "held it?"),
)


def lesson_info(number: int) -> LessonInfo:
    for info in LESSONS:
        if info.number == number:
            return info
    raise KeyError(f"no lesson {number}; lessons are 1 to {len(LESSONS)}")


__all__ = ["LessonInfo", "LESSONS", "lesson_info"]
