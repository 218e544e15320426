"""Which level holds a memory at which delay: the recall lost when each level is ablated
(full model minus ablated, ``probes.ablation_drop``), as a level × delay heatmap with level
names on the y axis, delays on the x axis and the value written in every cell.

Two ablations, chosen in the dock (freeze by default; the dock's title, plot title and axes
say which one is shown): *freeze* (the level's in-context writes stopped, its output kept:
what it stores) and *silence* (its output zeroed: what the model depends on). Runs written
before freeze was measured have silence only: they show it, with a note saying so."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF
from PySide6.QtWidgets import QComboBox

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
    empty_text = ("Recall lost when each level is frozen (writes stopped) or silenced (output "
                  "zeroed), per delay: appears at the first evaluation of a task with delays.")
    max_hz = 10.0

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.kind_combo = QComboBox()
        self.kind_combo.setObjectName("ablationKindCombo")
        # One word per entry, the meaning in its tooltip: sentences made the dock (and the
        # Forgetting dock it is a tab of) 560 px wide, or were cut mid-word in a narrow one.
        self.kind_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        for kind in probes.ABLATION_KINDS:
            self.kind_combo.addItem(kind.capitalize(), kind)
            self.kind_combo.setItemData(self.kind_combo.count() - 1,
                                        f"{kind.capitalize()}: {probes.ABLATION_MEANING[kind]}",
                                        Qt.ItemDataRole.ToolTipRole)
        self.kind_combo.setToolTip(
            "Freeze: the level keeps its output, its in-context writes stop (what it stores: "
            "the answer to \"which level holds this memory\"). Silence: its output is zeroed "
            "(what the rest of the model depends on, including what later levels compute "
            "from it).")
        self.kind_combo.currentIndexChanged.connect(lambda _i: self._select())
        self.toolbar.insertWidget(0, self.kind_combo)
        self.tables: dict[str, tuple] = {}  # kind -> (step, names, delays, table)
        self.kind = probes.ABLATION_KINDS[0]  # shown: the chosen kind, or the one measured
        self.note = ""  # why the chosen kind is not the one shown
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
    @property
    def chosen(self) -> str:
        """The ablation kind the user chose (freeze by default)."""
        return self.kind_combo.currentData() or probes.ABLATION_KINDS[0]

    def choose(self, kind: str) -> None:
        self.kind_combo.setCurrentIndex(self.kind_combo.findData(kind))

    def clear(self) -> None:
        self.tables = {}
        self.names, self.delays, self.drop, self.full = [], np.zeros(0, np.int64), \
            np.zeros((0, 0)), np.zeros(0)
        self.step = None
        self.note = ""
        self.setWindowTitle(self.title.replace("&", "&&"))
        self.levels.reset()
        self.set_message(self.empty_text)
        self.mark_dirty()

    def set_table(self, step: int, names: list[str], delays, table: np.ndarray,
                  ablation: str = "silence") -> None:
        """A recall table as ``probes.delay_table`` gives it (row 0 = "none", the full model)
        for one ablation kind."""
        levels, _ = probes.ablation_drop(list(names), np.asarray(table, dtype=float))
        if not levels:
            return
        self.tables[ablation] = (int(step), list(names), np.asarray(delays, dtype=np.int64),
                                 np.asarray(table, dtype=float))
        self._select()

    def set_evaluation(self, event) -> None:
        """Both tables of a live ``Evaluation`` (freeze where the run measured it)."""
        for kind, recall in (("silence", event.recall), ("freeze", event.frozen)):
            if event.delays and recall and "" in recall:
                names, delays, table = evaluation_table(event.delays, recall, self.level_order)
                self.set_table(event.step, names, delays, table, kind)

    def set_delay_rows(self, delay_rows) -> None:
        """delay.csv rows (both formats): each ablation kind's table at its latest step."""
        rows = list(delay_rows)
        if not rows:
            return
        for kind in probes.ablations_measured(rows):
            step = max(r[0] for r in rows if (r[4] if len(r) > 4 else "silence") == kind)
            names, delays, table = probes.delay_table(rows, step, ablation=kind)
            self.set_table(step, names, delays, table, kind)

    def _select(self) -> None:
        """Show the chosen kind's table, or the other one with a note saying why."""
        chosen = self.chosen
        if chosen in self.tables:
            kind, self.note = chosen, ""
        elif self.tables:
            kind = next(k for k in probes.ABLATION_KINDS if k in self.tables)
            self.note = f"{chosen} was not measured in this run; showing {kind}"
        else:
            return
        self.kind = kind
        step, names, delays, table = self.tables[kind]
        levels, drop = probes.ablation_drop(names, table)
        # Rows in model order (delay.csv sorts them by name).
        rank = {lid: i for i, lid in enumerate(self.level_order)}
        order = sorted(range(len(levels)), key=lambda i: (rank.get(levels[i], len(rank)), i))
        self.step = step
        self.names = [levels[i] for i in order]
        self.delays = delays
        self.drop = np.ascontiguousarray(drop[order], dtype=np.float32)
        self.full = table[0]
        self.setWindowTitle(f"{self.title} · {kind}".replace("&", "&&"))
        self.mark_dirty()

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
        what = probes.ABLATION_VERB[self.kind]
        # A short title (a plot's title sets its minimum width: the whole sentence pushed the
        # longer delays out of a narrow dock); the meaning is in the tooltip and the combo's.
        self.plot.setTitle(f"recall lost when a level is {what}",
                           color=self.palette_.plot_foreground, size="8pt")
        self.plot.setToolTip(f"Recall lost (full model minus ablated) when a level is {what}: "
                             f"{probes.ABLATION_MEANING[self.kind]}.")
        self.plot.setLabel("left", f"level {what}", color=self.palette_.plot_foreground)
        note = f" · {self.note}" if self.note else ""
        self.set_message(f"Level {what} · step {grouped(self.step)}{note}")

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
        """Every measured kind's table (not only the one shown)."""
        header = ["step", "ablation", "level", "delay", "recall_full", "recall_ablated",
                  "recall_lost"]
        rows: list[list] = []
        for kind in probes.ABLATION_KINDS:
            if kind not in self.tables:
                continue
            step, names, delays, table = self.tables[kind]
            levels, drop = probes.ablation_drop(names, table)
            for i, name in enumerate(levels):
                for j, delay in enumerate(delays.tolist()):
                    full, lost = float(table[0, j]), float(drop[i, j])
                    rows.append([step, kind, name, int(delay), full, full - lost, lost])
        return header, rows
