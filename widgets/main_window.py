"""The main window: the Levels palette (a strip above the canvas), the canvas, the Inspector
(right column), menus and a toolbar built from one action registry, a status bar with the
graph's problems and the model's parameter count.

What the training side and the lessons use (nothing else; no ``getattr`` probing)::

    window.document                        # the Document: snapshot(), changed, set_locked(...)
    window.actions["run.start"]            # the ActionRegistry (ids: add_window_actions);
    window.actions.add("run.export", ...)  #   add your own the same way
    window.dialogs                         # error / info / question / ask_save_changes / ...
    window.settings                        # the QSettings of this window
    window.menu("file")                    # the QMenu "file", "edit", "view", "run", "help" or
                                           #   "panels" (View → Panels)
    window.add_actions("file", actions, after="file.open")   # insert into a menu (or before=)
    window.add_dock(widget, "Training", "trainingDock", PanelSlot.RIGHT)  # a new panel
    window.add_panel(dock, PanelSlot.BOTTOM, tab_with=None)  # an existing QDockWidget
    window.panel_slot(dock)                # its slot, None if not placed yet
    window.set_training_available(True)    # run.start then follows validity and the lock
    window.add_close_guard(guard)          # guard() -> False keeps the window open
    window.add_path_opener(accepts, open)  # open_path(p) asks accepts(p) first, then open(p)
    window.show_status("Saved", 4000)      # a transient status-bar message
    window.restore_layout()                # once every panel exists (create_main_window)

Panels go into the default layout's slots (``window_layout.PanelSlot``): View → Reset Layout
puts them back there; the window's geometry and dock state are remembered between sessions.
"""
from __future__ import annotations

import os
from typing import Callable

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QShowEvent
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu, QToolBar, QWidget

from nlstudio import __version__
from nlstudio import project as core
from nlstudio.catalog import KINDS
from nlstudio.widgets import theme
from nlstudio.widgets.actions import ActionRegistry, add_window_actions
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.canvas.view import GraphView
from nlstudio.widgets.dialogs import Dialogs, toolbar_icon
from nlstudio.widgets.document import Document
from nlstudio.widgets.inspector import Inspector
from nlstudio.widgets.palette import Palette
from nlstudio.widgets.parameter_count import ParameterCounter
from nlstudio.widgets.project_files import ProjectFiles
from nlstudio.widgets.recovery import RecoveryStore
from nlstudio.widgets.shortcuts_help import shortcuts_html
from nlstudio.widgets.status_bar import StatusIndicators
from nlstudio.widgets.window_layout import PanelSlot, WindowLayout

DEFAULT_SIZE = (1280, 800)  # the smallest size the default layout is made for


class MainWindow(ProjectFiles, QMainWindow):
    TITLE = "NL Studio"

    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.settings = settings if settings is not None else QSettings()
        self.dialogs = Dialogs(self)
        self.recovery = RecoveryStore()
        # Lists kept public for code written before add_close_guard/add_path_opener.
        self.close_guards: list[Callable[[], bool]] = []
        self.path_openers: list[tuple[Callable[[str], bool], Callable[[str], bool]]] = []
        self.menus: dict[str, QMenu] = {}
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
        self.parameters = ParameterCounter(self.document, self)
        self.palette_dock = self._dock(self.palette, "Levels", "paletteDock")
        # Its title bar at its side: as a strip above the canvas it costs no height (toggling
        # this feature when the dock moves leaves Qt's size hints stale, so it stays).
        self.palette_dock.setFeatures(self.palette_dock.features()
                                      | QDockWidget.DockWidgetFeature.DockWidgetVerticalTitleBar)
        self.inspector_dock = self._dock(self.inspector, "Inspector", "inspectorDock")
        self.palette_dock.dockLocationChanged.connect(self._palette_moved)
        self.inspector_dock.setMinimumWidth(320)
        self.layout_manager = WindowLayout(self, self.settings, self.inspector_dock)

        self.actions = ActionRegistry(self)
        self._create_actions()
        self._create_menus()
        self.layout_manager.add(self.palette_dock, PanelSlot.TOP)
        self._create_toolbar()
        self.indicators = StatusIndicators(self)
        # the status bar's permanent labels, by name
        self.count_label = self.indicators.levels
        self.parameter_label = self.indicators.parameters
        self.zoom_label = self.indicators.zoom
        self.fault_button = self.indicators.faults
        self._connect()
        self._refresh_icons()
        self._update_title()
        self._update_edit_actions()
        self.resize(*self._first_size())
        self.layout_manager.reset()
        QTimer.singleShot(0, self.view, self.view.show_readable)

    # ---- what the training side and the lessons use -----------------------------------------
    def add_dock(self, widget: QWidget, title: str, object_name: str,
                 slot: PanelSlot = PanelSlot.BOTTOM, tab_with: QDockWidget | None = None
                 ) -> QDockWidget:
        """A new panel holding ``widget`` (``object_name`` keeps its place between sessions),
        placed in ``slot`` of the default layout; its toggle goes to View → Panels."""
        dock = self._dock(widget, title, object_name)
        self.add_panel(dock, slot, tab_with)
        return dock

    def add_panel(self, dock: QDockWidget, slot: PanelSlot,
                  tab_with: QDockWidget | None = None) -> None:
        """Place an existing QDockWidget (with a unique objectName) in ``slot`` of the default
        layout, or as a tab behind ``tab_with``; adds its toggle to View → Panels. Calling it
        again for the same dock moves it to the new slot."""
        if dock.objectName() == "":
            raise ValueError("a panel needs an objectName (its place is saved under it)")
        if dock not in [p.dock for p in self.layout_manager.panels]:
            toggle = dock.toggleViewAction()
            toggle.setText(dock.windowTitle().replace("&", "&&"))  # "Loss & metric": no mnemonic
            self.menus["panels"].addAction(toggle)
        self.layout_manager.add(dock, slot, tab_with)

    def panel_slot(self, dock: QDockWidget) -> PanelSlot | None:
        """Where ``dock`` goes in the default layout (None: not placed with add_panel)."""
        return next((p.slot for p in self.layout_manager.panels if p.dock is dock), None)

    def menu(self, name: str) -> QMenu:
        """The menu ``name``: "file", "edit", "view", "run", "help" or "panels"."""
        return self.menus[name]

    def add_actions(self, menu: str, actions: list[QAction], *, after: str | None = None,
                    before: str | None = None) -> None:
        """Insert ``actions`` into ``menu`` as a group of their own (with a separator): after
        the action ``after`` or before the action ``before`` (ids of the registry), else at
        the end."""
        target = self.menus[menu]
        items = target.actions()
        anchor = self.actions.get(after or before or "")
        if anchor not in items:
            target.addSeparator()
            target.addActions(actions)
            return
        index = items.index(anchor) + (1 if after else 0)
        if before and index and items[index - 1].isSeparator():
            index -= 1  # before the separator that opens the anchor's group
        at = items[index] if index < len(items) else None
        if at is None:
            target.addSeparator()
            target.addActions(actions)
        else:
            target.insertActions(at, actions)
            target.insertSeparator(actions[0] if before else at)

    def add_close_guard(self, guard: Callable[[], bool]) -> None:
        """``guard()`` runs when the window is about to close; False keeps it open."""
        self.close_guards.append(guard)

    def add_path_opener(self, accepts: Callable[[str], bool],
                        opener: Callable[[str], bool]) -> None:
        """``open_path(p)`` (``nlstudio PATH``, recent files) calls ``opener(p)`` when
        ``accepts(p)``, before trying ``p`` as a project file. Later openers are asked first."""
        self.path_openers.insert(0, (accepts, opener))

    def show_status(self, text: str, ms: int = 6000) -> None:
        self.statusBar().showMessage(text, ms)

    def restore_layout(self) -> bool:
        """The last session's window geometry and panels (or the default layout); call once
        every panel exists. True if a saved layout was restored."""
        return self.layout_manager.restore()

    def reset_layout(self) -> None:
        """View → Reset Layout: every panel back in its default place and size, shown."""
        self.layout_manager.reset()
        QTimer.singleShot(0, self.view, self.view.show_readable)

    # ---- construction -----------------------------------------------------------------------
    def _first_size(self) -> tuple[int, int]:
        """Before any size is remembered: most of the screen, at least DEFAULT_SIZE."""
        screen = self.screen()
        if screen is None:
            return DEFAULT_SIZE
        room = screen.availableGeometry()
        return (max(DEFAULT_SIZE[0], min(int(room.width() * 0.85), 1920)),
                max(DEFAULT_SIZE[1], min(int(room.height() * 0.85), 1200)))

    def _dock(self, widget: QWidget, title: str, object_name: str) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(object_name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        return dock

    def _create_actions(self) -> None:
        a = self.actions
        add_window_actions(a)
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
        file_menu = self._menu(bar, "file", "&File")
        file_menu.addActions([a["file.new"], a["file.open"]])
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.setObjectName("recentMenu")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.presets_menu = file_menu.addMenu("New from &Preset")
        self.presets_menu.setObjectName("presetsMenu")
        self.presets_menu.setToolTipsVisible(True)
        self._fill_presets_menu()
        file_menu.addSeparator()
        file_menu.addActions([a["file.save"], a["file.save_as"]])
        file_menu.addSeparator()
        file_menu.addAction(a["file.quit"])

        edit_menu = self._menu(bar, "edit", "&Edit")
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

        view_menu = self._menu(bar, "view", "&View")
        view_menu.addActions([a["view.zoom_in"], a["view.zoom_out"], a["view.fit"]])
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("&Theme")
        theme_menu.setObjectName("themeMenu")
        theme_menu.addActions(self.theme_group.actions())
        self.panels_menu = self._menu(view_menu, "panels", "&Panels")
        for dock in (self.palette_dock, self.inspector_dock):
            self.panels_menu.addAction(dock.toggleViewAction())
        view_menu.addAction(a["view.reset_layout"])

        self.run_menu = self._menu(bar, "run", "&Run")
        self.run_menu.addActions([a["run.start"], a["run.pause"], a["run.stop"]])

        help_menu = self._menu(bar, "help", "&Help")
        help_menu.addActions([a["help.shortcuts"], a["help.about"]])

    def _menu(self, parent, name: str, title: str) -> QMenu:
        menu = parent.addMenu(title)
        menu.setObjectName(f"{name}Menu")
        self.menus[name] = menu
        return menu

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
        a["view.reset_layout"].triggered.connect(self.reset_layout)
        a["help.shortcuts"].triggered.connect(self.show_shortcuts)
        a["help.about"].triggered.connect(self._show_about)
        doc.cleanChanged.connect(self._clean_changed)
        stack.indexChanged.connect(self._write_recovery)
        doc.changed.connect(self._update_title)
        doc.faultsChanged.connect(self.update_run_actions)
        doc.validityChanged.connect(self.update_run_actions)
        doc.lockedChanged.connect(self._update_edit_actions)
        doc.editRefused.connect(self._show_message)
        doc.loaded.connect(self._fit_later)
        self.scene.selectionChanged.connect(self._selection_changed)
        self.view.statusMessage.connect(self._show_message)
        self.palette.addRequested.connect(self.view.add_level)
        theme.manager().themeChanged.connect(self._refresh_icons)
        self.parameters.counted.connect(self.inspector.show_parameter_count)
        self.inspector.show_parameter_count(self.parameters.text, self.parameters.tip)

    def _clean_changed(self, _clean: bool = True) -> None:
        self._update_title()
        self._write_recovery()

    def _show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 6000)

    def _fit_later(self) -> None:
        QTimer.singleShot(0, self.view, self.view.show_readable)

    def _palette_moved(self, area: Qt.DockWidgetArea) -> None:
        """Above or below the canvas the palette is one row, at a side one column."""
        self.palette.set_horizontal(area in (Qt.DockWidgetArea.TopDockWidgetArea,
                                             Qt.DockWidgetArea.BottomDockWidgetArea))

    def _refresh_icons(self, _palette: object = None) -> None:
        p = theme.current()
        for action_id, icon in (("file.new", "new"), ("file.open", "open"),
                                ("file.save", "save"), ("edit.undo", "undo"),
                                ("edit.redo", "redo"), ("edit.delete", "delete"),
                                ("view.zoom_in", "zoom_in"), ("view.zoom_out", "zoom_out"),
                                ("view.fit", "fit"), ("run.start", "run"),
                                ("run.pause", "pause"), ("run.stop", "stop")):
            self.actions[action_id].setIcon(toolbar_icon(icon, p))
        self.scene.update()
        self.view.ruler.update()

    # ---- state shown ------------------------------------------------------------------------
    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.TITLE} — {self.document.name}[*]")
        self.setWindowModified(not self.document.is_clean)

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

    # ---- edit commands ----------------------------------------------------------------------
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

    # ---- window events ----------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        if not self.layout_manager.restored:  # nobody called restore_layout() before showing
            self.restore_layout()
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            self.view.show_readable()
            if not _testing():
                QTimer.singleShot(0, self, self.check_recovery)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        for guard in self.close_guards:
            if not guard():
                event.ignore()
                return
        if not self.maybe_save():
            event.ignore()
            return
        self.recovery.clear()
        self.layout_manager.save()
        self.parameters.shutdown()
        event.accept()

    def _show_about(self) -> None:
        self.dialogs.info(
            "About NL Studio",
            f"NL Studio {__version__}\n\nA desktop lab for nested memories: compose levels "
            "that learn at different frequencies, train them, and watch what each one stores "
            "and forgets.\n\nAfter Behrouz, Razaviyayn, Zhong and Mirrokni, “Nested Learning: "
            "The Illusion of Deep Learning Architectures”, NeurIPS 2025.")

    def show_shortcuts(self) -> None:
        """Help → Keyboard and Mouse (F1): every shortcut, including those added later."""
        self.dialogs.info("Keyboard and mouse", shortcuts_html(self.actions))


def _testing() -> bool:
    return bool(os.environ.get("NLSTUDIO_TESTING"))
