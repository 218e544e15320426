"""A run folder in the plots: open one (and follow it live while another process writes it),
and compute the memory snapshot of a finished run from its saved weights.

    view = RunView(path, plots)        # raises RunError / ProjectError for a bad folder
    view.open()                        # every CSV into the plots; follows if the run is live
    view.statusChanged.connect(...)    # status.json of the run, whenever it changes
    view.snapshotReady.connect(...)    # a Snapshot computed from model.safetensors (one batch)

Comparing runs: ``widgets/compare_runs.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from nlstudio import events as ev
from nlstudio.graph import levels_in_order
from nlstudio.probes import snapshot_from_run
from nlstudio.project import load_project, project_to_dict
from nlstudio.runs import (MODEL_FILE, PROJECT_FILE, RunError, RunFollower, RunUpdate,
                           is_run_dir)
from nlstudio.tasks import get_task
from nlstudio.widgets.plots.dock import PlotSet
from nlstudio.widgets.worker import FunctionJob

FOLLOW_INTERVAL_MS = 500  # ≈2 Hz
SNAPSHOT_BATCH = 8  # sequences in the one forward pass of an opened run's snapshot


def level_order(project_doc: dict, metric_header: list[str]) -> list[dict]:
    """The project's levels in the model's order (the order of metrics.csv's level columns,
    which the trainer writes in model order), else topological order."""
    levels = {str(lv["id"]): lv for lv in project_doc["model"]["levels"]}
    order = [c[: -len(".updates")] for c in metric_header if c.endswith(".updates")]
    order = [lid for lid in order if lid in levels]
    if not order:
        return levels_in_order(project_doc["model"])
    return [levels[lid] for lid in order] + [lv for lid, lv in levels.items()
                                             if lid not in order]


def metric_name_of(project_doc: dict) -> str:
    try:
        return str(get_task(project_doc["task"]["name"]).metric_name)
    except (KeyError, AttributeError):
        return "metric"


class RunView(QObject):
    """An opened run folder, shown in a :class:`PlotSet`."""

    statusChanged = Signal(dict)
    followingChanged = Signal(bool)
    snapshotReady = Signal(object)  # ev.Snapshot
    snapshotFailed = Signal(str)

    def __init__(self, path: str | os.PathLike, plots: PlotSet, parent: QObject | None = None,
                 poll_ms: int = FOLLOW_INTERVAL_MS) -> None:
        super().__init__(parent)
        self.setObjectName("runView")
        self.path = Path(path)
        if not is_run_dir(self.path):
            raise RunError(f"{self.path}: not a run folder (no {PROJECT_FILE})")
        self.plots = plots
        self.follower = RunFollower(self.path)
        self.doc: dict = {}
        self.eval_rows: list = []
        self.delay_rows: list = []
        self.status: dict = {}
        self.following = False
        self.job: FunctionJob | None = None
        self.snapshot: ev.Snapshot | None = None
        self._timer = QTimer(self)
        self._timer.setObjectName("runFollowTimer")
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def name(self) -> str:
        return self.path.name

    def open(self, compute_snapshot: bool = True) -> None:
        self.doc = project_to_dict(load_project(self.path / PROJECT_FILE))
        first = self.follower.poll()
        levels = level_order(self.doc, self.follower.metric_header)
        self.plots.start(levels, label=self.name)
        metric = metric_name_of(self.doc)
        self.plots.loss.set_metric_name(metric)
        self.plots.forgetting.set_metric_name(metric)
        self.plots.loss.set_columns(self.follower.metrics_columns())
        self._take(first, initial=True)
        if self.follower.is_live():
            self.following = True
            self._timer.start()
            self.followingChanged.emit(True)
            for dock in (self.plots.matrices, self.plots.spectrum):
                dock.set_message("Following a run written by another process: the memory "
                                 "snapshot is computed from its weights when it ends.")
        elif compute_snapshot:
            self.compute_snapshot()

    def poll(self) -> RunUpdate:
        """New rows since the last poll into the plots; stops following once the writer ends."""
        update = self.follower.poll()
        self._take(update)
        if self.following and not self.follower.is_live():
            self._take(self.follower.poll())
            self.stop_following()
            self.compute_snapshot()
        return update

    def _take(self, update: RunUpdate, initial: bool = False) -> None:
        if update.reset:  # the writer truncated its files (a resume): redraw from scratch
            self.eval_rows, self.delay_rows = [], []
            self.plots.loss.set_columns(self.follower.metrics_columns())
        elif update.metrics_rows and not initial:
            self.plots.loss.append_rows(update.metrics_rows)
        if update.eval_rows or update.delay_rows or initial:
            self.eval_rows += update.eval_rows
            self.delay_rows += update.delay_rows
            self.plots.forgetting.set_rows(self.eval_rows, self.delay_rows)
            self.plots.ablation.set_delay_rows(self.delay_rows)
        if update.status is not None:
            self.status = update.status
            self.statusChanged.emit(dict(update.status))

    def stop_following(self) -> None:
        self._timer.stop()
        if self.following:
            self.following = False
            self.followingChanged.emit(False)

    def compute_snapshot(self) -> bool:
        """One forward pass on the saved weights, in a background thread."""
        if not (self.path / MODEL_FILE).is_file() or self.job is not None:
            if not (self.path / MODEL_FILE).is_file():
                for dock in (self.plots.matrices, self.plots.spectrum):
                    dock.set_message("No live snapshot: this run has no saved weights yet.")
            return False
        for dock in (self.plots.matrices, self.plots.spectrum):
            dock.set_message("Computing the memory snapshot from the saved weights…")
        path = self.path
        self.job = FunctionJob(lambda: snapshot_from_run(path, SNAPSHOT_BATCH), self,
                               name="snapshot")
        self.job.finished.connect(self._on_snapshot)
        self.job.start()
        return True

    def _on_snapshot(self, result, error) -> None:
        if error or result is None:
            for dock in (self.plots.matrices, self.plots.spectrum):
                dock.set_message(f"No live snapshot for a finished run (computing one from the "
                                 f"saved weights failed: {error}).")
            self.snapshotFailed.emit(str(error))
            return
        self.snapshot = result
        self.plots.matrices.show_snapshot(result)
        self.plots.spectrum.show_snapshot(result)
        self.plots.matrices.set_message(f"From the saved weights (step {result.step}), one "
                                        "batch: this run is not live.")
        self.snapshotReady.emit(result)

    def close(self) -> None:
        """Stop following and join the snapshot thread."""
        self.stop_following()
        if self.job is not None:
            self.job.wait()
