"""Loss and task metric against step: two x-linked plots, a log-scale toggle for the loss and
an EMA smoothing slider that changes only the displayed copy (the raw series stays faint
behind it, and exports carry both). Compared runs overlay as dashed/dotted curves."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QLabel, QSlider

from nlstudio.widgets import theme
from nlstudio.widgets.plots.base import (PlotDock, Series, compare_style, legend_text, pen,
                                         row_legend, show_in_layout, style_legend, style_plot)



def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard's smoothing), NaNs skipped."""
    return _Ema(weight).extend(values)


class _Ema:
    """A debiased EMA that can be continued as values are appended."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.acc = 0.0
        self.norm = 0.0
        self.last = math.nan
        self.n = 0

    def extend(self, values: np.ndarray) -> np.ndarray:
        self.n += len(values)
        if self.weight <= 0:
            return np.asarray(values, dtype=float).copy()
        w = self.weight
        out = np.empty(len(values))
        acc, norm, last = self.acc, self.norm, self.last
        for i, v in enumerate(np.asarray(values, dtype=float).tolist()):
            if math.isfinite(v):
                acc = w * acc + (1 - w) * v
                norm = w * norm + (1 - w)
                last = acc / norm
            out[i] = last
        self.acc, self.norm, self.last = acc, norm, last
        return out


@dataclass
class _Trace:
    """One run's curves: raw + smoothed loss, raw + smoothed metric."""

    label: str
    loss: Series = field(default_factory=Series)
    metric: Series = field(default_factory=Series)
    items: dict = field(default_factory=dict)
    style: Qt.PenStyle = Qt.PenStyle.SolidLine
    color_index: int = -1  # -1: the palette's accent (the main run)


class LossDock(PlotDock):
    key = "loss"
    title = "Loss & metric"
    empty_text = "No run yet: press Run, or open a run folder."
    message_beside_tools = False  # log scale, smoothing and export take the row
    max_hz = 10.0

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.log_check = QCheckBox("Log loss")
        self.log_check.setObjectName("lossLogCheck")
        self.log_check.setToolTip("Show the loss on a logarithmic axis")
        self.smooth_slider = QSlider(Qt.Orientation.Horizontal)
        self.smooth_slider.setObjectName("lossSmoothingSlider")
        self.smooth_slider.setRange(0, 99)
        self.smooth_slider.setValue(60)
        self.smooth_slider.setFixedWidth(80)
        self.smooth_slider.setToolTip("Exponential moving average of the displayed curves "
                                      "(the data and the exports keep the raw values)")
        self.smooth_label = QLabel()
        self.smooth_label.setObjectName("lossSmoothingLabel")
        self.smooth_label.setMinimumWidth(
            self.smooth_label.fontMetrics().horizontalAdvance("Smoothing 0.99") + 6)
        self.toolbar.addWidget(self.log_check)
        self.toolbar.addWidget(self.smooth_label)
        self.toolbar.addWidget(self.smooth_slider)
        self.log_check.toggled.connect(self._on_log)
        self.smooth_slider.valueChanged.connect(self._on_smoothing)

        # The runs' legend (while comparing) has a row of its own, above the curves.
        self.legend = row_legend(columns=1, size="8pt")
        self.loss_plot: pg.PlotItem = self.view.addPlot(row=1, col=0)
        self.metric_plot: pg.PlotItem = self.view.addPlot(row=2, col=0)
        self.metric_plot.setXLink(self.loss_plot)
        self.loss_plot.getAxis("bottom").setStyle(showValues=False)
        self.loss_plot.setLabel("left", "loss")
        self.metric_plot.setLabel("left", "metric")
        self.metric_plot.setLabel("bottom", "step")
        for plot in (self.loss_plot, self.metric_plot):
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setMenuEnabled(False)
        self.metric_name = "metric"
        self.main = self._new_trace("this run", Qt.PenStyle.SolidLine, -1)
        self.overlays: dict[str, _Trace] = {}
        self._smoothed_cache: dict[tuple[int, str], tuple[_Ema, np.ndarray]] = {}
        self._on_smoothing(self.smooth_slider.value())
        self.apply_theme(self.palette_)
        self._show_plots()
        self.set_message(self.empty_text)

    # ---- data in ---------------------------------------------------------------------------
    def clear(self) -> None:
        self.main.loss.clear()
        self.main.metric.clear()
        self._smoothed_cache.clear()
        self.set_metric_name("metric")
        self.set_message("Curves appear with the first logged row.")
        self.mark_dirty()

    def set_main_label(self, label: str) -> None:
        self.main.label = label
        self._relabel()

    def set_metric_name(self, name: str) -> None:
        self.metric_name = name or "metric"
        self.metric_plot.setLabel("left", self.metric_name, color=self.palette_.plot_foreground)

    def append_rows(self, rows: list[dict]) -> None:
        """metrics.csv rows (``MetricsRow.row`` or a followed run's new rows)."""
        for row in rows:
            step = float(row.get("step", math.nan))
            self.main.loss.append(step, float(row.get("loss", math.nan)))
            self.main.metric.append(step, float(row.get("metric", math.nan)))
        if rows:
            self.set_message("")
            self.mark_dirty()

    def set_columns(self, columns: dict[str, np.ndarray]) -> None:
        """A whole metrics.csv (an opened run)."""
        steps = columns.get("step", np.zeros(0))
        self.main.loss.set(steps, columns.get("loss", np.full(len(steps), np.nan)))
        self.main.metric.set(steps, columns.get("metric", np.full(len(steps), np.nan)))
        self._smoothed_cache.clear()
        self.set_message("" if len(steps) else "No metrics logged yet.")
        self.mark_dirty()

    def set_overlay(self, key: str, label: str, columns: dict[str, np.ndarray]) -> None:
        """A compared run: its own line style, a legend entry."""
        trace = self.overlays.get(key)
        if trace is None:
            index = len(self.overlays)
            trace = self._new_trace(label, compare_style(index), index + 1)
            self.overlays[key] = trace
            self._recolor(trace)
        steps = columns.get("step", np.zeros(0))
        trace.loss.set(steps, columns.get("loss", np.full(len(steps), np.nan)))
        trace.metric.set(steps, columns.get("metric", np.full(len(steps), np.nan)))
        self._drop_cache(trace)
        self._relabel()
        self.mark_dirty()

    def remove_overlays(self) -> None:
        for trace in self.overlays.values():
            for plot, item in trace.items.values():
                plot.removeItem(item)
            self._drop_cache(trace)
        self.overlays.clear()
        self._relabel()
        self.mark_dirty()

    def has_data(self) -> bool:
        return any(len(t.loss) for t in (self.main, *self.overlays.values()))

    # ---- drawing -----------------------------------------------------------------------------
    @property
    def smoothing(self) -> float:
        return self.smooth_slider.value() / 100.0

    def redraw(self) -> None:
        self._show_plots()
        weight = self.smoothing
        for trace in (self.main, *self.overlays.values()):
            for name, series in (("loss", trace.loss), ("metric", trace.metric)):
                raw = trace.items[name][1]
                smooth = trace.items[name + "_s"][1]
                x, y = series.x, series.y
                raw.setData(x, y)
                raw.setVisible(weight > 0)
                smooth.setData(x, self._smoothed(trace, name, series, weight))

    def _smoothed(self, trace: _Trace, name: str, series: Series, weight: float) -> np.ndarray:
        # Extend the cached EMA when rows were only appended; recompute when anything else
        # changed (slider, reset): O(new rows) per redraw while streaming.
        key = (id(trace), name)
        cached = self._smoothed_cache.get(key)
        y = series.y
        if cached is not None and cached[0].weight == weight and cached[0].n <= len(y):
            state, prev = cached
            if state.n == len(y):
                return prev
            out = np.concatenate([prev, state.extend(y[state.n:])])
        else:
            state = _Ema(weight)
            out = state.extend(y)
        self._smoothed_cache[key] = (state, out)
        return out

    def _drop_cache(self, trace: _Trace) -> None:
        for name in ("loss", "metric"):
            self._smoothed_cache.pop((id(trace), name), None)

    def _on_log(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self.mark_dirty()

    def _on_smoothing(self, value: int) -> None:
        self.smooth_label.setText(f"Smoothing {value / 100:.2f}")
        self.mark_dirty()

    # ---- items -------------------------------------------------------------------------------
    def _new_trace(self, label: str, style: Qt.PenStyle, color_index: int) -> _Trace:
        trace = _Trace(label=label, style=style, color_index=color_index)
        for name, plot in (("loss", self.loss_plot), ("metric", self.metric_plot)):
            raw = pg.PlotDataItem(skipFiniteCheck=False, connect="finite")
            smooth = pg.PlotDataItem(name=label if name == "loss" else None, connect="finite")
            plot.addItem(raw)
            plot.addItem(smooth)
            trace.items[name] = (plot, raw)
            trace.items[name + "_s"] = (plot, smooth)
        self._recolor(trace)
        return trace

    def _relabel(self) -> None:
        """The legend names the runs by their line style; shown only while comparing."""
        self.legend.clear()
        if self.overlays:
            for trace in (self.main, *self.overlays.values()):
                self.legend.addItem(trace.items["loss_s"][1], legend_text(trace.label))
            style_legend(self.legend, self.palette_)
        show_in_layout(self.view.ci, self.legend, 0, 0, bool(self.overlays) and self.has_data())

    def _show_plots(self) -> None:
        """Axes only around data: before any row, the message alone."""
        shown = self.has_data()
        self.show_view(shown)
        show_in_layout(self.view.ci, self.legend, 0, 0, shown and bool(self.overlays))

    def _recolor(self, trace: _Trace) -> None:
        p = self.palette_
        color = p.accent if trace.color_index < 0 else p.level_color(trace.color_index + 1)
        for name in ("loss", "metric"):
            trace.items[name][1].setPen(pen(color, 1.0, trace.style, alpha=70))
            trace.items[name + "_s"][1].setPen(pen(color, 2.0, trace.style))

    def apply_theme(self, palette: theme.Palette) -> None:
        super().apply_theme(palette)
        style_plot(self.loss_plot, palette)
        style_plot(self.metric_plot, palette)
        style_legend(self.legend, palette)
        for trace in (self.main, *self.overlays.values()):
            self._recolor(trace)

    # ---- export --------------------------------------------------------------------------
    def csv_table(self) -> tuple[list[str], list[list]]:
        header = ["run", "step", "loss", "metric", "loss_smoothed", "metric_smoothed"]
        rows: list[list] = []
        weight = self.smoothing
        for trace in (self.main, *self.overlays.values()):
            ls, ms = ema(trace.loss.y, weight), ema(trace.metric.y, weight)
            for i in range(len(trace.loss)):
                rows.append([trace.label, trace.loss.x[i], trace.loss.y[i], trace.metric.y[i],
                             ls[i], ms[i]])
        return header, rows

