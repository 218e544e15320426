"""The five plot docks as one set: created once, fed from live deliveries or from a run
folder, redrawn by one :class:`RedrawScheduler`, and arranged in a main window so that all of
them are visible at 1280×800."""
from __future__ import annotations

from typing import Iterable

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow

from nlstudio import events as ev
from nlstudio.widgets.plots.ablation import AblationDock
from nlstudio.widgets.plots.base import PlotDock, RedrawScheduler
from nlstudio.widgets.plots.forgetting import ForgettingDock
from nlstudio.widgets.plots.loss import LossDock
from nlstudio.widgets.plots.matrices import MatricesDock
from nlstudio.widgets.plots.spectrum import SpectrumDock


class PlotSet(QObject):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("plotSet")
        self.loss = LossDock()
        self.matrices = MatricesDock()
        self.spectrum = SpectrumDock()
        self.forgetting = ForgettingDock()
        self.ablation = AblationDock()
        self.docks: list[PlotDock] = [self.loss, self.matrices, self.spectrum,
                                      self.forgetting, self.ablation]
        self.scheduler = RedrawScheduler(self.docks, self)
        self.level_order: list[str] = []

    def by_key(self, key: str) -> PlotDock:
        return next(d for d in self.docks if d.key == key)

    # ---- a run starts --------------------------------------------------------------------
    def start(self, levels: list[dict], label: str = "this run") -> None:
        """Forget the previous run; ``levels`` = the project's levels in model order."""
        self.level_order = [str(lv["id"]) for lv in levels]
        self.ablation.level_order = list(self.level_order)
        for dock in self.docks:
            dock.clear()
        self.loss.set_main_label(label)
        self.forgetting.set_main_label(label)
        self.matrices.set_levels(levels)
        self.spectrum.set_levels(levels)

    # ---- live events ---------------------------------------------------------------------
    def apply(self, snapshot: ev.Snapshot | None, events: Iterable) -> None:
        """Route one delivery: the newest snapshot and the rare events, in order."""
        rows = []
        for event in events:
            if isinstance(event, ev.MetricsRow):
                rows.append(event.row)
            elif isinstance(event, ev.Evaluation):
                self._evaluation(event)
        if rows:
            self.loss.append_rows(rows)
        if snapshot is not None:
            self.matrices.show_snapshot(snapshot)
            self.spectrum.show_snapshot(snapshot)

    def _evaluation(self, event: ev.Evaluation) -> None:
        self.loss.set_metric_name(event.metric_name)
        self.forgetting.set_metric_name(event.metric_name)
        full = event.recall.get("") if event.recall else None
        self.forgetting.add_evaluation(event.step, event.rows, event.delays, full)
        if event.delays and full is not None:
            self.ablation.set_evaluation(event)
        self.spectrum.show_content(event.step, event.content)

    # ---- layout ----------------------------------------------------------------------------
    def arrange(self, window: QMainWindow, beside: QDockWidget | None = None) -> None:
        """Matrices on the right (under ``beside``, e.g. the training panel), the other four
        side by side along the bottom: every plot visible at once on a 1280×800 window."""
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.matrices)
        if beside is not None:
            window.splitDockWidget(beside, self.matrices, Qt.Orientation.Vertical)
            window.resizeDocks([beside, self.matrices], [190, 230], Qt.Orientation.Vertical)
        window.resizeDocks([self.matrices], [470], Qt.Orientation.Horizontal)
        bottom = [self.loss, self.spectrum, self.forgetting, self.ablation]
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, bottom[0])
        for left, right in zip(bottom, bottom[1:]):
            window.splitDockWidget(left, right, Qt.Orientation.Horizontal)
        window.resizeDocks(bottom, [1, 1, 1, 1], Qt.Orientation.Horizontal)
        window.resizeDocks([bottom[0]], [300], Qt.Orientation.Vertical)

    def toggle_actions(self):
        return [dock.toggleViewAction() for dock in self.docks]
