"""What the canvas draws for its nodes: level cards, the input/output nodes, their ports and
the drop preview (edges: ``nlstudio.widgets.canvas.edges``).

Items hold no model state: the scene sets everything they show from the document
(``NodeItem.show_level``); the only transient state is a drag preview.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsSceneHoverEvent, QStyleOptionGraphicsItem,
                               QWidget)

from nlstudio.catalog import KINDS
from nlstudio.widgets import theme
from nlstudio.widgets.canvas.axis import ROW, period_text

if TYPE_CHECKING:
    from nlstudio.widgets.canvas.edges import EdgeItem
    from nlstudio.widgets.canvas.scene import GraphScene
    from nlstudio.widgets.document import FaultView

CARD_W, CARD_H = 168.0, 56.0  # fits the presets' 180-unit columns
TERM_W, TERM_H = 96.0, 40.0
PORT_R = 6.0
PORT_HIT = 13.0

_renderers: dict[tuple[str, str], QSvgRenderer] = {}


def _renderer(kind: str, color: str) -> QSvgRenderer:
    key = (kind, color)
    if key not in _renderers:
        _renderers[key] = QSvgRenderer(QByteArray(theme.kind_svg(kind, color)))
    return _renderers[key]


# Card text sizes: at the default view's smallest zoom (view.READABLE_ZOOM) the smallest is
# still ~8.5 px on a 96-dpi screen.
TITLE_PT, KIND_PT, PERIOD_PT = 11.0, 8.5, 9.0
CARD_PAD, KIND_ICON = 12.0, 14.0  # text inset from the card's left edge; the kind icon's size
TEXT_WIDTH = CARD_W - CARD_PAD - 8  # the id and period lines
KIND_TEXT_WIDTH = TEXT_WIDTH - KIND_ICON - 5  # the kind title, right of its icon


def fitted_title(title: str, metrics: QFontMetricsF, width: float) -> str:
    """A kind's title in ``width``: whole, else without its parenthesis ("Self-modifying
    memory (HOPE)" -> "Self-modifying memory"; the tooltip has it whole), else elided."""
    if metrics.horizontalAdvance(title) > width and " (" in title:
        title = title.split(" (", 1)[0]
    return metrics.elidedText(title, Qt.TextElideMode.ElideRight, width)


def _font(point_size: float, bold: bool = False) -> QFont:
    font = QFont()
    font.setPointSizeF(point_size)
    font.setBold(bold)
    return font


class HoverHighlight:
    """For an item drawn highlighted while the mouse is over it (``_hover``); put it before
    the Qt base class (ports and edges)."""

    _hover = False

    def hoverEnterEvent(self, event: QGraphicsSceneHoverEvent) -> None:  # noqa: N802
        self._hover = True
        self.update()

    def hoverLeaveEvent(self, event: QGraphicsSceneHoverEvent) -> None:  # noqa: N802
        self._hover = False
        self.update()


class PortItem(HoverHighlight, QGraphicsItem):
    """A connection point: ``side`` "in" (left edge) or "out" (right edge) of its node."""

    def __init__(self, node: "BaseNode", side: str) -> None:
        super().__init__(node)
        self.node = node
        self.side = side
        self.state = "normal"  # normal | legal | illegal | target
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setZValue(2)
        self.setToolTip("Drag to another level's input to connect" if side == "out"
                        else "Drag to another level's output to connect")

    @property
    def node_id(self) -> str:
        return self.node.node_id

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(-PORT_HIT, -PORT_HIT, 2 * PORT_HIT, 2 * PORT_HIT)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addEllipse(QPointF(0, 0), PORT_HIT, PORT_HIT)
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        p = theme.current()
        color = QColor(self.node.accent())
        radius = PORT_R + (1.5 if self._hover else 0)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.state in ("legal", "target"):
            glow = QColor(p.accent)
            glow.setAlpha(90 if self.state == "legal" else 160)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(glow)
            painter.drawEllipse(QPointF(0, 0), radius + 6, radius + 6)
            color = QColor(p.accent)
        elif self.state == "illegal":
            color = QColor(p.muted)
            color.setAlpha(110)
        painter.setPen(QPen(color, 2))
        painter.setBrush(QBrush(color if self.state in ("legal", "target") else QColor(p.card)))
        painter.drawEllipse(QPointF(0, 0), radius, radius)


class BaseNode(QGraphicsItem):
    node_id: str
    width: float
    height: float

    def __init__(self) -> None:
        super().__init__()
        self.in_port: PortItem | None = None
        self.out_port: PortItem | None = None
        self.edges: list["EdgeItem"] = []

    def accent(self) -> str:
        return theme.current().muted

    def ports(self) -> list[PortItem]:
        return [p for p in (self.in_port, self.out_port) if p is not None]

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(-self.width / 2 - 4, -self.height / 2 - 12,
                      self.width + 16, self.height + 16)

    def card_rect(self) -> QRectF:
        return QRectF(-self.width / 2, -self.height / 2, self.width, self.height)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:  # noqa: N802
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            for edge in self.edges:
                edge.refresh()
        return super().itemChange(change, value)


class TerminalNode(BaseNode):
    """The graph's fixed ``input`` (left) and ``output`` (right) nodes."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id
        self.width, self.height = TERM_W, TERM_H
        if node_id == "input":
            self.out_port = PortItem(self, "out")
            self.out_port.setPos(self.width / 2, 0)
            self.setToolTip("input: token embeddings (or projected features) enter here")
        else:
            self.in_port = PortItem(self, "in")
            self.in_port.setPos(-self.width / 2, 0)
            self.setToolTip("output: the sum of its inputs goes to the final norm and head")
        self.setZValue(1)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        p = theme.current()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.card_rect()
        painter.setPen(QPen(QColor(p.border), 1.5))
        painter.setBrush(QColor(p.alt_base))
        painter.drawRoundedRect(rect, rect.height() / 2, rect.height() / 2)
        painter.setPen(QColor(p.text))
        painter.setFont(_font(10, bold=True))
        top = rect.adjusted(0, 5, 0, -rect.height() / 2)
        painter.drawText(top, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom,
                         self.node_id)
        painter.setPen(QColor(p.muted))
        painter.setFont(_font(8))
        bottom = rect.adjusted(0, rect.height() / 2 + 1, 0, 0)
        painter.drawText(bottom, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
                         "tokens in" if self.node_id == "input" else "logits out")


class NodeItem(BaseNode):
    """A level: a rounded card with the kind's icon, id, kind title and its timescale."""

    def __init__(self, level_id: str, kind: str) -> None:
        super().__init__()
        self.node_id = level_id
        self.kind = kind
        self.width, self.height = CARD_W, CARD_H
        self.period: int | None = None
        self.preview_period: Any = None   # set while dragging: the period it would snap to
        self.optimizer = ""
        self.faults: list["FaultView"] = []
        self.free_move = False            # True only while the user drags it
        self.drag_origin_y: float | None = None
        self.in_port = PortItem(self, "in")
        self.in_port.setPos(-self.width / 2, 0)
        self.out_port = PortItem(self, "out")
        self.out_port.setPos(self.width / 2, 0)
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsFocusable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setAcceptHoverEvents(True)
        self.setZValue(1)

    def accent(self) -> str:
        return theme.current().kind_color(self.kind)

    def show_level(self, level: dict, faults: list["FaultView"]) -> None:
        """Take everything shown from the document's level dict."""
        self.kind = str(level.get("kind"))
        self.period = level.get("period")
        optimizer = level.get("optimizer")
        self.optimizer = str(optimizer.get("name", "")) if isinstance(optimizer, dict) else ""
        self.faults = list(faults)
        info = KINDS.get(self.kind)
        tip = f"<b>{self.node_id}</b> — {info.title if info else self.kind}"
        if info:
            tip += f"<br>{info.summary}"
        if faults:
            tip += "<br><br><span style='color:%s'>%s</span>" % (
                theme.current().fault,
                "<br>".join(f"⚠ {f.field + ': ' if f.field else ''}{f.message}" for f in faults))
        self.setToolTip(tip)
        self.update()

    def subtitle(self) -> str:
        period = self.preview_period if self.preview_period is not None else self.period
        if self.preview_period == "frozen":
            period = None
        text = period_text(period, self.kind)
        if self.optimizer and KINDS.get(self.kind) and KINDS[self.kind].period_rule != "inf":
            if period is None:
                return f"{text} · outer only"
            return f"{text} · {self.optimizer}"
        return text

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:  # noqa: N802
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange and self.free_move:
            scene: "GraphScene" = self.scene()  # type: ignore[assignment]
            if scene is not None:
                origin = self.drag_origin_y
                if origin is not None and abs(value.y() - origin) < ROW / 2:
                    self.preview_period = None  # small vertical jitter keeps the period
                    self.update()
                    return QPointF(value.x(), origin)
                period, y = scene.axis.snap(self.kind, value.y())
                self.preview_period = "frozen" if period is None else period
                self.update()
                return QPointF(value.x(), y)
        return super().itemChange(change, value)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        p = theme.current()
        accent = QColor(self.accent())
        rect = self.card_rect()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)

        fill = QColor(p.card)
        painter.setPen(Qt.PenStyle.NoPen)
        shadow = QColor(0, 0, 0, 70 if p.dark else 28)
        painter.setBrush(shadow)
        painter.drawRoundedRect(rect.translated(0, 2), 9, 9)
        painter.setBrush(fill)
        if self.faults:
            pen = QPen(QColor(p.fault), 2.4)
        elif self.isSelected():
            pen = QPen(QColor(p.accent), 2.4)
        else:
            border = QColor(accent)
            border.setAlpha(150)
            pen = QPen(border, 1.3)
        painter.setPen(pen)
        painter.drawRoundedRect(rect, 9, 9)

        # Kind colour strip on the left edge.
        strip = QPainterPath()
        strip.addRoundedRect(rect, 9, 9)
        clip = QPainterPath()
        clip.addRect(QRectF(rect.left(), rect.top(), 5, rect.height()))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(accent)
        painter.drawPath(strip.intersected(clip))

        # id on the first line (the whole width); icon and kind title on the second; the
        # timescale (and inner optimizer) on the third.
        left, width = rect.left() + CARD_PAD, TEXT_WIDTH
        painter.setPen(QColor(p.text))
        title_font = _font(TITLE_PT, bold=True)
        painter.setFont(title_font)
        title = QFontMetricsF(title_font).elidedText(self.node_id, Qt.TextElideMode.ElideRight,
                                                     width)
        painter.drawText(QRectF(left, rect.top() + 3, width, 19),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
        icon_rect = QRectF(left, rect.top() + 23, KIND_ICON, KIND_ICON)
        _renderer(self.kind, accent.name()).render(painter, icon_rect)
        info = KINDS.get(self.kind)
        kind_font = _font(KIND_PT)
        painter.setFont(kind_font)
        painter.setPen(QColor(p.muted))
        painter.drawText(QRectF(icon_rect.right() + 5, rect.top() + 22, KIND_TEXT_WIDTH, 16),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         fitted_title(info.title if info else self.kind,
                                      QFontMetricsF(kind_font), KIND_TEXT_WIDTH))
        period_font = _font(PERIOD_PT)
        painter.setFont(period_font)
        sub = QFontMetricsF(period_font).elidedText(self.subtitle(), Qt.TextElideMode.ElideRight,
                                                    width)
        painter.setPen(QColor(p.text) if self.preview_period is None else QColor(p.accent))
        painter.drawText(QRectF(left, rect.bottom() - 18, width, 15),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, sub)

        if self.faults:
            badge = QPointF(rect.right() - 2, rect.top() + 2)
            painter.setPen(QPen(QColor(p.card), 1.5))
            painter.setBrush(QColor(p.fault))
            painter.drawEllipse(badge, 9, 9)
            painter.setPen(QColor("#ffffff"))
            painter.setFont(_font(8, bold=True))
            painter.drawText(QRectF(badge.x() - 9, badge.y() - 9, 18, 18),
                             Qt.AlignmentFlag.AlignCenter,
                             "!" if len(self.faults) == 1 else str(len(self.faults)))


class GhostNode(QGraphicsItem):
    """Where a level dragged from the palette would land, and at what period."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.period: Any = None
        self.setZValue(4)

    def boundingRect(self) -> QRectF:  # noqa: N802
        return QRectF(-CARD_W / 2 - 2, -CARD_H / 2 - 2, CARD_W + 4, CARD_H + 4)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        p = theme.current()
        color = QColor(p.kind_color(self.kind))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fill = QColor(color)
        fill.setAlpha(40)
        painter.setBrush(fill)
        painter.setPen(QPen(color, 1.8, Qt.PenStyle.DashLine))
        rect = QRectF(-CARD_W / 2, -CARD_H / 2, CARD_W, CARD_H)
        painter.drawRoundedRect(rect, 9, 9)
        painter.setPen(QColor(p.text))
        painter.setFont(_font(9, bold=True))
        info = KINDS.get(self.kind)
        painter.drawText(rect.adjusted(10, 6, -10, -rect.height() / 2),
                         Qt.AlignmentFlag.AlignCenter, info.title if info else self.kind)
        painter.setFont(_font(8))
        painter.drawText(rect.adjusted(10, rect.height() / 2, -10, -6),
                         Qt.AlignmentFlag.AlignCenter,
                         period_text(None if self.period == "frozen" else self.period, self.kind))
