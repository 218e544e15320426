"""Lesson 3 view: six real inner optimizers on ψ(r, θ) and on a continual regression, with each
optimizer's state drawn as the memory it is."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout

from nlstudio.catalog import OPTIMIZERS
from nlstudio.lessons.optimizers import OptimizerLesson
from nlstudio.widgets import theme
from nlstudio.widgets.lessons.base import (Heatmap, LessonHost, LessonView, integer_ticks,
                                           new_plot, style_plot)
from nlstudio.widgets.plots.base import pen

SHORT = {"sgd": "SGD", "momentum": "Momentum", "adam": "Adam",
         "delta_momentum": "Delta momentum", "dmgd": "DMGD", "m3": "M3"}
RUN_INTERVAL_MS = 40
RUN_STEPS_PER_TICK = 2
CONTOURS = np.logspace(-2, 2.2, 14)


def _blend(a: str, b: str, t: float) -> tuple[int, int, int]:
    ca, cb = QColor(a), QColor(b)
    return (round(ca.red() + (cb.red() - ca.red()) * t),
            round(ca.green() + (cb.green() - ca.green()) * t),
            round(ca.blue() + (cb.blue() - ca.blue()) * t))


class OptimizerView(LessonView):

    def intro(self) -> str:
        return ("An optimizer keeps a state, and that state is a memory of the gradients it has "
                "seen: momentum compresses them into m, Adam keeps two moments, M3 a fast and a "
                "slow momentum. Six real inner optimizers descend ψ(r, θ) = r² + k(r − θ + "
                "a·sin ωr)² and learn three regression tasks in turn (orthogonal input "
                "subspaces): which one forgets task 1 least? Tick “same gradients for all” to "
                "compare their memories of one shared gradient stream.")

    def __init__(self, host: LessonHost | None = None) -> None:
        super().__init__(host)
        self.core = OptimizerLesson()
        self.names = list(self.core.names)
        self.step_buttons("Step ▶")
        self.run_button = self.button("Run", "Run", self.toggle_run,
                                      "Step continuously to the end")
        self.run_button.setCheckable(True)
        self.step_text = self.step_label()
        self.controls.addStretch(1)
        self.controls.addWidget(QLabel("memory of", self))
        self.memory_combo = QComboBox(self)
        self.memory_combo.setObjectName(self.name("Memory"))
        self.memory_combo.setToolTip("Whose state to draw (in the regression)")
        for name in self.names:
            self.memory_combo.addItem(OPTIMIZERS[name].title, name)
        self.memory_combo.setCurrentIndex(self.names.index("m3"))
        self.memory_combo.currentIndexChanged.connect(
            lambda _i: self._guarded(self._memory_changed))
        self.controls.addWidget(self.memory_combo)
        self.shared_box = QCheckBox("same gradients for all", self)
        self.shared_box.setObjectName(self.name("Shared"))
        self.shared_box.setToolTip("Draw the memory each optimizer builds from one shared "
                                   "gradient stream (the gradients SGD computes), instead of "
                                   "from its own run")
        self.shared_box.toggled.connect(lambda _on: self._guarded(self._memory_changed))
        self.controls.addWidget(self.shared_box)
        self.timer = QTimer(self)
        self.timer.setObjectName(self.name("RunTimer"))
        self.timer.setInterval(RUN_INTERVAL_MS)
        self.timer.timeout.connect(lambda: self._guarded(self._tick))

        row = QHBoxLayout()
        self.body.addLayout(row, 1)
        self.plots = self.plot_area()
        row.addWidget(self.plots, 3)
        p = self.palette_
        layout = self.plots.ci
        self.land_plot = new_plot(layout, 0, 0, p, self._land_title(), "θ", "r")
        self.loss_plot = new_plot(layout, 0, 1, p, "loss on task 1 (held-out inputs)", "loss",
                                  "step")
        self.loss_plot.setLogMode(y=True)
        layout.layout.setColumnStretchFactor(0, 1)
        layout.layout.setColumnStretchFactor(1, 1)
        self._build_landscape()
        # One legend for both plots, on its own row: over the curves it would hide them.
        self.legend = pg.LegendItem(colCount=6, labelTextSize="8pt")
        layout.addItem(self.legend, row=1, col=0, colspan=2)
        self.loss_curves = {}
        self.paths, self.heads = {}, {}
        for i, name in enumerate(self.names):
            self.paths[name] = self.land_plot.plot([], [])
            self.heads[name] = pg.ScatterPlotItem(size=9)
            self.land_plot.addItem(self.heads[name])
            self.loss_curves[name] = self.loss_plot.plot([], [])
            self.legend.addItem(self.loss_curves[name], SHORT.get(name, name))
        self.switches: list[tuple[pg.InfiniteLine, pg.TextItem]] = []
        for k, at in enumerate(self.core.regression.boundaries()):
            line = pg.InfiniteLine(pos=at, angle=90, movable=False)
            label = pg.TextItem(f"task {k + 2}", anchor=(0, 0))
            self.loss_plot.addItem(line)
            self.loss_plot.addItem(label, ignoreBounds=True)
            self.switches.append((line, label))
        self.loss_plot.setXRange(0, self.core.total_steps, padding=0.03)
        integer_ticks(self.loss_plot, self.core.total_steps)

        side = QVBoxLayout()
        side.setSpacing(2)
        row.addLayout(side, 2)
        self.memory_text = QLabel("", self)
        self.memory_text.setObjectName(self.name("MemoryText"))
        self.memory_text.setWordWrap(True)
        side.addWidget(self.memory_text)
        self.memory_view = self.plot_area("MemoryPlots")
        self.memory_view.setMinimumWidth(300)
        side.addWidget(self.memory_view, 1)
        self.memory_cells: list[Heatmap] = []
        self._memory_changed()
        self._style_legend()
        self.resize(1320, 720)
        self.redraw()

    # ---- landscape --------------------------------------------------------------------------
    def _land_title(self) -> str:
        land = self.core.landscape.landscape
        return (f"ψ(r, θ), k = {land.k:g}, a = {land.a:g}, ω = {land.omega:g}: "
                f"paths from ({land.start[0]:g}, {land.start[1]:g})")

    def _build_landscape(self) -> None:
        land = self.core.landscape.landscape
        rs, ts, z = land.grid(160)
        self.field = np.log10(z.T + 1e-2)  # [r, θ]: ImageItem's default column-major order
        self.image = pg.ImageItem(self.field)
        self.image.setRect(rs[0], ts[0], rs[-1] - rs[0], ts[-1] - ts[0])
        self.image.setZValue(-20)
        self.land_plot.addItem(self.image)
        self.contours = []
        for level in CONTOURS:
            curve = pg.IsocurveItem(data=z.T, level=float(level))
            curve.setParentItem(self.image)
            curve.setZValue(-10)
            self.contours.append(curve)
        self.minimum = pg.ScatterPlotItem([0.0], [0.0], symbol="+", size=14)
        self.start = pg.ScatterPlotItem([land.start[0]], [land.start[1]], symbol="s", size=9)
        self.land_plot.addItem(self.minimum)
        self.land_plot.addItem(self.start)
        self.land_plot.setXRange(rs[0], rs[-1], padding=0)
        self.land_plot.setYRange(ts[0], ts[-1], padding=0)
        self._color_landscape()

    def _color_landscape(self) -> None:
        p = self.palette_
        low, high = p.plot_background, p.grid_strong if p.dark else p.border
        lut = np.array([_blend(high, low, t) for t in np.linspace(0, 1, 256)][::-1],
                       dtype=np.ubyte)
        self.image.setLookupTable(lut)
        self.image.setLevels((float(self.field.min()), float(self.field.max())))
        for curve in self.contours:
            curve.setPen(pen(p.muted, 0.8, alpha=140))
        self.minimum.setPen(pg.mkPen(p.plot_foreground, width=2))
        self.start.setBrush(pg.mkBrush(p.plot_foreground))
        self.start.setPen(pg.mkPen(p.plot_background))

    # ---- actions (Next: LessonView's) ---------------------------------------------------------
    def back(self) -> None:
        self.stop_run()
        super().back()

    def reset(self) -> None:
        self.stop_run()
        super().reset()

    def toggle_run(self) -> None:
        if self.timer.isActive() or self.core.done:
            self.stop_run()
        else:
            self.timer.start()
            self.run_button.setChecked(True)
            self.run_button.setText("Pause")

    def stop_run(self) -> None:
        self.timer.stop()
        self.run_button.setChecked(False)
        self.run_button.setText("Run")

    def _tick(self) -> None:
        for _ in range(RUN_STEPS_PER_TICK):
            self.core.next()
        self.redraw()
        if self.core.done:
            self.stop_run()

    def shutdown(self) -> None:
        self.stop_run()
        super().shutdown()

    # ---- memory panel -----------------------------------------------------------------------
    def _memory_changed(self) -> None:
        name = self.memory_combo.currentData()
        layout = self.memory_view.ci
        layout.clear()
        spec = OPTIMIZERS[name]
        self.memory_cells = []
        shared = self.shared_box.isChecked()
        for i, key in enumerate(["W", *spec.memory]):
            if key == "W":
                title = ("latest gradient g (the same for all)" if shared
                         else "weights W of the regression")
            else:
                title = f"memory {key}"
            self.memory_cells.append(Heatmap(layout, 2 * i, 0, title, self.palette_))
        note = ("<br><i>No memory of its own: the weights are all it keeps.</i>"
                if not spec.memory else "")
        if shared:
            note += "<br>Fed the gradients SGD computes in the regression, like every other."
        self.memory_text.setText(f"<b>{spec.title}</b>: {spec.summary}<br>"
                                 f"<tt>{spec.equation}</tt>{note}")
        self.redraw()

    def _draw_memory(self) -> None:
        name = self.memory_combo.currentData()
        regression = self.core.regression
        if self.shared_box.isChecked():
            memory = self.core.memory(name, "shared")
            first = regression.stream[-1].numpy() if regression.stream else None
        else:
            memory = self.core.memory(name)
            first = regression.runners[name].param.numpy()
        arrays = [first, *[memory.get(key) for key in OPTIMIZERS[name].memory]]
        for cell, arr in zip(self.memory_cells, arrays):
            cell.set(arr)

    # ---- drawing ---------------------------------------------------------------------------------
    def redraw(self) -> None:
        core = self.core
        paths = core.landscape.paths()
        losses = core.regression.first_task_loss()
        p = self.palette_
        for i, name in enumerate(self.names):
            color = p.level_color(i)
            path = paths[name]
            self.paths[name].setData(path[:, 0], path[:, 1])
            self.paths[name].setPen(pen(color, 2.0))
            self.heads[name].setData([path[-1, 0]], [path[-1, 1]])
            self.heads[name].setBrush(pg.mkBrush(color))
            self.heads[name].setPen(pg.mkPen(p.plot_background))
            curve = losses[name]
            self.loss_curves[name].setData(np.arange(len(curve)), np.maximum(curve, 1e-6))
            self.loss_curves[name].setPen(pen(color, 1.8))
        # The labels hang from the highest loss drawn (log10 units: the plot is in log mode).
        top = math.log10(max(float(np.nanmax(c)) for c in losses.values()))
        for line, label in self.switches:
            line.setPen(pen(p.muted, 1.0, Qt.PenStyle.DashLine))
            label.setColor(p.muted)
            label.setPos(line.value() + 1, top)
        self._draw_memory()
        t, total = core.step_count, core.total_steps
        task = core.regression.task_at(max(t - 1, 0)) + 1
        self.step_text.setText(f"step {t} of {total} · regression task {task} of "
                               f"{core.regression.setup.tasks}")
        self.back_button.setEnabled(t > 0)
        self.next_button.setEnabled(not core.done)
        values = core.landscape.values()
        best = min(values, key=values.get)
        text = (f"ψ now: lowest {OPTIMIZERS[best].title} ({values[best]:.3g}), highest "
                f"{OPTIMIZERS[max(values, key=values.get)].title} ({max(values.values()):.3g}).")
        summary = core.summary()
        self.status.setText(text + (" " + summary if summary else
                                    " Run to the end to see which optimizer forgets least."))
        self.changed()

    def apply_theme(self, palette: theme.Palette) -> None:
        self.plots.setBackground(palette.plot_background)
        self.memory_view.setBackground(palette.plot_background)
        style_plot(self.land_plot, palette)
        style_plot(self.loss_plot, palette)
        self._color_landscape()
        for cell in self.memory_cells:
            cell.apply_theme(palette)
        self._style_legend()
        self.redraw()

    def _style_legend(self) -> None:
        p = self.palette_
        self.legend.setLabelTextColor(QColor(p.plot_foreground))
        for _sample, label in self.legend.items:
            label.setText(label.text, color=p.plot_foreground)
