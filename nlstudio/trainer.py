"""The Qt-free trainer: the one code path behind the CLI, the GUI, the lessons and the tests.

Given a project it builds the task, the model, the outer optimizer and the device, seeds
everything, and steps. It publishes events (``nlstudio.events``) to subscribers and obeys
``pause()``, ``resume()`` and ``stop()`` (thread-safe) at step boundaries::

    trainer = Trainer(project, out="runs/x", steps=200, on_event=print)
    result = trainer.run()          # blocking; call stop() from another thread to end early

Every logging interval it writes a metrics row, then (at evaluation steps) the evaluation
rows, then one atomic checkpoint that counts those rows (``nlstudio.runs.checkpoint``). A
resume restores weights, optimizer, RNG and counters from the newest checkpoint and cuts the
CSVs back to the rows it counted, so the rows that follow are those of an uninterrupted run.
A NaN/inf loss or gradient stops the run before the bad step is applied, with a clear
message; the run folder keeps everything up to the last good step and stays resumable.
"""
from __future__ import annotations

import math
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from nlstudio import distributed, evaluation, probes
from nlstudio import events as ev
from nlstudio.build import build_model, build_task, check_resources
from nlstudio.cuda_graphs import GraphedStep
from nlstudio.evaluation import measure_recall  # re-exported: part of this module's API
from nlstudio.printable import printable
from nlstudio.project import ProjectError, load_project, project_to_dict
from nlstudio.run_state import EndReason, RunState
from nlstudio.runs import (ERROR_LOG, PROJECT_FILE, STATUS_FILE, LevelMetrics, RunError, RunWriter,
                           StepMetrics, check_rows, default_run_dir, is_live, latest_checkpoint,
                           load_weights_into, new_run_folder_problem, read_status)
from nlstudio.threads import denormals_flushed
from nlstudio.training_setup import (TrainError, as_project, device_name, make_outer_optimizer,
                                     project_text, resolve_device, with_train)
from nlstudio.training_state import (StepClock, capture_rng, dedupe_shared, mean_nonzero,
                                     restore_optimizer, restore_rng)
from nlstudio.untrusted import FileRefused

__all__ = ["Trainer", "RunResult", "TrainError", "train", "resolve_device", "device_name",
           "make_outer_optimizer", "measure_recall"]

EventCallback = Callable[[ev.Event], None]


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    step: int
    reason: EndReason
    loss: float
    message: str = ""
    invalid: bool = False  # failed on an invalid input file (a damaged checkpoint): exit 2


@dataclass
class _LoopState:
    """What the loop carries from step to step (and a checkpoint saves)."""

    step: int
    clock: StepClock
    updates: dict[str, int]
    tokens_per_s: float = 0.0
    loss: float = math.nan
    checkpointed: int = -1  # the step of the last checkpoint written by this run


class Trainer:
    def __init__(self, project=None, *, out: str | os.PathLike | None = None,
                 steps: int | None = None, device: str | None = None, seed: int | None = None,
                 resume: str | os.PathLike | None = None, on_event: EventCallback | None = None,
                 snapshots: bool = True, snapshot_interval_s: float = 1 / 30,
                 evaluate: bool = True, base_dir: str | os.PathLike | None = None,
                 runs_root: str | os.PathLike = "runs"):
        self.run_id = uuid.uuid4().hex[:12]
        self._subscribers: list[EventCallback] = [on_event] if on_event else []
        self._resume_event = threading.Event()
        self._resume_event.set()
        self._stop_event = threading.Event()
        self.state = RunState.IDLE
        self.dist = distributed.context()
        self.snapshots = snapshots
        self.snapshot_interval_s = snapshot_interval_s
        self.evaluate_enabled = evaluate
        self._last_snapshot = -math.inf
        self._doc: dict | None = None
        self.resume_dir = Path(resume) if resume is not None else None
        if self.resume_dir is not None:
            self._open_resume(base_dir)
        else:
            self._open_new(project, base_dir, out, runs_root)
        self.project = with_train(self.project, seed=seed,
                                   device=device if device in ("auto", "cpu", "cuda") else None)
        if self.resume_dir is None:
            self._project_text = project_text(self.project)  # before any folder is made
        self.train_cfg = self.project.train
        self._set_steps(steps)
        self.device = self.dist.device if self.dist.enabled else resolve_device(
            device or self.train_cfg.device)
        self.task = build_task(self.project, self.base_dir, self.total_steps)
        # refuse a model too big for this machine before anything is allocated
        check_resources(self.project, task=self.task)

    # -- opening ----------------------------------------------------------------------------
    def _open_new(self, project, base_dir, out, runs_root) -> None:
        if project is None:
            raise TrainError("nothing to train: give a project or a run folder to resume")
        self.project, project_dir = as_project(project)
        self.base_dir = Path(base_dir) if base_dir else project_dir
        self._ckpt = None  # a new run starts from step 0
        self.run_dir = Path(out) if out is not None else default_run_dir(self.project.name,
                                                                         runs_root)
        problem = new_run_folder_problem(self.run_dir) if self.dist.is_main else None
        if problem:  # (only the writing rank looks: the others never write)
            raise TrainError(f"{self.run_dir}: {problem}")

    def _set_steps(self, steps: int | None) -> None:
        """The run's last step, and the one it starts from (its checkpoint's, once the
        checkpoint's rows are checked against the CSVs)."""
        self.total_steps = int(steps if steps is not None else self.train_cfg.steps)
        if self.total_steps < 1:
            raise TrainError(f"steps must be a positive integer, got {self.total_steps}")
        if self._ckpt is not None and not self._ckpt.legacy:  # before anything trusts it
            check_rows(self.run_dir, self._ckpt, self.train_cfg.log_every)
        self.start_step = self.step = self._ckpt.step if self._ckpt else 0
        if self.total_steps < self.start_step:
            raise TrainError(f"{self.run_dir}: its checkpoint is at step {self.start_step}; "
                             f"--steps {self.total_steps} would go back (give more steps)")

    def _open_resume(self, base_dir) -> None:
        folder = self.run_dir = self.resume_dir
        if not os.path.lexists(folder / PROJECT_FILE):
            raise TrainError(f"{folder}: not a run folder (no {PROJECT_FILE}) to resume")
        if self.dist.is_main and is_live(folder):
            raise TrainError(f"{folder}: this run is still being written by another process "
                             f"(pid {read_status(folder).get('pid')}); stop it before resuming")
        self.project = load_project(folder / PROJECT_FILE)
        self._ckpt = latest_checkpoint(folder)  # RunError if damaged: nothing is changed
        saved = self._ckpt.base_dir if self._ckpt else ""
        self.base_dir = (Path(base_dir) if base_dir else
                         Path(saved) if saved and Path(saved).is_absolute() else None)

    @property
    def doc(self) -> dict:
        """The project as a plain dict (what the GUI reads level specs from)."""
        if self._doc is None:
            self._doc = project_to_dict(self.project)
        return self._doc

    # -- control (thread-safe) ------------------------------------------------------------
    def subscribe(self, callback: EventCallback) -> None:
        self._subscribers.append(callback)

    def pause(self) -> None:
        if self.state == RunState.RUNNING:
            self._resume_event.clear()

    def resume(self) -> None:
        self._resume_event.set()

    def stop(self) -> None:
        self._stop_event.set()
        self._resume_event.set()

    @property
    def paused(self) -> bool:
        return not self._resume_event.is_set()

    def _publish(self, event: ev.Event) -> None:
        if not self.dist.is_main:
            return
        for callback in list(self._subscribers):
            callback(event)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> RunResult:
        # subnormals flushed in the thread that trains, whoever started it, for this run only
        # (nlstudio/threads.py)
        with denormals_flushed():
            return self._run()

    def _run(self) -> RunResult:
        self.state = RunState.RUNNING
        writer = None
        loop = None
        reason, message, invalid = EndReason.FAILED, "", False
        try:
            self._build()
            writer = self._open_writer()
            loop = self._new_loop_state()
            self._publish(ev.Started(self.run_id, str(self.run_dir), str(self.device),
                                     device_name(self.device), self.start_step,
                                     self.total_steps, tuple(self.level_ids)))
            if self._ckpt is None:  # step 0 is resumable from the start
                self._checkpoint(writer, loop)
            reason, message = self._loop(writer, loop)
        except (RunError, ProjectError, FileRefused) as exc:  # an input file: one line
            reason, message, invalid = EndReason.FAILED, str(exc), True
        except Exception as exc:  # reported as an event; the run folder stays valid
            reason, message = EndReason.FAILED, f"{type(exc).__name__}: {exc}"
            if writer is not None:
                _try(lambda: (self.run_dir / ERROR_LOG).write_text(traceback.format_exc(),
                                                                   encoding="utf-8"))
        finally:
            self.dist.barrier()
        step = loop.step if loop is not None else self.start_step
        message = printable(message, 1000)
        if writer is not None:
            if self.dist.is_main:
                try:
                    writer.set_status(reason.final_state, step, self.total_steps, message)
                except OSError as exc:
                    # A run whose end cannot be recorded did not end cleanly: status.json
                    # still says "running" (a dead pid: shown as interrupted, resumable).
                    if reason != EndReason.FAILED:
                        reason = EndReason.FAILED
                        message = printable(f"{STATUS_FILE}: the run reached step {step} but "
                                            f"its end could not be recorded: {exc}", 1000)
            writer.close()
        self.state = reason.final_state
        if reason == EndReason.FAILED:
            self._publish(ev.Failed(self.run_id, step, message, str(self.run_dir)))
        else:
            self._publish(ev.Finished(self.run_id, step, reason, str(self.run_dir)))
        return RunResult(self.run_id, self.run_dir, step, reason,
                         loop.loss if loop is not None else math.nan, message, invalid)

    def _build(self) -> None:
        """Model, optimizer and step function; on a resume, the checkpoint's state."""
        torch.manual_seed(self.train_cfg.seed)
        model = build_model(self.project, self.task)
        state = None
        if self._ckpt is not None:
            load_weights_into(model, self._ckpt.weights)
            state = self._ckpt.load_state()
        model.to(self.device)
        self.model = model
        self.train_model = self.dist.wrap(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_outer_optimizer(self.project, self.params)
        if state is not None:
            restore_optimizer(self.optimizer, state["optimizer"], self._ckpt.state_path)
            restore_rng(state.get("rng") or {}, self._ckpt.state_path)
        self.level_specs = {lvl["id"]: lvl for lvl in self.doc["model"]["levels"]}
        self.level_ids = list(getattr(model, "order", self.level_specs))
        self.dist.check_batch(self.train_cfg.batch_size)
        # forward + loss + backward: replayed as a CUDA graph on a single GPU, else eager
        self.forward_backward = GraphedStep(
            self.train_model, self.task.loss, self.params,
            graphs=(self.device.type == "cuda" and not self.dist.enabled
                    and self.train_cfg.cuda_graphs), precision=self.train_cfg.precision)

    @property
    def cuda_graphs_note(self) -> str:
        """How the steps ran on a GPU ("" on the CPU, or before the first step)."""
        step = getattr(self, "forward_backward", None)
        return step.note if step is not None else ""

    def _open_writer(self):
        if not self.dist.is_main:
            return _NullWriter()
        if self.resume_dir is not None:
            writer = RunWriter(self.run_dir, self.level_ids, resume_from=self._ckpt,
                               log_every=self.train_cfg.log_every)
        else:
            writer = RunWriter(self.run_dir, self.level_ids, project_text=self._project_text)
        try:
            writer.set_status(RunState.RUNNING, self.start_step, self.total_steps)
        except BaseException:
            writer.close()
            raise
        return writer

    def _new_loop_state(self) -> _LoopState:
        ckpt = self._ckpt
        updates = {lid: 0 for lid in self.level_ids}
        if ckpt is not None:
            updates.update(ckpt.updates)
        return _LoopState(step=self.start_step, clock=StepClock(ckpt.wall_s if ckpt else 0.0),
                          updates=updates, tokens_per_s=ckpt.tokens_per_s if ckpt else 0.0,
                          checkpointed=self.start_step if ckpt else -1)

    def _loop(self, writer, loop: _LoopState) -> tuple[EndReason, str]:
        while loop.step < self.total_steps:
            self._wait_while_paused(writer, loop)
            if self.dist.any(self._stop_event.is_set()):
                self._final_checkpoint(writer, loop)
                return EndReason.STOPPED, ""
            boundary_rng = capture_rng()
            failure = self._train_step(loop)
            if failure:  # nothing of the refused step was applied: checkpoint its boundary
                self._final_checkpoint(writer, loop, rng=boundary_rng)
                return EndReason.FAILED, failure
            self._after_step(writer, loop)
        self._final_checkpoint(writer, loop)
        return EndReason.COMPLETED, ""

    def _wait_while_paused(self, writer, loop: _LoopState) -> None:
        if self._resume_event.is_set():
            return
        if self.dist.is_main:
            writer.set_status(RunState.PAUSED, loop.step, self.total_steps)
        self.state = RunState.PAUSED
        self._publish(ev.StateChanged(self.run_id, loop.step, RunState.PAUSED))
        with loop.clock.paused():  # paused time is not training time
            self._resume_event.wait()
        self.state = RunState.RUNNING
        if not self._stop_event.is_set():
            if self.dist.is_main:
                writer.set_status(RunState.RUNNING, loop.step, self.total_steps)
            self._publish(ev.StateChanged(self.run_id, loop.step, RunState.RUNNING))

    def _train_step(self, loop: _LoopState) -> str:
        """One optimizer step; returns why it was refused ("" if it was applied)."""
        step = loop.step
        t0 = time.perf_counter()
        batch = self.task.batch(step, self.train_cfg.batch_size)
        batch = self.dist.shard(batch).to(self.device)
        self._set_lr(step)
        self.train_model.train()
        logits, state, loss = self.forward_backward(batch.inputs, batch.targets)
        loss_value = self.dist.mean(float(loss.detach()))
        if not math.isfinite(loss_value):  # before the update: the weights stay good
            return self._diverged("loss", loss_value, step)
        clip = self.train_cfg.grad_clip or math.inf
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if not math.isfinite(gnorm):
            return self._diverged("gradient norm", gnorm, step)
        self.optimizer.step()
        loop.step = self.step = step + 1
        loop.loss = loss_value
        step_tps = self.train_cfg.batch_size * self.train_cfg.seq_len / max(
            time.perf_counter() - t0, 1e-9)
        loop.tokens_per_s = step_tps if loop.tokens_per_s == 0.0 else (
            0.9 * loop.tokens_per_s + 0.1 * step_tps)
        self._last = (logits.detach(), state, batch)
        return ""

    def _after_step(self, writer, loop: _LoopState) -> None:
        """Progress and snapshot events; at logging steps a metrics row and a checkpoint, at
        evaluation steps the evaluation rows (before the checkpoint that counts them)."""
        step = loop.step
        logits, state, batch = self._last
        self._last = None
        metric = self.dist.mean(self.task.metric(logits, batch.metric_targets))
        probe = self.model.probe(state)
        for lid, p in probe.items():
            loop.updates[lid] = loop.updates.get(lid, 0) + int(p.updates)
        elapsed = loop.clock.elapsed()
        done = step - self.start_step
        eta = elapsed / done * (self.total_steps - step) if done else math.nan
        self._publish(ev.Progress(self.run_id, step, self.total_steps, loop.loss, metric,
                                  loop.tokens_per_s, elapsed, eta, self.task.phase(step - 1)))
        now = time.perf_counter()
        if self.snapshots and now - self._last_snapshot >= self.snapshot_interval_s:
            self._last_snapshot = now
            self._publish(ev.Snapshot(self.run_id, step, probes.level_snapshots(
                self.model, state, self.level_specs)))
        last = step == self.total_steps
        log = step % self.train_cfg.log_every == 0 or last
        if log:
            row = StepMetrics(step, loop.clock.total(), loop.loss, metric, loop.tokens_per_s, {
                lid: LevelMetrics(loop.updates.get(lid, 0), mean_nonzero(
                    probe[lid].write_norms if lid in probe else None))
                for lid in self.level_ids})
            if self.dist.is_main:
                writer.write_metrics(row)
            self._publish(ev.MetricsRow(self.run_id, row.as_dict()))
        if self.evaluate_enabled and (step % self.train_cfg.eval_every == 0 or last):
            self._evaluate(writer, step)
        if log:
            self._checkpoint(writer, loop)
            if self.dist.is_main:
                writer.set_status(RunState.RUNNING, step, self.total_steps)

    def _set_lr(self, step: int) -> None:
        warmup = self.train_cfg.warmup
        if warmup <= 0:
            return
        scale = min(1.0, (step + 1) / warmup)
        for group in self.optimizer.param_groups:  # every group has the project's rate
            group["lr"] = self.train_cfg.optimizer.lr * scale

    def _diverged(self, what: str, value: float, step: int) -> str:
        return (f"training diverged: the {what} became {value} at step {step + 1}; the run "
                f"stopped before applying it and keeps everything up to step {step} "
                "(lower the learning rate or the inner optimizers' eta)")

    def _final_checkpoint(self, writer, loop: _LoopState, rng: dict | None = None) -> None:
        if loop.checkpointed != loop.step:
            self._checkpoint(writer, loop, rng)

    def _checkpoint(self, writer, loop: _LoopState, rng: dict | None = None) -> None:
        """The checkpoint of the current step boundary (``rng``: the RNG state there, when
        it is no longer the current one)."""
        loop.checkpointed = loop.step
        if not self.dist.is_main:
            return
        weights = {k: v.detach().to("cpu").contiguous()
                   for k, v in self.model.state_dict().items()}
        writer.save_checkpoint(
            loop.step, weights=dedupe_shared(weights), optimizer=self.optimizer.state_dict(),
            rng=rng if rng is not None else capture_rng(), info={"world_size": self.dist.world_size, "wall_s": loop.clock.total(),
                                "tokens_per_s": loop.tokens_per_s, "updates": loop.updates,
                                "base_dir": str(self.base_dir.resolve()) if self.base_dir
                                else ""})

    def _evaluate(self, writer, step: int) -> None:
        if not self.dist.is_main:
            return
        self.model.eval()
        event = evaluation.evaluate(self.run_id, self.task, self.model, self.device,
                                    self.level_ids, step)
        self.model.train()
        writer.write_eval(step, event.rows, event.delays, event.ablations)
        self._publish(event)


def _try(action) -> None:
    """Best effort (a status or error log on a full disk): the run's own error is reported."""
    try:
        action()
    except OSError:
        pass


class _NullWriter:
    """What non-zero ranks write: nothing."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def train(project=None, *, out=None, steps=None, on_event: EventCallback | None = None,
          **kwargs) -> RunResult:
    """Train a project (path, dict or Project) and return when done (see :class:`Trainer`)."""
    return Trainer(project, out=out, steps=steps, on_event=on_event, **kwargs).run()
