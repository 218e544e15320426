"""Lesson 5: a continuum of memories vs two buckets, on the real NSAM kv_stream model.

The model is the default project's NSAM (``nsam_kv_stream`` preset: a self-modifying level
every 8 tokens, CMS levels every 16 and 64 tokens, a frozen MLP). Untrained, its CMS levels
already learn in context, but weakly (the untrained curve is kept in the result), so the lesson
first trains it briefly with the real trainer (``nlstudio.trainer.Trainer``: the project's own
outer optimizer, gradient clipping and task batches, into a temporary run folder), loads the
trained weights back from that run folder (``nlstudio.runs.load_run(...).load_model()``) and
measures:

1. **Forgetting by delay**: ``kv_stream.recall_by_delay``, with the writes of every level
   that has any *frozen* in turn (``probes.recall_by_delay_ablations``, kind ``"freeze"``: the
   level keeps its output, its in-context writes stop): a fact is shown once and asked ``d``
   tokens later; where freezing a level's writes drops recall, those writes held the fact at
   that delay. Levels without writes (a frozen MLP, period null; attention) have nothing to
   freeze and no row. Every "holds"/"stores" the lesson says rests on this table.
   The same grid with each level *silenced* (its output zeroed) is measured beside it, and
   only ever called what it is: what the rest of the model *depends on*. Silencing a level
   also removes everything later levels compute from it, so a level the model depends on
   need not store anything (``nlstudio.probes``, issue 13).
2. **The return** (the memory loop): a mapping of facts is shown for one segment, the stream
   moves on through ``g`` segments of other mappings, then the mapping returns. Recall on the
   return's first pass says what was still held; on its second pass, how well it was relearned
   after one more showing, against learning it the first time. Measured for the full model
   and with each level's writes frozen in turn: if a slow level's writes held the mapping,
   freezing them makes the relearning slower. Eight streams per gap are few: the texts call a
   difference smaller than :func:`noise` "within noise".

The lesson then tells that story in stages (a :class:`nlstudio.lessons.LessonCore`): stage 0,
the fact is shown; stages 1 … D, the stream has moved on by each delay in turn; the last stage,
the mapping returns. :func:`describe_stage` says what is true at each.

    lesson = MemoryLoopLesson()
    result = lesson.run(30, LoopJob())           # train 30 steps, then measure (a LoopResult)
    result.delay.table                           # recall [1 + written levels, delays], frozen
    result.silenced.table                        # recall [1 + levels, delays], silenced
    lesson.next(); describe_stage(result, lesson.step_count)
    lesson.close()                               # removes the temporary run folder

One file on purpose (over the usual ~450 lines): the measurements and the sentences that read
them sit together, so that every "holds" the lesson says is next to the table and the noise
band it rests on.
"""
from __future__ import annotations

import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nlstudio import events as ev
from nlstudio import probes
from nlstudio.build import build_model, build_task
from nlstudio.project import load_preset, project_to_dict
from nlstudio.run_state import EndReason
from nlstudio.runs import load_run
from nlstudio.tasks._util import long_tensor
from nlstudio.tasks.base import IGNORE
from nlstudio.tasks.kv_stream import EVAL_FACTS
from nlstudio.trainer import Trainer

FULL = "none"  # the row of the full model (as probes.delay_table names it)


@dataclass(frozen=True)
class LoopConfig:
    preset: str = "nsam_kv_stream"
    train_steps: int = 30  # outer steps the lesson trains before measuring (and per "more")
    batch_size: int = 4  # the trainer's batch (the preset's own is larger: slower per step)
    seed: int = 0
    return_rows: int = 8  # streams per gap in the return test
    max_gap: int = 6  # the longest gap, in segments


@dataclass(frozen=True)
class DelayResult:
    names: list[str]  # [FULL, *level ids]: which level is ablated in each row
    delays: np.ndarray  # tokens from a fact's showing to its question
    table: np.ndarray  # recall [len(names), len(delays)]
    #: which ablation the rows are (``probes.ABLATION_KINDS``): "freeze" (the level's writes
    #: stopped, its output kept: what it stores; written levels only) or "silence" (its output
    #: zeroed: what the model depends on; every level)
    ablation: str = "freeze"
    questions: int = EVAL_FACTS  # questions scored per delay (the lesson's kv_stream: 64)


@dataclass(frozen=True)
class ReturnResult:
    gaps: np.ndarray  # tokens of other mappings between the fact's segment and its return
    names: list[str]  # [FULL, *written level ids]: which level's writes are frozen in each row
    first_sight: np.ndarray  # [names, gaps] recall on the 2nd pass of the first showing
    held: np.ndarray  # [names, gaps] recall on the 1st pass of the return
    relearned: np.ndarray  # [names, gaps] recall on the 2nd pass of the return
    questions: np.ndarray  # [gaps] questions scored per pass (the same for every row)


@dataclass(frozen=True)
class LoopResult:
    trained_steps: int
    loss: float  # the last training batch's loss (nan when untrained)
    level_ids: list[str]  # every level, in model order
    periods: dict[str, int | None]
    delay: DelayResult  # freeze: which level's writes hold a fact at each delay
    returns: ReturnResult  # the return, full model and each written level frozen
    untrained: np.ndarray | None = None  # recall by delay of the model before any training
    seconds: float = 0.0
    chance: float = math.nan  # recall of a model that guesses one of the values at random
    silenced: DelayResult | None = None  # silence: what the model depends on (never "holds")

    def row(self, name: str) -> int:
        """The row of ``name`` (FULL or a written level) in the freeze table."""
        return self.delay.names.index(name)

    @property
    def written(self) -> list[str]:
        """The levels with in-context writes (the freeze table's rows after the full model)."""
        return [n for n in self.delay.names if n != FULL]

    @property
    def stages(self) -> int:
        """Stages of the story: the showing, one per delay, the return."""
        return len(self.delay.delays) + 2


class LoopJob:
    """One train-and-measure request. The training thread writes its progress (plain
    attributes the GUI reads); ``stop()`` (from any thread) ends the training at the next step
    boundary through ``Trainer.stop()``, and nothing is measured then."""

    def __init__(self, total: int = 0) -> None:
        self.step = 0  # steps done in this job
        self.total = int(total)
        self.loss = math.nan
        self.phase = "idle"  # "measuring the untrained model" | "training" | "measuring" |
        #                      "done" | "stopped"
        self._stop = threading.Event()
        self._trainer: Trainer | None = None

    def stop(self) -> None:
        self._stop.set()
        trainer = self._trainer
        if trainer is not None:
            trainer.stop()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def attach(self, trainer: Trainer | None) -> None:
        """The trainer this job runs, None once it returned (stopped at once if ``stop()``
        came first)."""
        self._trainer = trainer
        if trainer is not None and self._stop.is_set():
            trainer.stop()


class MemoryLoopLesson:
    """Lesson 5's core: the model, its training through the trainer, the measurements and the
    stage of the story shown. ``run()`` may be called from a worker thread (one at a time);
    the stage methods are for the GUI thread."""

    def __init__(self, config: LoopConfig | None = None) -> None:
        self.config = config or LoopConfig()
        doc = project_to_dict(load_preset(self.config.preset))
        doc["train"].update(batch_size=int(self.config.batch_size), seed=int(self.config.seed),
                            steps=int(self.config.train_steps), device="cpu")
        self.project = doc  # what the trainer trains (CPU: the lesson is for every machine)
        self.task = build_task(doc)
        if not hasattr(self.task, "delay_streams"):
            raise ValueError(f"{self.config.preset}: lesson 5 needs a kv_stream task")
        self.periods = {str(lv["id"]): lv.get("period") for lv in doc["model"]["levels"]}
        self.level_ids: list[str] = []  # model order, known once the model is built
        self.trained_steps = 0
        self.loss = math.nan
        self.untrained: np.ndarray | None = None  # full-model recall by delay, step 0
        self.result: LoopResult | None = None
        self.stage = 0
        self._folder = tempfile.TemporaryDirectory(prefix="nlstudio-lesson5-")
        self._attempt = 0
        self.run_dir: Path | None = None  # the trainer's run folder once it has a checkpoint
        self.lock = threading.Lock()  # one job at a time

    def close(self) -> None:
        """Remove the temporary run folder (also done when the object is collected)."""
        self._folder.cleanup()

    # ---- the model ---------------------------------------------------------------------------
    def untrained_model(self) -> torch.nn.Module:
        """The model as the trainer builds it before its first step (seeded with the
        project's ``train.seed``, then ``build_model``)."""
        torch.manual_seed(int(self.project["train"]["seed"]))
        model = build_model(self.project, self.task)
        self.level_ids = list(model.order)
        return model.eval()

    def trained_model(self) -> torch.nn.Module:
        """The weights of the trainer's last checkpoint, read back from its run folder."""
        model = load_run(self.run_dir).load_model("cpu")
        self.level_ids = list(model.order)
        return model.eval()

    def train(self, steps: int, job: LoopJob | None = None) -> int:
        """``steps`` more outer steps through :class:`~nlstudio.trainer.Trainer` (a fresh run
        first, then resuming it), stopping early when ``job.stop()`` is called. Returns the
        steps taken."""
        job = job or LoopJob()
        job.total, job.step, job.phase = int(steps), 0, "training"
        start = self.trained_steps

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.Progress):
                job.step, job.loss = event.step - start, float(event.loss)

        common = dict(steps=start + int(steps), evaluate=False, snapshots=False,
                      on_event=on_event)
        if self.run_dir is None:
            self._attempt += 1
            out = Path(self._folder.name) / f"run{self._attempt}"
            trainer = Trainer(self.project, out=out, **common)
        else:
            trainer = Trainer(resume=self.run_dir, **common)
        job.attach(trainer)
        if job.stopped:
            return 0
        result = trainer.run()
        job.attach(None)
        if result.reason == EndReason.FAILED:
            raise RuntimeError(result.message or "training failed")
        if result.step > 0:  # a run stopped before its first step is not resumed
            self.run_dir = Path(result.run_dir)
        if result.step > start:
            self.loss = float(result.loss)
        self.trained_steps = int(result.step)
        return self.trained_steps - start

    # ---- measurements ------------------------------------------------------------------------
    def recall_by_delay(self, model: torch.nn.Module, ablation: str = "freeze") -> DelayResult:
        """Recall by delay of the full model and with each level ablated in turn: "freeze"
        over the levels with writes (:func:`written_levels`), "silence" over every level."""
        levels = written_levels(model) if ablation == "freeze" else list(self.level_ids)
        delays, tables = probes.recall_by_delay_ablations(self.task, model, "cpu", levels,
                                                          (ablation,))
        recall = tables[ablation]
        names = [FULL, *levels]
        table = np.array([recall[""], *[recall[lid] for lid in levels]], dtype=float)
        return DelayResult(names, np.asarray(delays, dtype=np.int64), table, ablation)

    def return_streams(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Inputs, targets, each row's gap (segments) and a mask code per token: 1 = second pass
        of the first showing, 2 = first pass of the return, 3 = its second pass."""
        task, p, cfg = self.task, self.task.params, self.config
        seg, span = p.segment_len, 2 * p.pairs_per_mapping
        parts = []
        for gap in range(1, cfg.max_gap + 1):
            rng = task.eval_rng(50, gap)
            m = gap + 1
            keys, values = task.mappings(rng, cfg.return_rows, m)
            schedule = np.tile(np.r_[np.arange(m), 0], (cfg.return_rows, 1))
            length = (m + 1) * seg
            inputs, targets, _ = task.streams(rng, keys, values, schedule, length)
            code = np.zeros(length, dtype=np.int64)
            code[span:2 * span] = 1
            code[m * seg:m * seg + span] = 2
            code[m * seg + span:m * seg + 2 * span] = 3
            code[1::2] = 0  # values are never asked
            parts.append((inputs, targets, np.full(cfg.return_rows, gap), code))
        length = max(x.shape[1] for x, *_ in parts)
        pad = lambda a, fill: np.pad(a, ((0, 0), (0, length - a.shape[1])),  # noqa: E731
                                     constant_values=fill)
        inputs = np.concatenate([pad(x, p.num_keys) for x, *_ in parts])
        targets = np.concatenate([pad(y, IGNORE) for _, y, *_ in parts])
        gaps = np.concatenate([g for *_, g, _ in parts])
        codes = np.concatenate([pad(np.tile(c, (len(g), 1)), 0) for *_, g, c in parts])
        return inputs, targets, gaps, codes

    def return_test(self, model: torch.nn.Module) -> ReturnResult:
        """The return, for the full model and with each written level's writes frozen (its
        output kept): what that level's writes add to holding and relearning the mapping."""
        inputs, targets, gaps, codes = self.return_streams()
        names = [FULL, *written_levels(model)]
        grid = np.arange(1, self.config.max_gap + 1)
        out = np.zeros((3, len(names), len(grid)))
        questions = np.array([int(((codes == 3) & (gaps == g)[:, None]).sum()) for g in grid])
        for i, name in enumerate(names):
            freeze = () if name == FULL else (name,)
            logits = self.task.model_logits(model, long_tensor(inputs), long_tensor(targets),
                                            "cpu", silence=(), freeze=freeze)
            right = logits.argmax(-1).numpy() == targets
            for c in (1, 2, 3):
                for j, gap in enumerate(grid):
                    mask = (codes == c) & (gaps == gap)[:, None]
                    out[c - 1, i, j] = right[mask].mean() if mask.any() else np.nan
        seg = self.task.params.segment_len
        return ReturnResult(grid * seg, names, out[0], out[1], out[2], questions)

    def evaluate(self, model: torch.nn.Module) -> LoopResult:
        start = time.perf_counter()
        delay = self.recall_by_delay(model, "freeze")
        silenced = self.recall_by_delay(model, "silence")
        returns = self.return_test(model)
        return LoopResult(self.trained_steps, self.loss if self.trained_steps else math.nan,
                          list(self.level_ids), dict(self.periods), delay, returns,
                          self.untrained, time.perf_counter() - start,
                          chance=1.0 / int(self.task.params.value_vocab), silenced=silenced)

    def measure_untrained(self) -> np.ndarray:
        """Recall by delay of the full model as built (one model call), once."""
        if self.untrained is None:
            if self.trained_steps:
                raise RuntimeError("the model is already trained")
            recall = self.task.recall_by_delay(self.untrained_model(), "cpu")
            self.untrained = np.array([recall[d] for d in sorted(recall)], dtype=float)
        return self.untrained

    def run(self, steps: int | None = None, job: LoopJob | None = None) -> LoopResult | None:
        """Train ``steps`` more outer steps (default: the config's), then measure the trained
        model; safe to call from a worker thread. None when ``job.stop()`` was called (nothing
        is measured then; the steps already taken are kept and the next run resumes them)."""
        job = job or LoopJob()
        with self.lock:
            if self.trained_steps == 0 and self.untrained is None and not job.stopped:
                job.phase = "measuring the untrained model"
                self.measure_untrained()
            self.train(self.config.train_steps if steps is None else steps, job)
            if job.stopped:
                job.phase = "stopped"
                return None
            job.phase = "measuring"
            result = self.evaluate(self.trained_model())
            self.result = result
            job.phase = "done"
        return result

    # ---- the story's stages (LessonCore) -----------------------------------------------------
    @property
    def last_stage(self) -> int:
        return 0 if self.result is None else self.result.stages - 1

    @property
    def step_count(self) -> int:
        return min(self.stage, self.last_stage)

    @property
    def done(self) -> bool:
        return self.step_count >= self.last_stage

    def next(self) -> int:
        self.stage = min(self.step_count + 1, self.last_stage)
        return self.stage

    def back(self) -> int:
        self.stage = max(self.step_count - 1, 0)
        return self.stage

    def reset(self) -> None:
        self.stage = 0


# ---- reading the results ---------------------------------------------------------------------
#: A drop in recall smaller than this (5 points) is not called "held by that level's writes".
HOLD_DROP = 0.05


def written_levels(model: torch.nn.Module) -> list[str]:
    """The levels with in-context writes, in model order: parametric with a period. Only
    their writes can be frozen; a frozen MLP (period null) or attention writes nothing."""
    return [lid for lid in model.order
            if model.levels[lid].info.parametric and model.levels[lid].period is not None]


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


__all__ = ["LoopConfig", "MemoryLoopLesson", "LoopResult", "DelayResult", "ReturnResult",
           "LoopJob", "describe", "describe_stage", "slowest_level", "holder", "holder_at",
           "depends_without_holding", "written_levels", "noise", "clear_drop", "HOLD_DROP",
           "FULL"]
