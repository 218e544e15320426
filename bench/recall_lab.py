"""What the recall benchmarks share: train a project on the CPU, measure recall, cache results.

The benchmarks call the model and the task directly (no Trainer, no run folder), with the
training step the Trainer takes: the project's outer optimizer (AdamW), its gradient clip and
warm-up, the task's batches ``task.batch(step, batch_size)`` (a pure function of the seed and
the step), the task's loss. Measurements are the task's own held-out probes
(``recall_by_delay``, ``evaluate``), optionally with levels frozen or silenced.

Every finished run is one JSON file in a cache folder, named by a hash of everything that
determines it (the project document, the learning rate, seed and steps, the evaluation
schedule, the code version string below): a sweep that is interrupted resumes where it stopped,
and a changed preset is never read from a stale file.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import statistics
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from nlstudio.build import build_model, build_task
from nlstudio.project import load_preset, project_to_dict

#: Bump when the measurement code changes what a cached run would contain.
CODE_VERSION = "recall-lab-1"
RESULTS = Path(__file__).resolve().parent / "results"


# ---- project documents ---------------------------------------------------------------------
def preset_doc(name: str) -> dict:
    return copy.deepcopy(project_to_dict(load_preset(name)))


def with_training(doc: dict, *, lr: float | None = None, seed: int | None = None,
                  steps: int | None = None, batch_size: int | None = None,
                  seq_len: int | None = None) -> dict:
    """A copy of ``doc`` with the given training settings (CPU)."""
    doc = copy.deepcopy(doc)
    train = doc["train"]
    train["device"] = "cpu"
    for key, value in (("seed", seed), ("steps", steps), ("batch_size", batch_size),
                       ("seq_len", seq_len)):
        if value is not None:
            train[key] = int(value)
    if lr is not None:
        train["optimizer"]["lr"] = float(lr)
    return doc


def doc_hash(*parts) -> str:
    text = json.dumps([CODE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- training -------------------------------------------------------------------------------
def outer_optimizer(doc: dict, params) -> torch.optim.Optimizer:
    spec = doc["train"]["optimizer"]
    lr, wd = float(spec.get("lr", 1e-3)), float(spec.get("weight_decay", 0.0))
    name = spec.get("name", "adamw")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(spec.get("momentum", 0)))


def train(doc: dict, *, eval_every: int = 0,
          on_eval: Callable[[int, torch.nn.Module, object], dict] | None = None,
          log: Callable[[str], None] | None = None) -> dict:
    """Trains ``doc`` on the CPU as the Trainer would; returns the model, the task, the train
    curve and seconds spent training (evaluation excluded). ``on_eval(step, model, task)``
    runs every ``eval_every`` steps and at the end; its dicts go into ``curve``."""
    cfg = doc["train"]
    steps, bs = int(cfg["steps"]), int(cfg["batch_size"])
    torch.manual_seed(int(cfg["seed"]))
    task = build_task(doc)
    model = build_model(doc, task)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = outer_optimizer(doc, params)
    clip = float(cfg.get("grad_clip", 1.0) or 0.0)
    warmup = int(cfg.get("warmup", 0) or 0)
    base = [g["lr"] for g in opt.param_groups]
    curve, losses, metrics = [], [], []
    seconds, diverged = 0.0, None
    for step in range(steps):
        t0 = time.perf_counter()
        if warmup > 0:
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * min(1.0, (step + 1) / warmup)
        batch = task.batch(step, bs)
        model.train()
        logits, _ = model(batch.inputs, targets=batch.targets)
        loss = task.loss(logits, batch.targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = f"loss {value} at step {step}"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if not math.isfinite(float(gnorm)):
            diverged = f"gradient norm {float(gnorm)} at step {step}"
            break
        opt.step()
        seconds += time.perf_counter() - t0
        losses.append(value)
        metrics.append(task.metric(logits.detach(), batch.metric_targets))
        done = step + 1
        if on_eval is not None and eval_every and (done % eval_every == 0 or done == steps):
            model.eval()
            row = {"step": done, "loss": statistics.fmean(losses[-eval_every:]),
                   "train_recall": _nanmean(metrics[-eval_every:]), **on_eval(done, model, task)}
            curve.append(row)
            if log:
                log(f"  step {done}: loss {row['loss']:.3f} " + " ".join(
                    f"{k}={_short(v)}" for k, v in row.items() if k not in ("step", "loss")))
    model.eval()
    return {"model": model, "task": task, "curve": curve, "seconds": seconds,
            "diverged": diverged, "steps_done": len(losses),
            "final_loss": statistics.fmean(losses[-20:]) if losses else math.nan}


def _nanmean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.fmean(xs) if xs else math.nan


def _short(v) -> str:
    if isinstance(v, dict):
        return "[" + " ".join(f"{x:.2f}" for x in v.values()) + "]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# ---- measurements ---------------------------------------------------------------------------
def recall(task, model, *, silence=(), freeze=(), repeats: int = 1) -> dict[int, float]:
    """``task.recall_by_delay``; ``repeats`` > 1 averages it over that many independent sets
    of held-out streams (the first is the task's own), for a smaller sampling error."""
    if repeats <= 1:
        return task.recall_by_delay(model, "cpu", silence=silence, freeze=freeze)
    runs = []
    for i in range(repeats):
        if i:
            use_validation_streams(task, salt=10 + i)
        runs.append(task.recall_by_delay(model, "cpu", silence=silence, freeze=freeze))
        if i:
            del task.eval_rng  # back to the class's generator
    return {d: statistics.fmean(r[d] for r in runs) for d in runs[0]}


def forgetting_rows(task, model) -> dict[str, float]:
    return {r.task: r.metric for r in task.evaluate(model, "cpu")}


def memory_levels(model) -> list[str]:
    """Levels that write in context (what ``freeze`` can stop): parametric with a period."""
    return [lid for lid, lvl in model.levels.items()
            if lvl.info.parametric and lvl.compute_chunk is not None]


def ablations(task, model, levels: Iterable[str], repeats: int = 1
              ) -> dict[str, dict[str, dict[int, float]]]:
    """Recall by delay with each level frozen and with each level silenced."""
    return {"freeze": {lid: recall(task, model, freeze=(lid,), repeats=repeats)
                       for lid in levels},
            "silence": {lid: recall(task, model, silence=(lid,), repeats=repeats)
                        for lid in levels}}


def state_floats(model, seq_len: int) -> int:
    """Floats of in-context state one sequence keeps after ``seq_len`` tokens: every level's
    ``state_floats`` plus, for attention (non-parametric), the keys and values it caches
    (2·d_model per cached token: all of them, or the last window − 1)."""
    total = 0
    for lvl in model.levels.values():
        total += lvl.state_floats(1)
        if not lvl.info.parametric:
            window = getattr(lvl, "window", None)
            cached = seq_len if window is None else min(seq_len, window - 1)
            total += 2 * model.d_model * cached
    return total


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def use_validation_streams(task, salt: int = 1) -> None:
    """Held-out streams that differ from the reported ones (for model selection, or for more
    samples): the task's evaluation generator with another first salt, set on the instance
    (nothing else changes; ``del task.eval_rng`` restores it)."""
    from nlstudio.tasks import _util

    name = task.name.encode()

    def eval_rng(*more):
        return np.random.default_rng([_util.EVAL_SALT + salt, zlib.crc32(name), *map(int, more)])
    task.eval_rng = eval_rng


# ---- cache ----------------------------------------------------------------------------------
def cached(folder: Path, key: str) -> dict | None:
    path = folder / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def store(folder: Path, key: str, result: dict) -> dict:
    """Writes ``result`` atomically; returns it as it reads back (JSON: string keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    text = json.dumps(result, indent=1, sort_keys=True)
    tmp.write_text(text)
    os.replace(tmp, folder / f"{key}.json")
    return json.loads(text)


def one_thread() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x == x]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)
