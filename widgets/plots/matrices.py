"""Memory matrices: for every level, a heatmap of its fast weights and one of its latest
surprise ⊗ key write, each with a colour bar.

Small multiples, every level's memory and write side by side or stacked, in the grid that
gives the largest square panels for the dock's shape (:func:`grid_shape`, which counts what
the layout spends on margins, spacing, titles and colour bars; each heatmap fills a square
whatever its matrix's shape), or one level, large, picked in the level selector. Cell titles
are elided to their cell (never over a neighbour's), the full text in their tooltip.
Images are row-major, C-contiguous float32, drawn through a 256-entry diverging lookup table with fixed symmetric
levels ±L (L = max|x| with a slow decay, :class:`SymmetricLevels`), never per-frame auto
levels. The grid is built when the set of levels changes (a new run); snapshots only feed
``setImage``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg

from PySide6.QtCore import QEvent, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF
from PySide6.QtWidgets import QComboBox, QGraphicsRectItem, QSizePolicy

from nlstudio import events as ev
from nlstudio.widgets import theme
from nlstudio.widgets.plots.base import PlotDock, parametric
from nlstudio.widgets.plots.heatmap import SymmetricColorBar, SymmetricLevels

ALL_LEVELS = "All levels"
NON_PARAMETRIC_NOTE = "re-reads its context"  # attention: no memory is written


def level_caption(level_id: str, kind: str, period) -> str:
    if not parametric(kind):
        when = "∞"
    elif period is None:
        when = "frozen"
    else:
        when = f"C={period}"
    return f"{level_id} · {kind} · {when}"


TITLE_POINT_SIZE = 8.0
TITLE_PAD = 2  # px above and below a title's lines


def title_font(bold: bool = False) -> QFont:
    font = QFont()
    font.setPointSizeF(TITLE_POINT_SIZE)
    font.setBold(bold)
    return font


def title_height(lines: int) -> int:
    """The px a title of ``lines`` lines takes down (its first line bold)."""
    spacing = max(QFontMetricsF(title_font(True)).lineSpacing(),
                  QFontMetricsF(title_font()).lineSpacing())
    return int(math.ceil(lines * spacing)) + 2 * TITLE_PAD


class _Title(pg.GraphicsWidget):
    """A cell's title: ``lines`` lines of text (the first bold when ``bold_head``), each
    elided to the cell's width. It never widens the grid and never runs into a neighbour's
    title; the full text is its tooltip (and the level selector shows one level large)."""

    def __init__(self, lines: int, bold_head: bool) -> None:
        super().__init__()
        self.setCacheMode(self.CacheMode.DeviceCoordinateCache)
        self._lines: list[str] = [""] * lines
        self._bold_head = bold_head
        self._color = QColor("#000000")
        self._fonts = [title_font(bold_head and i == 0) for i in range(lines)]
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(10)
        self.setFixedHeight(title_height(lines))

    def set_lines(self, lines: list[str], color: str) -> None:
        self._lines = (list(lines) + [""] * len(self._fonts))[:len(self._fonts)]
        self._color = QColor(color)
        self.setToolTip("\n".join(t for t in self._lines if t))
        self.update()

    def shown_lines(self) -> list[str]:
        """The lines as drawn: elided to the title's width."""
        width = max(0.0, self.boundingRect().width() - 2)
        return [QFontMetricsF(font).elidedText(text, Qt.TextElideMode.ElideRight, width)
                for text, font in zip(self._lines, self._fonts)]

    def text_rects(self) -> list[QRectF]:
        """Where each drawn line's ink is (item coordinates; tests)."""
        rects, y = [], TITLE_PAD
        for text, font in zip(self.shown_lines(), self._fonts):
            metrics = QFontMetricsF(font)
            rects.append(QRectF(1, y, metrics.horizontalAdvance(text), metrics.height()))
            y += metrics.lineSpacing()
        return rects

    def paint(self, painter, *args) -> None:  # noqa: D401 - Qt API
        painter.setPen(pg.mkPen(self._color))
        for text, font, rect in zip(self.shown_lines(), self._fonts, self.text_rects()):
            painter.setFont(font)
            painter.drawText(rect.adjusted(0, 0, 1, 0),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                             text)


TITLE_LINES = {"memory": 2, "write": 1}  # a memory cell's title: level, then what it shows


@dataclass(frozen=True)
class GridMetrics:
    """What the layout of the cells spends besides the squares, in px: the layout's
    contents margins and spacing, a title's height per cell kind, a colour bar's width."""

    margins: tuple[float, float, float, float] = (2, 2, 2, 2)  # left, top, right, bottom
    spacing: tuple[float, float] = (4, 4)  # between columns, between rows
    titles: tuple[float, float] = (30, 16)  # a memory cell's title, a write cell's title
    bar: float = 11  # a colour bar


def grid_side(levels: int, width: float, height: float, side_by_side: bool, per_row: int,
              m: GridMetrics) -> float:
    """The side of the square heatmaps when ``levels`` levels are laid out ``per_row`` to a
    row, memory beside write (``side_by_side``) or above it, in a ``width`` × ``height`` px
    view: what the grid layout gives each view cell (every heatmap has a view column and a
    colour-bar column; every cell a title row and a view row), the smaller of its sides."""
    rows = -(-max(levels, 1) // per_row)
    heatmaps_across = per_row * (2 if side_by_side else 1)
    across = (width - m.margins[0] - m.margins[2] - (2 * heatmaps_across - 1) * m.spacing[0]
              - heatmaps_across * m.bar)
    if side_by_side:  # per block row: a title row (the taller title sets it), a view row
        views_down, grid_rows = rows, 2 * rows
        titles = rows * max(m.titles)
    else:  # per block row: memory title, memory view, write title, write view
        views_down, grid_rows = 2 * rows, 4 * rows
        titles = rows * sum(m.titles)
    down = (height - m.margins[1] - m.margins[3] - (grid_rows - 1) * m.spacing[1] - titles)
    return min(across / heatmaps_across, down / views_down)


def grid_shape(levels: int, width: float, height: float, m: GridMetrics
               ) -> tuple[bool, int]:
    """How to lay out ``levels`` levels' two heatmaps (memory, write) in ``width`` × ``height``
    px: (memory beside write?, levels per row), chosen for the largest square heatmap
    (:func:`grid_side`; ties: the fewer rows)."""
    best, choice = None, (False, max(levels, 1))
    for side_by_side in (False, True):
        for per_row in range(1, max(levels, 1) + 1):
            rows = -(-max(levels, 1) // per_row)
            side = grid_side(levels, width, height, side_by_side, per_row, m)
            key = (round(side), -rows)
            if best is None or key > best:
                best, choice = key, (side_by_side, per_row)
    return choice


@dataclass
class _Cell:
    """One heatmap: view box, image, colour bar, note and its colour levels."""

    view: pg.ViewBox
    image: pg.ImageItem
    bar: SymmetricColorBar
    note: pg.TextItem
    title: _Title
    frame: QGraphicsRectItem  # around the matrix's square (the view may be wider)
    levels: SymmetricLevels = field(default_factory=SymmetricLevels)
    data: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    text: str = ""


class MatricesDock(PlotDock):
    key = "matrices"
    title = "Memory matrices"
    empty_text = "Memory matrices appear with the first snapshot of a live run."

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.level_ids: list[str] = []
        self.level_info: dict[str, tuple[str, object]] = {}  # id -> (kind, period)
        self.cells: dict[tuple[str, str], _Cell] = {}  # (level id, "memory" | "write")
        self.step: int | None = None
        self._pending: ev.Snapshot | None = None
        self._last_snapshot: ev.Snapshot | None = None
        self.level_combo = QComboBox()
        self.level_combo.setObjectName("matricesLevelCombo")
        self.level_combo.setToolTip("Show every level side by side, or one level large")
        self.level_combo.addItem(ALL_LEVELS)
        self.level_combo.currentTextChanged.connect(self._on_level_choice)
        self._arrangement: tuple = ()
        self.view.installEventFilter(self)
        self.toolbar.insertWidget(0, self.level_combo)
        self.apply_theme(self.palette_)
        self.set_message(self.empty_text)

    # ---- data in ---------------------------------------------------------------------------
    def set_levels(self, levels: list[dict]) -> None:
        """The model's levels (``[{"id", "kind", "period"}, ...]``); rebuilds the grid only
        when the set of levels changed."""
        info = {str(lv["id"]): (str(lv.get("kind", "")), lv.get("period")) for lv in levels}
        ids = [str(lv["id"]) for lv in levels]
        if ids == self.level_ids and info == self.level_info:
            for cell in self.cells.values():
                cell.levels.reset()
            return
        self.level_ids, self.level_info = ids, info
        self._build()

    def clear(self) -> None:
        self._pending = None
        self._last_snapshot = None
        self.step = None
        for cell in self.cells.values():
            cell.data = None
            cell.levels.reset()
        self.set_message(self.empty_text)
        self.mark_dirty()

    def show_snapshot(self, snapshot: ev.Snapshot) -> None:
        """Keep only the newest snapshot; drawing happens at the scheduler's pace."""
        missing = [lid for lid in snapshot.levels if lid not in self.level_info]
        if missing:
            levels = [{"id": lid, "kind": s.kind, "period": s.period}
                      for lid, s in snapshot.levels.items()]
            self.set_levels(levels)
        self._pending = snapshot
        self.set_message("")
        self.mark_dirty()

    def has_data(self) -> bool:
        return any(c.data is not None for c in self.cells.values())

    # ---- drawing ---------------------------------------------------------------------------
    @property
    def shown_levels(self) -> list[str]:
        choice = self.level_combo.currentText()
        return [choice] if choice in self.level_ids else list(self.level_ids)

    def redraw(self) -> None:
        snap, self._pending = self._pending, None
        if snap is not None:
            self.step = snap.step
            self._last_snapshot = snap
            for lid in self.shown_levels:
                level = snap.levels.get(lid)
                for which in ("memory", "write"):
                    arr = getattr(level, which) if level is not None else None
                    self._set_cell(lid, which, arr)
        for lid in self.shown_levels:
            for which in ("memory", "write"):
                self._update_title(lid, which, self.cells[(lid, which)])

    def _update_title(self, lid: str, which: str, cell: "_Cell", force: bool = False) -> None:
        lines = self._cell_title(lid, which, cell)
        text = "\n".join(lines)
        if force or text != cell.text:
            cell.text = text
            cell.title.set_lines(lines, self.palette_.plot_foreground)

    def _set_cell(self, lid: str, which: str, arr) -> None:
        cell = self.cells[(lid, which)]
        if arr is None or np.size(arr) == 0:
            cell.data = None
            cell.image.clear()
            kind = self.level_info.get(lid, ("", None))[0]
            cell.note.setText("no writes" if which == "write" else NON_PARAMETRIC_NOTE
                              if not parametric(kind) else "no fast weights")
            cell.shape = None
            cell.note.setPos(0.5, 0.5)
            cell.note.setVisible(True)
            return
        data = np.ascontiguousarray(arr, dtype=np.float32)
        if data.ndim == 1:
            data = data[None, :]
        cell.note.setVisible(False)
        level = cell.levels.update(data)
        cell.data = data
        cell.image.setImage(data, autoLevels=False)
        if level != cell.bar.level:  # levels move in nice steps: rarely
            cell.image.setLevels((-level, level))
            cell.bar.set_level(level)
        if cell.shape != data.shape:
            cell.shape = data.shape
            # Every matrix fills the same unit square: a 64×16 weight would otherwise be a
            # strip a few pixels wide; its shape is in the title of the large view.
            cell.image.setRect(QRectF(0, 0, 1, 1))

    def _cell_title(self, lid: str, which: str, cell: _Cell) -> list[str]:
        """The title's lines: a memory cell's level (bold), then what it shows; a write
        cell's one line."""
        kind, period = self.level_info.get(lid, ("", None))
        large = len(self.shown_levels) == 1
        scale = f" ±{cell.levels.value:.2g}" if cell.data is not None else ""
        size = (f" {cell.data.shape[0]}×{cell.data.shape[1]}"
                if cell.data is not None and large else "")
        if which == "memory":
            head = level_caption(lid, kind, period) if large else \
                f"{lid} · {level_caption(lid, kind, period).split(' · ')[-1]}"
            what = "fast weights" if large else "memory"
            return [head, f"{what}{size}{scale}"]
        what = "latest write (surprise ⊗ key)" if large else "write"
        return [f"{what}{size}{scale}"]

    # ---- items -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.view.ci.clear()
        self.cells.clear()
        cmap = theme.diverging_colormap(self.palette_)
        choice = self.level_combo.currentText()
        self.level_combo.blockSignals(True)
        self.level_combo.clear()
        self.level_combo.addItems([ALL_LEVELS, *self.level_ids])
        self.level_combo.setCurrentText(choice if choice in self.level_ids else ALL_LEVELS)
        self.level_combo.blockSignals(False)
        for lid in self.level_ids:
            for which in ("memory", "write"):
                title = _Title(TITLE_LINES[which], bold_head=which == "memory")
                # A square panel (the unit square), whatever the dock's shape.
                view = pg.ViewBox(lockAspect=True, enableMenu=False, invertY=True)
                view.setMouseEnabled(x=False, y=False)
                view.setDefaultPadding(0)
                image = pg.ImageItem(axisOrder="row-major")
                # ≤ 128×128 (probes.MAX_MATRIX_SIDE): no downsampling to compute per paint
                view.addItem(image)
                note = pg.TextItem("", anchor=(0.5, 0.5))
                view.addItem(note)
                note.setPos(0.5, 0.5)
                image.setLookupTable(cmap.getLookupTable(nPts=256))
                image.setLevels((-1.0, 1.0))
                bar = SymmetricColorBar(cmap)
                frame = QGraphicsRectItem(0, 0, 1, 1)
                view.addItem(frame, ignoreBounds=True)
                view.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
                cell = _Cell(view=view, image=image, bar=bar, note=note, title=title,
                             frame=frame)
                self.cells[(lid, which)] = cell
                note.setText("waiting for a snapshot")
        self._place()
        self._style_cells()
        self.mark_dirty()

    def _place(self) -> None:
        """Put the shown levels' cells in the layout, in the arrangement that gives them the
        largest square (:func:`grid_shape`): per level, memory above write or beside it."""
        layout = self.view.ci
        layout.clear()
        shown = self.shown_levels
        large = len(shown) == 1
        side_by_side, per_row = grid_shape(len(shown), self.view.width(), self.view.height(),
                                           self.grid_metrics(large))
        self._arrangement = (tuple(shown), side_by_side, per_row)
        for i, lid in enumerate(shown):
            block_row, block_col = divmod(i, per_row)
            for r, which in enumerate(("memory", "write")):
                cell = self.cells[(lid, which)]
                if side_by_side:
                    row, col = 2 * block_row, 2 * (2 * block_col + r)
                else:
                    row, col = 2 * (2 * block_row + r), 2 * block_col
                # The view first: each addItem activates the layout, which clamps the
                # layout's item to the layout's maximum size; with only a (fixed-height) title
                # in it, the whole grid would shrink to that title's height and stay there.
                layout.addItem(cell.view, row=row + 1, col=col)
                layout.addItem(cell.bar, row=row + 1, col=col + 1)
                layout.addItem(cell.title, row=row, col=col, colspan=2)
                # Small multiples: the bar is a bare gradient (the title gives ±L); large:
                # a labelled scale.
                cell.bar.set_labelled(large)
                self._update_title(lid, which, cell, force=True)

    def grid_metrics(self, large: bool) -> GridMetrics:
        """The cells' layout as it is: its margins and spacing, the titles' and bars' sizes
        (small multiples: bare bars; one level large: labelled ones)."""
        layout = self.view.ci.layout
        return GridMetrics(margins=tuple(layout.getContentsMargins()),
                           spacing=(layout.horizontalSpacing(), layout.verticalSpacing()),
                           titles=(title_height(TITLE_LINES["memory"]),
                                   title_height(TITLE_LINES["write"])),
                           bar=SymmetricColorBar.width_for(large))

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt API
        """Re-arrange the cells when the dock's shape calls for another grid."""
        if watched is self.view and event.type() == QEvent.Type.Resize and self.cells:
            shown = self.shown_levels
            wanted = (tuple(shown), *grid_shape(len(shown), self.view.width(),
                                                self.view.height(),
                                                self.grid_metrics(len(shown) == 1)))
            if wanted != self._arrangement:
                self._place()
        return super().eventFilter(watched, event)

    def _on_level_choice(self, _text: str) -> None:
        if not self.cells:
            return
        self._place()
        if self._pending is None and self._last_snapshot is not None:
            self._pending = self._last_snapshot  # draw the newly shown cells
        self.mark_dirty()

    def _style_cells(self) -> None:
        p = self.palette_
        cmap = theme.diverging_colormap(p)
        for (lid, which), cell in self.cells.items():
            cell.bar.set_colors(cmap, p.plot_foreground, p.border)
            cell.image.setLookupTable(cmap.getLookupTable(nPts=256))
            cell.note.setColor(p.muted)
            frame_pen = pg.mkPen(p.border)
            frame_pen.setCosmetic(True)
            cell.frame.setPen(frame_pen)
            self._update_title(lid, which, cell, force=True)

    def apply_theme(self, palette: theme.Palette) -> None:
        super().apply_theme(palette)
        self._style_cells()

    # ---- export --------------------------------------------------------------------------
    def csv_table(self) -> tuple[list[str], list[list]]:
        """Every level's matrices of the newest snapshot (whatever the selector shows)."""
        header = ["step", "level", "matrix", "row", "col", "value"]
        rows: list[list] = []
        snap = self._pending or self._last_snapshot
        if snap is None:
            return header, rows
        for lid, level in snap.levels.items():
            for which in ("memory", "write"):
                data = getattr(level, which)
                if data is None or np.size(data) == 0:
                    continue
                data = np.atleast_2d(np.asarray(data, dtype=np.float32))
                r, c = np.indices(data.shape)
                for i, j, v in zip(r.ravel().tolist(), c.ravel().tolist(),
                                   data.ravel().tolist()):
                    rows.append([snap.step, lid, which, i, j, v])
        return header, rows
