"""Forgetting curves: the metric of every sub-task seen so far against training step (one
curve per sub-task, eval.csv), and recall against the delay since a fact was seen (the full
model at the latest evaluation, delay.csv). Compared runs overlay with their own line style."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from nlstudio import probes
from nlstudio.widgets import theme
from nlstudio.widgets.format import grouped
from nlstudio.widgets.plots.base import (PlotDock, compare_style, legend_text, pen, row_legend,
                                         show_in_layout, style_legend, style_plot)

# Recall and other metrics in [0, 1]: the whole unit range, with 0 and 1 labelled inside it.
UNIT_RANGE = (-0.06, 1.06)
UNIT_TICKS = [[(0.0, "0"), (0.5, "0.5"), (1.0, "1")], [(0.25, ""), (0.75, "")]]


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
    empty_text = "Forgetting curves appear at the first evaluation."
    max_hz = 10.0

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tasks: list[str] = []  # every sub-task seen, in order of first appearance
        self.metric_name = "metric"
        self.tasks_plot: pg.PlotItem = self.view.addPlot(row=0, col=0)
        # Legends get rows of their own: over the curves they would hide them.
        self.task_legend = row_legend(columns=3)
        self.recall_plot: pg.PlotItem = self.view.addPlot(row=2, col=0)
        # While comparing: which line style is which run (the tasks' colours are above).
        self.run_legend = row_legend(columns=1)
        # No "step" label under the sub-task curves: height is scarce, the ticks say it.
        self.recall_plot.setLabel("bottom", "delay since seen (tokens)")
        self.recall_plot.setLabel("left", "recall")
        self.recall_plot.setLogMode(x=True, y=False)
        self.recall_plot.setYRange(*UNIT_RANGE, padding=0)
        self.recall_plot.getAxis("left").setTicks(UNIT_TICKS)
        for plot in (self.tasks_plot, self.recall_plot):
            # 0 and 1 sit near the ends of a short axis: their labels may reach past them.
            plot.getAxis("left").setStyle(hideOverlappingLabels=False)
        self.tasks_plot.setToolTip("Each sub-task's metric at every evaluation, by training "
                                   "step: a curve that falls is a sub-task being forgotten")
        self.recall_plot.setToolTip("Recall of a fact against the tokens since it was seen, "
                                    "at the latest evaluation (the full model)")
        for plot in (self.tasks_plot, self.recall_plot):
            plot.setMenuEnabled(False)
            plot.setMouseEnabled(x=False, y=False)  # the ranges follow the data
            plot.hideButtons()
        self.tasks_plot.enableAutoRange(x=False, y=False)  # set from the data (_set_ranges)
        self._delay_ticks: list[int] = []
        self.main = _RunCurves("this run", Qt.PenStyle.SolidLine)
        self.overlays: dict[str, _RunCurves] = {}
        self.main.recall_item = self._recall_item(self.main)
        self.apply_theme(self.palette_)
        self._update_labels()
        self._show_plots()
        self.set_message(self.empty_text)

    # ---- data in ---------------------------------------------------------------------------
    def clear(self) -> None:
        """A new run: its sub-tasks may not be the last run's (another project)."""
        for item in self.main.task_items.values():
            self.tasks_plot.removeItem(item)
            self.task_legend.removeItem(item)
        self.main.task_items.clear()
        self.tasks = list(dict.fromkeys(t for run in self.overlays.values()
                                        for t in run.task_items))
        self.main.eval_rows.clear()
        self.main.recall = None
        self.set_message(self.empty_text)
        self.mark_dirty()

    def set_main_label(self, label: str) -> None:
        self.main.label = label
        self._relabel_runs()

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
        self._relabel_runs()
        self.mark_dirty()

    def remove_overlays(self) -> None:
        for run in self.overlays.values():
            for item in run.task_items.values():
                self.tasks_plot.removeItem(item)
                self.task_legend.removeItem(item)
            if run.recall_item is not None:
                self.recall_plot.removeItem(run.recall_item)
        self.overlays.clear()
        self._relabel_runs()
        self.mark_dirty()

    def has_data(self) -> bool:
        return any(run.eval_rows or run.recall is not None
                   for run in (self.main, *self.overlays.values()))

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
                [[(math.log10(d), grouped(d)) for d in delays], []] if delays else None)
        self._set_ranges()
        self._show_plots()

        # The step goes in the message line: a title would take the plots' height.
        steps = [s for s, _, _ in self.main.eval_rows]
        if steps or self.main.recall is not None:
            last = max(steps) if steps else self.main.recall[0]
            self.set_message(f"Evaluated at step {grouped(last)}")

    def _show_plots(self) -> None:
        """Axes only around data: an empty plot shows its message, not made-up ranges."""
        runs = (self.main, *self.overlays.values())
        shown = self.has_data()
        self.show_view(shown)
        if shown:  # one plot at least stays: a layout with every item hidden shrinks
            self.tasks_plot.setVisible(any(run.eval_rows for run in runs))
            self.recall_plot.setVisible(any(run.recall is not None for run in runs))
        show_in_layout(self.view.ci, self.task_legend, 1, 0,
                       shown and bool(self.task_legend.items))
        show_in_layout(self.view.ci, self.run_legend, 3, 0, shown and bool(self.overlays))

    def _set_ranges(self) -> None:
        """The sub-task plot spans step 0 to the last evaluation (one evaluation is a point
        at its step, not a 0.8-step-wide axis around it); a metric in [0, 1] gets the unit
        range, like recall below it."""
        runs = (self.main, *self.overlays.values())
        steps = [s for run in runs for s, _, _ in run.eval_rows]
        values = np.array([m for run in runs for _, _, m in run.eval_rows], float)
        values = values[np.isfinite(values)]
        if not steps:
            return
        last = max(max(steps), 1)
        self.tasks_plot.setXRange(min(0, min(steps)), last, padding=0.04)
        if not values.size:
            return
        lo, hi = float(values.min()), float(values.max())
        axis = self.tasks_plot.getAxis("left")
        if lo >= 0.0 and hi <= 1.0:
            self.tasks_plot.setYRange(*UNIT_RANGE, padding=0)
            axis.setTicks(UNIT_TICKS)
        else:
            pad = max(0.05 * (hi - lo), 0.05 * max(abs(hi), abs(lo)), 1e-3)
            self.tasks_plot.setYRange(lo - pad, hi + pad, padding=0)
            axis.setTicks(None)

    # ---- items -------------------------------------------------------------------------------
    def _task_item(self, run: _RunCurves, task: str) -> pg.PlotDataItem:
        if task not in self.tasks:
            self.tasks.append(task)
        name = task if run is self.main else f"{task} · {run.label}"
        item = pg.PlotDataItem(name=name, symbol="o", symbolSize=4, connect="finite")
        self.tasks_plot.addItem(item)
        if run is self.main:  # compared runs differ by line style; the run legend names them
            self.task_legend.addItem(item, name)
        run.task_items[task] = item
        self._recolor()
        return item

    def _recall_item(self, run: _RunCurves) -> pg.PlotDataItem:
        item = pg.PlotDataItem(name=run.label, symbol="o", symbolSize=5, connect="finite")
        self.recall_plot.addItem(item)
        return item

    def _relabel_runs(self) -> None:
        """The run legend: each run's line style (and recall colour), named."""
        self.run_legend.clear()
        if self.overlays:
            for run in (self.main, *self.overlays.values()):
                self.run_legend.addItem(run.recall_item, legend_text(run.label))
            style_legend(self.run_legend, self.palette_)
        show_in_layout(self.view.ci, self.run_legend, 3, 0,
                       self.has_data() and bool(self.overlays))

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
        for plot in (self.tasks_plot, self.recall_plot):
            # No horizontal grid: with it pyqtgraph keeps every tick label inside the axis,
            # and on these short plots only "0.5" would be left of 0, 0.5 and 1.
            plot.showGrid(x=True, y=False, alpha=0.18 if palette.dark else 0.25)
        style_legend(self.task_legend, palette)
        style_legend(self.run_legend, palette)
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

