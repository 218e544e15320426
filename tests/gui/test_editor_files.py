"""Project files through the editor: save/reopen round trip, broken files, presets, recent
files, crash recovery, the save-on-close prompt, themes."""
from __future__ import annotations

import json
import os
import time

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QPointF, QSettings
from PySide6.QtWidgets import QApplication

from nlstudio import project as core
from nlstudio.widgets import theme
from nlstudio.widgets.canvas.items import BaseNode
from nlstudio.widgets.main_window import MainWindow


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch, settings, fake_dialogs):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))

    made: list[MainWindow] = []

    def make() -> MainWindow:
        w = MainWindow(settings)
        w.dialogs = fake_dialogs(answer=False)
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        made.append(w)
        return w

    yield make
    for w in made:
        w.dialogs.save_answer = "discard"
        w.close()
        w.deleteLater()
    # outside an event loop deferred deletes wait forever: windows would pile up
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture
def window(make_window):
    return make_window()


def build_graph(window: MainWindow) -> None:
    """Add a connected Titans level and a CMS level, and move one: a document worth saving."""
    from nlstudio.widgets.canvas import commands

    doc = window.document
    t = window.view.add_level("titans", 420.0, 32)
    c = window.view.add_level("mlp", 660.0, 256)
    assert commands.connect(doc, "mlp", t) is None
    assert commands.connect(doc, t, c) is None
    assert commands.connect(doc, c, "output") is None
    commands.move_levels(doc, {t: (455.5, commands.KEEP)})
    assert doc.is_valid, doc.faults


def test_save_and_reopen_gives_the_same_document(window, make_window, tmp_path):
    build_graph(window)
    before = window.document.snapshot()
    path = tmp_path / "model"  # no suffix: Save As adds .nlproj
    window.dialogs.save_path = str(path)
    window.actions["file.save_as"].trigger()
    saved = tmp_path / "model.nlproj"
    assert saved.is_file() and not window.dialogs.errors
    assert window.document.path == str(saved)
    assert not window.isWindowModified()
    on_disk = json.loads(saved.read_text())
    assert on_disk["view"]["positions"]["titans_1"][0] == pytest.approx(455.5)

    other = make_window()
    assert other.open_path(str(saved))
    assert other.document.data == before
    assert other.document.path == str(saved)
    assert set(other.scene.nodes) == {"mlp", "titans_1", "mlp_1"}
    assert other.scene.nodes["titans_1"].pos().x() == pytest.approx(455.5)
    assert other.recent_files()[0] == str(saved)


@pytest.mark.parametrize("content, fragment", [
    ("{ not json", "not valid JSON"),
    (json.dumps({"format": "nlstudio.project", "version": 99}), "newer NL Studio"),
    ("CYCLE", "cycle"),
])
def test_a_broken_file_shows_the_core_message_and_keeps_the_document(window, tmp_path,
                                                                      content, fragment):
    build_graph(window)
    before = window.document.snapshot()
    undo_count = window.document.undo_stack.count()
    if content == "CYCLE":
        doc = core.new_project()
        doc["model"]["levels"].append(core.default_level("titans", "t"))
        doc["model"]["edges"] += [["mlp", "t"], ["t", "mlp"]]
        content = json.dumps(doc)
    bad = tmp_path / "broken.nlproj"
    bad.write_text(content)
    window.dialogs.save_answer = "discard"
    assert not window.open_path(str(bad))
    assert len(window.dialogs.errors) == 1
    title, text = window.dialogs.errors[0]
    with pytest.raises(core.ProjectError) as info:
        core.load_project(bad)
    assert text == str(info.value)
    assert fragment in text and "broken.nlproj" in text and "Traceback" not in text
    assert window.document.data == before
    assert window.document.undo_stack.count() == undo_count
    assert window.document.path is None


def test_a_missing_file_is_an_error_not_a_crash(window, tmp_path):
    assert not window.open_path(str(tmp_path / "nope.nlproj"))
    assert "nope.nlproj" in window.dialogs.errors[0][1]


def test_a_missing_file_from_the_command_line_is_named_by_its_full_path(window, tmp_path,
                                                                        monkeypatch):
    """``nlstudio some/dir/nope.nlproj`` typed in another folder: the message says which."""
    (tmp_path / "some" / "dir").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not window.open_path("some/dir/nope.nlproj")
    text = window.dialogs.errors[0][1]
    assert text.startswith(str(tmp_path / "some" / "dir" / "nope.nlproj") + ": ")
    assert "No such file" in text and "\n" not in text


def test_open_path_dispatches_to_registered_openers(window, tmp_path):
    seen = []
    window.add_path_opener(os.path.isdir, lambda p: seen.append(p) or True)
    assert window.open_path(str(tmp_path))
    assert seen == [str(tmp_path)]


PRESETS = sorted(core.preset_paths())


@pytest.mark.parametrize("name", PRESETS or [pytest.param(
    None, marks=pytest.mark.skip(reason="no presets bundled yet"))])
def test_each_preset_opens_as_a_valid_untitled_graph(window, name):
    assert window.open_preset(name)
    doc = window.document
    assert doc.is_valid, doc.faults
    assert doc.path is None and not window.isWindowModified()
    levels = doc.levels()
    nodes = [i for i in window.scene.items() if isinstance(i, BaseNode)]
    assert len(nodes) == len(levels) + 2
    assert len(window.scene.edges) == len(doc.model["edges"])
    assert not any(n.faults for n in window.scene.nodes.values())
    axis = window.scene.axis
    for level in levels:
        node = window.scene.nodes[level["id"]]
        assert node.pos().y() == pytest.approx(axis.y_for(level["kind"], level["period"]))
    assert window.presets_menu.findChild(object, f"action_preset_{name}") is not None
    # an untitled copy: Save asks where
    window.dialogs.save_path = None
    assert not window.save()


def test_recovery_file_restores_the_exact_document(window, make_window, tmp_path):
    build_graph(window)
    window.scene.select_only(["titans_1"])
    window.inspector.fields["optimizer.eta"].stepBy(1)
    expected = window.document.snapshot()
    recovery = tmp_path / "recovery" / "recovery.nlrecover"
    assert recovery.is_file()
    # the previous session "crashes": its window is gone without a clean close
    window.recovery = type(window.recovery)(tmp_path / "elsewhere")
    window.close()

    restarted = make_window()
    asked = []
    assert restarted.check_recovery(ask=lambda text: asked.append(text) or True)
    assert "untitled" in asked[0]
    assert restarted.document.data == expected
    assert restarted.isWindowModified()
    assert set(restarted.scene.nodes) == {lv["id"] for lv in expected["model"]["levels"]}
    # a clean save removes it
    restarted.dialogs.save_path = str(tmp_path / "restored.nlproj")
    assert restarted.save()
    assert not recovery.exists()


def test_declined_or_stale_recovery_is_discarded(window, make_window, tmp_path):
    build_graph(window)
    path = tmp_path / "p.nlproj"
    window.dialogs.save_path = str(path)
    assert window.save()
    window.view.add_level("delta", 900.0)
    recovery = tmp_path / "recovery" / "recovery.nlrecover"
    assert recovery.is_file()
    payload = json.loads(recovery.read_text())
    assert payload["path"] == str(path)

    # the project file was saved after the recovery file was written: nothing to offer
    later = time.time() + 5
    os.utime(path, (later, later))
    other = make_window()
    assert not other.check_recovery(ask=lambda text: pytest.fail("must not ask"))

    os.utime(path, (time.time() - 60, time.time() - 60))
    window.recovery.write(window.document.data, str(path))
    assert not other.check_recovery(ask=lambda text: False)
    assert not recovery.exists()


def test_undo_to_the_clean_state_removes_the_recovery_file(window, tmp_path):
    recovery = tmp_path / "recovery" / "recovery.nlrecover"
    window.view.add_level("delta", 300.0)
    assert recovery.is_file()
    window.actions["edit.undo"].trigger()
    assert not recovery.exists()


def test_close_asks_to_save_unsaved_changes(window, tmp_path, qtbot):
    window.view.add_level("delta", 300.0)
    window.dialogs.save_answer = "cancel"
    assert not window.close()
    assert window.isVisible() and window.dialogs.asked_to_save == ["Untitled"]

    window.actions["edit.undo"].trigger()
    build_graph(window)
    window.dialogs.save_answer = "save"
    window.dialogs.save_path = str(tmp_path / "closing.nlproj")
    assert window.close()
    assert (tmp_path / "closing.nlproj").is_file()
    assert not (tmp_path / "recovery" / "recovery.nlrecover").exists()


def test_new_discards_after_asking(window):
    window.view.add_level("delta", 300.0)
    window.dialogs.save_answer = "discard"
    window.actions["file.new"].trigger()
    assert window.dialogs.asked_to_save == ["Untitled"]
    assert window.document.data == core.new_project()
    assert not window.isWindowModified()
    assert window.document.undo_stack.count() == 0


def test_recent_files_live_in_the_given_settings(window, settings, tmp_path):
    build_graph(window)
    for name in ("a.nlproj", "b.nlproj"):
        window.dialogs.save_path = str(tmp_path / name)
        window.actions["file.save_as"].trigger()
    assert window.recent_files() == [str(tmp_path / "b.nlproj"), str(tmp_path / "a.nlproj")]
    assert settings.value("recentFiles") == window.recent_files()
    window.recent_menu.aboutToShow.emit()
    labels = [a.text() for a in window.recent_menu.actions()]
    assert any("b.nlproj" in label for label in labels)
    (tmp_path / "a.nlproj").unlink()
    assert not window.open_path(str(tmp_path / "a.nlproj"))
    assert window.recent_files() == [str(tmp_path / "b.nlproj")]


def test_theme_switches_live_and_is_remembered(window, settings):
    window.actions["view.theme_dark"].trigger()
    assert theme.current().dark
    assert settings.value("theme") == "dark"
    app = QApplication.instance()
    assert app.palette().window().color().name() == theme.DARK.window
    assert theme.DARK.plot_background and theme.DARK.level_color(12) == theme.DARK.level_color(2)
    assert theme.diverging_colormap() is not None
    window.actions["view.theme_light"].trigger()
    assert not theme.current().dark
    assert window.scene.nodes["mlp"].pos() == window.scene.nodes["mlp"].pos()
    assert window.view.mapToScene(QPointF(0, 0).toPoint()) is not None
