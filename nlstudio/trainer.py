"""The Qt-free trainer: the one code path behind the CLI, the GUI and the tests.

Given a project it builds the task, the model, the outer optimizer and the device, seeds
everything, and steps. It publishes events (``nlstudio.events``) to subscribers and obeys
``pause()``, ``resume()`` and ``stop()`` (thread-safe) at step boundaries::

    trainer = Trainer(project, out="runs/x", steps=200, on_event=print)
    result = trainer.run()          # blocking; call stop() from another thread to end early

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

from nlstudio import events as ev
from nlstudio import probes
from nlstudio.runs import RunWriter, default_run_dir, read_checkpoint

EventCallback = Callable[[ev.Event], None]


class TrainError(RuntimeError):
    """A run that cannot start (bad device, nothing to resume); the message says why."""


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    step: int
    reason: str  # "completed" | "stopped" | "failed"
    loss: float
    message: str = ""


def resolve_device(name: str | None) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("device 'cuda' was asked for, but no CUDA GPU is available "
                         "(use --device cpu or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise TrainError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def _project_doc(project) -> tuple[dict, Path | None]:
    """A validated project as a plain dict, and the folder relative paths resolve against."""
    from nlstudio.project import load_project, parse_project, project_to_dict

    if isinstance(project, (str, os.PathLike)):
        path = Path(project)
        return project_to_dict(load_project(path)), path.resolve().parent
    if isinstance(project, dict):
        return project_to_dict(parse_project(project)), None
    return project_to_dict(project), None


def make_outer_optimizer(doc: dict, params) -> torch.optim.Optimizer:
    spec = dict(doc["train"].get("optimizer") or {})
    name = spec.get("name", "adamw")
    lr = float(spec.get("lr", 1e-3))
    wd = float(spec.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd,
                               momentum=float(spec.get("momentum", 0.9)))
    raise TrainError(f"unknown outer optimizer {name!r}")


class Trainer:
    def __init__(self, project=None, *, out: str | os.PathLike | None = None,
                 steps: int | None = None, device: str | None = None, seed: int | None = None,
                 resume: str | os.PathLike | None = None, on_event: EventCallback | None = None,
                 snapshots: bool = True, snapshot_interval_s: float = 1 / 30,
                 evaluate: bool = True, base_dir: str | os.PathLike | None = None,
                 runs_root: str | os.PathLike = "runs"):
        from nlstudio import distributed

        self.run_id = uuid.uuid4().hex[:12]
        self._subscribers: list[EventCallback] = [on_event] if on_event else []
        self._resume_event = threading.Event()
        self._resume_event.set()
        self._stop_event = threading.Event()
        self.state = "idle"
        self.step = 0
        self.dist = distributed.context()

        self.resume_dir = Path(resume) if resume is not None else None
        ckpt = None
        if self.resume_dir is not None:
            from nlstudio.runs import PROJECT_FILE

            from nlstudio.runs import RunFollower, read_status

            if RunFollower(self.resume_dir).is_live():
                pid = read_status(self.resume_dir).get("pid")
                raise TrainError(f"{self.resume_dir}: this run is still being written by "
                                 f"another process (pid {pid}); stop it before resuming")
            ckpt = read_checkpoint(self.resume_dir)
            doc, _ = _project_doc(self.resume_dir / PROJECT_FILE)
            extra = ckpt.get("extra") or {}
            saved_base = extra.get("base_dir")
            self.base_dir = Path(base_dir) if base_dir else (Path(saved_base) if saved_base else None)
        else:
            if project is None:
                raise TrainError("nothing to train: give a project or a run folder to resume")
            doc, project_dir = _project_doc(project)
            self.base_dir = Path(base_dir) if base_dir else project_dir
        if seed is not None:
            doc["train"]["seed"] = int(seed)
        if device is not None:
            doc["train"]["device"] = device
        self.doc = doc
        self.train_cfg = doc["train"]
        self.total_steps = int(steps if steps is not None else self.train_cfg["steps"])
        if self.total_steps < 1:
            raise TrainError(f"steps must be a positive integer, got {self.total_steps}")
        self.start_step = self.step = int(ckpt["step"]) if ckpt else 0
        self._ckpt = ckpt
        self.device = self.dist.device if self.dist.enabled else resolve_device(
            self.train_cfg.get("device"))
        self.snapshots = snapshots
        self.snapshot_interval_s = snapshot_interval_s
        self.evaluate_enabled = evaluate
        if self.resume_dir is not None:
            self.run_dir = self.resume_dir
        elif out is not None:
            self.run_dir = Path(out)
        else:
            self.run_dir = default_run_dir(doc.get("name") or "run", runs_root)
        from nlstudio.build import build_task, check_resources

        self.task = build_task(doc, self.base_dir, self.total_steps)
        # refuse a model too big for this machine before anything is allocated
        check_resources(doc, task=self.task)
        if self.resume_dir is None and self.run_dir.exists() and (
                not self.run_dir.is_dir() or any(self.run_dir.iterdir())):
            raise TrainError(f"{self.run_dir}: exists and is not an empty folder "
                             "(choose another --out, or --resume to continue a run there)")

    # -- control (thread-safe) ------------------------------------------------------------
    def subscribe(self, callback: EventCallback) -> None:
        self._subscribers.append(callback)

    def pause(self) -> None:
        if self.state == "running":
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
        self.state = "running"
        writer = None
        step = self.start_step
        last_loss = math.nan
        try:
            self._setup()
            writer = self._open_writer()
            self._writer = writer
            self._publish(ev.Started(self.run_id, str(self.run_dir), str(self.device),
                                     device_name(self.device), self.start_step,
                                     self.total_steps, tuple(self.level_ids)))
            step, last_loss, reason, message = self._loop(writer)
        except Exception as exc:  # reported as an event; the run folder stays valid
            reason, message = "failed", f"{type(exc).__name__}: {exc}"
            step = self.step
            if writer is not None:
                (self.run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        finally:
            self.dist.barrier()
        if writer is not None:
            if self.dist.is_main:
                state = {"completed": "finished"}.get(reason, reason)
                writer.set_status(state, step, self.total_steps, message)
            writer.close()
        self.state = "finished" if reason != "failed" else "failed"
        if reason == "failed":
            self._publish(ev.Failed(self.run_id, step, message, str(self.run_dir)))
        else:
            self._publish(ev.Finished(self.run_id, step, reason, str(self.run_dir)))
        return RunResult(self.run_id, self.run_dir, step, reason, last_loss, message)

    def _setup(self) -> None:
        from nlstudio.build import build_model

        torch.manual_seed(int(self.train_cfg["seed"]))
        model = build_model(self.doc, self.task)
        if self.resume_dir is not None:
            from nlstudio.runs import load_weights_into

            load_weights_into(model, self.resume_dir)
        model.to(self.device)
        self.model = model
        self.train_model = self.dist.wrap(model)
        self.optimizer = make_outer_optimizer(self.doc, [p for p in model.parameters()
                                                         if p.requires_grad])
        if self._ckpt is not None and self._ckpt.get("optimizer"):
            self.optimizer.load_state_dict(self._ckpt["optimizer"])
        self.level_specs = {lvl["id"]: lvl for lvl in self.doc["model"]["levels"]}
        self.level_ids = list(getattr(model, "order", self.level_specs))
        self.batch_size = int(self.train_cfg["batch_size"])
        self.dist.check_batch(self.batch_size)
        self.log_every = max(1, int(self.train_cfg.get("log_every", 10)))
        self.eval_every = max(1, int(self.train_cfg.get("eval_every", 100)))
        self.grad_clip = float(self.train_cfg.get("grad_clip", 1.0) or 0.0)
        self.warmup = int(self.train_cfg.get("warmup", 0) or 0)
        self.base_lr = [g["lr"] for g in self.optimizer.param_groups]
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        from nlstudio.cuda_graphs import GraphedStep

        # forward + loss + backward: replayed as a CUDA graph on a single GPU, else eager
        self.forward_backward = GraphedStep(
            self.train_model, self.task.loss, self.params,
            graphs=(self.device.type == "cuda" and not self.dist.enabled
                    and bool(self.train_cfg.get("cuda_graphs", True))))

    @property
    def cuda_graphs_note(self) -> str:
        """How the steps ran on a GPU ("" on the CPU, or before the first step)."""
        step = getattr(self, "forward_backward", None)
        return step.note if step is not None else ""

    def _open_writer(self) -> RunWriter | None:
        if not self.dist.is_main:
            return _NullWriter()
        writer = RunWriter(self.run_dir, self.doc, self.level_ids,
                           resume_step=self.start_step if self.resume_dir else None)
        writer.set_status("running", self.start_step, self.total_steps)
        return writer

    def _batch(self, step: int):
        # Every rank draws the global batch and keeps its own shard, so N processes see
        # exactly the data of one process with the same global batch and seed.
        batch = self.task.batch(step, self.batch_size)
        return self.dist.shard(batch).to(self.device)

    def _set_lr(self, step: int) -> None:
        if self.warmup <= 0:
            return
        scale = min(1.0, (step + 1) / self.warmup)
        for group, lr in zip(self.optimizer.param_groups, self.base_lr):
            group["lr"] = lr * scale

    def _loop(self, writer) -> tuple[int, float, str, str]:
        model, task, opt = self.train_model, self.task, self.optimizer
        step = self.start_step
        tokens_per_step = self.batch_size * int(self.train_cfg["seq_len"])
        t_start = time.perf_counter()
        wall0 = float(self._ckpt.get("extra", {}).get("wall_s", 0.0)) if self._ckpt else 0.0
        tps = 0.0
        last_snapshot = -math.inf
        loss_value = math.nan
        cumulative_updates = {lid: 0 for lid in self.level_ids}
        if self._ckpt:
            cumulative_updates.update(self._ckpt.get("extra", {}).get("updates", {}))
        reason, message = "completed", ""
        while step < self.total_steps:
            if not self._resume_event.is_set():
                if self.dist.is_main:
                    writer.set_status("paused", step, self.total_steps)
                self.state = "paused"
                self._publish(ev.StateChanged(self.run_id, step, "paused"))
                self._resume_event.wait()
                self.state = "running"
                if not self._stop_event.is_set():
                    if self.dist.is_main:
                        writer.set_status("running", step, self.total_steps)
                    self._publish(ev.StateChanged(self.run_id, step, "running"))
            if self.dist.any(self._stop_event.is_set()):
                reason = "stopped"
                break
            t0 = time.perf_counter()
            batch = self._batch(step)
            self._set_lr(step)
            model.train()
            logits, state, loss = self.forward_backward(batch.inputs, batch.targets)
            loss_value = self.dist.mean(float(loss.detach()))
            if not math.isfinite(loss_value):  # before the update: the weights stay good
                reason, message = "failed", self._diverged("loss", loss_value, step)
                break
            gnorm = torch.nn.utils.clip_grad_norm_(
                self.params, self.grad_clip if self.grad_clip > 0 else float("inf"))
            if not math.isfinite(float(gnorm)):
                reason, message = "failed", self._diverged("gradient norm", float(gnorm), step)
                break
            opt.step()
            step += 1
            self.step = step
            dt = time.perf_counter() - t0
            step_tps = tokens_per_step / max(dt, 1e-9)
            tps = step_tps if tps == 0.0 else 0.9 * tps + 0.1 * step_tps
            metric = self.dist.mean(task.metric(logits.detach(), batch.metric_targets))
            probe = self.model.probe(state)
            for lid, p in probe.items():
                cumulative_updates[lid] = cumulative_updates.get(lid, 0) + int(p.updates)
            elapsed = time.perf_counter() - t_start
            done_here = step - self.start_step
            eta = elapsed / done_here * (self.total_steps - step) if done_here else math.nan
            self._publish(ev.Progress(self.run_id, step, self.total_steps, loss_value, metric,
                                      tps, elapsed, eta, task.phase(step - 1)))
            now = time.perf_counter()
            if self.snapshots and now - last_snapshot >= self.snapshot_interval_s:
                last_snapshot = now
                self._publish(ev.Snapshot(self.run_id, step, probes.level_snapshots(
                    self.model, state, self.level_specs)))
            last = step == self.total_steps
            if step % self.log_every == 0 or last:
                row = {"step": step, "wall_s": wall0 + elapsed, "loss": loss_value,
                       "metric": metric, "tokens_per_s": tps}
                for lid in self.level_ids:
                    p = probe.get(lid)
                    norms = p.write_norms if p is not None else None
                    row[f"{lid}.updates"] = cumulative_updates.get(lid, 0)
                    row[f"{lid}.update_norm"] = _mean_nonzero(norms)
                if self.dist.is_main:
                    writer.write_metrics(row)
                self._publish(ev.MetricsRow(self.run_id, row))
                self._checkpoint(writer, step, wall0 + elapsed, cumulative_updates)
            if self.evaluate_enabled and (step % self.eval_every == 0 or last):
                self._evaluate(writer, step)
            if self.dist.is_main and step % self.log_every == 0:
                writer.set_status("running", step, self.total_steps)
        if reason != "completed" or step % self.log_every != 0:
            elapsed = time.perf_counter() - t_start
            self._checkpoint(writer, step, wall0 + elapsed, cumulative_updates)
        return step, loss_value, reason, message

    def _diverged(self, what: str, value: float, step: int) -> str:
        return (f"training diverged: the {what} became {value} at step {step + 1}; the run "
                f"stopped before applying it and keeps everything up to step {step} "
                "(lower the learning rate or the inner optimizers' eta)")

    def _checkpoint(self, writer, step: int, wall_s: float, updates: dict) -> None:
        if not self.dist.is_main:
            return
        extra = {"wall_s": float(wall_s), "updates": {k: int(v) for k, v in updates.items()},
                 "base_dir": str(self.base_dir) if self.base_dir else ""}
        writer.save_checkpoint(self.model, self.optimizer, step,
                               world_size=self.dist.world_size, extra=extra)

    def _evaluate(self, writer, step: int) -> None:
        if not self.dist.is_main:
            return
        model = self.model
        model.eval()
        rows = [(r.task, float(r.metric))
                for r in self.task.evaluate(model, self.device, step=step)]
        delays, recall = probes.recall_by_delay_with_ablation(
            self.task, model, self.device, self.level_ids)
        model.train()
        writer.write_eval(step, rows, delays, recall)
        self._publish(ev.Evaluation(self.run_id, step, tuple(rows), self.task.metric_name,
                                    tuple(delays), recall))


def _mean_nonzero(norms) -> float:
    if norms is None:
        return 0.0
    nz = norms[norms != 0]
    return float(nz.mean()) if nz.numel() else 0.0


class _NullWriter:
    """What non-zero ranks write: nothing."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def train(project=None, *, out=None, steps=None, on_event: EventCallback | None = None,
          **kwargs) -> RunResult:
    """Train a project (path, dict or Project) and return when done (see :class:`Trainer`)."""
    return Trainer(project, out=out, steps=steps, on_event=on_event, **kwargs).run()
