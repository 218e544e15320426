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
the mapping returns. :func:`describe_stage` says what is true at each (the sentences that read
the tables, with their noise rule: ``nlstudio.lessons.memory_loop_story``).

    lesson = MemoryLoopLesson()
    result = lesson.run(30, LoopJob())           # train 30 steps, then measure (a LoopResult)
    result.delay.table                           # recall [1 + written levels, delays], frozen
    result.silenced.table                        # recall [1 + levels, delays], silenced
    lesson.next(); describe_stage(result, lesson.step_count)
    lesson.close()                               # removes the temporary run folder
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
# What the results say (the lesson's texts): memory_loop_story, re-exported here.
from nlstudio.lessons.memory_loop_story import (HOLD_DROP, clear_drop, depends_without_holding,
                                                describe, describe_stage, holder, holder_at,
                                                noise, slowest_level)
from nlstudio.build import build_model, build_task
from nlstudio.project import load_preset, project_to_dict
from nlstudio.run_state import EndReason
from nlstudio.runs import load_run
from nlstudio.runs.rows import FULL_MODEL as FULL
from nlstudio.tasks._util import long_tensor
from nlstudio.tasks.base import IGNORE
from nlstudio.tasks.kv_stream import EVAL_FACTS
from nlstudio.trainer import Trainer



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


# ---- the model's levels --------------------------------------------------------------------
def written_levels(model: torch.nn.Module) -> list[str]:
    """The levels with in-context writes, in model order: parametric with a period. Only
    their writes can be frozen; a frozen MLP (period null) or attention writes nothing."""
    return [lid for lid in model.order
            if model.levels[lid].info.parametric and model.levels[lid].period is not None]



__all__ = ["LoopConfig", "MemoryLoopLesson", "LoopResult", "DelayResult", "ReturnResult",
           "LoopJob", "describe", "describe_stage", "slowest_level", "holder", "holder_at",
           "depends_without_holding", "written_levels", "noise", "clear_drop", "HOLD_DROP",
           "FULL"]
