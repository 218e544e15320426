"""Lesson 5: a continuum of memories vs two buckets, on the real NSAM kv_stream model.

The model is the default project's NSAM (``nsam_kv_stream`` preset: a self-modifying level
every 8 tokens, CMS levels every 16 and 64 tokens, a frozen MLP). Untrained, its CMS levels
already learn in context, but weakly (measured: recall well under half of what 30 outer steps
give; the untrained curve is kept in the result), so the lesson first trains it briefly with the
project's own outer optimizer on its own task batches, then measures:

1. **Forgetting by delay**: ``kv_stream.recall_by_delay``, with every level silenced in turn
   (``probes.recall_by_delay_with_ablation``): a fact is shown once and asked ``d`` tokens
   later; where silencing a level drops recall, that level held the fact at that delay.
2. **The return** (the memory loop): a mapping of facts is shown for one segment, the stream
   moves on through ``g`` segments of other mappings, then the mapping returns. Recall on the
   return's first pass says what was still held; on its second pass, how well it was relearned
   after one more showing, against learning it the first time. Measured for the full model
   and with each level silenced.

    lesson = MemoryLoopLesson()
    result = lesson.run(30, on_step=print)      # train 30 steps, then measure (a LoopResult)
    result.delay.table                           # recall [1 + levels, delays]
    describe(result)                             # the lesson's text, with the numbers
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nlstudio import probes
from nlstudio.tasks.base import IGNORE

FULL = "none"  # the row of the full model (as probes.delay_table names it)


@dataclass(frozen=True)
class LoopConfig:
    preset: str = "nsam_kv_stream"
    train_steps: int = 30  # outer steps the lesson trains before measuring
    batch_size: int = 4
    seed: int = 0
    return_rows: int = 8  # streams per gap in the return test
    max_gap: int = 6  # the longest gap, in segments


@dataclass(frozen=True)
class DelayResult:
    names: list[str]  # [FULL, *level ids]: which level is silenced in each row
    delays: np.ndarray  # tokens from a fact's showing to its question
    table: np.ndarray  # recall [len(names), len(delays)]


@dataclass(frozen=True)
class ReturnResult:
    gaps: np.ndarray  # tokens of other mappings between the fact's segment and its return
    names: list[str]  # [FULL, *level ids]
    first_sight: np.ndarray  # [names, gaps] recall on the 2nd pass of the first showing
    held: np.ndarray  # [names, gaps] recall on the 1st pass of the return
    relearned: np.ndarray  # [names, gaps] recall on the 2nd pass of the return


@dataclass(frozen=True)
class LoopResult:
    trained_steps: int
    loss: float  # the last training batch's loss (nan when untrained)
    level_ids: list[str]
    periods: dict[str, int | None]
    delay: DelayResult
    returns: ReturnResult
    untrained: np.ndarray | None = None  # recall by delay of the model before any training
    seconds: float = 0.0

    def row(self, name: str) -> int:
        return self.delay.names.index(name)


@dataclass
class Progress:
    """Written by the training thread, read by the GUI (plain attribute reads)."""

    step: int = 0
    total: int = 0
    loss: float = math.nan
    phase: str = "idle"  # "measuring the untrained model" | "training" | "measuring" | "done"
    stop: threading.Event = field(default_factory=threading.Event)


class MemoryLoopLesson:
    def __init__(self, config: LoopConfig | None = None) -> None:
        from nlstudio.build import build_model, build_task
        from nlstudio.project import load_preset, project_to_dict
        from nlstudio.trainer import make_outer_optimizer

        self.config = config or LoopConfig()
        self.doc = project_to_dict(load_preset(self.config.preset))
        self.task = build_task(self.doc)
        if not hasattr(self.task, "delay_streams"):
            raise ValueError(f"{self.config.preset}: lesson 5 needs a kv_stream task")
        torch.manual_seed(int(self.config.seed))
        self.model = build_model(self.doc, self.task)
        self.optimizer = make_outer_optimizer(self.doc, self.model.parameters())
        self.level_ids = list(self.model.order)
        self.periods = {str(lv["id"]): lv.get("period") for lv in self.doc["model"]["levels"]}
        self.grad_clip = float(self.doc["train"].get("grad_clip") or 0.0)
        self.trained_steps = 0
        self.losses: list[float] = []
        self.untrained: np.ndarray | None = None  # full-model recall by delay, step 0
        self.lock = threading.Lock()  # one job at a time touches the model

    # ---- training ----------------------------------------------------------------------------
    def train(self, steps: int, progress: Progress | None = None) -> int:
        """``steps`` outer steps on the task's own batches (continuing where training stopped);
        stops early when ``progress.stop`` is set. Returns the steps taken."""
        progress = progress or Progress()
        progress.total, progress.phase = int(steps), "training"
        model, task = self.model, self.task
        done = 0
        for _ in range(int(steps)):
            if progress.stop.is_set():
                break
            batch = task.batch(self.trained_steps, self.config.batch_size)
            model.train()
            logits, _ = model(batch.inputs, None, targets=batch.targets)
            loss = task.loss(logits, batch.targets)
            if not math.isfinite(float(loss.detach())):
                raise RuntimeError("training diverged (the loss is not finite)")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            self.optimizer.step()
            self.trained_steps += 1
            self.losses.append(float(loss.detach()))
            done += 1
            progress.step, progress.loss = done, self.losses[-1]
        model.eval()
        return done

    # ---- measurements ------------------------------------------------------------------------
    def recall_by_delay(self) -> DelayResult:
        self.model.eval()
        delays, recall = probes.recall_by_delay_with_ablation(self.task, self.model, "cpu",
                                                              self.level_ids)
        names = [FULL, *self.level_ids]
        table = np.array([recall[""], *[recall[lid] for lid in self.level_ids]], dtype=float)
        return DelayResult(names, np.asarray(delays, dtype=np.int64), table)

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

    def return_test(self) -> ReturnResult:
        from nlstudio.tasks._util import long_tensor

        self.model.eval()
        inputs, targets, gaps, codes = self.return_streams()
        names = [FULL, *self.level_ids]
        grid = np.arange(1, self.config.max_gap + 1)
        out = np.zeros((3, len(names), len(grid)))
        for i, name in enumerate(names):
            silence = () if name == FULL else (name,)
            logits = self.task.model_logits(self.model, long_tensor(inputs),
                                            long_tensor(targets), "cpu", silence)
            right = logits.argmax(-1).numpy() == targets
            for c in (1, 2, 3):
                for j, gap in enumerate(grid):
                    mask = (codes == c) & (gaps == gap)[:, None]
                    out[c - 1, i, j] = right[mask].mean() if mask.any() else np.nan
        seg = self.task.params.segment_len
        return ReturnResult(grid * seg, names, out[0], out[1], out[2])

    def evaluate(self) -> LoopResult:
        start = time.perf_counter()
        delay = self.recall_by_delay()
        returns = self.return_test()
        return LoopResult(self.trained_steps, self.losses[-1] if self.losses else math.nan,
                          list(self.level_ids), dict(self.periods), delay, returns,
                          self.untrained, time.perf_counter() - start)

    def measure_untrained(self) -> np.ndarray:
        """Recall by delay of the full model as built (one model call), once."""
        if self.untrained is None:
            if self.trained_steps:
                raise RuntimeError("the model is already trained")
            self.model.eval()
            recall = self.task.recall_by_delay(self.model, "cpu")
            self.untrained = np.array([recall[d] for d in sorted(recall)], dtype=float)
        return self.untrained

    def run(self, steps: int | None = None, progress: Progress | None = None
            ) -> LoopResult | None:
        """Train ``steps`` more outer steps (default: the config's), then measure. What the
        lesson's background job calls; safe to call from a worker thread. None when
        ``progress.stop`` was set (nothing is measured then)."""
        progress = progress or Progress()
        with self.lock:
            if self.trained_steps == 0:
                progress.phase = "measuring the untrained model"
                self.measure_untrained()
            self.train(self.config.train_steps if steps is None else steps, progress)
            if progress.stop.is_set():
                progress.phase = "stopped"
                return None
            progress.phase = "measuring"
            result = self.evaluate()
            progress.phase = "done"
        return result


# ---- reading the results ---------------------------------------------------------------------
def slowest_level(result: LoopResult) -> str:
    """The in-context level with the longest period (the slow end of the continuum)."""
    written = [(p, lid) for lid, p in result.periods.items() if p is not None]
    return max(written)[1] if written else result.level_ids[-1]


def holder(result: LoopResult) -> str:
    """The level whose silencing costs the most recall, summed over delays."""
    full = result.delay.table[0]
    drops = {lid: float(np.nansum(full - result.delay.table[result.row(lid)]))
             for lid in result.level_ids}
    return max(drops, key=drops.get)


def _pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.0f} %"


def describe(result: LoopResult, long_gaps: int = 3) -> str:
    """What was measured, in two sentences with the numbers (the return is averaged over the
    ``long_gaps`` longest gaps: eight streams per gap are noisy one by one)."""
    d, r = result.delay, result.returns
    full = d.table[0]
    trained = (f"After {result.trained_steps} training steps (loss {result.loss:.2f})"
               if result.trained_steps else "Untrained")
    best = int(np.nanargmax(full))
    main = holder(result)
    main_row = d.table[result.row(main)]
    before = ("" if result.untrained is None or not result.trained_steps else
              f" (untrained: {_pct(result.untrained[best])})")
    text = (f"{trained}, a fact seen once is recalled {_pct(full[best])} of the time "
            f"{d.delays[best]} tokens later{before} and {_pct(full[-1])} after {d.delays[-1]}; "
            f"silencing {main} drops recall to {_pct(np.nanmean(main_row))} on average, so "
            f"{main} holds these facts. ")
    slow = slowest_level(result)
    i_slow = r.names.index(slow)
    tail = slice(max(0, len(r.gaps) - long_gaps), len(r.gaps))
    span = (f"{r.gaps[tail][0]}–{r.gaps[tail][-1]}" if len(r.gaps[tail]) > 1
            else f"{r.gaps[tail][0]}")
    mean = lambda a: float(np.nanmean(a[tail]))  # noqa: E731
    text += (f"When a mapping returns after {span} tokens, it is recalled "
             f"{_pct(mean(r.held[0]))} before being shown again and "
             f"{_pct(mean(r.relearned[0]))} after one more showing (first time: "
             f"{_pct(mean(r.first_sight[0]))}); with {slow} silenced, "
             f"{_pct(mean(r.relearned[i_slow]))}.")
    return text


__all__ = ["LoopConfig", "MemoryLoopLesson", "LoopResult", "DelayResult", "ReturnResult",
           "Progress", "describe", "slowest_level", "holder", "FULL"]
