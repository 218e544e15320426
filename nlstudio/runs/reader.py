"""Reading a run folder back: its project, rows, status, checkpoint and weights.

A damaged folder opens with whatever can be read (rows that do not parse are skipped and
counted, a damaged status reads as {}, a damaged checkpoint as ``checkpoint_error``); only a
folder whose project cannot be read is refused. Building its model runs the resource check
first, and weights are read only from a regular file no larger than the model they must fit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlstudio.build import build_model, build_task, check_resources
from nlstudio.project import load_project
from nlstudio.runs.checkpoint import Checkpoint, latest_checkpoint
from nlstudio.runs.follower import RunFollower
from nlstudio.runs.layout import MODEL_FILE, PROJECT_FILE, RunError
from nlstudio.runs.rows import DelayRow, EvalRecord, StepMetrics
from nlstudio.runs.weights import load_weights_into, weights_step  # noqa: F401 (re-exported)


@dataclass
class Run:
    path: Path
    project: object  # nlstudio.schema.Project
    metrics: dict[str, np.ndarray]  # metrics.csv as columns
    eval_rows: list[EvalRecord]
    delay_rows: list[DelayRow]
    status: dict = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    checkpoint_error: str = ""  # why the newest checkpoint cannot be used ("" if it can)
    skipped_rows: dict[str, int] = field(default_factory=dict)  # per file: rows not parsed

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoint_step(self) -> int | None:
        return self.checkpoint.step if self.checkpoint is not None else None

    @property
    def base_dir(self) -> Path | None:
        """The folder the trained project's relative paths (a charlm text_file) resolve
        against: recorded in the checkpoint, since the project copy lives in the run."""
        saved = self.checkpoint.base_dir if self.checkpoint is not None else ""
        return Path(saved) if saved and Path(saved).is_absolute() else None

    @property
    def steps(self) -> int:
        s = self.metrics.get("step")
        return int(s[-1]) if s is not None and len(s) else 0

    @property
    def rows(self) -> list[StepMetrics]:
        table = self._table
        return [table.row(i) for i in range(table.n)] if table is not None else []

    _table: object = field(default=None, repr=False)

    @property
    def weights_file(self) -> Path:
        """The checkpoint's weights, or (an exported folder) the top-level model.safetensors."""
        return self.checkpoint.weights if self.checkpoint is not None else self.path / MODEL_FILE

    def build_model(self, device: str = "cpu"):
        """The run's model and task, after the resource check (ProjectError if the project's
        model cannot fit this machine), weights not loaded."""
        task = build_task(self.project, self.base_dir)
        check_resources(self.project, task=task)
        return build_model(self.project, task).to(device), task

    def load_model(self, device: str = "cpu"):
        """The trained model: rebuilt from project.nlproj, the weights of its checkpoint."""
        model, _ = self.build_model()
        load_weights_into(model, self.weights_file)
        return model.to(device)


def load_run(path: str | os.PathLike) -> Run:
    """A run folder read back: project, metrics columns, eval and delay rows, status."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(path, "not a run folder")
    if not (path / PROJECT_FILE).exists():
        raise RunError(path, f"not a run folder (no {PROJECT_FILE})")
    project = load_project(path / PROJECT_FILE)
    follower = RunFollower(path)
    update = follower.poll()
    checkpoint, error = None, ""
    try:
        checkpoint = latest_checkpoint(path)
    except RunError as exc:
        error = str(exc)
    return Run(path=path, project=project, metrics=follower.metrics_columns(),
               eval_rows=update.eval_rows, delay_rows=update.delay_rows,
               status=update.status or {}, checkpoint=checkpoint, checkpoint_error=error,
               skipped_rows=follower.skipped, _table=follower.table)


def read_checkpoint(run_dir: str | os.PathLike) -> Checkpoint:
    """The run's newest checkpoint, validated; RunError if it has none or it is damaged."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise RunError(run_dir, "no checkpoint saved yet")
    return ckpt
