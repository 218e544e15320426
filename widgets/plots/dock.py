"""The five plot docks as one set: created once, fed from live deliveries or from a run
folder, and redrawn by one :class:`RedrawScheduler`. Where they sit in the main window is the
window's business (``MainWindow.place_docks``, ``widgets/window_layout.py``)."""
from __future__ import annotations

from typing import Iterable

from PySide6.QtCore import QObject

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

    def toggle_actions(self):
        return [dock.toggleViewAction() for dock in self.docks]
