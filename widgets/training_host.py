"""What the training side needs from the main window: one small, explicit interface.

The training panel, the plot docks, run folders and exports (``training_controller``) talk to
the window only through :class:`TrainingHost`. :class:`MainWindowHost` implements it on top of
what ``widgets/main_window.py`` offers today; it is the one place that knows the window's
attributes and menus. A window that implements the protocol itself is used as it is.
"""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu

if TYPE_CHECKING:  # typing only: no import cycle with the window
    from nlstudio.widgets.actions import ActionRegistry
    from nlstudio.widgets.document import Document
    from nlstudio.widgets.plots.dock import PlotSet


class MenuPlace(str, Enum):
    """Where the training side's actions go."""

    RUN_CONTROL = "run.control"  # the Run menu, with Run / Pause / Stop
    RUN = "run"  # the Run menu, a group of its own after them
    FILE_OPEN = "file.open"  # the File menu, right after Open…
    FILE_EXPORT = "file.export"  # the File menu, a group of its own before Quit
    PANELS = "panels"  # View → Panels (dock toggles)


@runtime_checkable
class TrainingHost(Protocol):
    """The window as the training side sees it."""

    @property
    def document(self) -> "Document":
        """``snapshot()``, ``is_valid``, ``faults``, ``path``, ``name``, ``model``,
        ``set_locked(locked, reason)``; signals ``changed`` and ``loaded``."""

    @property
    def actions(self) -> "ActionRegistry":
        """Holds ``run.start``, ``run.pause``, ``run.stop``; the training side adds its own."""

    @property
    def settings(self) -> QSettings: ...

    @property
    def main_window(self) -> QMainWindow:
        """Parent of the docks and of the dialogs."""

    def add_actions(self, place: MenuPlace, actions: Sequence[QAction]) -> None: ...

    def place_docks(self, panel: QDockWidget, plots: "PlotSet") -> None:
        """Dock the training panel and the plots in the default layout."""

    def add_close_guard(self, guard: Callable[[], bool]) -> None:
        """``guard()`` runs when the window is asked to close; False keeps it open."""

    def add_path_opener(self, accepts: Callable[[str], bool],
                        opener: Callable[[str], bool]) -> None:
        """Paths given to the window (``nlstudio PATH``, File → Open) that ``accepts`` go to
        ``opener`` first (run folders)."""

    def set_training_available(self, available: bool) -> None:
        """``run.start`` then follows the document's validity and its lock."""

    def restore_layout(self) -> None:
        """Re-apply the saved dock layout once the training docks exist."""

    def error(self, title: str, text: str) -> None: ...

    def info(self, title: str, text: str) -> None: ...

    def question(self, title: str, text: str) -> bool: ...

    def show_message(self, text: str, ms: int = 8000) -> None:
        """A transient line in the status bar."""


class MainWindowHost:
    """:class:`TrainingHost` on today's ``MainWindow`` (its attributes as they are now)."""

    def __init__(self, window: QMainWindow) -> None:
        self.window = window

    @property
    def document(self):
        return self.window.document

    @property
    def actions(self):
        return self.window.actions

    @property
    def settings(self) -> QSettings:
        return self.window.settings

    @property
    def main_window(self) -> QMainWindow:
        return self.window

    def add_actions(self, place: MenuPlace, actions: Sequence[QAction]) -> None:
        actions = list(actions)
        w, place = self.window, MenuPlace(place)
        if place is MenuPlace.RUN_CONTROL:
            _insert_after(w.run_menu, w.actions.get("run.stop"), actions)
        elif place is MenuPlace.RUN:
            w.run_menu.addSeparator()
            w.run_menu.addActions(actions)
        elif place is MenuPlace.PANELS:
            w.panels_menu.addSeparator()
            w.panels_menu.addActions(actions)
        else:
            file_menu = w.findChild(QMenu, "fileMenu")
            if place is MenuPlace.FILE_OPEN:
                _insert_after(file_menu, w.actions.get("file.open"), actions)
            else:
                _insert_before(file_menu, w.actions.get("file.quit"), actions)

    def place_docks(self, panel: QDockWidget, plots) -> None:
        w = self.window
        inspector = w.inspector_dock
        # Split before tabifying: splitting a tabbed dock would add to its tab group.
        plots.arrange(w, beside=inspector)
        w.tabifyDockWidget(inspector, panel)
        panel.raise_()

    def add_close_guard(self, guard: Callable[[], bool]) -> None:
        self.window.close_guards.append(guard)

    def add_path_opener(self, accepts, opener) -> None:
        self.window.path_openers.insert(0, (accepts, opener))

    def set_training_available(self, available: bool) -> None:
        self.window.set_training_available(available)

    def restore_layout(self) -> None:
        # The window restored its saved dock layout before these docks existed: restore it
        # again now that they do (first launch: nothing saved, the default layout stands).
        state = self.window.settings.value("windowState")
        if isinstance(state, QByteArray):
            self.window.restoreState(state)

    # Dialogs are looked up at each call: tests replace ``window.dialogs`` after start-up.
    def error(self, title: str, text: str) -> None:
        self.window.dialogs.error(title, text)

    def info(self, title: str, text: str) -> None:
        self.window.dialogs.info(title, text)

    def question(self, title: str, text: str) -> bool:
        return bool(self.window.dialogs.question(title, text))

    def show_message(self, text: str, ms: int = 8000) -> None:
        self.window.statusBar().showMessage(text, ms)


def as_host(window) -> TrainingHost:
    """``window`` itself if it implements :class:`TrainingHost`, else the adapter."""
    if isinstance(window, TrainingHost):
        return window
    return MainWindowHost(window)


def _insert_after(menu: QMenu, anchor: QAction | None, actions: list[QAction]) -> None:
    items = menu.actions()
    if anchor in items and items.index(anchor) + 1 < len(items):
        menu.insertActions(items[items.index(anchor) + 1], actions)
    else:
        menu.addActions(actions)


def _insert_before(menu: QMenu, anchor: QAction | None, actions: list[QAction]) -> None:
    """Before ``anchor`` (and the separator above it), as a group of its own."""
    items = menu.actions()
    if anchor not in items:
        menu.addSeparator()
        menu.addActions(actions)
        return
    index = items.index(anchor)
    before = items[index - 1] if index and items[index - 1].isSeparator() else anchor
    menu.insertActions(before, actions)
    menu.insertSeparator(actions[0])


__all__ = ["TrainingHost", "MainWindowHost", "MenuPlace", "as_host"]
