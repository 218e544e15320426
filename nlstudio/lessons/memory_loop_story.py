"""Lesson 5's story: what its measurements (:mod:`nlstudio.lessons.memory_loop`) say, in
sentences with the numbers. Which level *stores* a fact rests on the freeze table only (its
writes stopped, its output kept); silencing is only ever described as what the model depends
on. A difference counts when it is at least :data:`HOLD_DROP` and clear of the sampling noise
of the questions behind it (:func:`clear_drop`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from nlstudio.runs.rows import FULL_MODEL as FULL

if TYPE_CHECKING:  # the results it reads (the measuring module imports this one)
    from nlstudio.lessons.memory_loop import DelayResult, LoopResult

#: A drop in recall smaller than this (5 points) is not called "held by that level's writes".
HOLD_DROP = 0.05


def slowest_level(result: LoopResult) -> str | None:
    """The written level with the longest period (the slow end of the continuum); None when
    no level writes."""
    written = [(result.periods.get(lid) or 0, lid) for lid in result.written]
    return max(written)[1] if written else None


def _drops(table: DelayResult) -> dict[str, np.ndarray]:
    """Recall lost per delay when each level is ablated: full-model row minus its row."""
    return {name: table.table[0] - table.table[i]
            for i, name in enumerate(table.names) if name != FULL}


def holder_at(result: LoopResult, column: int) -> tuple[str | None, float]:
    """The level whose frozen writes cost the most recall at delay ``delays[column]``, and
    that drop (full-model recall minus recall with its writes frozen; ≤ 0 when no level's
    writes matter). ``(None, nan)`` when no level writes. The drop says "holds" only from
    :data:`HOLD_DROP` on."""
    drops = {lid: float(d[column]) for lid, d in _drops(result.delay).items()}
    if not drops:
        return None, math.nan
    lid = max(drops, key=drops.get)
    return lid, drops[lid]


def noise(p1: float, p2: float, questions: int) -> float:
    """Two standard errors of the difference of two recall rates measured on ``questions``
    questions each, as if independent (a rough band: questions of one stream share its
    state, rows of the same streams are paired). Differences inside it are "within noise"."""
    if questions <= 0 or not (np.isfinite(p1) and np.isfinite(p2)):
        return math.inf
    return 2.0 * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / questions)


def clear_drop(full: float, drop: float, questions: int) -> bool:
    """A drop in recall that says something: at least :data:`HOLD_DROP` and beyond
    :func:`noise` (full-model recall against recall with the level ablated)."""
    return bool(drop >= HOLD_DROP and drop >= noise(full, full - drop, questions))


def holder(result: LoopResult) -> str | None:
    """The level whose writes hold the facts: among the levels whose frozen writes cost a
    :func:`clear_drop` of recall at some delay, the one that costs the most summed over
    delays; None when no single level's writes clearly cost recall anywhere."""
    d, full = result.delay, result.delay.table[0]
    drops = {lid: drop for lid, drop in _drops(d).items()
             if any(clear_drop(full[j], drop[j], d.questions) for j in range(len(full)))}
    if not drops:
        return None
    return max(drops, key=lambda lid: float(np.nansum(drops[lid])))


def depends_without_holding(result: LoopResult, column: int | None = None
                            ) -> tuple[str | None, float]:
    """The level the model clearly depends on most (silencing it costs a :func:`clear_drop`
    of recall, at delay ``delays[column]`` or, by default, at any delay) among the levels
    whose writes do not clearly hold the facts there (or that have no writes), and that
    drop; ``(None, nan)`` when there is none or silence was not measured. What silencing
    shows and freezing does not: dependence is not storage."""
    if result.silenced is None:
        return None, math.nan
    d, full = result.delay, result.delay.table[0]
    columns = range(len(full)) if column is None else [column]
    frozen = _drops(d)
    best: tuple[str | None, float] = (None, math.nan)
    for lid, drop in _drops(result.silenced).items():
        if lid in frozen and any(clear_drop(full[j], frozen[lid][j], d.questions)
                                 for j in columns):
            continue
        for j in columns:
            if clear_drop(full[j], drop[j], d.questions) and (best[0] is None
                                                              or drop[j] > best[1]):
                best = (lid, float(drop[j]))
    return best


def _pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.0f} %"


def _points(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    n = f"{100 * abs(x):.0f}"
    return f"{n} point" if n == "1" else f"{n} points"


def _trained(result: LoopResult) -> str:
    return (f"After {result.trained_steps} training steps (loss {result.loss:.2f})"
            if result.trained_steps else "Untrained")


def _depends(result: LoopResult, column: int | None) -> str:
    """The silence sentence: a level the model clearly depends on whose writes do not
    clearly hold the fact (:func:`depends_without_holding`); empty when there is none."""
    lid, cost = depends_without_holding(result, column)
    if lid is None:
        return ""
    why = ("but freezing its writes does not clearly cost recall" if lid in result.written
           else "though it has no writes to hold anything")
    where = "here" if column is not None else "at some delay"
    return (f" Silencing {lid} (its output zeroed) costs {_points(cost)} {where}: the model "
            f"depends on its output, {why}.")


def describe_stage(result: LoopResult, stage: int, long_gaps: int = 3) -> str:
    """What is true at ``stage`` of the story, with the numbers measured there: the showing
    (0), the fact ``delays[stage − 1]`` tokens later (1 … D), the return (D + 1: the whole
    summary, :func:`describe`). Which level holds the fact rests on the freeze table only."""
    d = result.delay
    if stage <= 0:
        return (f"{_trained(result)}, the model has just been shown a fact once. Next moves "
                f"the stream on, {d.delays[0]} to {d.delays[-1]} tokens: each level forgets "
                "at its own rate, and freezing one level's writes at a time (its output kept) "
                "shows which level's memory still holds the fact.")
    if stage > len(d.delays):
        return describe(result, long_gaps)
    j = stage - 1
    full = float(d.table[0, j])
    before = ("" if result.untrained is None or not result.trained_steps else
              f" (untrained: {_pct(result.untrained[j])})")
    text = (f"{_trained(result)}: {d.delays[j]} tokens after it was shown, a fact is "
            f"recalled {_pct(full)} of the time{before}")
    if np.isfinite(result.chance) and full < result.chance + HOLD_DROP:
        text += f", no better than guessing a value ({_pct(result.chance)})"
    text += ". "
    lid, drop = holder_at(result, j)
    if lid is None:
        text += "No level has writes to freeze: nothing here says which level holds it."
    elif clear_drop(full, drop, d.questions):
        text += (f"Freezing {lid}'s writes costs the most here: recall falls to "
                 f"{_pct(full - drop)}, so {lid}'s writes still hold the fact at this delay.")
    elif drop >= HOLD_DROP:
        text += (f"Freezing {lid}'s writes costs the most here, {_points(drop)}, but that is "
                 f"within noise ({d.questions} questions): no single level's writes clearly "
                 "hold the fact at this delay.")
    else:
        text += (f"Freezing any one level's writes costs less than {_points(HOLD_DROP)} here: "
                 "no single level's writes hold the fact at this delay.")
    return text + _depends(result, j)


def describe(result: LoopResult, long_gaps: int = 3) -> str:
    """What was measured, with the numbers: recall by delay, which level's writes hold the
    facts (freeze), what the model depends on without storing it (silence), and the return
    (averaged over the ``long_gaps`` longest gaps, with :func:`noise` saying what is within
    noise: eight streams per gap are few)."""
    d = result.delay
    full = d.table[0]
    best = int(np.nanargmax(full))
    before = ("" if result.untrained is None or not result.trained_steps else
              f" (untrained: {_pct(result.untrained[best])})")
    text = (f"{_trained(result)}, a fact seen once is recalled {_pct(full[best])} of the time "
            f"{d.delays[best]} tokens later{before} and {_pct(full[-1])} after "
            f"{d.delays[-1]}. ")
    main = holder(result)
    drops = _drops(d)
    if main is not None:
        text += (f"Freezing {main}'s writes (its output kept) drops recall to "
                 f"{_pct(float(np.nanmean(d.table[result.row(main)])))} on average (all "
                 f"levels: {_pct(float(np.nanmean(full)))}), so {main}'s writes hold these "
                 "facts")
        text += _others(result, main) + "."
    elif drops:
        text += (f"Freezing any one level's writes costs less than {_points(HOLD_DROP)}, or "
                 f"less than the noise of {d.questions} questions, at every delay: no single "
                 "level's writes hold these facts.")
    else:
        text += "No level has writes to freeze: nothing here says which level holds them."
    text += _depends(result, None)
    return text + " " + _describe_return(result, long_gaps)


def _others(result: LoopResult, main: str) -> str:
    """What freezing each other written level costs: "hold some too" where that is a
    :func:`clear_drop`, else its largest drop, said to be within noise."""
    d, full = result.delay, result.delay.table[0]
    drops = _drops(d)
    clear, unclear = [], []
    for lid in result.written:
        if lid == main:
            continue
        worst = max(0.0, float(np.nanmax(drops[lid])))
        if any(clear_drop(full[j], drops[lid][j], d.questions) for j in range(len(full))):
            clear.append(f"{lid}'s writes hold some too (freezing them costs up to "
                         f"{_points(worst)})")
        else:
            unclear.append((lid, worst))
    parts = list(clear)
    if unclear:
        costs = ", ".join(f"{lid} {'costs ' if i == 0 else ''}at most {_points(w)}"
                          for i, (lid, w) in enumerate(unclear))
        parts.append(f"freezing {costs} (within noise)")
    return "".join(f"; {p}" for p in parts)


def _describe_return(result: LoopResult, long_gaps: int) -> str:
    """The return, over the ``long_gaps`` longest gaps: held, relearned against the first
    time, and relearned with the slowest level's writes frozen, each difference against
    :func:`noise`."""
    r = result.returns
    tail = slice(max(0, len(r.gaps) - long_gaps), len(r.gaps))
    span = (f"{r.gaps[tail][0]}–{r.gaps[tail][-1]}" if len(r.gaps[tail]) > 1
            else f"{r.gaps[tail][0]}")
    n = int(np.sum(r.questions[tail]))
    mean = lambda a: float(np.nanmean(a[tail]))  # noqa: E731
    held, relearned, first = mean(r.held[0]), mean(r.relearned[0]), mean(r.first_sight[0])
    gain = relearned - first
    if abs(gain) < noise(relearned, first, n):
        verdict = "no faster than the first time, within noise"
    else:
        verdict = f"{_points(gain)} {'above' if gain > 0 else 'below'} the first time"
    text = (f"When a mapping returns after {span} tokens, it is recalled {_pct(held)} before "
            f"being shown again and {_pct(relearned)} after one more showing (first time: "
            f"{_pct(first)}, {verdict}")
    slow = slowest_level(result)
    if slow is None or slow not in r.names:
        return text + f"; {n} questions per pass)."
    frozen = mean(r.relearned[r.names.index(slow)])
    lost = relearned - frozen
    if abs(lost) < noise(relearned, frozen, n):
        effect = f"within noise of the full model: no sign that {slow}'s writes held it"
    elif lost > 0:
        effect = f"{_points(lost)} less: {slow}'s writes held part of it"
    else:
        effect = f"{_points(lost)} more: {slow}'s writes did not help relearn it"
    return text + (f"); with {slow}'s writes frozen, {_pct(frozen)} ({effect}; {n} questions "
                   "per pass).")


