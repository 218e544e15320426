"""What the canvas draws between nodes: the edges (data flow, from an output port to an input
port, with an arrow head) and the rubber line that follows the mouse while connecting."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyleOptionGraphicsItem, QWidget

from nlstudio.widgets import theme
from nlstudio.widgets.canvas.items import PORT_R, HoverHighlight

if TYPE_CHECKING:
    from nlstudio.widgets.canvas.items import BaseNode
    from nlstudio.widgets.document import FaultView


class EdgeItem(HoverHighlight, QGraphicsPathItem):
    """Data flow src → dst, drawn from src's output port to dst's input port."""

    def __init__(self, src: BaseNode, dst: BaseNode, index: int) -> None:
        super().__init__()
        self.src, self.dst, self.index = src, dst, index
        self.faults: list["FaultView"] = []
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        self.setZValue(0)
        src.edges.append(self)
        dst.edges.append(self)
        self.refresh()

    @property
    def key(self) -> tuple[str, str]:
        return (self.src.node_id, self.dst.node_id)

    def detach(self) -> None:
        for node in (self.src, self.dst):
            if self in node.edges:
                node.edges.remove(self)

    def set_faults(self, faults: list["FaultView"]) -> None:
        self.faults = faults
        self.setToolTip(f"{self.src.node_id} → {self.dst.node_id}" + "".join(
            f"\n⚠ {f.message}" for f in faults))
        self.update()

    def refresh(self) -> None:
        a = self.src.out_port.scenePos() if self.src.out_port else self.src.scenePos()
        b = self.dst.in_port.scenePos() if self.dst.in_port else self.dst.scenePos()
        self.setPath(edge_path(a, b))

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(12)
        return stroker.createStroke(self.path())

    def boundingRect(self) -> QRectF:  # noqa: N802
        return self.path().boundingRect().adjusted(-12, -12, 12, 12)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        p = theme.current()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.faults:
            color, width = QColor(p.fault), 2.4
        elif self.isSelected():
            color, width = QColor(p.accent), 3.0
        else:
            color = QColor(p.text)
            color.setAlpha(200 if self._hover else 120)
            width = 2.0
        painter.setPen(QPen(color, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())
        draw_arrow(painter, self.path(), color)


def edge_path(a: QPointF, b: QPointF) -> QPainterPath:
    dx = max(60.0, abs(b.x() - a.x()) * 0.5)
    path = QPainterPath(a)
    path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
    return path


def draw_arrow(painter: QPainter, path: QPainterPath, color: QColor) -> None:
    if path.length() < 1:
        return
    tip = path.pointAtPercent(1.0)
    back = path.pointAtPercent(max(0.0, 1.0 - 10.0 / path.length()))
    direction = tip - back
    length = (direction.x() ** 2 + direction.y() ** 2) ** 0.5 or 1.0
    ux, uy = direction.x() / length, direction.y() / length
    base = QPointF(tip.x() - ux * (PORT_R + 8), tip.y() - uy * (PORT_R + 8))
    end = QPointF(tip.x() - ux * PORT_R, tip.y() - uy * PORT_R)
    left = QPointF(base.x() - uy * 5, base.y() + ux * 5)
    right = QPointF(base.x() + uy * 5, base.y() - ux * 5)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    painter.drawPolygon(QPolygonF([end, left, right]))


class ConnectionLine(QGraphicsPathItem):
    """The rubber line that follows the mouse while connecting."""

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(3)
        self.set_color(theme.current().accent, ok=False)

    def set_color(self, color: str, ok: bool) -> None:
        pen = QPen(QColor(color), 2.2, Qt.PenStyle.SolidLine if ok else Qt.PenStyle.DashLine,
                   Qt.PenCapStyle.RoundCap)
        self.setPen(pen)
