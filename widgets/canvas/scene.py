"""The scene mirrors the Document: it rebuilds its items from every change notification.

Vertical position = update period (see axis.py), horizontal position = ``view.positions``.
"""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QGraphicsScene

from nlstudio.catalog import KINDS
from nlstudio.widgets import theme
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.canvas.axis import BAND_HALF, FrequencyAxis
from nlstudio.widgets.canvas.edges import EdgeItem
from nlstudio.widgets.canvas.items import (CARD_W, TERM_W, BaseNode, NodeItem, PortItem,
                                           TerminalNode)
from nlstudio.widgets.document import Document

MARGIN = 20.0  # scene units left of input and right of output


class GraphScene(QGraphicsScene):
    axisChanged = Signal()

    def __init__(self, document: Document, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("graphScene")
        self.document = document
        self.axis = FrequencyAxis()
        self.nodes: dict[str, NodeItem] = {}
        self.terminals = {name: TerminalNode(name) for name in commands.RESERVED}
        for node in self.terminals.values():
            self.addItem(node)
        self.edges: dict[tuple[str, str, int], EdgeItem] = {}
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)
        document.changed.connect(self.sync)
        document.levelRenamed.connect(self._rename)
        theme.manager().themeChanged.connect(self._theme_changed)
        self.sync()

    def _theme_changed(self, _palette: object) -> None:
        self.update()

    # ---- queries -----------------------------------------------------------------------------
    def node(self, node_id: str) -> BaseNode | None:
        return self.nodes.get(node_id) or self.terminals.get(node_id)

    def selected_level_ids(self) -> list[str]:
        return [item.node_id for item in self.selectedItems() if isinstance(item, NodeItem)]

    def selected_edges(self) -> list[tuple[str, str]]:
        return [item.key for item in self.selectedItems() if isinstance(item, EdgeItem)]

    def edge_item(self, src: str, dst: str) -> EdgeItem | None:
        for (s, d, _n), item in self.edges.items():
            if (s, d) == (src, dst):
                return item
        return None

    def port_at(self, pos: QPointF) -> PortItem | None:
        for item in self.items(pos):
            if isinstance(item, PortItem):
                return item
        return None

    def select_only(self, level_ids: list[str]) -> None:
        self.clearSelection()
        for level_id in level_ids:
            if level_id in self.nodes:
                self.nodes[level_id].setSelected(True)

    # ---- document → items --------------------------------------------------------------------
    def _rename(self, old: str, new: str) -> None:
        item = self.nodes.pop(old, None)
        if item is not None:
            item.node_id = new
            self.nodes[new] = item

    def sync(self) -> None:
        data = self.document.data
        levels = [lv for lv in self.document.levels() if isinstance(lv, dict)]
        axis = FrequencyAxis.for_levels(levels)
        if axis != self.axis:
            self.axis = axis
            self.axisChanged.emit()
        xs = commands.auto_x(data)
        positions = data.get("view", {}).get("positions", {}) or {}

        wanted: set[str] = set()
        for level in levels:
            level_id = str(level.get("id"))
            if level_id in wanted:
                continue  # a duplicated id is a fault the core reports; draw it once
            wanted.add(level_id)
            kind = str(level.get("kind"))
            item = self.nodes.get(level_id)
            if item is None:
                item = NodeItem(level_id, kind)
                self.nodes[level_id] = item
                self.addItem(item)
            pos = positions.get(level_id)
            x = float(pos[0]) if isinstance(pos, (list, tuple)) and pos \
                and isinstance(pos[0], (int, float)) else xs.get(level_id, 0.0)
            item.free_move = False
            item.setFlag(NodeItem.GraphicsItemFlag.ItemIsMovable, not self.document.locked)
            item.preview_period = None
            item.setPos(QPointF(x, self.axis.y_for(kind, level.get("period"))))
            item.show_level(level, self.document.level_faults(level_id))
        for level_id in list(self.nodes):
            if level_id not in wanted:
                item = self.nodes.pop(level_id)
                for edge in list(item.edges):
                    self._remove_edge(edge)
                self.removeItem(item)

        level_xs = [item.pos().x() for item in self.nodes.values()] or [0.0]
        gap = CARD_W / 2 + TERM_W / 2 + 34  # room for an edge's curve and arrow
        self.terminals["input"].setPos(min(level_xs) - gap, self.axis.y_middle)
        self.terminals["output"].setPos(max(level_xs) + gap, self.axis.y_middle)

        self._sync_edges()
        self._update_rect()
        self.update()

    def _remove_edge(self, edge: EdgeItem) -> None:
        edge.detach()
        for key, item in list(self.edges.items()):
            if item is edge:
                del self.edges[key]
        if edge.scene() is self:
            self.removeItem(edge)

    def _sync_edges(self) -> None:
        wanted: dict[tuple[str, str, int], int] = {}
        seen: dict[tuple[str, str], int] = {}
        for index, edge in enumerate(self.document.model.get("edges", [])):
            if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                continue
            pair = (str(edge[0]), str(edge[1]))
            n = seen.get(pair, 0)
            seen[pair] = n + 1
            wanted[(*pair, n)] = index
        for key in list(self.edges):
            item = self.edges[key]
            if key not in wanted or self.node(key[0]) is not item.src \
                    or self.node(key[1]) is not item.dst:
                self._remove_edge(item)
        for key, index in wanted.items():
            src, dst = self.node(key[0]), self.node(key[1])
            if src is None or dst is None:
                continue  # a dangling edge: the core's fault says so in the status bar
            item = self.edges.get(key)
            if item is None:
                item = EdgeItem(src, dst, index)
                self.edges[key] = item
                self.addItem(item)
            item.index = index
            item.refresh()
            item.set_faults(self.document.edge_faults(index))

    def _update_rect(self) -> None:
        xs = [n.pos().x() for n in self.terminals.values()]
        rect = QRectF(min(xs) - TERM_W / 2 - MARGIN, self.axis.top - 16,
                      max(xs) - min(xs) + TERM_W + 2 * MARGIN,
                      self.axis.bottom - self.axis.top + 32)
        self.setSceneRect(rect)

    # ---- the frequency axis in the background --------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802 - Qt API
        p = theme.current()
        axis = self.axis
        painter.fillRect(rect, QColor(p.canvas))
        left, width = rect.left(), rect.width()

        def band(top: float, bottom: float, color: str, alpha: int) -> None:
            c = QColor(color)
            c.setAlpha(alpha)
            painter.fillRect(QRectF(left, top, width, bottom - top), c)

        band(axis.top, axis.y_inf + BAND_HALF, p.band_inf, 34 if p.dark else 26)
        band(axis.y_frozen - BAND_HALF, axis.bottom, p.band_frozen, 34 if p.dark else 26)
        top, bottom = axis.continuum
        gradient = QLinearGradient(0, top, 0, bottom)
        fast, slow = QColor(p.band_fast), QColor(p.band_slow)
        fast.setAlpha(22 if p.dark else 18)
        slow.setAlpha(14 if p.dark else 12)
        gradient.setColorAt(0, fast)
        gradient.setColorAt(1, slow)
        painter.fillRect(QRectF(left, top, width, bottom - top), gradient)

        for row in axis.rows():
            if row.label in ("∞", "0"):
                continue
            pen = QPen(QColor(p.grid_strong if row.major else p.grid), 0)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawLine(QPointF(left, row.y), QPointF(rect.right(), row.y))
        for y in (axis.y_inf + BAND_HALF, axis.y_frozen - BAND_HALF):
            pen = QPen(QColor(p.border), 0, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawLine(QPointF(left, y), QPointF(rect.right(), y))

        self._draw_empty_middle(painter)

    def _draw_empty_middle(self, painter: QPainter) -> None:
        """A Transformer has nothing between ∞ and 0: say so where the continuum would be."""
        levels = self.document.levels()
        if not levels:
            return
        in_context = [lv for lv in levels if isinstance(lv, dict)
                      and lv.get("kind") in KINDS and KINDS[lv["kind"]].period_rule != "inf"
                      and lv.get("period") is not None]
        if in_context:
            return
        p = theme.current()
        top, bottom = self.axis.continuum
        title = QFont()
        title.setPointSizeF(16)
        title.setBold(True)
        heading = "Nothing learns in context between ∞ and 0"
        need = QFontMetricsF(title).horizontalAdvance(heading) + 80
        left = self.terminals["input"].pos().x() + TERM_W / 2 + 40
        right = self.terminals["output"].pos().x() - TERM_W / 2 - 40
        if right - left < need:
            centre = (left + right) / 2
            left, right = centre - need / 2, centre + need / 2
        box = QRectF(left, top + 40, right - left, bottom - top - 80)
        pen = QPen(QColor(p.muted), 0, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(box, 18, 18)
        # The text sits in the upper part: the input/output nodes are at mid-height.
        painter.setFont(title)
        painter.setPen(QColor(p.muted))
        head = QRectF(box.left() + 20, box.top() + box.height() * 0.16, box.width() - 40, 36)
        painter.drawText(head, Qt.AlignmentFlag.AlignCenter, heading)
        body = QFont()
        body.setPointSizeF(11)
        painter.setFont(body)
        painter.drawText(QRectF(box.left() + 30, head.bottom() + 6, box.width() - 60, 64),
                         Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop
                         | Qt.TextFlag.TextWordWrap,
                         "A Transformer has only two timescales: attention (∞) and frozen "
                         "weights (0). Drop a level here to give it a memory in between.")
