"""Forgetting curves: the metric of every sub-task seen so far against training step (one
curve per sub-task, eval.csv), and recall against the delay since a fact was seen (the full
model at the latest evaluation, delay.csv). Compared runs overlay with their own line style."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from nlstudio import probes
from nlstudio.widgets import theme
from nlstudio.widgets.plots.base import PlotDock, compare_style, pen, style_plot


@dataclass
class _RunCurves:
    label: str
    style: Qt.PenStyle
    eval_rows: list[tuple[int, str, float]] = field(default_factory=list)
    recall: tuple[int, np.ndarray, np.ndarray] | None = None  # (step, delays, recall)
    task_items: dict[str, pg.PlotDataItem] = field(default_factory=dict)
    recall_item: pg.PlotDataItem | None = None


class ForgettingDock(PlotDock):
    key = "forgetting"
    title = "Forgetting"
    max_hz = 10.0

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tasks: list[str] = []  # every sub-task seen, in order of first appearance
        self.metric_name = "metric"
        self.tasks_plot: pg.PlotItem = self.view.addPlot(row=0, col=0)
        # The sub-task legend gets its own row: over the curves it would hide them.
        self.task_legend = pg.LegendItem(colCount=3, labelTextSize="7pt", verSpacing=-8,
                                         horSpacing=4)
        self.view.addItem(self.task_legend, row=1, col=0)
        self.recall_plot: pg.PlotItem = self.view.addPlot(row=2, col=0)
        self.recall_plot.addLegend(offset=(-4, 4), labelTextSize="7pt")
        # No "step" label under the sub-task curves: height is scarce, the ticks say it.
        self.recall_plot.setLabel("bottom", "delay since seen (tokens)")
        self.recall_plot.setLabel("left", "recall")
        self.recall_plot.setLogMode(x=True, y=False)
        self.recall_plot.setYRange(0, 1.02, padding=0)
        self.recall_plot.getAxis("left").setTicks([[(0.0, "0"), (0.5, "0.5"), (1.0, "1")]])
        self.recall_plot.getAxis("left").setStyle(hideOverlappingLabels=False)
        for plot in (self.tasks_plot, self.recall_plot):
            plot.setMenuEnabled(False)
        self._delay_ticks: list[int] = []
        self.main = _RunCurves("this run", Qt.PenStyle.SolidLine)
        self.overlays: dict[str, _RunCurves] = {}
        self.main.recall_item = self._recall_item(self.main)
        self.recall_plot.legend.setVisible(False)
        self.apply_theme(self.palette_)
        self._update_labels()
        self.set_message("Forgetting curves appear at the first evaluation.")

    # ---- data in ---------------------------------------------------------------------------
    def clear(self) -> None:
        self.main.eval_rows.clear()
        self.main.recall = None
        self.set_message("Forgetting curves appear at the first evaluation.")
        self.mark_dirty()

    def set_main_label(self, label: str) -> None:
        self.main.label = label

    def set_metric_name(self, name: str) -> None:
        self.metric_name = name or "metric"
        self._update_labels()

    def add_evaluation(self, step: int, rows, delays=(), recall_full=None) -> None:
        """One evaluation of the live run (``Evaluation.rows``, ``delays``, ``recall[""]``)."""
        self.main.eval_rows.extend((int(step), str(t), float(m)) for t, m in rows)
        if delays and recall_full is not None:
            self.main.recall = (int(step), np.asarray(delays, float), np.asarray(recall_full, float))
        self.mark_dirty()

    def set_rows(self, eval_rows, delay_rows) -> None:
        """A whole run from eval.csv / delay.csv rows (an opened or followed run)."""
        self.main.eval_rows = [(int(s), str(t), float(m)) for s, t, m in eval_rows]
        self.main.recall = _recall_from_delay_rows(delay_rows)
        if not (self.main.eval_rows or self.main.recall):
            self.set_message("No evaluation yet.")
        self.mark_dirty()

    def set_overlay(self, key: str, label: str, eval_rows, delay_rows) -> None:
        run = self.overlays.get(key)
        if run is None:
            run = _RunCurves(label, compare_style(len(self.overlays)))
            run.recall_item = self._recall_item(run)
            self.overlays[key] = run
        run.eval_rows = [(int(s), str(t), float(m)) for s, t, m in eval_rows]
        run.recall = _recall_from_delay_rows(delay_rows)
        self._recolor()
        self.recall_plot.legend.setVisible(True)  # names the compared runs
        self.mark_dirty()

    def remove_overlays(self) -> None:
        for run in self.overlays.values():
            for item in run.task_items.values():
                self.tasks_plot.removeItem(item)
                self.task_legend.removeItem(item)
            if run.recall_item is not None:
                self.recall_plot.removeItem(run.recall_item)
                self.recall_plot.legend.removeItem(run.recall_item)
        self.overlays.clear()
        self.recall_plot.legend.setVisible(False)
        self.mark_dirty()

    def has_data(self) -> bool:
        return bool(self.main.eval_rows) or self.main.recall is not None

    # ---- drawing ---------------------------------------------------------------------------
    def redraw(self) -> None:
        for run in (self.main, *self.overlays.values()):
            curves = probes.forgetting_curves(run.eval_rows)
            for task, (steps, metric) in curves.items():
                item = run.task_items.get(task)
                if item is None:
                    item = self._task_item(run, task)
                item.setData(steps, metric)
            for task, item in run.task_items.items():
                if task not in curves:
                    item.setData([], [])
            if run.recall is not None:
                _, delays, values = run.recall
                keep = delays > 0
                run.recall_item.setData(delays[keep], values[keep])
            else:
                run.recall_item.setData([], [])
        delays = sorted({int(d) for run in (self.main, *self.overlays.values())
                         if run.recall is not None for d in run.recall[1] if d > 0})
        if delays != self._delay_ticks:
            # Ticks at the measured delays (the axis is log10 of the delay).
            self._delay_ticks = delays
            self.recall_plot.getAxis("bottom").setTicks(
                [[(math.log10(d), f"{d:,}".replace(",", "\u2009")) for d in delays], []]
                if delays else None)

        # The step goes in the message line: a title would take the plots' height.
        steps = [s for s, _, _ in self.main.eval_rows]
        if steps or self.main.recall is not None:
            last = max(steps) if steps else self.main.recall[0]
            self.set_message(f"Sub-tasks by step; recall by delay at step {last}")

    # ---- items -------------------------------------------------------------------------------
    def _task_item(self, run: _RunCurves, task: str) -> pg.PlotDataItem:
        if task not in self.tasks:
            self.tasks.append(task)
        name = task if run is self.main else f"{task} · {run.label}"
        item = pg.PlotDataItem(name=name, symbol="o", symbolSize=4, connect="finite")
        self.tasks_plot.addItem(item)
        if run is self.main:  # compared runs differ by line style; the recall legend names them
            self.task_legend.addItem(item, name)
        run.task_items[task] = item
        self._recolor()
        return item

    def _recall_item(self, run: _RunCurves) -> pg.PlotDataItem:
        item = pg.PlotDataItem(name=run.label, symbol="o", symbolSize=5, connect="finite")
        self.recall_plot.addItem(item)
        return item

    def _update_labels(self) -> None:
        self.tasks_plot.setLabel("left", self.metric_name, color=self.palette_.plot_foreground)

    def _recolor(self) -> None:
        p = self.palette_
        for run in (self.main, *self.overlays.values()):
            for task, item in run.task_items.items():
                color = p.level_color(self.tasks.index(task)) if task in self.tasks else p.muted
                item.setPen(pen(color, 1.8, run.style))
                item.setSymbolBrush(pg.mkBrush(color))
                item.setSymbolPen(pg.mkPen(None))
            if run.recall_item is not None:
                index = list(self.overlays.values()).index(run) + 1 if run is not self.main else 0
                color = p.accent if index == 0 else p.level_color(index)
                run.recall_item.setPen(pen(color, 2.0, run.style))
                run.recall_item.setSymbolBrush(pg.mkBrush(color))
                run.recall_item.setSymbolPen(pg.mkPen(None))

    def apply_theme(self, palette: theme.Palette) -> None:
        super().apply_theme(palette)
        style_plot(self.tasks_plot, palette)
        style_plot(self.recall_plot, palette)
        self.task_legend.setLabelTextColor(QColor(palette.plot_foreground))
        for _sample, label in self.task_legend.items:  # existing labels keep their colour
            label.setText(label.text, color=palette.plot_foreground)
        self._update_labels()
        self._recolor()

    # ---- export --------------------------------------------------------------------------
    def csv_table(self) -> tuple[list[str], list[list]]:
        header = ["run", "series", "step", "task", "delay", "value"]
        rows: list[list] = []
        for run in (self.main, *self.overlays.values()):
            for step, task, metric in sorted(run.eval_rows):
                rows.append([run.label, self.metric_name, step, task, "", metric])
            if run.recall is not None:
                step, delays, values = run.recall
                for d, v in zip(delays.tolist(), values.tolist()):
                    rows.append([run.label, "recall", step, "", int(d), v])
        return header, rows


def _recall_from_delay_rows(delay_rows) -> tuple[int, np.ndarray, np.ndarray] | None:
    rows = list(delay_rows)
    if not rows:
        return None
    names, delays, table = probes.delay_table(rows)
    if not names or names[0] != "none":
        return None
    step = max(r[0] for r in rows)
    return step, delays.astype(float), table[0]

