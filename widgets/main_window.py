"""The main window: palette (left dock), canvas (centre), inspector (right dock), menus and a
toolbar built from one action registry, a status bar with the graph's problems.

For the panels that come next (training, plots)::

    window.add_dock(widget, "Training", "trainingDock", Qt.DockWidgetArea.BottomDockWidgetArea)
    window.actions["run.start"].triggered.connect(start)   # ids: see _create_actions
    window.set_training_available(True)    # run.start then follows document.is_valid
    window.document.snapshot()             # the project dict to train
    window.document.changed / validityChanged / faultsChanged
    window.document.set_locked(True, "Training is running")   # canvas + inspector read-only
    window.close_guards.append(lambda: ...)   # return False to keep the window open
    window.path_openers.insert(0, (is_run_dir, open_run))   # open_path dispatch
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QActionGroup, QCloseEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QMainWindow, QMenu,
                               QMessageBox, QToolBar, QToolButton, QWidget)

from nlstudio import __version__
from nlstudio import project as core
from nlstudio.catalog import KINDS
from nlstudio.widgets import theme
from nlstudio.widgets.actions import ActionRegistry
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.canvas.view import GraphView
from nlstudio.widgets.document import Document
from nlstudio.widgets.inspector import Inspector
from nlstudio.widgets.palette import Palette
from nlstudio.widgets.recovery import RecoveryStore

SUFFIX = ".nlproj"
FILE_FILTER = "NL Studio projects (*.nlproj);;All files (*)"
MAX_RECENT = 10


class Dialogs:
    """Every modal the window shows, in one place, so tests can replace them."""

    def __init__(self, parent: QWidget) -> None:
        self.parent = parent

    def error(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok,
                          self.parent)
        box.setObjectName("errorDialog")
        box.exec()

    def info(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, title, text,
                          QMessageBox.StandardButton.Ok, self.parent)
        box.setObjectName("infoDialog")
        box.exec()

    def question(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self.parent, title, text)
        return answer == QMessageBox.StandardButton.Yes

    def ask_save_changes(self, name: str) -> str:
        """'save', 'discard' or 'cancel'."""
        box = QMessageBox(QMessageBox.Icon.Question, "Unsaved changes",
                          f"Save the changes to “{name}” before closing it?",
                          QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                          | QMessageBox.StandardButton.Cancel, self.parent)
        box.setObjectName("saveChangesDialog")
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        answer = box.exec()
        return {QMessageBox.StandardButton.Save: "save",
                QMessageBox.StandardButton.Discard: "discard"}.get(
            QMessageBox.StandardButton(answer), "cancel")

    def get_open_path(self, directory: str = "") -> str | None:
        path, _ = QFileDialog.getOpenFileName(self.parent, "Open project", directory,
                                              FILE_FILTER)
        return path or None

    def get_save_path(self, suggested: str = "") -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Save project", suggested,
                                              FILE_FILTER)
        return path or None


# Small line icons for the toolbar (drawn in the theme's text colour).
_ICONS = {
    "new": '<path d="M6 3h8l5 5v13H6z"/><path d="M14 3v5h5"/>',
    "open": '<path d="M3 7h6l2 2h10v10H3z"/>',
    "save": '<path d="M5 4h11l3 3v13H5z"/><path d="M8 4v5h7V4M8 20v-6h8v6"/>',
    "undo": '<path d="M9 14L4 9l5-5"/><path d="M4 9h10a6 6 0 010 12h-3"/>',
    "redo": '<path d="M15 14l5-5-5-5"/><path d="M20 9H10a6 6 0 000 12h3"/>',
    "delete": '<path d="M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13"/>',
    "zoom_in": '<circle cx="10.5" cy="10.5" r="6.5"/><path d="M20 20l-4.8-4.8M10.5 7.5v6M7.5 10.5h6"/>',
    "zoom_out": '<circle cx="10.5" cy="10.5" r="6.5"/><path d="M20 20l-4.8-4.8M7.5 10.5h6"/>',
    "fit": '<path d="M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5"/>',
    "run": '<path d="M7 4l13 8-13 8z" fill="currentColor"/>',
    "pause": '<path d="M7 4h3v16H7zM14 4h3v16h-3z" fill="currentColor"/>',
    "stop": '<rect x="5" y="5" width="14" height="14" rx="1.5" fill="currentColor"/>',
}


def _ui_svg(name: str, color: str, opacity: float = 1.0) -> bytes:
    body = _ICONS[name].replace("currentColor", color)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" '
            f'stroke="{color}" stroke-width="1.8" stroke-linecap="round" '
            f'stroke-linejoin="round"><g opacity="{opacity}">{body}</g></svg>').encode("utf-8")


def _ui_icon(name: str, p: theme.Palette):
    """A toolbar icon in the text colour, with an explicit muted look when disabled (Qt's
    generated disabled state barely changes filled glyphs such as Run/Stop)."""
    from PySide6.QtGui import QIcon

    icon = theme.svg_icon(_ui_svg(name, p.text), 24)
    disabled = theme.svg_icon(_ui_svg(name, p.muted, 0.45), 24)
    for size in (24, 48):
        icon.addPixmap(disabled.pixmap(size, size), QIcon.Mode.Disabled)
    return icon


class MainWindow(QMainWindow):
    TITLE = "NL Studio"

    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.settings = settings if settings is not None else QSettings()
        self.dialogs = Dialogs(self)
        self.recovery = RecoveryStore()
        self.close_guards: list[Callable[[], bool]] = []
        self.path_openers: list[tuple[Callable[[str], bool], Callable[[str], bool]]] = []
        self._training_available = False
        self._shown_once = False
        theme.manager().apply(str(self.settings.value("theme", "system")))
        self.setWindowIcon(theme.app_icon())

        self.document = Document(core.new_project(), self)
        self.view = GraphView(self.document, self)
        self.scene = self.view.graph_scene
        self.setCentralWidget(self.view)
        self.palette = Palette(self)
        self.inspector = Inspector(self.document, self)
        self.palette_dock = self.add_dock(self.palette, "Levels", "paletteDock",
                                          Qt.DockWidgetArea.LeftDockWidgetArea)
        self.inspector_dock = self.add_dock(self.inspector, "Inspector", "inspectorDock",
                                            Qt.DockWidgetArea.RightDockWidgetArea)
        self.palette_dock.setMinimumWidth(170)
        self.inspector_dock.setMinimumWidth(320)

        self.actions = ActionRegistry(self)
        self._create_actions()
        self._create_menus()
        self._create_toolbar()
        self._create_status_bar()
        self._connect()
        self._refresh_icons()
        self._update_title()
        self._update_faults()
        self._update_edit_actions()
        self.resize(1360, 860)
        self.resizeDocks([self.palette_dock, self.inspector_dock], [200, 350],
                         Qt.Orientation.Horizontal)
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("windowState")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        QTimer.singleShot(0, self.view.fit)

    # ---- construction ---------------------------------------------------------------------------
    def add_dock(self, widget: QWidget, title: str, object_name: str,
                 area: Qt.DockWidgetArea = Qt.DockWidgetArea.RightDockWidgetArea) -> QDockWidget:
        """Dock a panel; its show/hide toggle goes to the View menu."""
        dock = QDockWidget(title, self)
        dock.setObjectName(object_name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        panels = getattr(self, "panels_menu", None)
        if panels is not None:
            panels.addAction(dock.toggleViewAction())
        return dock

    def _create_actions(self) -> None:
        a = self.actions
        std = QKeySequence.StandardKey
        a.add("file.new", "&New", shortcut=std.New, tip="Start a new project")
        a.add("file.open", "&Open…", shortcut=std.Open, tip="Open a project file")
        a.add("file.save", "&Save", shortcut=std.Save, tip="Save the project")
        a.add("file.save_as", "Save &As…", shortcut="Ctrl+Shift+S",
              tip="Save the project under a new name")
        a.add("file.quit", "&Quit", shortcut=std.Quit, tip="Quit NL Studio")
        a.add("edit.undo", "&Undo", shortcut=std.Undo, tip="Undo the last edit")
        a.add("edit.redo", "&Redo", shortcut=std.Redo, tip="Redo the edit just undone")
        a.add("edit.delete", "&Delete", shortcut=[std.Delete, "Backspace"],
              tip="Delete the selected levels and edges")
        a.add("edit.select_all", "Select &All", shortcut=std.SelectAll, tip="Select every level")
        a.add("view.zoom_in", "Zoom &In", shortcut=[std.ZoomIn, "Ctrl+="], tip="Zoom in")
        a.add("view.zoom_out", "Zoom &Out", shortcut=std.ZoomOut, tip="Zoom out")
        a.add("view.fit", "&Fit to View", shortcut="Ctrl+0",
              tip="Show the whole graph and frequency axis")
        a.add("run.start", "&Run", shortcut="F5", tip="Train this model", enabled=False)
        a.add("run.pause", "&Pause", shortcut="F6", tip="Pause training", enabled=False)
        a.add("run.stop", "&Stop", shortcut="Shift+F5", tip="Stop training", enabled=False)
        a.add("help.canvas", "Canvas &Help", shortcut=std.HelpContents,
              tip="Mouse and keyboard on the canvas")
        a.add("help.about", "&About NL Studio", tip="Version and credits")
        self.theme_group = QActionGroup(self)
        for name, label in (("system", "&System"), ("dark", "&Dark"), ("light", "&Light")):
            action = a.add(f"view.theme_{name}", label, checkable=True,
                           tip=f"Use the {name} theme")
            action.setChecked(theme.manager().name == name)
            self.theme_group.addAction(action)
            action.triggered.connect(lambda _c=False, n=name: self.set_theme(n))

    def _create_menus(self) -> None:
        a = self.actions
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.setObjectName("fileMenu")
        file_menu.addActions([a["file.new"], a["file.open"]])
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.setObjectName("recentMenu")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.presets_menu = file_menu.addMenu("New from &Preset")
        self.presets_menu.setObjectName("presetsMenu")
        self._fill_presets_menu()
        file_menu.addSeparator()
        file_menu.addActions([a["file.save"], a["file.save_as"]])
        file_menu.addSeparator()
        file_menu.addAction(a["file.quit"])

        edit_menu = bar.addMenu("&Edit")
        edit_menu.setObjectName("editMenu")
        edit_menu.addActions([a["edit.undo"], a["edit.redo"]])
        edit_menu.addSeparator()
        add_menu = edit_menu.addMenu("&Add Level")
        add_menu.setObjectName("addLevelMenu")
        for kind, info in KINDS.items():
            action = add_menu.addAction(theme.kind_icon(kind), info.title)
            action.setObjectName(f"action_add_{kind}")
            action.setStatusTip(info.summary)
            action.triggered.connect(lambda _c=False, k=kind: self.view.add_level(k))
        edit_menu.addActions([a["edit.delete"], a["edit.select_all"]])

        view_menu = bar.addMenu("&View")
        view_menu.setObjectName("viewMenu")
        view_menu.addActions([a["view.zoom_in"], a["view.zoom_out"], a["view.fit"]])
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("&Theme")
        theme_menu.setObjectName("themeMenu")
        theme_menu.addActions(self.theme_group.actions())
        self.panels_menu = view_menu.addMenu("&Panels")
        self.panels_menu.setObjectName("panelsMenu")
        for dock in (self.palette_dock, self.inspector_dock):
            self.panels_menu.addAction(dock.toggleViewAction())

        run_menu = bar.addMenu("&Run")
        run_menu.setObjectName("runMenu")
        run_menu.addActions([a["run.start"], a["run.pause"], a["run.stop"]])
        self.run_menu = run_menu

        help_menu = bar.addMenu("&Help")
        help_menu.setObjectName("helpMenu")
        help_menu.addActions([a["help.canvas"], a["help.about"]])

    def _create_toolbar(self) -> None:
        a = self.actions
        bar = QToolBar("Main toolbar", self)
        bar.setObjectName("mainToolBar")
        bar.setMovable(False)
        for group in (("file.new", "file.open", "file.save"), ("edit.undo", "edit.redo",
                                                              "edit.delete"),
                      ("view.zoom_out", "view.zoom_in", "view.fit"),
                      ("run.start", "run.pause", "run.stop")):
            for action_id in group:
                bar.addAction(a[action_id])
            bar.addSeparator()
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.toolbar = bar

    def _create_status_bar(self) -> None:
        status = self.statusBar()
        status.setObjectName("statusBar")
        self.fault_button = QToolButton(self)
        self.fault_button.setObjectName("faultIndicator")
        self.fault_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.fault_menu = QMenu(self.fault_button)
        self.fault_menu.setObjectName("faultMenu")
        self.fault_button.setMenu(self.fault_menu)
        self.zoom_label = QLabel()
        self.zoom_label.setObjectName("zoomLabel")
        self.count_label = QLabel()
        self.count_label.setObjectName("levelCountLabel")
        status.addPermanentWidget(self.count_label)
        status.addPermanentWidget(self.zoom_label)
        status.addPermanentWidget(self.fault_button)
        status.showMessage("Ready", 3000)

    def _connect(self) -> None:
        a, doc = self.actions, self.document
        a["file.new"].triggered.connect(self.new_project)
        a["file.open"].triggered.connect(lambda: self.open_project())
        a["file.save"].triggered.connect(self.save)
        a["file.save_as"].triggered.connect(self.save_as)
        a["file.quit"].triggered.connect(self.close)
        a["edit.undo"].triggered.connect(doc.undo)
        a["edit.redo"].triggered.connect(doc.redo)
        # Bound methods (not lambdas): Qt drops these connections when the window goes, so a
        # signal sent while the window's children are destroyed never reaches a dead object.
        stack = doc.undo_stack
        for signal in (stack.canUndoChanged, stack.canRedoChanged, stack.undoTextChanged,
                       stack.redoTextChanged):
            signal.connect(self._update_edit_actions)
        a["edit.delete"].triggered.connect(self.delete_selection)
        a["edit.select_all"].triggered.connect(self.select_all)
        a["view.zoom_in"].triggered.connect(self.view.zoom_in)
        a["view.zoom_out"].triggered.connect(self.view.zoom_out)
        a["view.fit"].triggered.connect(self.view.fit)
        a["help.canvas"].triggered.connect(self._show_canvas_help)
        a["help.about"].triggered.connect(self._show_about)
        doc.cleanChanged.connect(self._clean_changed)
        stack.indexChanged.connect(self._write_recovery)
        doc.changed.connect(self._update_title)
        doc.changed.connect(self._update_counts)
        doc.faultsChanged.connect(self._update_faults)
        doc.validityChanged.connect(self.update_run_actions)
        doc.lockedChanged.connect(self._update_edit_actions)
        doc.editRefused.connect(self._show_message)
        doc.loaded.connect(self._fit_later)
        self.scene.selectionChanged.connect(self._selection_changed)
        self.view.statusMessage.connect(self._show_message)
        self.view.transformChanged.connect(self._update_zoom)
        self.palette.addRequested.connect(self.view.add_level)
        theme.manager().themeChanged.connect(self._refresh_icons)
        self._update_counts()

    def _clean_changed(self, _clean: bool = True) -> None:
        self._update_title()
        self._write_recovery()

    def _show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 6000)

    def _fit_later(self) -> None:
        QTimer.singleShot(0, self.view.fit)

    def _refresh_icons(self, _palette: object = None) -> None:
        p = theme.current()
        for action_id, icon in (("file.new", "new"), ("file.open", "open"),
                                ("file.save", "save"), ("edit.undo", "undo"),
                                ("edit.redo", "redo"), ("edit.delete", "delete"),
                                ("view.zoom_in", "zoom_in"), ("view.zoom_out", "zoom_out"),
                                ("view.fit", "fit"), ("run.start", "run"),
                                ("run.pause", "pause"), ("run.stop", "stop")):
            self.actions[action_id].setIcon(_ui_icon(icon, p))
        self.scene.update()
        self.view.ruler.update()

    # ---- state shown -----------------------------------------------------------------------------
    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.TITLE} — {self.document.name}[*]")
        self.setWindowModified(not self.document.is_clean)

    def _update_counts(self) -> None:
        n = len(self.document.levels())
        self.count_label.setText(f"{n} level" + ("" if n == 1 else "s"))

    def _update_zoom(self) -> None:
        self.zoom_label.setText(f"{round(self.view.zoom() * 100)} %")

    def _update_faults(self, _faults: object = None) -> None:
        faults = self.document.faults
        self.fault_menu.clear()
        if faults:
            self.fault_button.setText(f"⚠ {len(faults)} problem" + ("s" if len(faults) > 1
                                                                     else ""))
            for fault in faults:
                action = self.fault_menu.addAction(fault.text)
                action.triggered.connect(lambda _c=False, f=fault: self._go_to_fault(f))
            self.fault_button.setToolTip("The model cannot be trained yet:\n" + "\n".join(
                "• " + f.text for f in faults))
        else:
            self.fault_button.setText("✓ Ready to train")
            self.fault_button.setToolTip("The graph is valid: every level lies on a path from "
                                         "input to output")
            self.fault_menu.addAction("No problems").setEnabled(False)
        self.fault_button.setProperty("faults", bool(faults))
        self.fault_button.style().unpolish(self.fault_button)
        self.fault_button.style().polish(self.fault_button)
        self.update_run_actions()

    def _go_to_fault(self, fault) -> None:
        if fault.level_id and fault.level_id in self.scene.nodes:
            self.scene.select_only([fault.level_id])
            self.view.centerOn(self.scene.nodes[fault.level_id])
        elif fault.edge_index is not None:
            self.scene.clearSelection()
            for item in self.scene.edges.values():
                if item.index == fault.edge_index:
                    item.setSelected(True)
        else:
            self.scene.clearSelection()
        self.statusBar().showMessage(fault.text, 8000)

    def set_training_available(self, available: bool) -> None:
        """Called by the training panel once it handles run.start."""
        self._training_available = available
        self.update_run_actions()

    def update_run_actions(self, *_args: object) -> None:
        run = self.actions["run.start"]
        valid = self.document.is_valid
        if self._training_available:
            run.setEnabled(valid and not self.document.locked)
        if not valid:
            n = len(self.document.faults)
            run.setToolTip(f"Fix {n} problem{'s' if n > 1 else ''} first (see the status bar)")
        else:
            run.setToolTip("Train this model (F5)")

    def _update_edit_actions(self, *_args: object) -> None:
        locked = self.document.locked
        scene_selection = bool(self.scene.selectedItems())
        self.actions["edit.delete"].setEnabled(scene_selection and not locked)
        stack = self.document.undo_stack
        for action_id, can, label, text in (
                ("edit.undo", stack.canUndo(), "&Undo", stack.undoText()),
                ("edit.redo", stack.canRedo(), "&Redo", stack.redoText())):
            action = self.actions[action_id]
            action.setEnabled(can and not locked)
            action.setText(f"{label} {text}" if text else label)
        self.palette.list.setEnabled(not locked)
        self.update_run_actions()

    def _selection_changed(self) -> None:
        self.inspector.show_selection(self.scene.selected_level_ids(), self.scene.selected_edges())
        self._update_edit_actions()

    # ---- edit commands ------------------------------------------------------------------------------
    def delete_selection(self) -> bool:
        ids, edges = self.scene.selected_level_ids(), self.scene.selected_edges()
        if not ids and not edges:
            return False
        done = commands.delete(self.document, ids, edges)
        if done:
            self.statusBar().showMessage(self.document.undo_stack.undoText(), 4000)
        return done

    def select_all(self) -> None:
        self.scene.select_only(list(self.scene.nodes))

    def set_theme(self, name: str) -> None:
        theme.manager().apply(name)
        self.settings.setValue("theme", name)
        action = self.actions.get(f"view.theme_{name}")
        if action is not None:
            action.setChecked(True)

    # ---- files ---------------------------------------------------------------------------------------
    def _may_replace(self) -> bool:
        if self.document.locked:
            self.statusBar().showMessage(
                f"{self.document.lock_reason or 'Editing is locked'}: stop it first", 6000)
            return False
        return self.maybe_save()

    def maybe_save(self) -> bool:
        """Ask to save unsaved changes; False if the user cancelled (or saving failed)."""
        if self.document.is_clean:
            return True
        answer = self.dialogs.ask_save_changes(self.document.name)
        if answer == "save":
            return self.save()
        return answer == "discard"

    def new_project(self) -> bool:
        if not self._may_replace():
            return False
        self.document.load(core.new_project(), None)
        self.recovery.clear()
        self.statusBar().showMessage("New project", 4000)
        return True

    def open_project(self, path: str | None = None) -> bool:
        """File → Open: ask for unsaved changes, then for a path."""
        if path is None:
            if not self._may_replace():
                return False
            start = str(Path(self.document.path).parent) if self.document.path else ""
            path = self.dialogs.get_open_path(start)
            if not path:
                return False
            return self._open_project_file(path)
        return self.open_path(path)

    def open_path(self, path: str) -> bool:
        """Open a project file (``nlstudio PROJECT``); ``path_openers`` may claim other paths
        first (e.g. run folders)."""
        path = str(path)
        for accepts, handler in self.path_openers:
            if accepts(path):
                return bool(handler(path))
        if Path(path).is_dir():
            self.dialogs.error("Cannot open folder",
                               f"{path} is a folder, not a project file (*{SUFFIX}).")
            return False
        if not self._may_replace():
            return False
        return self._open_project_file(path)

    def _open_project_file(self, path: str) -> bool:
        name = Path(path).name
        try:
            data = core.project_to_dict(core.load_project(path))
        except core.ProjectError as exc:
            if not Path(path).exists():
                self._forget_recent(path)
            self.dialogs.error("Could not open project", str(exc))
            return False
        except OSError as exc:
            self.dialogs.error("Could not open project",
                               f"{name}: {exc.strerror or exc}")
            self._forget_recent(path)
            return False
        except Exception as exc:  # never a traceback in front of the user
            traceback.print_exc(file=sys.stderr)
            self.dialogs.error("Could not open project", f"{name}: {exc}")
            return False
        self.document.load(data, str(Path(path).absolute()))
        self.recovery.clear()
        self._remember_recent(str(Path(path).absolute()))
        self.scene.clearSelection()
        self.statusBar().showMessage(f"Opened {name}", 4000)
        return True

    def open_preset(self, name: str) -> bool:
        """An untitled copy of a bundled preset (Save asks where to put it)."""
        if not self._may_replace():
            return False
        try:
            data = core.project_to_dict(core.load_preset(name))
        except Exception as exc:
            self.dialogs.error("Could not open preset", str(exc))
            return False
        self.document.load(data, None)
        self.recovery.clear()
        self.scene.clearSelection()
        self.statusBar().showMessage(f"New project from the preset “{name}”", 4000)
        return True

    def save(self) -> bool:
        if not self.document.path:
            return self.save_as()
        return self._save_to(self.document.path)

    def save_as(self) -> bool:
        if self.document.path:
            suggested = self.document.path
        else:
            stem = "".join(c if c.isalnum() or c in "-_ " else "_" for c in self.document.name)
            last = self.settings.value("lastDirectory", "")
            suggested = str(Path(str(last or Path.home())) / f"{stem.strip() or 'untitled'}{SUFFIX}")
        path = self.dialogs.get_save_path(suggested)
        if not path:
            return False
        if not Path(path).suffix:
            path += SUFFIX
        return self._save_to(path)

    def _save_to(self, path: str) -> bool:
        name = Path(path).name
        try:
            core.save_project(self.document.snapshot(), path)
        except core.ProjectError as exc:
            self.dialogs.error("Could not save project",
                               f"{exc}\n\nFix the problems shown on the canvas, then save again.")
            return False
        except OSError as exc:
            self.dialogs.error("Could not save project", f"{name}: {exc.strerror or exc}")
            return False
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.dialogs.error("Could not save project", f"{name}: {exc}")
            return False
        absolute = str(Path(path).absolute())
        self.document.mark_saved(absolute)
        self.recovery.clear()
        self._remember_recent(absolute)
        self.settings.setValue("lastDirectory", str(Path(absolute).parent))
        self.statusBar().showMessage(f"Saved {name}", 4000)
        return True

    # ---- recent files and presets ---------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.settings.value("recentFiles", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember_recent(self, path: str) -> None:
        files = [path] + [f for f in self.recent_files() if f != path]
        self.settings.setValue("recentFiles", files[:MAX_RECENT])

    def _forget_recent(self, path: str) -> None:
        absolute = str(Path(path).absolute())
        self.settings.setValue("recentFiles", [f for f in self.recent_files() if f != absolute])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        for i, path in enumerate(files):
            label = f"&{i + 1}  {Path(path).name}" if i < 9 else Path(path).name
            action = self.recent_menu.addAction(label)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _c=False, p=path: self.open_project(p))
        if not files:
            self.recent_menu.addAction("No recent projects").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear Recent", lambda: self.settings.setValue(
                "recentFiles", []))

    def _fill_presets_menu(self) -> None:
        self.presets_menu.clear()
        try:
            names = sorted(core.preset_paths())
        except Exception:
            names = []
        for name in names:
            action = self.presets_menu.addAction(name)
            action.setObjectName(f"action_preset_{name}")
            action.triggered.connect(lambda _c=False, n=name: self.open_preset(n))
        if not names:
            self.presets_menu.addAction("No presets installed").setEnabled(False)

    # ---- recovery -------------------------------------------------------------------------------------
    def _write_recovery(self, *_args: object) -> None:
        if self.document.is_clean:
            self.recovery.clear()
        else:
            self.recovery.write(self.document.data, self.document.path)

    def check_recovery(self, ask: Callable[[str], bool] | None = None) -> bool:
        """Offer to restore unsaved work left by a session that did not close normally.

        ``ask(text) -> bool`` decides (default: a Yes/No dialog). Returns True if restored.
        """
        found = self.recovery.read()
        if found is None:
            return False
        ask = ask or (lambda text: self.dialogs.question("Restore unsaved changes?", text))
        if not ask(found.describe()):
            self.recovery.clear()
            return False
        self.document.load(found.document, found.path, clean=False)
        self._write_recovery()
        self.statusBar().showMessage("Restored unsaved changes: save them to keep them", 8000)
        return True

    # ---- window events ---------------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            self.view.fit()
            if not _testing():
                QTimer.singleShot(0, self.check_recovery)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        for guard in self.close_guards:
            if not guard():
                event.ignore()
                return
        if not self.maybe_save():
            event.ignore()
            return
        self.recovery.clear()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("windowState", self.saveState())
        event.accept()

    def _show_about(self) -> None:
        self.dialogs.info(
            "About NL Studio",
            f"NL Studio {__version__}\n\nA desktop lab for nested memories: compose levels "
            "that learn at different frequencies, train them, and watch what each one stores "
            "and forgets.\n\nAfter Behrouz, Razaviyayn, Zhong and Mirrokni, “Nested Learning: "
            "The Illusion of Deep Learning Architectures”, NeurIPS 2025.")

    def _show_canvas_help(self) -> None:
        self.dialogs.info(
            "Canvas help",
            "Add a level: drag it from the Levels panel; its height sets its period.\n"
            "Connect: drag from a level's right port to another level's left port.\n"
            "Change a period: drag the level up (faster) or down (slower).\n"
            "Select several: drag a rectangle on empty canvas, or Ctrl+click.\n"
            "Delete: Del or Backspace.   Undo / redo: Ctrl+Z / Ctrl+Shift+Z.\n"
            "Zoom: Ctrl+wheel, Ctrl++ / Ctrl+-, fit with Ctrl+0.\n"
            "Pan: middle-drag, or hold Space and drag.")


def _testing() -> bool:
    import os

    return bool(os.environ.get("NLSTUDIO_TESTING"))
