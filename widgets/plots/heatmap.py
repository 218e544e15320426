"""Heatmap colour scales: symmetric levels ±L that change only now and then
(:class:`SymmetricLevels`, L on a 1-1.2-1.5-2-2.5-3-4-5-6-8 ladder) and the light colour bar
that shows them (:class:`SymmetricColorBar`). Used by the memory matrices, the ablation table
and the lessons."""
from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage


NICE_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def nice_ceil(x: float) -> float:
    """The smallest value of the 1-1.2-1.5-2-2.5-3-4-5-6-8 ladder (× 10^k) that is ≥ x."""
    if not math.isfinite(x) or x <= 0:
        return x
    decade = 10.0 ** math.floor(math.log10(x))
    for step in NICE_STEPS:
        if step * decade >= x * (1 - 1e-12):
            return step * decade
    return 10.0 * decade


class SymmetricLevels:
    """Colour levels ±L for a signed heatmap. An envelope jumps up to max|x| at once and
    decays slowly (half-life ``half_life_s``) when the data shrinks; L is the envelope rounded
    up to a nice value, so frames stay comparable, nothing ever clips, and the colour bar's
    scale (and its tick labels) changes only now and then instead of every frame."""

    def __init__(self, half_life_s: float = 3.0, floor: float = 1e-6) -> None:
        self.half_life_s = half_life_s
        self.floor = floor
        self.envelope = 0.0
        self.value = 0.0
        self._t: float | None = None

    def reset(self) -> None:
        self.envelope, self.value, self._t = 0.0, 0.0, None

    def update(self, data: np.ndarray | None, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        peak = 0.0
        if data is not None and data.size:
            finite = np.abs(data[np.isfinite(data)]) if not np.all(np.isfinite(data)) \
                else np.abs(data)
            peak = float(finite.max()) if finite.size else 0.0
        if self._t is not None and self.envelope > 0:
            decayed = self.envelope * 0.5 ** ((now - self._t) / self.half_life_s)
        else:
            decayed = 0.0
        self._t = now
        self.envelope = max(peak, decayed, self.floor)
        self.value = nice_ceil(self.envelope)
        return self.value



class SymmetricColorBar(pg.GraphicsWidget):
    """A colour bar for a heatmap drawn with levels ±L: the diverging gradient and, when
    ``labelled``, the values +L, 0 and −L beside it.

    pyqtgraph's ColorBarItem is a whole PlotItem (four axes) per bar; redrawn with every frame
    of eight heatmaps it cost more than the heatmaps. This one paints a gradient and three
    numbers, is cached by Qt as a pixmap, and repaints only when L or the colours change."""

    def __init__(self, colormap: pg.ColorMap, *, labelled: bool = True, label: str = "",
                 width: int = 9) -> None:
        super().__init__()
        self.setCacheMode(self.CacheMode.DeviceCoordinateCache)
        self._cmap = colormap
        self._strip = self._make_strip(colormap)
        self._level = 1.0
        self._labelled = labelled
        self._label = label
        self._bar_width = width
        self._text = QColor("#000000")
        self._edge = QColor("#808080")
        self._font = QFont()
        self._font.setPointSizeF(7.0)
        self._apply_width()

    @property
    def level(self) -> float:
        return self._level

    def set_level(self, level: float) -> None:
        if level != self._level:
            self._level = level
            self.update()

    def set_labelled(self, labelled: bool) -> None:
        if labelled != self._labelled:
            self._labelled = labelled
            self._apply_width()
            self.update()

    def set_colors(self, colormap: pg.ColorMap, text: str, edge: str) -> None:
        self._cmap, self._text, self._edge = colormap, QColor(text), QColor(edge)
        self._strip = self._make_strip(colormap)
        self.update()

    @staticmethod
    def _make_strip(colormap: pg.ColorMap) -> QImage:
        """The colour map as a 1×256 image, +L at the top (an image, not a gradient: SVG
        exports of several bars would otherwise share one gradient id)."""
        lut = colormap.getLookupTable(nPts=256, alpha=True)[::-1]
        image = QImage(1, 256, QImage.Format.Format_RGBA8888)
        for i, (r, g, b, a) in enumerate(lut.tolist()):
            image.setPixelColor(0, i, QColor(r, g, b, a))
        return image

    @staticmethod
    def width_for(labelled: bool, label: str = "", width: int = 9) -> int:
        """The px a bar takes across: the gradient, its values when ``labelled``, its label."""
        return width + (44 if labelled else 2) + (12 if label else 0)

    def _apply_width(self) -> None:
        width = self.width_for(self._labelled, self._label, self._bar_width)
        self.setMinimumWidth(width)
        self.setMaximumWidth(width)

    def paint(self, painter, *args) -> None:  # noqa: D401 - Qt API
        rect = self.boundingRect()
        top, bottom = rect.top() + 6, rect.bottom() - 6
        if bottom - top < 4:
            return
        x0 = rect.left() + (12 if self._label else 1)
        bar = QRectF(x0, top, self._bar_width, bottom - top)
        painter.drawImage(bar, self._strip)
        painter.setPen(pg.mkPen(self._edge))
        painter.drawRect(bar)
        painter.setFont(self._font)
        painter.setPen(pg.mkPen(self._text))
        if self._labelled:
            x = bar.right() + 3
            for y, value in ((top, self._level), ((top + bottom) / 2, 0.0),
                             (bottom, -self._level)):
                text = "0" if value == 0 else f"{value:+.2g}"
                painter.drawText(QRectF(x, y - 7, 60, 14),
                                 int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                                 text)
        if self._label:
            painter.save()
            painter.translate(rect.left() + 8, (top + bottom) / 2)
            painter.rotate(-90)
            painter.drawText(QRectF(-60, -8, 120, 12), int(Qt.AlignmentFlag.AlignCenter),
                             self._label)
            painter.restore()
