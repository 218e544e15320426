"""What the training side needs from the main window: one small, explicit interface.

The training panel, the plot docks, run folders and exports (``training_controller`` and the
job modules it assembles) reach the window only through :class:`TrainingHost`.
``widgets.main_window.MainWindow`` implements it itself; the host is that QMainWindow, the
parent of the training side's docks, dialogs and objects.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDockWidget

from nlstudio.widgets.actions import MenuPlace

if TYPE_CHECKING:  # typing only: no import cycle with the window
    from nlstudio.widgets.actions import ActionRegistry
    from nlstudio.widgets.dialogs import Dialogs
    from nlstudio.widgets.document import Document
    from nlstudio.widgets.plots.dock import PlotSet


@runtime_checkable
class TrainingHost(Protocol):
    """The window as the training side sees it."""

    @property
    def document(self) -> "Document":
        """``snapshot()``, ``is_valid``, ``faults``, ``path``, ``name``, ``model``,
        ``set_locked(locked, reason)``; signals ``changed`` and ``loaded``."""

    @property
    def actions(self) -> "ActionRegistry":
        """Holds ``run.start``, ``run.pause``, ``run.stop``; the training side adds its own.
        ``run.start``'s enabled state is the window's (after ``set_training_available``);
        every other run action's is the training side's."""

    @property
    def settings(self) -> QSettings: ...

    @property
    def dialogs(self) -> "Dialogs":
        """``error(title, text)``, ``info(title, text)``, ``question(title, text) -> bool``;
        looked up at each use (tests replace it)."""

    def add_actions(self, place: MenuPlace, actions: Sequence[QAction]) -> None:
        """Put ``actions`` at ``place`` in the menus (RUN_CONTROL: on the toolbar too)."""

    def place_docks(self, panel: QDockWidget, plots: "PlotSet") -> None:
        """Dock the training panel and the plots in the default layout (View → Reset Layout
        puts them back there)."""

    def add_close_guard(self, guard: Callable[[], bool]) -> None:
        """``guard()`` runs when the window is asked to close; False keeps it open."""

    def add_path_opener(self, accepts: Callable[[str], bool],
                        opener: Callable[[str], bool]) -> None:
        """Paths given to the window (``nlstudio PATH``, File → Open) that ``accepts`` go to
        ``opener`` first (run folders)."""

    def set_training_available(self, available: bool) -> None:
        """``run.start`` then follows the document's validity and its lock."""

    def show_status(self, text: str, ms: int = 6000) -> None:
        """A transient line in the status bar."""


__all__ = ["TrainingHost", "MenuPlace"]
