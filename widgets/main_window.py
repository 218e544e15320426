"""The main window: the Levels palette (a strip above the canvas), the canvas, the Inspector
(right column), menus and a toolbar built from one action registry, a status bar with the
graph's problems and the model's parameter count.

What the training side, the inspector and the lessons use (nothing else; no ``getattr``
probing). The training side's share is the protocol ``training_host.TrainingHost``, which this
window implements itself::

    window.document                        # the Document: snapshot(), changed, set_locked(...)
    window.actions["run.start"]            # the ActionRegistry (ids: add_window_actions);
    window.actions.add("run.export", ...)  #   add your own the same way
    window.dialogs                         # error / info / question / ask_save_changes / ...
    window.settings                        # the QSettings of this window
    window.add_actions(MenuPlace.RUN, actions)   # into a menu, at a named place
    window.menu("help")                    # a QMenu by name: file, edit, view, run, help, panels
    window.place_docks(panel, plots)       # the training panel and the plot docks, in place
    window.add_dock(widget, "Title", "titleDock", PanelSlot.RIGHT)  # any other new panel
    window.add_panel(dock, PanelSlot.BOTTOM, tab_with=None)  # an existing QDockWidget
    window.panel_slot(dock)                # its slot, None if not placed yet
    window.set_training_available(True)    # run.start then follows validity and the lock
    window.add_close_guard(guard)          # guard() -> False keeps the window open
    window.add_path_opener(accepts, open)  # open_path(p) asks accepts(p) first, then open(p)
    window.show_status("Saved", 4000)      # a transient status-bar message
    window.restore_layout()                # once every panel exists (create_main_window)
    window.training / .lessons / .inspectors   # the parts installed (None until they are)

Enabled states: ``run.start`` is the window's (the document is valid and not locked, and a
training side handles it); every other run action is the training side's.

Panels go into the default layout's slots (``window_layout.PanelSlot``): View → Reset Layout
puts every one back there (the training docks included); the window's geometry and dock state
are remembered between sessions.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Sequence

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QShowEvent
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu, QWidget

from nlstudio import __version__
from nlstudio import project as core
from nlstudio.widgets import theme
from nlstudio.widgets.actions import ActionRegistry, MenuPlace, add_window_actions
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.canvas.view import GraphView
from nlstudio.widgets.dialogs import Dialogs
from nlstudio.widgets.document import Document
from nlstudio.widgets.inspector import Inspector
from nlstudio.widgets.palette import Palette
from nlstudio.widgets.parameter_count import ParameterCounter
from nlstudio.widgets.project_files import ProjectFiles
from nlstudio.widgets.recovery import RecoveryStore
from nlstudio.widgets.shortcuts_help import shortcuts_html
from nlstudio.widgets.status_bar import StatusIndicators
from nlstudio.widgets.window_layout import PanelSlot, WindowLayout
from nlstudio.widgets.window_menus import WindowMenus

if TYPE_CHECKING:  # the parts installed later (they import this module, not the reverse)
    from nlstudio.widgets.lessons import LessonManager
    from nlstudio.widgets.plots.dock import PlotSet
    from nlstudio.widgets.trace_menu import InspectorManager
    from nlstudio.widgets.training_controller import TrainingController

DEFAULT_SIZE = (1280, 800)  # the smallest size the default layout is made for


class MainWindow(ProjectFiles, QMainWindow):
    TITLE = "NL Studio"

    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.settings = settings if settings is not None else QSettings()
        self.dialogs = Dialogs(self)
        self.recovery = RecoveryStore()
        # The parts installed after the editor (nlstudio.app.create_main_window).
        self.training: TrainingController | None = None
        self.lessons: LessonManager | None = None
        self.inspectors: InspectorManager | None = None
        self._close_guards: list[Callable[[], bool]] = []
        self._path_openers: list[tuple[Callable[[str], bool], Callable[[str], bool]]] = []
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
        self.menus = WindowMenus(self)
        self.toolbar = self.menus.toolbar
        self.recent_menu, self.presets_menu = self.menus.recent, self.menus.presets
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._fill_presets_menu()
        for dock in (self.palette_dock, self.inspector_dock):
            self.menu("panels").addAction(dock.toggleViewAction())
        self.layout_manager.add(self.palette_dock, PanelSlot.TOP)
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
        placed in ``slot`` of the default layout; its toggle goes to View → Panels. ``title``
        is plain text ("Run & stats")."""
        # A dock's title is also its toggle's text: "&&" shows one ampersand in both.
        dock = self._dock(widget, title.replace("&", "&&"), object_name)
        self.add_panel(dock, slot, tab_with)
        return dock

    def add_panel(self, dock: QDockWidget, slot: PanelSlot,
                  tab_with: QDockWidget | None = None, fold_into: QDockWidget | None = None,
                  share: float = 1.0) -> None:
        """Place an existing QDockWidget (with a unique objectName; an ampersand in its title
        written "&&") in ``slot`` of the default layout, or as a tab behind ``tab_with``; in
        the bottom row, behind ``fold_into`` when the row is too narrow for it, ``share`` of
        the row's width relative to the others (``window_layout``). Adds its toggle to View
        → Panels. Calling it again for the same dock moves it to the new slot."""
        if dock.objectName() == "":
            raise ValueError("a panel needs an objectName (its place is saved under it)")
        if dock not in [p.dock for p in self.layout_manager.panels]:
            self.menu("panels").addAction(dock.toggleViewAction())
        self.layout_manager.add(dock, slot, tab_with, fold_into, share)

    def panel_slot(self, dock: QDockWidget) -> PanelSlot | None:
        """Where ``dock`` goes in the default layout (None: not placed with add_panel)."""
        return next((p.slot for p in self.layout_manager.panels if p.dock is dock), None)

    def menu(self, name: str) -> QMenu:
        """The menu ``name``: "file", "edit", "view", "run", "help" or "panels"."""
        return self.menus.menu(name)

    def add_actions(self, place: MenuPlace, actions: Sequence[QAction]) -> None:
        """Put ``actions`` at ``place`` (:class:`~nlstudio.widgets.actions.MenuPlace`);
        RUN_CONTROL puts them on the toolbar too, after Stop."""
        self.menus.add(place, actions)

    def place_docks(self, panel: QDockWidget, plots: PlotSet) -> None:
        """The training side's docks in the default layout (View → Reset Layout puts them
        back there): the run panel under the Inspector, the plots in one row under the
        canvas: loss, forgetting, spectrum, memory matrices, ablation. Where the row is too
        narrow for that many legible plots, the ablation folds behind the forgetting curves,
        then the matrices behind the spectrum, then the forgetting curves behind the loss:
        two side by side at 1280×800, three at 1600×1000, four at 1920 px wide. The
        spectrum, which averages the snapshots it is shown, stays in front of the matrices,
        which show only the newest; their place is wider, for the matrices' squares."""
        self.add_panel(panel, PanelSlot.RIGHT)
        self.add_panel(plots.loss, PanelSlot.BOTTOM)
        self.add_panel(plots.forgetting, PanelSlot.BOTTOM, fold_into=plots.loss)
        self.add_panel(plots.spectrum, PanelSlot.BOTTOM)
        self.add_panel(plots.matrices, PanelSlot.BOTTOM, fold_into=plots.spectrum, share=1.3)
        self.add_panel(plots.ablation, PanelSlot.BOTTOM, fold_into=plots.forgetting)

    def add_close_guard(self, guard: Callable[[], bool]) -> None:
        """``guard()`` runs when the window is about to close; False keeps it open."""
        self._close_guards.append(guard)

    def add_path_opener(self, accepts: Callable[[str], bool],
                        opener: Callable[[str], bool]) -> None:
        """``open_path(p)`` (``nlstudio PATH``, recent files) calls ``opener(p)`` when
        ``accepts(p)``, before trying ``p`` as a project file. Later openers are asked first."""
        self._path_openers.insert(0, (accepts, opener))

    def show_status(self, text: str, ms: int = 6000) -> None:
        """A transient message in the status bar."""
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
        doc.faultsChanged.connect(self._update_run_start)
        doc.validityChanged.connect(self._update_run_start)
        doc.lockedChanged.connect(self._update_edit_actions)
        doc.editRefused.connect(self.show_status)
        doc.loaded.connect(self._fit_later)
        self.scene.selectionChanged.connect(self._selection_changed)
        self.view.statusMessage.connect(self.show_status)
        self.palette.addRequested.connect(self.view.add_level)
        theme.manager().themeChanged.connect(self._refresh_icons)
        self.parameters.counted.connect(self.inspector.show_parameter_count)
        self.inspector.show_parameter_count(self.parameters.text, self.parameters.tip)

    def _clean_changed(self, _clean: bool = True) -> None:
        self._update_title()
        self._write_recovery()

    def _fit_later(self) -> None:
        QTimer.singleShot(0, self.view, self.view.show_readable)

    def _palette_moved(self, area: Qt.DockWidgetArea) -> None:
        """Above or below the canvas the palette is one row, at a side one column."""
        self.palette.set_horizontal(area in (Qt.DockWidgetArea.TopDockWidgetArea,
                                             Qt.DockWidgetArea.BottomDockWidgetArea))

    def _refresh_icons(self, _palette: object = None) -> None:
        self.menus.refresh_icons()
        self.scene.update()
        self.view.ruler.update()

    # ---- state shown ------------------------------------------------------------------------
    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.TITLE} — {self.document.name}[*]")
        self.setWindowModified(not self.document.is_clean)

    def set_training_available(self, available: bool) -> None:
        """Called by the training side once it handles run.start."""
        self._training_available = available
        self._update_run_start()

    def _update_run_start(self, *_args: object) -> None:
        """Run's enabled state and tip (the window's; the other run actions are the
        training side's): a valid document that no run has locked."""
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
        self._update_run_start()

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
            self.layout_manager.shown()
            self.view.show_readable()
            if not _testing():
                QTimer.singleShot(0, self, self.check_recovery)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        for guard in self._close_guards:
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
