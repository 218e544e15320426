"""One class per canvas gesture (Orange's pattern): the view hands mouse events to the active
interaction until it finishes."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent

from nlstudio.widgets import theme
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.canvas.axis import ROW, period_text
from nlstudio.widgets.canvas.edges import ConnectionLine, edge_path
from nlstudio.widgets.canvas.items import NodeItem, PortItem

if TYPE_CHECKING:
    from nlstudio.widgets.canvas.view import GraphView


class Interaction:
    def __init__(self, view: "GraphView") -> None:
        self.view = view
        self.scene = view.graph_scene

    def move(self, event: QMouseEvent) -> None: ...

    def release(self, event: QMouseEvent) -> None: ...

    def cancel(self) -> None: ...


class PanInteraction(Interaction):
    """Middle-button drag, or space + left drag: scroll the canvas."""

    def __init__(self, view: "GraphView", event: QMouseEvent) -> None:
        super().__init__(view)
        self.last = event.position().toPoint()
        view.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)

    def move(self, event: QMouseEvent) -> None:
        pos = event.position().toPoint()
        delta: QPoint = pos - self.last
        self.last = pos
        h, v = self.view.horizontalScrollBar(), self.view.verticalScrollBar()
        h.setValue(h.value() - delta.x())
        v.setValue(v.value() - delta.y())

    def release(self, event: QMouseEvent) -> None:
        self.cancel()

    def cancel(self) -> None:
        self.view.restore_cursor()


class ConnectInteraction(Interaction):
    """Drag from a port to a port of the opposite side: a rubber line follows the mouse, legal
    targets light up, dropping on an illegal one says why, dropping elsewhere cancels."""

    def __init__(self, view: "GraphView", origin: PortItem) -> None:
        super().__init__(view)
        self.origin = origin
        self.line = ConnectionLine()
        self.scene.addItem(self.line)
        self.problems: dict[PortItem, str | None] = {}
        data = view.document.data
        for node in [*self.scene.nodes.values(), *self.scene.terminals.values()]:
            for port in node.ports():
                if port.side == origin.side or port.node is origin.node:
                    continue
                src, dst = self._pair(port)
                problem = commands.connect_problem(data, src, dst)
                self.problems[port] = problem
                port.set_state("illegal" if problem else "legal")
        self._draw(origin.scenePos(), ok=False)

    def _pair(self, port: PortItem) -> tuple[str, str]:
        if self.origin.side == "out":
            return self.origin.node_id, port.node_id
        return port.node_id, self.origin.node_id

    def _draw(self, end: QPointF, ok: bool) -> None:
        start = self.origin.scenePos()
        a, b = (start, end) if self.origin.side == "out" else (end, start)
        self.line.setPath(edge_path(a, b))
        p = theme.current()
        self.line.set_color(p.accent if ok else p.muted, ok)

    def _target(self, scene_pos: QPointF) -> PortItem | None:
        port = self.scene.port_at(scene_pos)
        return port if port in self.problems else None

    def move(self, event: QMouseEvent) -> None:
        pos = self.view.mapToScene(event.position().toPoint())
        target = self._target(pos)
        for port, problem in self.problems.items():
            port.set_state("illegal" if problem else ("target" if port is target else "legal"))
        if target is not None and self.problems[target] is None:
            self._draw(target.scenePos(), ok=True)
        else:
            self._draw(pos, ok=False)
            if target is not None:
                self.view.statusMessage.emit(f"Not allowed: {self.problems[target]}")

    def release(self, event: QMouseEvent) -> None:
        pos = self.view.mapToScene(event.position().toPoint())
        target = self._target(pos)
        self.cancel()
        if target is None:
            self.view.statusMessage.emit("Connection cancelled")
            return
        problem = self.problems[target]
        if problem:
            self.view.statusMessage.emit(f"Not connected: {problem}")
            return
        src, dst = self._pair(target)
        refused = commands.connect(self.view.document, src, dst)
        self.view.statusMessage.emit(f"Not connected: {refused}" if refused
                                     else f"Connected {src} → {dst}")

    def cancel(self) -> None:
        for port in self.problems:
            port.set_state("normal")
        if self.line.scene() is not None:
            self.scene.removeItem(self.line)


class MoveTracker:
    """Remembers where the selected levels were when a drag started, and turns the whole drag
    into one undoable command when it ends (a vertical move changes the period)."""

    def __init__(self, view: "GraphView") -> None:
        self.view = view
        self.scene = view.graph_scene
        self.start: dict[str, QPointF] = {}

    def begin(self) -> None:
        self.start = {}
        for item in self.scene.selectedItems():
            if isinstance(item, NodeItem):
                self.start[item.node_id] = item.pos()
                item.drag_origin_y = item.pos().y()
                item.free_move = True

    def finish(self) -> None:
        moves: dict[str, tuple[float, object]] = {}
        document = self.view.document
        for level_id, start in self.start.items():
            item = self.scene.nodes.get(level_id)
            if item is None:
                continue
            item.free_move = False
            pos = item.pos()
            if (pos - start).manhattanLength() < 0.5:
                item.preview_period = None
                continue
            level = document.level(level_id) or {}
            period: object = commands.KEEP
            if abs(pos.y() - start.y()) >= ROW / 2 - 1:
                new_period, _y = self.scene.axis.snap(item.kind, pos.y())
                if new_period != level.get("period"):
                    period = new_period
            moves[level_id] = (pos.x(), period)
        self.start = {}
        if moves:
            if not commands.move_levels(document, moves):
                self.scene.sync()  # refused (locked): put the cards back
            else:
                changed = [i for i, (_x, p) in moves.items() if p is not commands.KEEP]
                if changed:
                    level = document.level(changed[0]) or {}
                    self.view.statusMessage.emit(
                        f"{changed[0]} now updates {period_text(level.get('period'), level.get('kind'))}"
                        if len(changed) == 1 else f"Changed the period of {len(changed)} levels")
        else:
            for item in self.scene.nodes.values():
                item.preview_period = None
                item.update()
