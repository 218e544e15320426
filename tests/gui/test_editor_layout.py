"""The window at first sight: the default layout at 1280×800 and up (the Inspector whole, not a
tab), View → Reset Layout, the layout remembered between sessions, the canvas legible at its
default zoom, the parameter count, the presets' descriptions and F1's list of shortcuts."""
from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QSettings, Qt
from PySide6.QtGui import QFont, QFontMetricsF, QKeySequence

from nlstudio import project as core
from nlstudio.app import create_main_window
from nlstudio.build import build_task, count_parameters
from nlstudio.catalog import KINDS
from nlstudio.widgets import parameter_count
from nlstudio.widgets.canvas import items
from nlstudio.widgets.canvas.view import READABLE_ZOOM
from nlstudio.widgets.format import grouped
from nlstudio.widgets.actions import MenuPlace
from nlstudio.widgets.main_window import MainWindow
from nlstudio.widgets.window_layout import STATE_KEY, PanelSlot

RIGHT = Qt.DockWidgetArea.RightDockWidgetArea


def _settings(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def _close(window) -> None:
    window.document.undo_stack.setClean()
    window.close()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture
def open_app(qtbot, tmp_path, monkeypatch, fake_dialogs):
    """``open_app(size) -> window``: the full application window (training and lessons
    attached) at ``size``, with the default preset, as ``nlstudio`` starts it."""
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    made = []

    def open_app(size=(1280, 800)):
        window = create_main_window(_settings(tmp_path), runs_root=tmp_path / "runs")
        window.dialogs = fake_dialogs(answer=True)
        qtbot.addWidget(window)
        if size is not None:
            window.resize(*size)
            window.reset_layout()
        window.open_preset("nsam_kv_stream")
        window.show()
        qtbot.waitExposed(window)
        made.append(window)
        return window

    yield open_app
    for window in made:
        _close(window)


@pytest.mark.parametrize("size", [(1280, 800), (1600, 1000)])
def test_the_inspector_is_whole_at_first_sight(open_app, qtbot, size):
    """Issue 16 item 5: not a tab behind Training, not squeezed by a plot dock."""
    window = open_app(size)
    dock = window.inspector_dock
    qtbot.waitUntil(lambda: not dock.visibleRegion().isEmpty())
    assert window.dockWidgetArea(dock) == RIGHT and not dock.isFloating()
    assert window.tabifiedDockWidgets(dock) == []
    assert dock.width() >= 320
    assert dock.height() >= 0.6 * window.height()
    # every level of the default project is edited without scrolling the panel
    bar = window.inspector.scroll.verticalScrollBar()
    for level_id in window.document.level_ids():
        window.scene.select_only([level_id])
        qtbot.waitUntil(lambda i=level_id: window.inspector.level_id == i)
        QCoreApplication.processEvents()
        assert bar.maximum() == 0, level_id
    # the training panel and every plot are visible too (the matrices as a tab)
    training = window.training
    assert not training.dock.visibleRegion().isEmpty()
    for plot in training.plots.docks:
        assert plot.isVisible() and not plot.isFloating()
        assert not plot.visibleRegion().isEmpty() or window.tabifiedDockWidgets(plot)


@pytest.mark.parametrize("size, side_by_side", [((1280, 800), 2), ((1600, 1000), 3),
                                                ((1920, 1080), 4)])
def test_the_training_panel_and_the_plots_have_room(open_app, qtbot, size, side_by_side):
    """Issue 16: the training panel was ~190 px tall in a 340 px column and scrolled; four
    plots abreast under the canvas were ~220 px wide and the memory matrices ~55 px squares.
    The panel shows every row without scrolling, with and without its run banner; as many
    plots as are legible stand side by side, the others are tabs behind them."""
    window = open_app(size)
    training, plots = window.training, window.training.plots
    qtbot.waitUntil(lambda: not training.dock.visibleRegion().isEmpty())
    QCoreApplication.processEvents()
    scroll = training.dock.widget()
    for locked in (False, True):  # a run shows the banner
        training.panel.set_locked(locked)
        QCoreApplication.processEvents()
        assert scroll.verticalScrollBar().maximum() == 0, (size, locked)
        assert scroll.horizontalScrollBar().maximum() == 0, (size, locked)
    training.panel.set_locked(False)
    shown = [d for d in plots.docks if not d.visibleRegion().isEmpty()]
    assert len(shown) == side_by_side
    assert plots.loss in shown and plots.spectrum in shown  # the spectrum is never behind
    assert all(d.width() >= 300 and d.height() >= 250 for d in shown), [
        (d.objectName(), d.width(), d.height()) for d in shown]
    for dock in plots.docks:
        assert dock in shown or window.tabifiedDockWidgets(dock), dock.objectName()


def test_reset_layout_puts_every_panel_back(open_app, qtbot):
    window = open_app()
    docks = [window.inspector_dock, window.palette_dock, window.training.dock,
             *window.training.plots.docks]
    qtbot.waitUntil(lambda: window.inspector_dock.height() > 0)
    QCoreApplication.processEvents()  # the sizes set on first show (layout_manager.shown)

    def where(dock):
        """Its area, its tab group and, when it is in front, its size."""
        tabs = {d.objectName() for d in window.tabifiedDockWidgets(dock)}
        front = not dock.visibleRegion().isEmpty()
        return (window.dockWidgetArea(dock), tabs, front,
                (dock.width(), dock.height()) if front else None)

    default = {d.objectName(): where(d) for d in docks}
    assert sum(front for _, _, front, _ in default.values()) == 5  # the rest are tabs
    window.inspector_dock.hide()
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, window.training.dock)
    window.tabifyDockWidget(window.training.dock, window.palette_dock)
    window.training.plots.loss.setFloating(True)
    window.training.plots.matrices.raise_()
    window.actions["view.reset_layout"].trigger()
    QCoreApplication.processEvents()
    for dock in docks:
        area, tabs, front, size = default[dock.objectName()]
        now = where(dock)
        assert dock.isVisible() and not dock.isFloating(), dock.objectName()
        assert now[:3] == (area, tabs, front), (dock.objectName(), now, default)
        if size is not None:
            assert abs(now[3][0] - size[0]) <= 2 and abs(now[3][1] - size[1]) <= 2, (
                dock.objectName(), now, size)
    assert window.tabifiedDockWidgets(window.inspector_dock) == []
    assert window.actions["view.reset_layout"] in window.menu("view").actions()


def test_the_layout_is_remembered_between_sessions(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    first = MainWindow(_settings(tmp_path))
    first.show()
    qtbot.waitExposed(first)
    first.resize(720, 640)  # the offscreen screen is 800×800: restoring never shrinks this
    first.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, first.inspector_dock)
    first.palette_dock.hide()
    QCoreApplication.processEvents()
    _close(first)

    second = MainWindow(_settings(tmp_path))
    second.show()
    qtbot.waitExposed(second)
    assert (second.width(), second.height()) == (720, 640)
    assert second.dockWidgetArea(second.inspector_dock) == Qt.DockWidgetArea.LeftDockWidgetArea
    assert not second.palette_dock.isVisible()
    second.reset_layout()
    assert second.dockWidgetArea(second.inspector_dock) == RIGHT
    assert second.palette_dock.isVisible()
    _close(second)


def test_a_layout_saved_by_an_older_version_is_not_restored(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    old = MainWindow(_settings(tmp_path))
    old.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, old.inspector_dock)
    settings = _settings(tmp_path)
    settings.setValue(STATE_KEY, old.saveState(0))  # the version layouts used to be saved as
    settings.sync()
    old.deleteLater()
    window = MainWindow(_settings(tmp_path))
    assert not window.restore_layout()
    assert window.dockWidgetArea(window.inspector_dock) == RIGHT
    _close(window)


def test_panels_of_other_parts_go_where_they_are_placed(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QLabel

    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    window = MainWindow(_settings(tmp_path))
    below = window.add_dock(QLabel("run"), "Run & stats", "runDock", PanelSlot.RIGHT)
    plot = window.add_dock(QLabel("plot"), "Plot", "plotDock", PanelSlot.BOTTOM)
    tab = window.add_dock(QLabel("tab"), "Tab", "tabDock", PanelSlot.BOTTOM, tab_with=plot)
    window.show()
    qtbot.waitExposed(window)
    assert window.dockWidgetArea(below) == RIGHT
    assert below.y() > window.inspector_dock.y()
    assert window.dockWidgetArea(plot) == Qt.DockWidgetArea.BottomDockWidgetArea
    assert window.tabifiedDockWidgets(plot) == [tab]
    assert window.panel_slot(tab) == PanelSlot.BOTTOM and window.panel_slot(window.palette_dock)
    texts = [a.text() for a in window.menu("panels").actions()]
    assert "Run && stats" in texts  # an & in a title is text, not a mnemonic
    with pytest.raises(ValueError):
        window.add_panel(type(below)("nameless"), PanelSlot.LEFT)
    # menus by name, actions put at named places
    new = window.actions.add("file.export_all", "Export All")
    window.add_actions(MenuPlace.FILE_EXPORT, [new])
    items_ = window.menu("file").actions()
    quit_index = items_.index(window.actions["file.quit"])
    assert items_.index(new) < quit_index and items_[items_.index(new) - 1].isSeparator()
    assert items_[items_.index(new) + 1].isSeparator()  # a group of its own
    _close(window)


# ---- the canvas at first sight (issue 16 item 13) -----------------------------------------
def test_the_default_project_is_legible_and_whole_at_1280x800(open_app):
    window = open_app()
    view = window.view
    px_per_pt = view.logicalDpiY() / 72
    smallest = min(items.KIND_PT, items.PERIOD_PT) * view.zoom() * px_per_pt
    assert view.zoom() >= READABLE_ZOOM
    assert smallest >= 8.5  # was ~6 px at the old fit-everything 52 %
    shown = view.mapToScene(view.viewport().rect()).boundingRect()
    for node in [*window.scene.nodes.values(), *window.scene.terminals.values()]:
        assert shown.contains(node.sceneBoundingRect()), node.node_id
    assert window.zoom_label.text() == f"{round(view.zoom() * 100)} %"


def test_card_text_is_not_cut():
    """Every kind's title (without its parenthesis where needed) and a long default id fit."""
    kind_font = QFont()
    kind_font.setPointSizeF(items.KIND_PT)
    title_font = QFont()
    title_font.setPointSizeF(items.TITLE_PT)
    title_font.setBold(True)
    for info in KINDS.values():
        text = items.fitted_title(info.title, QFontMetricsF(kind_font), items.KIND_TEXT_WIDTH)
        assert "…" not in text and info.title.startswith(text), info.title
    assert QFontMetricsF(title_font).horizontalAdvance("self_modifying_1") <= items.TEXT_WIDTH


# ---- numbers, menus and help ------------------------------------------------------------------
@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, fake_dialogs):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    w = MainWindow(_settings(tmp_path))
    w.dialogs = fake_dialogs(answer=False, strict=True)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    _close(w)


def _expected_count(snapshot: dict) -> int:
    project = core.parse_project(snapshot)
    return count_parameters(project, build_task(project))


def test_the_parameter_count_follows_edits_off_the_gui_thread(window, qtbot, monkeypatch):
    """Issue 16 item 12: in the status bar and the Inspector, from build.count_parameters."""
    threads = []
    real = parameter_count.count_parameters

    def spy(project, task):
        threads.append(threading.current_thread())
        return real(project, task)

    monkeypatch.setattr(parameter_count, "count_parameters", spy)
    window.open_preset("nsam_kv_stream")
    window.scene.clearSelection()
    label = window.parameter_label
    inspector_label = window.inspector.findChild(type(label), "parameterCount")
    expected = grouped(_expected_count(window.document.snapshot()))
    qtbot.waitUntil(lambda: label.text() == f"{expected} parameters", timeout=20_000)
    assert inspector_label.text() == expected
    window.document.edit("wider", lambda d: d["model"].update(d_model=128))
    wider = grouped(_expected_count(window.document.snapshot()))
    assert wider != expected
    qtbot.waitUntil(lambda: label.text() == f"{wider} parameters", timeout=20_000)
    qtbot.waitUntil(lambda: window.inspector.findChild(
        type(label), "parameterCount").text() == wider)
    assert threads and threading.main_thread() not in threads
    window.document.edit("invalid", lambda d: d["model"].update(heads=5))
    qtbot.waitUntil(lambda: label.text() == "– parameters", timeout=20_000)
    assert "problem" in label.toolTip()


def test_presets_show_their_titles_and_descriptions(window):
    """Issue 16 item 11."""
    menu = window.presets_menu
    assert menu.toolTipsVisible()
    names = core.preset_paths()
    actions = {a.objectName().removeprefix("action_preset_"): a for a in menu.actions()}
    assert set(actions) == set(names)
    for name, action in actions.items():
        preset = core.load_preset(name)
        assert preset.description
        assert action.text().replace("&&", "&") == preset.name
        assert action.statusTip() == preset.description
        assert name in action.toolTip()
    actions["transformer"].trigger()
    assert window.document.name == core.load_preset("transformer").name


def test_f1_lists_every_shortcut_and_the_canvas_gestures(window):
    """Issue 16 item 12: not only the canvas keys; actions added later are listed too."""
    late = window.actions.add("run.late", "&Late Action", shortcut="Ctrl+Alt+L")
    window.actions["help.shortcuts"].trigger()
    title, text = window.dialogs.infos[-1]
    listed = 0
    for action_id, action in window.actions.items():
        for key in action.shortcuts():
            assert key.toString(QKeySequence.SequenceFormat.NativeText) in text, action_id
            listed += 1
    assert listed >= 15
    for shortcut in ("Ctrl+S", "F5", "Ctrl+0", "Ctrl+Alt+L"):
        assert shortcut in text
    assert "Late Action" in text and late.text() not in text  # shown without its mnemonic
    assert "Ctrl+wheel" in text and "Space" in text  # the canvas gestures
    assert window.actions["help.shortcuts"].shortcuts()[0] == QKeySequence(
        QKeySequence.StandardKey.HelpContents)
