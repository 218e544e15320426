"""Comparing runs: other run folders' curves overlaid on the loss, metric and forgetting plots,
each in its own line style with a legend entry that names it.

    compare = CompareRuns(plots)
    compare.add(path)                  # raises RunError / ProjectError for a bad folder
    compare.clear()
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from nlstudio.catalog import kind_info
from nlstudio.project import project_to_dict
from nlstudio.runs import METRICS_FILE, RunError, load_run
from nlstudio.widgets.messages import user_message
from nlstudio.widgets.plots.dock import PlotSet


def writes_in_context(level: dict) -> bool:
    """Whether a level's memory is written while it reads (its inner optimizer acts): a
    parametric kind with a period. A frozen level (period null) keeps an optimizer setting
    that never runs; attention has none."""
    try:
        parametric = kind_info(str(level.get("kind", ""))).parametric
    except KeyError:
        return False
    return parametric and level.get("period") is not None


def run_label(name: str, project_doc: dict) -> str:
    """The run folder's name, with the inner optimizers its levels actually use in context
    (what runs are usually compared on), e.g. ``nsam-1 (dgd/sgd)``; a Transformer, whose
    levels never write in context, is named by its folder alone."""
    opts = sorted({str((lv.get("optimizer") or {}).get("name", ""))
                   for lv in project_doc["model"]["levels"]
                   if lv.get("optimizer") and writes_in_context(lv)} - {""})
    return f"{name} ({'/'.join(opts)})" if opts else name


class CompareRuns(QObject):
    """Other runs overlaid on the loss, metric and forgetting plots."""

    changed = Signal(list)  # the compared run folders

    def __init__(self, plots: PlotSet, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("compareRuns")
        self.plots = plots
        self.paths: list[Path] = []

    def add(self, path: str | os.PathLike) -> str:
        """Adds (or refreshes) one run; returns its label. Raises RunError/ProjectError."""
        path = Path(path)
        run = load_run(path)
        if not (path / METRICS_FILE).exists():
            raise RunError(f"{path}: no {METRICS_FILE}: nothing to compare yet")
        label = run_label(run.name, project_to_dict(run.project))
        key = str(path.resolve())
        self.plots.loss.set_overlay(key, label, run.metrics)
        self.plots.forgetting.set_overlay(key, label, run.eval_rows, run.delay_rows)
        if path.resolve() not in [p.resolve() for p in self.paths]:
            self.paths.append(path)
        self.changed.emit(list(self.paths))
        return label

    def add_all(self, paths) -> tuple[list[str], list[str]]:
        """Every folder that can be added: (labels added, one message per folder refused)."""
        added, problems = [], []
        for path in paths:
            try:
                added.append(self.add(path))
            except Exception as exc:  # noqa: BLE001 - each folder gets its one-line message
                problems.append(user_message(exc))
        return added, problems

    def clear(self) -> None:
        self.paths.clear()
        self.plots.loss.remove_overlays()
        self.plots.forgetting.remove_overlays()
        self.changed.emit([])
