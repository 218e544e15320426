"""The memory inspector's drawing: one pyqtgraph layout showing a trace at a position.

- the **strip** (top): a row coloured by the loss at every position (from the background
  colour at loss 0 to red at chance, ln V; grey where the position has no target), and one row
  per level with a tick at every write (its height the write's norm relative to the level's
  largest), so the eye finds where recall fails and which level wrote there; a cursor line
  marks the position shown below. Clicking the strip moves the cursor.
- the **token** panel (bottom left): the tokens around the position with the current one
  marked, the input and target, and the top-k next-token probabilities (the target's bar in
  the accent colour).
- the **levels** (bottom right): per level, its memory at that moment (as the live Memory dock
  shows it) above the write it made at that position, each on a colour scale fixed for the
  whole trace (so that the eye sees what changes while scrubbing), with whether it wrote, the
  write's norm and how much its read-out moved.

Everything is built once per trace (:meth:`TraceView.set_trace`); a new position only feeds
``setImage``/``setOpts``/``setText`` (:meth:`TraceView.set_position`). The view keeps the
protocol of the plot docks that ``nlstudio.widgets.export.export_plot`` renders (``key``,
``apply_theme``, ``redraw``, ``export_item``, ``csv_table``), so it exports like them.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QVBoxLayout, QWidget

from nlstudio.inspect_trace import Trace
from nlstudio.widgets import theme
from nlstudio.widgets.plots.base import SymmetricColorBar, nice_ceil, style_plot

# tokens shown around the cursor: bytes of text, or token names (wider), so that the
# current one stays on the line at 1280 px
TEXT_CONTEXT, TOKEN_CONTEXT = (90, 30), (14, 8)


def level_caption(lv) -> str:
    """``id · kind · C=16`` (∞ for a level that re-reads its context, frozen for none)."""
    if lv.period is not None:
        when = f"C={lv.period}"
    else:
        when = "frozen" if lv.parametric else "∞"
    return f"{lv.level_id} · {lv.kind} · {when}"


def _scale(matrices: list[np.ndarray]) -> float:
    peak = max((float(np.abs(m).max()) for m in matrices if m.size), default=0.0)
    return nice_ceil(peak) if peak > 0 else 1.0


class _Label(pg.LabelItem):
    """A label that never widens its column: long text is cut by the cell instead."""

    def updateMin(self) -> None:  # noqa: N802 - pyqtgraph API
        super().updateMin()
        self.setMinimumWidth(10)


class _Cell:
    """One heatmap with its colour bar and a note shown when there is nothing to draw."""

    def __init__(self, layout: pg.GraphicsLayout, row: int, col: int, cmap) -> None:
        self.view = pg.ViewBox(lockAspect=False, enableMenu=False, invertY=True)
        self.view.setMouseEnabled(x=False, y=False)
        self.view.setDefaultPadding(0)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        self.note = pg.TextItem("", anchor=(0.5, 0.5))
        self.view.addItem(self.note)
        self.bar = SymmetricColorBar(cmap, labelled=True)
        layout.addItem(self.view, row=row, col=col)
        layout.addItem(self.bar, row=row, col=col + 1)
        self.shape: tuple | None = None
        self.shown: np.ndarray | None = None

    def set_scale(self, level: float) -> None:
        self.image.setLevels((-level, level))
        self.bar.set_level(level)

    def show(self, matrix: np.ndarray | None, note: str) -> None:
        if matrix is self.shown and matrix is not None:
            return  # the same stored matrix: nothing to redraw
        self.shown = matrix
        if matrix is None or matrix.size == 0:
            self.image.clear()
            self.shape = None
            self.note.setText(note)
            self.note.setVisible(True)
            self.view.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            self.note.setPos(0.5, 0.5)
            return
        self.note.setVisible(False)
        self.image.setImage(matrix, autoLevels=False)
        if matrix.shape != self.shape:
            self.shape = matrix.shape
            self.view.setRange(xRange=(0, matrix.shape[1]), yRange=(0, matrix.shape[0]),
                               padding=0)


class TraceView(QWidget):
    """Draws a :class:`~nlstudio.inspect_trace.Trace` at one position (module docstring)."""

    key = "inspector"
    title = "Memory inspector"
    positionClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("traceView")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.view = pg.GraphicsLayoutWidget(self)
        self.view.setObjectName("traceGraphics")
        self.view.ci.setContentsMargins(4, 4, 4, 4)
        self.view.ci.setSpacing(4)
        layout.addWidget(self.view)
        self.palette_ = theme.current()
        self.trace: Trace | None = None
        self.position = 0
        self.redraws = 0
        self._build_empty()
        theme.manager().themeChanged.connect(self.apply_theme)
        self.view.scene().sigMouseClicked.connect(self._on_click)

    # ---- building ---------------------------------------------------------------------------
    def _build_empty(self) -> None:
        ci = self.view.ci
        self.header = _Label("", justify="left")
        ci.addItem(self.header, row=0, col=0, colspan=2)
        self.strip = pg.PlotItem()
        self.strip.setMenuEnabled(False)
        self.strip.setMouseEnabled(x=True, y=False)
        self.strip.hideButtons()
        self.strip.invertY(True)
        self.strip.getAxis("left").setWidth(110)
        self.strip.setLabel("bottom", "position (tokens read)")
        ci.addItem(self.strip, row=1, col=0, colspan=2)
        self.loss_image = pg.ImageItem(axisOrder="row-major")
        self.strip.addItem(self.loss_image)
        self.ticks: dict[str, pg.PlotCurveItem] = {}
        self.cursor = pg.InfiniteLine(pos=0.5, angle=90, movable=False)
        self.strip.addItem(self.cursor)
        self.context = _Label("", justify="left")
        ci.addItem(self.context, row=2, col=0, colspan=2)
        self.topk = pg.PlotItem()
        self.topk.setMenuEnabled(False)
        self.topk.setMouseEnabled(x=False, y=False)
        self.topk.hideButtons()
        self.topk.invertY(True)
        self.topk.setXRange(0, 1, padding=0)
        self.topk.getAxis("left").setWidth(64)
        self.topk.setLabel("bottom", "next-token probability")
        self.topk.setMinimumWidth(190)
        self.topk.setMaximumWidth(300)
        self.bars = pg.BarGraphItem(x0=[0], y=[0], height=0.7, width=[0])
        self.topk.addItem(self.bars)
        self.bar_text: list[pg.TextItem] = []
        ci.addItem(self.topk, row=3, col=0)
        self.levels_layout = ci.addLayout(row=3, col=1)
        self.levels_layout.setSpacing(2)
        self.cells: dict[tuple[str, str], _Cell] = {}
        self.level_notes: dict[str, _Label] = {}
        ci.layout.setRowStretchFactor(1, 2)
        ci.layout.setRowStretchFactor(3, 5)
        self.header.setText("Choose a text, an example or a file, then Inspect.", size="9pt")
        self.apply_theme(self.palette_)

    def set_trace(self, trace: Trace) -> None:
        """Builds the items for ``trace`` (a new strip row and heatmap column per level)."""
        self.trace = trace
        p = self.palette_
        n = len(trace)
        ids = list(trace.levels)
        for curve in self.ticks.values():
            self.strip.removeItem(curve)
        self.ticks = {}
        rows = [(0.5, "loss")]
        for r, lid in enumerate(ids, start=1):
            lv = trace.levels[lid]
            x = np.repeat(lv.write_positions.astype(np.float64) + 0.5, 2)
            peak = float(lv.write_norm.max()) if lv.wrote.any() else 0.0
            rel = lv.write_norm[lv.wrote] / peak if peak > 0 else np.ones(int(lv.wrote.sum()))
            height = 0.2 + 0.65 * np.clip(rel, 0, 1)
            y = np.empty_like(x)
            y[0::2], y[1::2] = r + 0.9, r + 0.9 - height
            curve = pg.PlotCurveItem(x=x, y=y, connect="pairs",
                                     pen=pg.mkPen(p.kind_color(lv.kind), width=1))
            self.strip.addItem(curve)
            self.ticks[lid] = curve
            rows.append((r + 0.5, lid))
        self.strip.getAxis("left").setTicks([rows, []])
        self._draw_loss()
        chance = math.log(max(trace.logits.shape[1], 2))
        self.strip.setTitle(
            f"loss at each position: background at 0, red at chance (ln {trace.logits.shape[1]}"
            f" = {chance:.2f}), grey without a target · a tick at each write of a level, its "
            f"height the write's norm (relative to the level's largest)",
            color=p.plot_foreground, size="8pt")
        self.strip.setXRange(0, n, padding=0)
        self.strip.setYRange(0, len(ids) + 1, padding=0)
        self.strip.setLimits(xMin=0, xMax=max(n, 1), minXRange=min(n, 8))
        self.view.ci.layout.setRowStretchFactor(1, 1 + len(ids) // 3)
        self._build_cells(trace)
        self.position = -1
        self.set_position(0)

    def _draw_loss(self) -> None:
        trace, p = self.trace, self.palette_
        if trace is None:
            return
        n = len(trace)
        chance = math.log(max(trace.logits.shape[1], 2))
        lut = self._loss_map().getLookupTable(nPts=256, alpha=True)
        level = np.clip(np.nan_to_num(trace.loss / chance, nan=0.0), 0, 1)
        rgba = lut[(level * 255).astype(np.int64)].astype(np.uint8)
        missing = np.isnan(trace.loss)
        muted = QColor(p.border)
        rgba[missing] = (muted.red(), muted.green(), muted.blue(), 90)
        self.loss_image.setImage(rgba[None, :, :], autoLevels=False)
        self.loss_image.setRect(QRectF(0, 0.1, n, 0.8))

    def _loss_map(self) -> pg.ColorMap:
        """Loss 0 → the background, chance (ln V) → the fault colour."""
        p = self.palette_
        stops = [QColor(p.alt_base), QColor(p.fault)]
        return pg.ColorMap([0.0, 1.0], [(c.red(), c.green(), c.blue(), 255) for c in stops])

    def _build_cells(self, trace: Trace) -> None:
        grid = self.levels_layout
        grid.clear()
        self.cells = {}
        self.level_notes = {}
        cmap = theme.diverging_colormap(self.palette_)
        for col, (lid, lv) in enumerate(trace.levels.items()):
            c = 2 * col
            title = _Label("", justify="left")
            title.setText(f"<b>{level_caption(lv)}</b>", size="8pt",
                          color=self.palette_.plot_foreground)
            grid.addItem(title, row=0, col=c, colspan=2)
            memory = _Cell(grid, 1, c, cmap)
            memory.set_scale(_scale(lv.memories))
            write = _Cell(grid, 2, c, cmap)
            write.set_scale(_scale(lv.writes))
            note = _Label("", justify="left")
            grid.addItem(note, row=3, col=c, colspan=2)
            self.cells[(lid, "memory")], self.cells[(lid, "write")] = memory, write
            self.level_notes[lid] = note
        self._style_cells()

    # ---- a position -----------------------------------------------------------------------------
    def set_position(self, t: int) -> None:
        """Shows position ``t`` (clamped to the trace)."""
        trace = self.trace
        if trace is None:
            return
        t = int(min(max(t, 0), len(trace) - 1))
        if t == self.position:
            return
        self.position = t
        self.cursor.setPos(t + 0.5)
        self._show_token(t)
        self._show_topk(t)
        for lid, lv in trace.levels.items():
            self._show_level(t, lid, lv)
        self.redraws += 1

    def _show_token(self, t: int) -> None:
        trace, p = self.trace, self.palette_
        target = trace.target_label(t)
        loss = float(trace.loss[t])
        said = (f"target <b>{_html(target)}</b> · loss {loss:.3f}" if target is not None
                else "no target here")
        self.header.setText(
            f"position <b>{t}</b> of {len(trace) - 1} · input <b>{_html(trace.input_label(t))}"
            f"</b> · {said} · {_html(trace.source)}", size="9pt", color=p.plot_foreground)
        if not trace.token_inputs:
            self.context.setText("", size="9pt")
            return
        before_n, after_n = TEXT_CONTEXT if trace.byte_level else TOKEN_CONTEXT
        a, b = max(0, t - before_n), min(len(trace), t + after_n + 1)
        if trace.byte_level:  # text as text: spaces as spaces, a line break as ⏎
            sep, word = "", lambda i: _context_byte(int(trace.inputs[i]))
        else:
            sep, word = " ", lambda i: _html(trace.input_label(i))
        before = sep.join(word(i) for i in range(a, t))
        after = sep.join(word(i) for i in range(t + 1, b))
        mark = (f"<span style='background-color:{p.selection}; color:{p.plot_foreground}'>"
                f"<b>{word(t)}</b></span>")
        self.context.setText(
            f"<span style='color:{p.muted}'>{'…' if a else ''}{before}</span>{sep}{mark}"
            f"{sep}<span style='color:{p.muted}'>{after}{'…' if b < len(trace) else ''}"
            f"</span>", size="10pt", color=p.plot_foreground)

    def _show_topk(self, t: int) -> None:
        trace, p = self.trace, self.palette_
        ids, probs = trace.top_ids[t], trace.top_probs[t]
        target = int(trace.targets[t])
        brushes = [pg.mkBrush(p.accent if int(i) == target else p.muted) for i in ids]
        self.bars.setOpts(x0=np.zeros(len(ids)), y=np.arange(len(ids)), height=0.7,
                          width=probs, brushes=brushes, pen=pg.mkPen(None))
        self.topk.getAxis("left").setTicks(
            [[(i, trace.label(int(tok))) for i, tok in enumerate(ids)], []])
        while len(self.bar_text) < len(ids):
            item = pg.TextItem("")
            self.topk.addItem(item)
            self.bar_text.append(item)
        for i, (item, prob, brush) in enumerate(zip(self.bar_text, probs, brushes)):
            item.setText(f"{prob:.2f}")
            inside = prob > 0.7  # a long bar carries its number inside, in the bar's ink
            item.setAnchor((1, 0.5) if inside else (0, 0.5))
            item.setColor(_ink(brush.color()) if inside else QColor(p.plot_foreground))
            item.setPos(float(prob) - 0.02 if inside else float(prob) + 0.01, i)
        self.topk.setYRange(-0.5, len(ids) - 0.5, padding=0)

    def _show_level(self, t: int, lid: str, lv) -> None:
        """Memory at t above the latest write (made at t, or the last one before it)."""
        self.cells[(lid, "memory")].show(lv.memory_at(t), "no memory to show")
        last = lv.last_write(t)
        if not lv.parametric:
            note = "re-reads\nits context"
        elif not lv.wrote.any():
            note = "no write in\nthis sequence"
        else:
            note = "no write yet" if last is None else "its write is\nnot a matrix"
        self.cells[(lid, "write")].show(None if last is None else lv.write_at(last), note)
        if last == t:
            line1 = f"<b>wrote at {t}</b>: ‖Δ‖ {float(lv.write_norm[t]):.3g}"
        elif last is not None:
            line1 = f"write shown: at {last}, {t - last} ago"
        else:
            line1 = "no write in this sequence" if not lv.wrote.any() else "no write yet"
        if lv.readout_move is not None:
            line2 = f"read-out moved {100 * float(lv.readout_move[t]):.2f} % here"
            if last is not None and last != t:
                line2 += f" ({100 * float(lv.readout_move[last]):.2f} % at {last})"
        elif lv.note:
            line2 = "read-out not measured (no read())"
        else:
            line2 = "no read-out: nothing stored but the context"
        self.level_notes[lid].setText(f"{line1}<br>{line2}", size="8pt",
                                      color=self.palette_.plot_foreground)

    def _on_click(self, event) -> None:
        if self.trace is None or event.button() != Qt.MouseButton.LeftButton:
            return
        pos = event.scenePos()
        if not self.strip.vb.sceneBoundingRect().contains(pos):
            return
        x = self.strip.vb.mapSceneToView(pos).x()
        self.positionClicked.emit(int(min(max(math.floor(x), 0), len(self.trace) - 1)))

    # ---- theme and export (the plot docks' protocol) -----------------------------------------------
    def apply_theme(self, palette: theme.Palette) -> None:
        self.palette_ = palette
        self.view.setBackground(palette.plot_background)
        style_plot(self.strip, palette)
        style_plot(self.topk, palette)
        self.strip.showGrid(x=False, y=False)
        self.topk.showGrid(x=True, y=False)
        self.cursor.setPen(pg.mkPen(palette.accent, width=2))
        if self.trace is not None:
            self._draw_loss()
            for lid, curve in self.ticks.items():
                curve.setPen(pg.mkPen(palette.kind_color(self.trace.levels[lid].kind), width=1))
            self._style_cells()
            t, self.position = self.position, -1
            self.set_position(t)

    def _style_cells(self) -> None:
        p = self.palette_
        cmap = theme.diverging_colormap(p)
        lut = cmap.getLookupTable(nPts=256)
        for cell in self.cells.values():
            cell.image.setLookupTable(lut)
            cell.bar.set_colors(cmap, p.plot_foreground, p.border)
            cell.note.setColor(p.muted)
            cell.view.setBorder(pg.mkPen(p.border))

    def redraw(self) -> None:
        """Redraws the current position (export calls it after a theme change)."""
        t, self.position = self.position, -1
        self.set_position(t)

    def export_item(self):
        return self.view.ci

    def csv_table(self) -> tuple[list[str], list[list]]:
        return self.trace.csv_table() if self.trace is not None else ([], [])


def _ink(fill: QColor) -> QColor:
    """Black or white, whichever reads on ``fill``."""
    return QColor("#000000") if fill.lightnessF() > 0.6 else QColor("#ffffff")


def _context_byte(byte: int) -> str:
    if byte == 10:
        return "⏎"
    if byte == 32:
        return "&nbsp;"
    if 33 <= byte < 127:
        return _html(chr(byte))
    return "<small>·</small>"  # a tab, a control byte or part of a longer UTF-8 character


def _html(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
