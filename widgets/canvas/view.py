"""The canvas view: zoom, pan, drops from the palette, and the gesture dispatch."""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (QDragEnterEvent, QDragLeaveEvent, QDragMoveEvent, QDropEvent,
                           QKeyEvent, QMouseEvent, QPainter, QResizeEvent, QWheelEvent)
from PySide6.QtWidgets import QFrame, QGraphicsView, QMenu, QWidget

from nlstudio.catalog import KINDS
from nlstudio.widgets import theme
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.canvas.axis import period_text
from nlstudio.widgets.canvas.interactions import (ConnectInteraction, Interaction, MoveTracker,
                                                  PanInteraction)
from nlstudio.widgets.canvas.edges import EdgeItem
from nlstudio.widgets.canvas.items import GhostNode, NodeItem, PortItem
from nlstudio.widgets.canvas.ruler import WIDTH as RULER_WIDTH
from nlstudio.widgets.canvas.ruler import FrequencyRuler
from nlstudio.widgets.canvas.scene import GraphScene
from nlstudio.widgets.document import Document

MIME_KIND = "application/x-nlstudio-level-kind"
MIN_SCALE, MAX_SCALE = 0.15, 3.0
#: The default view never zooms out below this: node text stays legible (items.TITLE_PT etc.);
#: a graph that does not fit scrolls instead. Fit to View (Ctrl+0) shows everything at any zoom.
READABLE_ZOOM = 0.75
GRAPH_MARGIN = 12.0  # scene units around the graph in the default view


def kind_from_mime(mime) -> str | None:
    if mime is None or not mime.hasFormat(MIME_KIND):
        return None
    kind = bytes(mime.data(MIME_KIND)).decode("utf-8", "replace").strip()
    return kind if kind in KINDS else None


class GraphView(QGraphicsView):
    statusMessage = Signal(str)
    transformChanged = Signal()
    levelAdded = Signal(str)

    def __init__(self, document: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("canvasView")
        self.document = document
        self.graph_scene = GraphScene(document, self)
        self.setScene(self.graph_scene)
        self.setRenderHints(QPainter.RenderHint.Antialiasing
                            | QPainter.RenderHint.TextAntialiasing
                            | QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.ItemSelectionMode.IntersectsItemShape)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.ruler = FrequencyRuler(self)
        self.setViewportMargins(RULER_WIDTH, 0, 0, 0)
        self.interaction: Interaction | None = None
        self.mover = MoveTracker(self)
        self._space = False
        self._ghost: GhostNode | None = None
        self.horizontalScrollBar().valueChanged.connect(self._view_moved)
        self.verticalScrollBar().valueChanged.connect(self._view_moved)
        self.graph_scene.axisChanged.connect(self._view_moved)
        document.lockedChanged.connect(self._apply_lock)

    # ---- view state --------------------------------------------------------------------------
    def _view_moved(self, *_args) -> None:
        self.ruler.update()
        self.transformChanged.emit()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        rect = self.viewport().geometry()
        self.ruler.setGeometry(rect.left() - RULER_WIDTH, rect.top(), RULER_WIDTH, rect.height())

    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        target = min(MAX_SCALE, max(MIN_SCALE, self.zoom() * factor))
        factor = target / self.zoom()
        if abs(factor - 1) > 1e-6:
            self.scale(factor, factor)
            self._view_moved()

    def zoom_in(self) -> None:
        anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.zoom_by(1.25)
        self.setTransformationAnchor(anchor)

    def zoom_out(self) -> None:
        anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.zoom_by(0.8)
        self.setTransformationAnchor(anchor)

    def fit(self) -> None:
        """Show the whole axis (∞ to 0) and every node."""
        rect: QRectF = self.graph_scene.sceneRect()
        if rect.isEmpty():
            return
        self.resetTransform()
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        if self.zoom() > 1.1:
            self.resetTransform()
            self.scale(1.1, 1.1)
            self.centerOn(rect.center())
        self._view_moved()

    def graph_rect(self) -> QRectF:
        """The scene rectangle of every node (levels, input and output) and its edges."""
        rect = QRectF()
        for item in [*self.graph_scene.nodes.values(), *self.graph_scene.terminals.values()]:
            rect = rect.united(item.sceneBoundingRect())
        return rect.adjusted(-GRAPH_MARGIN, -GRAPH_MARGIN, GRAPH_MARGIN, GRAPH_MARGIN)

    def show_readable(self) -> None:
        """The default view (on open, on Reset Layout): the graph as large as fits, between
        READABLE_ZOOM and 100 %, with as much of the axis above it as the height allows. A
        graph too big for that shows its start (input side, fast levels) and scrolls."""
        rect = self.graph_rect()
        if rect.isEmpty():
            return
        for _ in range(2):  # again once the scroll bars have (dis)appeared
            viewport = self.viewport().rect()
            if viewport.isEmpty():
                return
            fit = min(viewport.width() / rect.width(), viewport.height() / rect.height())
            zoom = min(1.0, max(READABLE_ZOOM, fit))
            self.resetTransform()
            self.scale(zoom, zoom)
            width, height = viewport.width() / zoom, viewport.height() / zoom
            x = rect.center().x() if rect.width() <= width else rect.left() + width / 2
            if rect.height() <= height:  # room to spare: show the faster rows above too
                top = max(self.sceneRect().top(), rect.bottom() - height)
                y = min(top, rect.top()) + height / 2
            else:
                y = rect.top() + height / 2
            self.centerOn(QPointF(x, y))
        self._view_moved()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt API
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            steps = event.angleDelta().y() / 120.0
            if steps:
                self.zoom_by(1.15 ** steps)
            event.accept()
            return
        super().wheelEvent(event)

    def _apply_lock(self, locked: bool) -> None:
        for item in self.graph_scene.nodes.values():
            item.setFlag(NodeItem.GraphicsItemFlag.ItemIsMovable, not locked)
        self.setAcceptDrops(not locked)

    def restore_cursor(self) -> None:
        if self._space:
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.viewport().unsetCursor()

    # ---- gestures ------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self.interaction is not None:
            self.interaction.cancel()
            self.interaction = None
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (
                button == Qt.MouseButton.LeftButton and self._space):
            self.interaction = PanInteraction(self, event)
            event.accept()
            return
        if button == Qt.MouseButton.LeftButton:
            item = self.itemAt(event.position().toPoint())
            if isinstance(item, PortItem):
                if self.document.locked:
                    self.statusMessage.emit(self.document.lock_reason or "Editing is locked")
                    event.accept()
                    return
                self.interaction = ConnectInteraction(self, item)
                event.accept()
                return
        super().mousePressEvent(event)
        if button == Qt.MouseButton.LeftButton and not self.document.locked:
            self.mover.begin()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self.interaction is not None:
            self.interaction.move(event)
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self.interaction is not None:
            interaction, self.interaction = self.interaction, None
            interaction.release(event)
            event.accept()
            return
        super().mouseReleaseEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            self.mover.finish()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            event.accept()
            return
        if event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Left, Qt.Key.Key_Right) \
                and self.graph_scene.selected_level_ids() and self.interaction is None:
            self._nudge(event.key())
            event.accept()
            return
        if event.key() == Qt.Key.Key_Escape and self.interaction is not None:
            self.interaction.cancel()
            self.interaction = None
            self.statusMessage.emit("Connection cancelled")
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.restore_cursor()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def _nudge(self, key: Qt.Key) -> None:
        """Keyboard moves: Up/Down make the selected levels faster/slower by one octave (within
        their kind's rule), Left/Right shift them horizontally."""
        moves: dict[str, tuple[float, object]] = {}
        for level_id in self.graph_scene.selected_level_ids():
            item = self.graph_scene.nodes[level_id]
            level = self.document.level(level_id) or {}
            x, period = item.pos().x(), commands.KEEP
            if key in (Qt.Key.Key_Left, Qt.Key.Key_Right):
                x += -20.0 if key == Qt.Key.Key_Left else 20.0
            else:
                rows = sorted(self.graph_scene.axis.allowed(item.kind), key=lambda r: r[1])
                here = self.graph_scene.axis.y_for(item.kind, level.get("period"))
                if key == Qt.Key.Key_Up:
                    above = [r for r in rows if r[1] < here - 1]
                    target = above[-1] if above else None
                else:
                    below = [r for r in rows if r[1] > here + 1]
                    target = below[0] if below else None
                if target is None or target[0] == level.get("period"):
                    continue
                period = target[0]
            moves[level_id] = (x, period)
        if moves:
            commands.move_levels(self.document, moves, merge_key=("nudge", key, tuple(moves)))

    def contextMenuEvent(self, event) -> None:  # noqa: N802 - Qt API
        item = self.itemAt(event.pos())
        while item is not None and item.parentItem() is not None:
            item = item.parentItem()
        menu = QMenu(self)
        menu.setObjectName("canvasMenu")
        locked = self.document.locked
        if isinstance(item, NodeItem):
            if not item.isSelected():
                self.graph_scene.select_only([item.node_id])
            ids = self.graph_scene.selected_level_ids()
            remove = menu.addAction(f"Delete {item.node_id}" if len(ids) == 1
                                    else f"Delete {len(ids)} levels")
            remove.setEnabled(not locked)
            remove.triggered.connect(lambda: commands.delete(self.document, ids))
        elif isinstance(item, EdgeItem):
            src, dst = item.key
            cut = menu.addAction(f"Disconnect {src} → {dst}")
            cut.setEnabled(not locked)
            cut.triggered.connect(lambda: commands.disconnect(self.document, src, dst))
        else:
            where = self.mapToScene(event.pos())
            add = menu.addMenu("Add level here")
            add.setEnabled(not locked)
            for kind, info in KINDS.items():
                action = add.addAction(theme.kind_icon(kind), info.title)
                action.setStatusTip(info.summary)
                period, _y = self.graph_scene.axis.snap(kind, where.y())
                action.triggered.connect(
                    lambda _c=False, k=kind, p=period: self.add_level(k, where.x(), p))
            menu.addSeparator()
            menu.addAction("Fit to view", self.fit)
        menu.exec(event.globalPos())

    # ---- drops from the palette ------------------------------------------------------------------
    def _drop_target(self, kind: str, pos: QPointF) -> tuple[QPointF, object]:
        scene_pos = self.mapToScene(pos.toPoint())
        period, y = self.graph_scene.axis.snap(kind, scene_pos.y())
        return QPointF(scene_pos.x(), y), period

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        kind = kind_from_mime(event.mimeData())
        if kind is None or self.document.locked:
            event.ignore()
            return
        self._ghost = GhostNode(kind)
        self.graph_scene.addItem(self._ghost)
        self._move_ghost(kind, event.position())
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()

    def _move_ghost(self, kind: str, pos: QPointF) -> None:
        if self._ghost is None:
            return
        point, period = self._drop_target(kind, pos)
        self._ghost.period = "frozen" if period is None else period
        self._ghost.setPos(point)
        self._ghost.update()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt API
        kind = kind_from_mime(event.mimeData())
        if kind is None:
            event.ignore()
            return
        self._move_ghost(kind, event.position())
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()

    def _drop_ghost(self) -> None:
        if self._ghost is not None and self._ghost.scene() is not None:
            self.graph_scene.removeItem(self._ghost)
        self._ghost = None

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802 - Qt API
        self._drop_ghost()
        event.accept()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        self._drop_ghost()
        kind = kind_from_mime(event.mimeData())
        if kind is None:
            event.ignore()
            return
        point, period = self._drop_target(kind, event.position())
        self.add_level(kind, point.x(), period)
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()

    def add_level(self, kind: str, x: float | None = None, period: object = commands.KEEP) -> str | None:
        """Add a level (from a drop, or at a free spot right of the graph) and select it."""
        if x is None:
            xs = [n.pos().x() for n in self.graph_scene.nodes.values()]
            x = (max(xs) + commands.COLUMN) if xs else 0.0
        new_id = commands.add_level(self.document, kind, x, period)
        if new_id is None:
            return None
        self.graph_scene.select_only([new_id])
        level = self.document.level(new_id) or {}
        self.statusMessage.emit(
            f"Added {new_id} ({period_text(level.get('period'), kind)}): connect it from the "
            "output port of a level on its left")
        self.levelAdded.emit(new_id)
        self.setFocus()
        return new_id
