"""Memory matrices: for every level, a heatmap of its fast weights and one of its latest
surprise ⊗ key write, each with a colour bar.

Small multiples: one column per level (memory above, write below), or one level, large, picked
in the level selector. Images are row-major,
C-contiguous float32, drawn through a 256-entry diverging lookup table with fixed symmetric
levels ±L (L = max|x| with a slow decay, :class:`SymmetricLevels`), never per-frame auto
levels. The grid is built when the set of levels changes (a new run); snapshots only feed
``setImage``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg

from PySide6.QtWidgets import QComboBox

from nlstudio import events as ev
from nlstudio.widgets import theme
from nlstudio.widgets.plots.base import PlotDock, SymmetricColorBar, SymmetricLevels

ALL_LEVELS = "All levels"
KIND_NOTES = {"attention": "re-reads its context"}


def level_caption(level_id: str, kind: str, period) -> str:
    if kind == "attention":
        when = "∞"
    elif period is None:
        when = "frozen"
    else:
        when = f"C={period}"
    return f"{level_id} · {kind} · {when}"


class _Title(pg.LabelItem):
    """A cell title that never widens the grid: long text is elided by the cell width
    instead of pushing the other levels' cells out of the dock."""

    def updateMin(self) -> None:  # noqa: N802 - pyqtgraph API
        super().updateMin()
        self.setMinimumWidth(10)


@dataclass
class _Cell:
    """One heatmap: view box, image, colour bar, note and its colour levels."""

    view: pg.ViewBox
    image: pg.ImageItem
    bar: SymmetricColorBar
    note: pg.TextItem
    title: _Title
    levels: SymmetricLevels = field(default_factory=SymmetricLevels)
    data: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    text: str = ""


class MatricesDock(PlotDock):
    key = "matrices"
    title = "Memory matrices"

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
        self.toolbar.insertWidget(0, self.level_combo)
        self.apply_theme(self.palette_)
        self.set_message("Memory matrices appear with the first snapshot of a live run.")

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
        self.set_message("Memory matrices appear with the first snapshot of a live run.")
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
        text = self._cell_title(lid, which, cell)
        if force or text != cell.text:  # a LabelItem update relayouts: only on change
            cell.text = text
            cell.title.setText(text, color=self.palette_.plot_foreground, size="8pt")

    def _set_cell(self, lid: str, which: str, arr) -> None:
        cell = self.cells[(lid, which)]
        if arr is None or np.size(arr) == 0:
            cell.data = None
            cell.image.clear()
            kind = self.level_info.get(lid, ("", None))[0]
            cell.note.setText(KIND_NOTES.get(kind, "no writes" if which == "write"
                                             else "no fast weights"))
            cell.shape = None
            cell.view.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
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
            cell.view.setRange(xRange=(0, data.shape[1]), yRange=(0, data.shape[0]), padding=0)

    def _cell_title(self, lid: str, which: str, cell: _Cell) -> str:
        kind, period = self.level_info.get(lid, ("", None))
        large = len(self.shown_levels) == 1
        scale = f" ±{cell.levels.value:.2g}" if cell.data is not None else ""
        size = (f" {cell.data.shape[0]}×{cell.data.shape[1]}"
                if cell.data is not None and large else "")
        if which == "memory":
            head = level_caption(lid, kind, period) if large else \
                f"{lid} · {level_caption(lid, kind, period).split(' · ')[-1]}"
            what = "fast weights" if large else "memory"
            return f"<b>{head}</b><br>{what}{size}{scale}"
        what = "latest write (surprise ⊗ key)" if large else "write"
        return f"{what}{size}{scale}"

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
                title = _Title("", justify="left")
                view = pg.ViewBox(lockAspect=False, enableMenu=False, invertY=True)
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
                cell = _Cell(view=view, image=image, bar=bar, note=note, title=title)
                self.cells[(lid, which)] = cell
                note.setText("waiting for a snapshot")
        self._place()
        self._style_cells()
        self.mark_dirty()

    def _place(self) -> None:
        """Put the shown levels' cells in the layout: a column per level (memory above
        write), or, for one level, memory and write side by side."""
        layout = self.view.ci
        layout.clear()
        shown = self.shown_levels
        single = len(shown) == 1 and len(self.level_ids) > 1
        large = len(shown) == 1
        for col, lid in enumerate(shown):
            for r, which in enumerate(("memory", "write")):
                cell = self.cells[(lid, which)]
                if single:
                    row, c = 0, 2 * r
                else:
                    row, c = 2 * r, 2 * col
                layout.addItem(cell.title, row=row, col=c, colspan=2)
                layout.addItem(cell.view, row=row + 1, col=c)
                layout.addItem(cell.bar, row=row + 1, col=c + 1)
                # Small multiples: the bar is a bare gradient (the title gives ±L); large:
                # a labelled scale.
                cell.bar.set_labelled(large)
                self._update_title(lid, which, cell, force=True)

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
            cell.view.setBorder(pg.mkPen(p.border))
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
