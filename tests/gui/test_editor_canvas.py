"""The model canvas driven like a user: drops from the palette, connections and period changes
with the mouse, deletion, faults shown where they are."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QMimeData, QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from nlstudio.widgets.canvas import commands
from nlstudio.widgets.canvas.items import NodeItem
from nlstudio.widgets.canvas.view import MIME_KIND
from nlstudio.widgets.main_window import MainWindow


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, fake_dialogs):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w.dialogs = fake_dialogs(answer=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.view.fit()
    yield w
    w.close()  # the fake dialogs discard unsaved changes
    w.deleteLater()
    # outside an event loop deferred deletes wait forever: windows would pile up
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def viewport_pos(window: MainWindow, scene_point: QPointF) -> QPoint:
    return window.view.mapFromScene(scene_point)


def drop_kind(window: MainWindow, kind: str, scene_point: QPointF) -> None:
    """A real drag-enter / drag-move / drop sequence carrying the palette's own mime data."""
    palette = window.palette.list
    mime: QMimeData = palette.mimeData([palette.kind_item(kind)])
    assert bytes(mime.data(MIME_KIND)).decode() == kind
    viewport = window.view.viewport()
    pos = QPointF(viewport_pos(window, scene_point))
    buttons, mods = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, buttons, mods)
    QApplication.sendEvent(viewport, enter)
    assert enter.isAccepted()
    move = QDragMoveEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, buttons, mods)
    QApplication.sendEvent(viewport, move)
    assert move.isAccepted()
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, buttons, mods)
    QApplication.sendEvent(viewport, drop)
    assert drop.isAccepted()


def mouse_drag(qtbot, window: MainWindow, start: QPointF, end: QPointF, steps: int = 4) -> None:
    viewport = window.view.viewport()
    a, b = viewport_pos(window, start), viewport_pos(window, end)
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=a)
    for i in range(1, steps + 1):
        p = a + (b - a) * (i / steps)
        qtbot.mouseMove(viewport, pos=p)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=b)


def port_pos(window: MainWindow, node_id: str, side: str) -> QPointF:
    node = window.scene.node(node_id)
    port = node.out_port if side == "out" else node.in_port
    return port.scenePos()


def test_drop_from_palette_adds_a_level_at_the_drop_height(window):
    axis = window.scene.axis
    drop_kind(window, "mlp", QPointF(400, axis.y_for_period(64) + 5))
    level = window.document.level("mlp_1")
    assert level is not None
    assert level["kind"] == "mlp" and level["period"] == 64
    assert level["optimizer"]["name"] == "sgd" and level["expansion"] == 4
    node = window.scene.nodes["mlp_1"]
    assert node.pos().y() == pytest.approx(axis.y_for_period(64))
    assert node.isSelected()
    assert window.inspector.level_id == "mlp_1"
    # a second drop of the same kind gets the next free id; attention is pinned at ∞
    drop_kind(window, "mlp", QPointF(600, axis.y_frozen))
    assert window.document.level("mlp_2")["period"] is None
    drop_kind(window, "attention", QPointF(200, axis.y_for_period(256)))
    assert window.document.level("attention_1")["period"] is None
    assert window.scene.nodes["attention_1"].pos().y() == pytest.approx(axis.y_inf)


def test_a_new_level_is_a_fault_until_connected(window, qtbot):
    axis = window.scene.axis
    assert window.document.is_valid
    window.set_training_available(True)
    assert window.actions["run.start"].isEnabled()
    drop_kind(window, "titans", QPointF(500, axis.y_for_period(16)))
    assert not window.document.is_valid
    node = window.scene.nodes["titans_1"]
    assert node.faults and "reachable" in node.toolTip()
    assert "problem" in window.fault_button.text()
    assert not window.actions["run.start"].isEnabled()

    mouse_drag(qtbot, window, port_pos(window, "input", "out"), port_pos(window, "titans_1", "in"))
    assert ["input", "titans_1"] in window.document.model["edges"]
    mouse_drag(qtbot, window, port_pos(window, "titans_1", "out"), port_pos(window, "output", "in"))
    assert ["titans_1", "output"] in window.document.model["edges"]
    assert window.document.is_valid
    assert not node.faults
    assert window.actions["run.start"].isEnabled()
    assert window.scene.edge_item("titans_1", "output") is not None


def test_connect_refuses_cycles_and_duplicates_and_cancels_elsewhere(window, qtbot):
    axis = window.scene.axis
    drop_kind(window, "titans", QPointF(500, axis.y_for_period(16)))
    mouse_drag(qtbot, window, port_pos(window, "mlp", "out"), port_pos(window, "titans_1", "in"))
    edges_before = list(window.document.model["edges"])

    # titans_1 → mlp would close a cycle mlp → titans_1 → mlp
    mouse_drag(qtbot, window, port_pos(window, "titans_1", "out"), port_pos(window, "mlp", "in"))
    assert window.document.model["edges"] == edges_before
    assert "cycle" in window.statusBar().currentMessage()

    mouse_drag(qtbot, window, port_pos(window, "input", "out"), port_pos(window, "mlp", "in"))
    assert window.document.model["edges"] == edges_before
    assert "already connected" in window.statusBar().currentMessage()

    mouse_drag(qtbot, window, port_pos(window, "titans_1", "out"), QPointF(900, axis.y_inf))
    assert window.document.model["edges"] == edges_before
    assert "cancelled" in window.statusBar().currentMessage()
    assert not any(p.state != "normal" for n in window.scene.nodes.values() for p in n.ports())


def test_legal_targets_highlight_while_connecting(window, qtbot):
    axis = window.scene.axis
    drop_kind(window, "delta", QPointF(500, axis.y_for_period(1)))
    viewport = window.view.viewport()
    start = viewport_pos(window, port_pos(window, "mlp", "out"))
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(viewport, pos=start + QPoint(40, 10))
    assert window.scene.nodes["delta_1"].in_port.state == "legal"
    assert window.scene.terminals["output"].in_port.state == "illegal"  # already connected
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=start + QPoint(40, 10))
    assert window.scene.nodes["delta_1"].in_port.state == "normal"


def test_dragging_a_level_vertically_snaps_its_period_to_a_power_of_two(window, qtbot):
    axis = window.scene.axis
    drop_kind(window, "mlp", QPointF(300, axis.y_for_period(8)))
    node = window.scene.nodes["mlp_1"]
    start = node.pos() + QPointF(0, 12)  # on the card, away from the ports
    target_y = axis.y_for_period(64) + 9  # a little off the row: must snap
    mouse_drag(qtbot, window, start, QPointF(start.x() + 30, target_y + 12))
    level = window.document.level("mlp_1")
    assert level["period"] == 64
    assert node.pos().y() == pytest.approx(axis.y_for_period(64))
    assert window.document.data["view"]["positions"]["mlp_1"][0] == pytest.approx(
        node.pos().x())
    # dragged to the bottom band: frozen (null) for an mlp
    mouse_drag(qtbot, window, node.pos() + QPointF(0, 12), QPointF(node.pos().x(),
                                                                   axis.y_frozen + 12))
    assert window.document.level("mlp_1")["period"] is None


def test_period_rules_pin_attention_and_delta(window, qtbot):
    axis = window.scene.axis
    drop_kind(window, "delta", QPointF(300, axis.y_for_period(1)))
    node = window.scene.nodes["delta_1"]
    mouse_drag(qtbot, window, node.pos() + QPointF(0, 12),
               node.pos() + QPointF(80, 12 + axis.y_for_period(256) - axis.y_for_period(1)))
    assert window.document.level("delta_1")["period"] == 1
    assert node.pos().y() == pytest.approx(axis.y_for_period(1))
    assert window.document.data["view"]["positions"]["delta_1"][0] == pytest.approx(380, abs=2)


def test_delete_removes_levels_with_their_edges_or_single_edges(window, qtbot):
    axis = window.scene.axis
    drop_kind(window, "titans", QPointF(500, axis.y_for_period(16)))
    mouse_drag(qtbot, window, port_pos(window, "mlp", "out"), port_pos(window, "titans_1", "in"))
    mouse_drag(qtbot, window, port_pos(window, "titans_1", "out"), port_pos(window, "output", "in"))
    # select the edge by clicking on it
    edge = window.scene.edge_item("mlp", "titans_1")
    window.scene.clearSelection()
    mid = edge.path().pointAtPercent(0.5)
    qtbot.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton,
                     pos=viewport_pos(window, mid))
    assert window.scene.selected_edges() == [("mlp", "titans_1")]
    assert window.inspector.edge == ("mlp", "titans_1")
    window.view.setFocus()
    qtbot.keyClick(window.view, Qt.Key.Key_Delete)
    assert ["mlp", "titans_1"] not in window.document.model["edges"]
    assert window.document.level("titans_1") is not None

    window.scene.select_only(["titans_1"])
    window.actions["edit.delete"].trigger()
    assert window.document.level("titans_1") is None
    assert all("titans_1" not in e for e in window.document.model["edges"])
    assert "titans_1" not in window.document.data["view"]["positions"]
    assert "titans_1" not in window.scene.nodes


def test_rubber_band_selects_several_levels(window, qtbot):
    axis = window.scene.axis
    drop_kind(window, "titans", QPointF(300, axis.y_for_period(4)))
    drop_kind(window, "titans", QPointF(560, axis.y_for_period(8)))
    window.scene.clearSelection()
    mouse_drag(qtbot, window, QPointF(150, axis.y_for_period(2)),
               QPointF(720, axis.y_for_period(16)))
    assert sorted(window.scene.selected_level_ids()) == ["titans_1", "titans_2"]
    assert "2 levels selected" in window.inspector.findChild(
        type(window.inspector.problems), "inspectorTitle").text()


def test_zoom_actions_and_fit(window):
    before = window.view.zoom()
    window.actions["view.zoom_in"].trigger()
    assert window.view.zoom() == pytest.approx(before * 1.25)
    window.actions["view.zoom_out"].trigger()
    assert window.view.zoom() == pytest.approx(before)
    window.actions["view.fit"].trigger()
    rect = window.view.mapToScene(window.view.viewport().rect()).boundingRect()
    axis = window.scene.axis
    assert rect.top() <= axis.y_inf and rect.bottom() >= axis.y_frozen
    assert window.zoom_label.text().endswith("%")


def test_locked_document_refuses_canvas_edits(window, qtbot):
    axis = window.scene.axis
    window.document.set_locked(True, "Training is running")
    before = window.document.snapshot()
    mouse_drag(qtbot, window, port_pos(window, "input", "out"), port_pos(window, "output", "in"))
    node = window.scene.nodes["mlp"]
    mouse_drag(qtbot, window, node.pos() + QPointF(0, 12), QPointF(node.pos().x(),
                                                                   axis.y_for_period(4)))
    assert window.document.data == before
    assert not window.actions["edit.undo"].isEnabled()
    assert not window.palette.list.isEnabled()
    window.document.set_locked(False)
    assert window.palette.list.isEnabled()


def test_every_interactive_widget_has_an_object_name(window):
    for name in ("canvasView", "palette", "inspector", "frequencyRuler", "faultIndicator",
                 "mainToolBar", "paletteDock", "inspectorDock"):
        assert window.findChild(object, name) is not None, name
    for action_id in ("file.new", "file.open", "file.save", "file.save_as", "edit.undo",
                      "edit.redo", "edit.delete", "view.zoom_in", "view.zoom_out", "view.fit",
                      "run.start", "run.pause", "run.stop"):
        action = window.actions[action_id]
        assert action.objectName() == "action_" + action_id.replace(".", "_")
    assert not window.actions["run.pause"].isEnabled()
    assert window.actions["file.save"].shortcut().toString() == "Ctrl+S"
    assert window.actions["file.save_as"].shortcut().toString() == "Ctrl+Shift+S"
    tip = window.palette.list.kind_item("titans").toolTip()
    assert "surprise" in tip


def test_connect_problem_rules():
    data = {"model": {"levels": [{"id": "a"}, {"id": "b"}],
                      "edges": [["input", "a"], ["a", "b"], ["b", "output"]]}}
    assert commands.connect_problem(data, "b", "a") is not None
    assert commands.connect_problem(data, "a", "a") is not None
    assert commands.connect_problem(data, "a", "b") is not None
    assert commands.connect_problem(data, "input", "b") is None
    assert commands.connect_problem(data, "output", "a") is not None
    assert isinstance(NodeItem("x", "mlp"), NodeItem)


def test_ctrl_wheel_zooms_and_middle_or_space_drag_pans(window, qtbot):
    from PySide6.QtGui import QWheelEvent

    view, viewport = window.view, window.view.viewport()
    view.zoom_by(2.0)  # zoomed in, so there is room to scroll both ways
    centre = QPointF(viewport.rect().center())
    before = view.zoom()
    wheel = QWheelEvent(centre, view.mapToGlobal(centre.toPoint()).toPointF(), QPoint(),
                        QPoint(0, 120), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.ControlModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(viewport, wheel)
    assert view.zoom() == pytest.approx(before * 1.15)

    h, v = view.horizontalScrollBar(), view.verticalScrollBar()
    h.setValue((h.minimum() + h.maximum()) // 2)
    v.setValue((v.minimum() + v.maximum()) // 2)
    start = (h.value(), v.value())
    a = viewport.rect().center()
    qtbot.mousePress(viewport, Qt.MouseButton.MiddleButton, pos=a)
    qtbot.mouseMove(viewport, pos=a + QPoint(40, 30))
    qtbot.mouseRelease(viewport, Qt.MouseButton.MiddleButton, pos=a + QPoint(40, 30))
    assert (h.value(), v.value()) == (start[0] - 40, start[1] - 30)

    before_doc = window.document.snapshot()
    view.setFocus()
    qtbot.keyPress(view, Qt.Key.Key_Space)
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(viewport, pos=a + QPoint(-20, 0))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=a + QPoint(-20, 0))
    qtbot.keyRelease(view, Qt.Key.Key_Space)
    assert h.value() == start[0] - 40 + 20
    assert window.document.data == before_doc  # panning never edits


def test_escape_cancels_a_connection(window, qtbot):
    viewport = window.view.viewport()
    start = viewport_pos(window, port_pos(window, "input", "out"))
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(viewport, pos=start + QPoint(60, 0))
    assert window.view.interaction is not None
    qtbot.keyClick(window.view, Qt.Key.Key_Escape)
    assert window.view.interaction is None
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=start + QPoint(60, 0))
    assert window.document.undo_stack.count() == 0


def test_arrow_keys_change_the_period_and_position_of_the_selection(window, qtbot):
    new_id = window.view.add_level("titans", 300.0, 16)
    view = window.view
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Up)
    assert window.document.level(new_id)["period"] == 8
    qtbot.keyClick(view, Qt.Key.Key_Down)
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert window.document.level(new_id)["period"] == 32
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert window.document.data["view"]["positions"][new_id][0] == pytest.approx(320)
    window.scene.select_only(["mlp"])  # frozen mlp: Down has nowhere to go, Up → the slowest
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert window.document.level("mlp")["period"] is None
    qtbot.keyClick(view, Qt.Key.Key_Up)
    assert window.document.level("mlp")["period"] == window.scene.axis.max_period
