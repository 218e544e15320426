"""The frequency ruler at the left edge of the canvas: labels that stay readable at any zoom."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QLinearGradient, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from nlstudio.widgets import theme
from nlstudio.widgets.canvas.axis import BAND_HALF

if TYPE_CHECKING:
    from nlstudio.widgets.canvas.view import GraphView

WIDTH = 150


class FrequencyRuler(QWidget):
    def __init__(self, view: "GraphView") -> None:
        super().__init__(view)
        self.setObjectName("frequencyRuler")
        self.view = view
        self.setToolTip(
            "Update frequency. A level's height is how often it writes its memory while it "
            "reads: ∞ re-reads the whole context at every token (attention), 1 writes every "
            "token, 16 once every 16 tokens, 0 never in context (frozen after training). Drag "
            "a level up or down to change its period.")

    def _y(self, scene_y: float) -> float:
        return float(self.view.mapFromScene(QPointF(0, scene_y)).y())

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = theme.current()
        axis = self.view.graph_scene.axis
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        painter.fillRect(self.rect(), QColor(p.panel))

        # Band strip on the right edge: the three regimes in their colours.
        strip_x = self.width() - 5
        for top, bottom, color in ((axis.top, axis.y_inf + BAND_HALF, p.band_inf),
                                   (axis.y_frozen - BAND_HALF, axis.bottom, p.band_frozen)):
            painter.fillRect(QRectF(strip_x, self._y(top), 5, self._y(bottom) - self._y(top)),
                             QColor(color))
        c_top, c_bottom = (self._y(v) for v in axis.continuum)
        gradient = QLinearGradient(0, c_top, 0, c_bottom)
        gradient.setColorAt(0, QColor(p.band_fast))
        gradient.setColorAt(1, QColor(p.band_slow))
        painter.fillRect(QRectF(strip_x, c_top, 5, c_bottom - c_top), gradient)
        painter.setPen(QPen(QColor(p.border), 1))
        painter.drawLine(self.width() - 1, 0, self.width() - 1, self.height())

        label_font = QFont(self.font())
        label_font.setPointSizeF(max(8.0, self.font().pointSizeF()))
        label_font.setBold(True)
        caption_font = QFont(self.font())
        caption_font.setPointSizeF(max(7.0, self.font().pointSizeF() - 1.5))
        big_font = QFont(label_font)
        big_font.setPointSizeF(label_font.pointSizeF() + 3)
        lm, cm = QFontMetricsF(label_font), QFontMetricsF(caption_font)
        rows = axis.rows()
        spacing = abs(self._y(rows[2].y) - self._y(rows[1].y)) if len(rows) > 2 else 100.0
        both = spacing >= lm.height() + cm.height() + 2
        right = self.width() - 14
        text_left = 20
        for row in rows:
            y = self._y(row.y)
            if y < -30 or y > self.height() + 30:
                continue
            special = row.label in ("∞", "0")
            if not special and not row.major and spacing < lm.height() + 2:
                continue
            painter.setPen(QPen(QColor(p.grid_strong if row.major else p.border), 1))
            painter.drawLine(QPointF(right + 3, y), QPointF(strip_x - 1, y))
            show_caption = special or both
            label_y = y - (lm.height() / 2 if not show_caption else lm.height() * 0.95)
            painter.setFont(big_font if special else label_font)
            painter.setPen(QColor(p.band_inf if row.label == "∞" else
                                  p.band_frozen if row.label == "0" else p.text))
            painter.drawText(QRectF(text_left, label_y, right - text_left, lm.height()),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             row.label)
            if show_caption:
                painter.setFont(caption_font)
                painter.setPen(QColor(p.muted))
                caption = cm.elidedText(row.caption, Qt.TextElideMode.ElideRight,
                                        right - text_left)
                painter.drawText(QRectF(text_left, y - 1, right - text_left, cm.height()),
                                 Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                                 caption)

        # The axis title, written bottom-to-top along the left edge.
        painter.save()
        painter.translate(11, self.height() / 2)
        painter.rotate(-90)
        painter.setFont(caption_font)
        painter.setPen(QColor(p.muted))
        painter.drawText(QRectF(-self.height() / 2, -cm.height() / 2, self.height(), cm.height()),
                         Qt.AlignmentFlag.AlignCenter,
                         "slower  ←  update frequency  →  faster")
        painter.restore()
        painter.end()
