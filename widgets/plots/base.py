"""What every plot dock shares: the dock frame, theming, growable series, legends in rows of
their own, and the redraw scheduler that bounds drawing to ≤ 30 Hz (heatmap colour scales:
``plots/heatmap.py``).

Data and drawing are separate. A dock's ``set_*``/``show_*``/``append_*`` methods only store
data and mark the dock dirty (cheap, any rate); :class:`RedrawScheduler` then calls
:meth:`PlotDock.redraw_if_due` at most 30 times a second, and a dock that is hidden (closed,
or behind another tab) skips the redraw until it is shown again. pyqtgraph items are created
when a dock is built (or when a new level, sub-task or compared run first appears) and are
then only fed with ``setData``/``setImage``.
"""
from __future__ import annotations

import math
import time
from typing import ClassVar, Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QDockWidget, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from nlstudio.widgets import theme
# Heatmap scales live in plots/heatmap.py; re-exported for the lessons, which import them here.
from nlstudio.widgets.plots.heatmap import (NICE_STEPS, SymmetricColorBar,  # noqa: F401
                                            SymmetricLevels, nice_ceil)

MAX_REDRAW_HZ = 30.0
# Python time one frame may spend feeding items before the rest waits for the next frame: a
# frame's GIL time is time the training thread cannot run Python (bench/gui.py measures it).
FRAME_BUDGET_S = 0.010
# Line styles of compared runs (the live/opened run is solid).
COMPARE_STYLES = (Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine,
                  Qt.PenStyle.DashDotDotLine)


def parametric(kind: str) -> bool:
    """Whether a level kind has a memory that is written (the registry says; attention
    re-reads its context instead). An unknown kind is drawn as parametric."""
    from nlstudio.catalog import kind_info

    try:
        return kind_info(kind).parametric
    except KeyError:
        return True


def compare_style(index: int) -> Qt.PenStyle:
    return COMPARE_STYLES[index % len(COMPARE_STYLES)]


def pen(color: str, width: float = 1.5, style: Qt.PenStyle = Qt.PenStyle.SolidLine,
        alpha: int | None = None):
    c = QColor(color)
    if alpha is not None:
        c.setAlpha(alpha)
    p = pg.mkPen(c, width=width)
    p.setStyle(style)
    p.setCosmetic(True)
    return p


class Series:
    """A growable (x, y) float64 series with amortised O(1) append."""

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def clear(self) -> None:
        self.n = 0

    def _reserve(self, n: int) -> None:
        if n > len(self._x):
            size = max(n, 2 * len(self._x))
            for name in ("_x", "_y"):
                grown = np.empty(size)
                grown[:self.n] = getattr(self, name)[:self.n]
                setattr(self, name, grown)

    def append(self, x: float, y: float) -> None:
        self._reserve(self.n + 1)
        self._x[self.n], self._y[self.n] = x, y
        self.n += 1

    def extend(self, xs: Iterable[float], ys: Iterable[float]) -> None:
        xs, ys = np.asarray(list(xs), float), np.asarray(list(ys), float)
        self._reserve(self.n + len(xs))
        self._x[self.n:self.n + len(xs)] = xs
        self._y[self.n:self.n + len(ys)] = ys
        self.n += len(xs)

    def set(self, xs, ys) -> None:
        self.n = 0
        self.extend(xs, ys)

    @property
    def x(self) -> np.ndarray:
        return self._x[:self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[:self.n]


def style_plot(plot: pg.PlotItem, p: theme.Palette, title: str | None = None) -> None:
    """Axes, labels, title and grid of a PlotItem in the palette's colours (``title``: a new
    title; without one, the title the plot shows is kept and recoloured)."""
    fg = QColor(p.plot_foreground)
    for name in ("left", "bottom", "right", "top"):
        axis = plot.getAxis(name)
        no_si_prefix(axis)
        axis.setPen(pg.mkPen(p.muted))
        axis.setTextPen(pg.mkPen(fg))
        label = axis.labelText
        if label:
            axis.setLabel(label, units=axis.labelUnits or None, color=p.plot_foreground)
    if title is None and plot.titleLabel.maximumHeight() > 0:  # shown (setTitle(None) hides)
        title = plot.titleLabel.text or None
    if title is not None:
        plot.setTitle(title, color=p.plot_foreground, size="9pt")
    plot.showGrid(x=True, y=True, alpha=0.18 if p.dark else 0.25)
    if plot.legend is not None:
        style_legend(plot.legend, p, framed=True)


def row_legend(columns: int = 3, size: str = "7pt") -> pg.LegendItem:
    """A legend for a layout row of its own (beside the plots, never over their curves),
    scaled with the rest of the figure in exports: pyqtgraph's legends ignore
    transformations, so a PNG rendered at 2× would show their text at half size."""
    legend = pg.LegendItem(colCount=columns, labelTextSize=size, verSpacing=-8, horSpacing=6)
    legend.setFlag(legend.GraphicsItemFlag.ItemIgnoresTransformations, False)
    return legend


LEGEND_NAME_CHARS = 32  # a run's name in a legend (run folders are long: slug + timestamp)


def legend_text(label: str, limit: int = LEGEND_NAME_CHARS) -> str:
    """A run's legend label short enough for a dock: the middle of a long name elided (its
    start and its timestamp stay), a trailing "(…)" kept; exported CSVs keep the full name."""
    name, suffix = label, ""
    if label.endswith(")") and " (" in label:
        cut = label.rindex(" (")
        name, suffix = label[:cut], label[cut:]
    if len(name) > limit:
        tail = min(15, limit // 2)
        name = name[:limit - tail - 1] + "…" + name[-tail:]
    return name + suffix


def style_legend(legend: pg.LegendItem, p: theme.Palette, framed: bool = False) -> None:
    legend.setLabelTextColor(QColor(p.plot_foreground))
    for _sample, label in legend.items:  # existing labels keep their colour otherwise
        label.setText(label.text, color=p.plot_foreground)
    if framed:
        bg = QColor(p.plot_background)
        bg.setAlpha(200)
        legend.setBrush(pg.mkBrush(bg))
        legend.setPen(pg.mkPen(p.border))


def show_in_layout(layout: pg.GraphicsLayout, item, row: int, col: int, shown: bool) -> None:
    """Put ``item`` in its row of ``layout``, or take it out: a hidden row takes no height
    (a merely hidden item would keep its minimum height in a QGraphicsGridLayout)."""
    placed = item in layout.items
    if shown and not placed:
        layout.addItem(item, row=row, col=col)
    elif not shown and placed:
        layout.removeItem(item)
    item.setVisible(shown)


def no_si_prefix(axis: pg.AxisItem) -> None:
    """Tick values as they are: no SI scaling ("recall (x0.001)" reads worse than 0.2).

    pyqtgraph's ``enableAutoSIPrefix(False)`` recomputes the scale from the axis range before
    it looks at the flag (0.13/0.14): called while an axis shows 0…0.9 it leaves a ×1000
    scale behind, and the ticks read 800/600/400 from then on. The scale is reset here."""
    axis.autoSIPrefix = False
    axis.autoSIPrefixScale = 1.0
    axis.labelUnitPrefix = ""
    axis.picture = None  # the cached ticks were drawn with the old scale
    axis.update()


def set_axis_label(plot: pg.PlotItem, side: str, text: str, p: theme.Palette) -> None:
    plot.getAxis(side).setLabel(text, color=p.plot_foreground)


class PlotDock(QDockWidget):
    """A dock showing one family of plots (subclasses define ``key`` and ``title``)."""

    key: ClassVar[str] = "plot"
    title: ClassVar[str] = "Plot"  # as the user reads it ("Loss & metric")
    empty_text: ClassVar[str] = ""  # the message before any run
    # The message line shares its row with the dock's controls (a few buttons).
    message_beside_tools: ClassVar[bool] = True
    # The most redraws a second this dock needs (≤ MAX_REDRAW_HZ). Curves that move by a
    # logged row every few steps, and spectra averaged over snapshots, gain nothing from 30.
    max_hz: ClassVar[float] = MAX_REDRAW_HZ
    redrawRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        # Qt reads "&" in a dock's title as a mnemonic (the title bar, its tab, the Panels
        # menu entry): "&&" shows one ampersand everywhere.
        super().__init__(self.title.replace("&", "&&"), parent)
        self.setObjectName(f"{self.key}Dock")
        self.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        body = QWidget(self)
        body.setObjectName(f"{self.key}Body")
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 2, 4, 4)
        layout.setSpacing(2)
        self.toolbar = QHBoxLayout()
        self.toolbar.setSpacing(8)
        self.message = QLabel("", body)
        self.message.setObjectName(f"{self.key}Message")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if self.message_beside_tools:  # one row for both: height goes to the plots
            self.toolbar.addWidget(self.message, 1)
            self.toolbar.addStretch(0)  # holds the tools at their size when it is hidden
        else:  # beside many controls it would be squeezed into a column one word wide
            layout.addWidget(self.message)
            self.toolbar.addStretch(1)
        layout.addLayout(self.toolbar)
        self.view = pg.GraphicsLayoutWidget(body)
        self.view.setObjectName(f"{self.key}View")
        self.view.ci.setContentsMargins(2, 2, 2, 2)
        self.view.ci.setSpacing(4)
        layout.addWidget(self.view, 1)
        self.setWidget(body)
        self.dirty = False
        self.last_redraw = -1e9
        self.redraws = 0  # completed redraws (tests and the benchmark read it)
        self.palette_: theme.Palette = theme.current()
        self.visibilityChanged.connect(self._on_visibility)
        theme.manager().themeChanged.connect(self._on_theme)

    # ---- redraw protocol ---------------------------------------------------------------
    def mark_dirty(self) -> None:
        self.dirty = True
        self.redrawRequested.emit()

    def is_shown(self) -> bool:
        # A dock behind another tab stays isVisible() in Qt 6; its visible region is empty.
        # (The body, not the plots' view: an empty dock hides its view, see show_view.)
        return self.isVisible() and not self.widget().visibleRegion().isEmpty()

    def show_view(self, shown: bool) -> None:
        """Show the plots, or, while there is nothing to plot, only the message: no axes
        with made-up ranges. (Hiding every item of the layout instead would shrink it.)"""
        if self.view.isVisibleTo(self.widget()) != shown:
            self.view.setVisible(shown)

    def redraw_if_due(self, now: float | None = None) -> bool:
        if not self.dirty or not self.is_shown():
            return False
        now = time.monotonic() if now is None else now
        if now - self.last_redraw < 1.0 / self.max_hz - 0.002:
            return False  # stays dirty: a later frame draws it
        self.dirty = False
        self.last_redraw = now
        self.redraw()
        self.redraws += 1
        return True

    def redraw(self) -> None:
        """Push the stored data into the pyqtgraph items (subclasses)."""

    def _on_visibility(self, visible: bool) -> None:
        if visible and self.dirty:
            self.redrawRequested.emit()

    # ---- content ---------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget all data (a new run starts)."""

    def reset(self) -> None:
        """No run at all (another project): no data, the empty-state message."""
        self.clear()
        self.set_message(self.empty_text)

    def set_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def has_data(self) -> bool:
        return False

    # ---- theme -------------------------------------------------------------------------
    def _on_theme(self, palette: theme.Palette) -> None:
        self.apply_theme(palette)

    def apply_theme(self, palette: theme.Palette) -> None:
        """Recolour every item for ``palette`` (also used to export dark plots on light)."""
        self.palette_ = palette
        self.view.setBackground(palette.plot_background)
        self.dirty = True
        self.redrawRequested.emit()

    # ---- export --------------------------------------------------------------------------
    def export_item(self):
        """The graphics item that PNG/SVG exports render (the whole layout of the dock)."""
        return self.view.ci

    def csv_table(self) -> tuple[list[str], list[list]]:
        """The data behind the plot as columns and rows (written to CSV)."""
        return [], []


class RedrawScheduler(QObject):
    """Redraws dirty, visible docks at most ``max_hz`` times a second (time-based)."""

    redrawn = Signal(int)  # number of docks redrawn in this frame

    def __init__(self, docks: Iterable[PlotDock] = (), parent: QObject | None = None,
                 max_hz: float = MAX_REDRAW_HZ, budget_s: float = FRAME_BUDGET_S) -> None:
        super().__init__(parent)
        self.setObjectName("redrawScheduler")
        self.min_interval = 1.0 / max_hz
        self.budget_s = budget_s
        self._next = 0  # where the next frame starts: docks left over by a frame go first
        self.docks: list[PlotDock] = []
        self._last = -1e9
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self.redraw_now)
        self.frames = 0
        self.frame_times: list[float] = []  # monotonic time of each frame (bench)
        self.record = False
        for dock in docks:
            self.add(dock)

    def add(self, dock: PlotDock) -> None:
        self.docks.append(dock)
        dock.redrawRequested.connect(self.request)

    def request(self) -> None:
        if self._timer.isActive():
            return
        # 2 ms of slack so a 33 ms delivery timer with jitter still redraws every tick.
        wait = self._last + self.min_interval - 0.002 - time.monotonic()
        self._timer.start(max(0, min(1000, int(math.ceil(wait * 1000)))))

    def redraw_now(self) -> int:
        """One frame: redraw dirty, shown docks (in turn) until the frame's budget is spent;
        whatever is left over goes first in the next frame."""
        self._timer.stop()
        now = time.monotonic()
        self._last = now
        count = 0
        n = len(self.docks)
        for k in range(n):
            i = (self._next + k) % n
            if self.docks[i].redraw_if_due(now):
                count += 1
                if time.monotonic() - now > self.budget_s and k + 1 < n:
                    self._next = (i + 1) % n
                    break
        else:
            self._next = 0
        if any(d.dirty and d.is_shown() for d in self.docks):
            self.request()  # left over by the budget, or waiting for its own rate
        if count:
            self.frames += 1
            if self.record:
                self.frame_times.append(now)
            self.redrawn.emit(count)
        return count
