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

WIDTH = 112  # "16 tokens" at the default font; "every 16 tokens" with more room


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

    @staticmethod
    def _draw_period(painter: QPainter, number: str, right: float, y: float, room: float,
                     bold: QFont, plain: QFont) -> None:
        """'every 16 tokens' with the number in bold, shortened to '16 tokens' or '16' when
        the ruler is narrow (large fonts, HiDPI)."""
        p = theme.current()
        if number == "1":
            variants = [[("every ", plain, p.muted), ("token", bold, p.text)],
                        [("token", bold, p.text)], [("1", bold, p.text)]]
        else:
            variants = [[("every ", plain, p.muted), (number, bold, p.text),
                         (" tokens", plain, p.muted)],
                        [(number, bold, p.text), (" tokens", plain, p.muted)],
                        [(number, bold, p.text)]]
        for parts in variants:
            widths = [QFontMetricsF(font).horizontalAdvance(text) for text, font, _ in parts]
            if sum(widths) <= room or parts is variants[-1]:
                break
        x = right - sum(widths)
        for (text, font, color), width in zip(parts, widths):
            metrics = QFontMetricsF(font)
            painter.setFont(font)
            painter.setPen(QColor(color))
            painter.drawText(QPointF(x, y + (metrics.ascent() - metrics.descent()) / 2), text)
            x += width

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
        caption_font.setPointSizeF(max(7.0, self.font().pointSizeF() - 1.0))
        big_font = QFont(label_font)
        big_font.setPointSizeF(label_font.pointSizeF() + 4)
        lm, cm, bm = (QFontMetricsF(f) for f in (label_font, caption_font, big_font))
        rows = axis.rows()
        spacing = abs(self._y(rows[2].y) - self._y(rows[1].y)) if len(rows) > 2 else 100.0
        right = self.width() - 14
        text_left = 22
        room = right - text_left
        for row in rows:
            y = self._y(row.y)
            if y < -40 or y > self.height() + 40:
                continue
            special = row.label in ("∞", "0")
            if not special and not row.major and spacing < lm.height() + 2:
                continue
            painter.setPen(QPen(QColor(p.grid_strong if row.major else p.border), 1))
            painter.drawLine(QPointF(right + 3, y), QPointF(strip_x - 1, y))
            if special:
                painter.setFont(big_font)
                painter.setPen(QColor(p.band_inf if row.label == "∞" else p.band_frozen))
                top = y - bm.height() * 0.62
                painter.drawText(QRectF(text_left, top, room, bm.height()),
                                 Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                                 row.label)
                painter.setFont(caption_font)
                painter.setPen(QColor(p.muted))
                painter.drawText(QRectF(text_left - 4, top + bm.height() - 2, room + 4,
                                        cm.height() * 3 + 2),
                                 Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop
                                 | Qt.TextFlag.TextWordWrap, row.caption)
                continue
            self._draw_period(painter, row.label, right, y, room, label_font, caption_font)

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
