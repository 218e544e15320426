"""Which level holds a memory at which delay: the recall lost when each level is silenced
(full model minus silenced, ``probes.ablation_drop``), as a level × delay heatmap with level
names on the y axis, delays on the x axis and the value written in every cell."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor, QFont, QFontMetricsF

from nlstudio import probes
from nlstudio.widgets import theme
from nlstudio.widgets.format import grouped
from nlstudio.widgets.plots.base import PlotDock, style_plot
from nlstudio.widgets.plots.heatmap import SymmetricColorBar, SymmetricLevels


def evaluation_table(delays, recall: dict[str, tuple[float, ...]], level_order=()
                     ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``Evaluation.delays``/``recall`` as ``probes.delay_table`` returns it: rows
    ``["none", *levels]`` (the full model first), delays, recall table."""
    if "" not in recall:
        return [], np.zeros(0), np.zeros((0, 0))
    levels = [lid for lid in level_order if lid in recall]
    levels += sorted(k for k in recall if k and k not in levels)
    names = ["none", *levels]
    table = np.array([recall[""], *[recall[lid] for lid in levels]], dtype=float)
    return names, np.asarray(delays, dtype=np.int64), table


class AblationDock(PlotDock):
    key = "ablation"
    title = "Ablation"
    empty_text = ("Recall lost when each level is silenced, per delay: appears at the first "
                  "evaluation of a task with delays.")
    max_hz = 10.0

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plot: pg.PlotItem = self.view.addPlot(row=0, col=0)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.invertY(True)
        self.plot.setLabel("bottom", "delay since seen (tokens)")
        # Edge cells' labels sit half a cell from the axis ends: keep them.
        self.plot.getAxis("bottom").setStyle(hideOverlappingLabels=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        cmap = theme.diverging_colormap(self.palette_)
        self.image.setLookupTable(cmap.getLookupTable(nPts=256))
        self.bar = SymmetricColorBar(cmap, label="recall lost")
        self.view.addItem(self.bar, row=0, col=1)
        self.levels = SymmetricLevels(half_life_s=10.0, floor=0.05)
        self.cell_labels: list[pg.TextItem] = []
        self.names: list[str] = []
        self.level_order: list[str] = []  # the model's level order (rows follow it)
        self.delays = np.zeros(0, dtype=np.int64)
        self.drop = np.zeros((0, 0))
        self.full = np.zeros(0)
        self.step: int | None = None
        self._shape: tuple[int, int] | None = None
        self.apply_theme(self.palette_)
        self._show_plot()
        self.set_message(self.empty_text)

    # ---- data in ---------------------------------------------------------------------------
    def clear(self) -> None:
        self.names, self.delays, self.drop, self.full = [], np.zeros(0, np.int64), \
            np.zeros((0, 0)), np.zeros(0)
        self.step = None
        self.levels.reset()
        self.set_message(self.empty_text)
        self.mark_dirty()

    def set_table(self, step: int, names: list[str], delays, table: np.ndarray) -> None:
        """A recall table as ``probes.delay_table`` gives it (row 0 = "none", the full model)."""
        levels, drop = probes.ablation_drop(list(names), np.asarray(table, dtype=float))
        if not levels:
            return
        # Rows in model order (delay.csv sorts them by name).
        rank = {lid: i for i, lid in enumerate(self.level_order)}
        order = sorted(range(len(levels)), key=lambda i: (rank.get(levels[i], len(rank)), i))
        levels, drop = [levels[i] for i in order], drop[order]
        table = np.asarray(table, dtype=float)
        self.step = int(step)
        self.names = levels
        self.delays = np.asarray(delays, dtype=np.int64)
        self.drop = np.ascontiguousarray(drop, dtype=np.float32)
        self.full = np.asarray(table, dtype=float)[0]
        self.mark_dirty()

    def set_delay_rows(self, delay_rows) -> None:
        rows = list(delay_rows)
        if not rows:
            return
        names, delays, table = probes.delay_table(rows)
        self.set_table(max(r[0] for r in rows), names, delays, table)

    def has_data(self) -> bool:
        return self.drop.size > 0

    # ---- drawing ---------------------------------------------------------------------------
    def redraw(self) -> None:
        self._show_plot()
        if self.drop.size == 0:
            self.image.clear()
            for label in self.cell_labels:
                label.setVisible(False)
            return
        rows, cols = self.drop.shape
        level = self.levels.update(self.drop)
        self.image.setImage(self.drop, autoLevels=False, levels=(-level, level))
        self.bar.set_level(level)
        self.image.setRect(0, 0, cols, rows)
        if self._shape != (rows, cols):
            self._shape = (rows, cols)
            self._make_labels(rows * cols)
            self.plot.setRange(xRange=(0, cols), yRange=(0, rows), padding=0)
        self.plot.getAxis("left").setTicks([[(i + 0.5, n) for i, n in enumerate(self.names)]])
        self.plot.getAxis("bottom").setTicks(
            [[(j + 0.5, grouped(d)) for j, d in enumerate(self.delays)]])
        p = self.palette_
        # Values in the cells when they fit, else only in the exported CSV.
        metrics = QFontMetricsF(self._cell_font())
        fits = (self.plot.vb.width() / max(cols, 1) >= metrics.horizontalAdvance("−0.00") + 4
                and self.plot.vb.height() / max(rows, 1) >= metrics.height())
        for k, label in enumerate(self.cell_labels):
            i, j = divmod(k, cols)
            value = float(self.drop[i, j])
            label.setText("–" if not np.isfinite(value) else f"{value:.2f}")
            label.setPos(j + 0.5, i + 0.5)
            label.setColor(QColor(p.plot_foreground))
            label.setVisible(fits)
        self.set_message(f"Recall lost per level silenced (step {grouped(self.step)})")

    def _show_plot(self) -> None:
        """Axes only around a table: no made-up (inverted, −0.4…0.4) axes before one."""
        self.show_view(self.has_data())

    @staticmethod
    def _cell_font() -> QFont:
        font = QFont()
        font.setPointSizeF(7.0)
        return font

    def _make_labels(self, count: int) -> None:
        font = self._cell_font()
        while len(self.cell_labels) < count:
            label = pg.TextItem("", anchor=(0.5, 0.5))
            label.setFont(font)
            self.plot.addItem(label)
            self.cell_labels.append(label)
        for label in self.cell_labels[count:]:
            self.plot.removeItem(label)
        del self.cell_labels[count:]

    def apply_theme(self, palette: theme.Palette) -> None:
        super().apply_theme(palette)
        style_plot(self.plot, palette)
        self.plot.showGrid(x=False, y=False)
        cmap = theme.diverging_colormap(palette)
        self.image.setLookupTable(cmap.getLookupTable(nPts=256))
        self.bar.set_colors(cmap, palette.plot_foreground, palette.border)

    # ---- export --------------------------------------------------------------------------
    def csv_table(self) -> tuple[list[str], list[list]]:
        header = ["step", "level_silenced", "delay", "recall_full", "recall_silenced",
                  "recall_lost"]
        rows: list[list] = []
        for i, name in enumerate(self.names):
            for j, delay in enumerate(self.delays.tolist()):
                lost = float(self.drop[i, j])
                full = float(self.full[j])
                rows.append([self.step, name, int(delay), full, full - lost, lost])
        return header, rows
