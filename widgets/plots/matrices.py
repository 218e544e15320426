"""Memory matrices: for every level, a heatmap of its fast weights and one of its latest
surprise ⊗ key write, each with a colour bar.

Small multiples: one column per level (memory above, write below). Images are row-major,
C-contiguous float32, drawn through a 256-entry diverging lookup table with fixed symmetric
levels ±L (L = max|x| with a slow decay, :class:`SymmetricLevels`), never per-frame auto
levels. The grid is built when the set of levels changes (a new run); snapshots only feed
``setImage``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg

from nlstudio import events as ev
from nlstudio.widgets import theme
from nlstudio.widgets.plots.base import PlotDock, SymmetricLevels

KIND_NOTES = {
    "attention": "non-parametric: re-reads its context, nothing is written",
}


def level_caption(level_id: str, kind: str, period) -> str:
    if kind == "attention":
        when = "∞"
    elif period is None:
        when = "frozen"
    else:
        when = f"C={period}"
    return f"{level_id} · {kind} · {when}"


@dataclass
class _Cell:
    """One heatmap: view box, image, colour bar, note and its colour levels."""

    view: pg.ViewBox
    image: pg.ImageItem
    bar: pg.ColorBarItem
    note: pg.TextItem
    title: pg.LabelItem
    levels: SymmetricLevels = field(default_factory=SymmetricLevels)
    data: np.ndarray | None = None
    shape: tuple[int, ...] | None = None


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
    def redraw(self) -> None:
        snap, self._pending = self._pending, None
        if snap is not None:
            self.step = snap.step
            for lid in self.level_ids:
                level = snap.levels.get(lid)
                for which in ("memory", "write"):
                    arr = getattr(level, which) if level is not None else None
                    self._set_cell(lid, which, arr)
        for (lid, which), cell in self.cells.items():
            cell.title.setText(self._cell_title(lid, which, cell),
                               color=self.palette_.plot_foreground, size="8pt")

    def _set_cell(self, lid: str, which: str, arr) -> None:
        cell = self.cells[(lid, which)]
        if arr is None or np.size(arr) == 0:
            cell.data = None
            cell.image.clear()
            kind = self.level_info.get(lid, ("", None))[0]
            cell.note.setText(KIND_NOTES.get(kind, "nothing written yet" if which == "write"
                                             else "no fast weights"))
            if cell.shape is not None:
                cell.note.setPos(cell.shape[1] / 2, cell.shape[0] / 2)
            cell.note.setVisible(True)
            return
        data = np.ascontiguousarray(arr, dtype=np.float32)
        if data.ndim == 1:
            data = data[None, :]
        cell.note.setVisible(False)
        level = cell.levels.update(data)
        cell.data = data
        cell.image.setImage(data, autoLevels=False, levels=(-level, level))
        if cell.shape != data.shape:
            cell.shape = data.shape
            cell.view.setRange(xRange=(0, data.shape[1]), yRange=(0, data.shape[0]), padding=0)

    def _cell_title(self, lid: str, which: str, cell: _Cell) -> str:
        if which == "memory":
            kind, period = self.level_info.get(lid, ("", None))
            head = f"<b>{level_caption(lid, kind, period)}</b><br>"
            what = "fast weights"
        else:
            head, what = "", "latest write (surprise ⊗ key)"
        if cell.data is None:
            return f"{head}{what}"
        rows, cols = cell.data.shape
        return f"{head}{what} {rows}×{cols}, ±{cell.levels.value:.3g}"

    # ---- items -------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = self.view.ci
        layout.clear()
        self.cells.clear()
        cmap = theme.diverging_colormap(self.palette_)
        for col, lid in enumerate(self.level_ids):
            for r, which in enumerate(("memory", "write")):
                title = pg.LabelItem("", justify="left")
                layout.addItem(title, row=2 * r, col=2 * col, colspan=2)
                view = pg.ViewBox(lockAspect=False, enableMenu=False, invertY=True)
                view.setMouseEnabled(x=False, y=False)
                view.setDefaultPadding(0)
                image = pg.ImageItem(axisOrder="row-major")
                image.setAutoDownsample(True)
                view.addItem(image)
                note = pg.TextItem("", anchor=(0.5, 0.5))
                view.addItem(note)
                note.setPos(0.5, 0.5)
                layout.addItem(view, row=2 * r + 1, col=2 * col)
                bar = pg.ColorBarItem(values=(-1.0, 1.0), width=8, colorMap=cmap,
                                      interactive=False, colorMapMenu=False)
                bar.setImageItem(image)
                layout.addItem(bar, row=2 * r + 1, col=2 * col + 1)
                cell = _Cell(view=view, image=image, bar=bar, note=note, title=title)
                self.cells[(lid, which)] = cell
                note.setText("waiting for a snapshot")
        self._style_cells()
        self.mark_dirty()

    def _style_cells(self) -> None:
        p = self.palette_
        cmap = theme.diverging_colormap(p)
        for (lid, which), cell in self.cells.items():
            cell.bar.setColorMap(cmap)
            cell.bar.axis.setPen(pg.mkPen(p.muted))
            cell.bar.axis.setTextPen(pg.mkPen(p.plot_foreground))
            cell.bar.axis.setStyle(tickFont=_small_font())
            cell.note.setColor(p.muted)
            cell.view.setBorder(pg.mkPen(p.border))
            cell.title.setText(self._cell_title(lid, which, cell), color=p.plot_foreground,
                               size="8pt")

    def apply_theme(self, palette: theme.Palette) -> None:
        super().apply_theme(palette)
        self._style_cells()

    # ---- export --------------------------------------------------------------------------
    def csv_table(self) -> tuple[list[str], list[list]]:
        header = ["step", "level", "matrix", "row", "col", "value"]
        rows: list[list] = []
        for (lid, which), cell in self.cells.items():
            if cell.data is None:
                continue
            r, c = np.indices(cell.data.shape)
            for i, j, v in zip(r.ravel().tolist(), c.ravel().tolist(),
                               cell.data.ravel().tolist()):
                rows.append([self.step, lid, which, i, j, v])
        return header, rows


def _small_font():
    from PySide6.QtGui import QFont

    font = QFont()
    font.setPointSizeF(7.0)
    return font

