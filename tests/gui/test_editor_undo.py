"""One QUndoStack for every edit: add, connect, move/period, inspector edits, delete; merges;
the title's modified mark follows the stack's clean state."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QPoint, QPointF, QSettings, Qt

from nlstudio.widgets.main_window import MainWindow


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, fake_dialogs):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w.dialogs = fake_dialogs(answer=False, strict=True)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.view.fit()
    yield w
    w.close()  # the fake dialogs discard unsaved changes
    w.deleteLater()
    # outside an event loop deferred deletes wait forever: windows would pile up
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def drag(qtbot, window, start: QPointF, end: QPointF, steps: int = 6) -> None:
    viewport = window.view.viewport()
    a, b = window.view.mapFromScene(start), window.view.mapFromScene(end)
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=a)
    for i in range(1, steps + 1):
        qtbot.mouseMove(viewport, pos=a + (b - a) * (i / steps))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=b)


def undo(window):
    window.actions["edit.undo"].trigger()


def redo(window):
    window.actions["edit.redo"].trigger()


def test_undo_redo_every_kind_of_edit(window, qtbot):
    doc, axis = window.document, window.scene.axis
    states = [doc.snapshot()]

    new_id = window.view.add_level("titans", 500.0, 16)                     # add
    states.append(doc.snapshot())
    node = window.scene.nodes[new_id]
    out_port = window.scene.nodes["mlp"].out_port.scenePos()
    drag(qtbot, window, out_port, node.in_port.scenePos())                  # connect
    states.append(doc.snapshot())
    assert ["mlp", new_id] in doc.model["edges"]
    drag(qtbot, window, node.pos() + QPointF(0, 12),
         QPointF(node.pos().x() - 60, axis.y_for_period(256) + 12))         # move + period
    states.append(doc.snapshot())
    assert doc.level(new_id)["period"] == 256
    window.scene.select_only([new_id])
    spin = window.inspector.fields["period"]
    spin.stepBy(-1)                                                         # inspector edit
    states.append(doc.snapshot())
    assert doc.level(new_id)["period"] == 128
    window.scene.select_only([new_id])
    window.actions["edit.delete"].trigger()                                 # delete
    states.append(doc.snapshot())
    assert doc.level(new_id) is None

    assert doc.undo_stack.count() == len(states) - 1
    for expected in reversed(states[:-1]):
        undo(window)
        assert doc.data == expected
        ids = {lv["id"] for lv in doc.levels()}
        assert set(window.scene.nodes) == ids
        for level_id, item in window.scene.nodes.items():
            level = doc.level(level_id)
            assert item.pos().y() == pytest.approx(axis.y_for(level["kind"], level["period"]))
    assert not window.actions["edit.undo"].isEnabled()
    for expected in states[1:]:
        redo(window)
        assert doc.data == expected
    assert len(window.scene.edges) == len(doc.model["edges"])


def test_a_whole_drag_is_one_command(window, qtbot):
    doc, axis = window.document, window.scene.axis
    new_id = window.view.add_level("mlp", 400.0, 2)
    count = doc.undo_stack.count()
    node = window.scene.nodes[new_id]
    drag(qtbot, window, node.pos() + QPointF(0, 12),
         QPointF(700, axis.y_for_period(256) + 12), steps=12)
    assert doc.undo_stack.count() == count + 1
    assert doc.level(new_id)["period"] == 256
    undo(window)
    assert doc.level(new_id)["period"] == 2
    assert node.pos() == QPointF(400.0, axis.y_for_period(2))


def test_consecutive_spin_box_edits_merge(window):
    doc = window.document
    new_id = window.view.add_level("titans", 400.0)
    count = doc.undo_stack.count()
    spin = window.inspector.fields["period"]
    for _ in range(3):
        spin.stepBy(1)
    assert doc.level(new_id)["period"] == 128
    assert doc.undo_stack.count() == count + 1
    eta = window.inspector.fields["optimizer.eta"]
    eta.stepBy(1)
    eta.stepBy(1)
    assert doc.undo_stack.count() == count + 2
    undo(window)
    undo(window)
    assert doc.level(new_id)["period"] == 16
    # stepping back to where it started leaves no command at all
    spin = window.inspector.fields["period"]
    spin.stepBy(1)
    spin.stepBy(-1)
    assert doc.undo_stack.count() == count
    assert doc.undo_stack.index() == count


def test_modified_mark_follows_the_clean_state(window, tmp_path):
    doc = window.document
    assert not window.isWindowModified()
    assert window.windowTitle() == "NL Studio — Untitled[*]"
    window.view.add_level("titans", 400.0)
    assert window.isWindowModified()
    undo(window)
    assert not window.isWindowModified()
    redo(window)
    assert window.isWindowModified()
    path = tmp_path / "m.nlproj"
    window.dialogs.get_save_path = lambda suggested="": str(path)
    window.view.add_level  # the unconnected level is a fault: save refuses, stays modified
    errors = []
    window.dialogs.error = lambda title, text: errors.append(text)
    assert not window.save()
    assert errors and "reachable" in errors[0]
    assert window.isWindowModified()
    undo(window)
    window.scene.select_only(["mlp"])
    window.inspector.fields["period"].stepBy(1)
    assert window.save()
    assert not window.isWindowModified()
    undo(window)
    assert window.isWindowModified()
    assert doc.undo_stack.undoText() == ""


def test_undo_text_names_the_edit(window):
    window.view.add_level("delta", 300.0)
    assert window.actions["edit.undo"].text() == "&Undo Add Delta rule level"
    undo(window)
    assert window.actions["edit.redo"].text() == "&Redo Add Delta rule level"
    assert window.scene.nodes.keys() == {"mlp"}
    assert QPoint(0, 0) == QPoint()
