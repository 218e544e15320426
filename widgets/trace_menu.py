"""Run → Inspect Model / Inspect Saved Model…: opens :class:`InspectorWindow` on a model.

``install_inspector(window)`` adds the two actions to the main window's Run menu (a group of
their own, ``MenuPlace.RUN``) and keeps the open inspectors (``window.inspectors``): windows of
their own, owned by the main window, whose background work is cancelled and joined when the
main window closes (a close guard) or the application quits (as the lessons do). The current
run is ``window.training.run_dir`` (the run the plots show: the live or last trained run, or the
run opened with File → Open Run): the inspector loads the newest weights saved there.
"""
from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QApplication, QFileDialog

from nlstudio import generation as gen
from nlstudio.widgets.actions import MenuPlace
from nlstudio.widgets.trace_window import InspectorWindow

if TYPE_CHECKING:
    from nlstudio.widgets.main_window import MainWindow


class InspectorManager(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.setObjectName("inspectorManager")
        self.window = window
        self.windows: list[InspectorWindow] = []
        # A directory chooser tests replace: (title, start) -> path or "".
        self.ask_directory = lambda title, start: QFileDialog.getExistingDirectory(
            window, title, start)

    def current_run(self) -> Path | None:
        """The run the training side shows (live, last trained or opened), None without one
        (or without a training side)."""
        training = self.window.training
        run_dir = training.run_dir if training is not None else None
        return Path(run_dir) if run_dir else None

    def inspect_current(self) -> InspectorWindow | None:
        run_dir = self.current_run()
        if run_dir is None:
            self._error("Start a run or open one (Run → Open Run…) first, or inspect a saved "
                        "model folder with Run → Inspect Saved Model….")
            return None
        return self.open(run_dir)

    def inspect_folder(self, path: str | os.PathLike | None = None) -> InspectorWindow | None:
        if path is None:
            start = str(self.current_run() or Path.cwd())
            path = self.ask_directory("Inspect a run folder or an exported model", start)
            if not path:
                return None
        return self.open(path)

    def open(self, path: str | os.PathLike) -> InspectorWindow | None:
        """An inspector on the newest weights saved in ``path`` (None, and an error dialog,
        when they cannot be loaded)."""
        try:
            loaded = gen.load_model(path)
        except gen.GenerationError as exc:
            self._error(str(exc))
            return None
        inspector = InspectorWindow(loaded, self.window)
        inspector.destroyed.connect(lambda _o=None, w=inspector: self._forget(w))
        self.windows.append(inspector)
        inspector.show()
        return inspector

    def _forget(self, inspector: InspectorWindow) -> None:
        if inspector in self.windows:
            self.windows.remove(inspector)

    def stop_background_work(self) -> bool:
        """Cancels and joins every inspector's background work (a close guard: True)."""
        for inspector in list(self.windows):
            inspector.shutdown()
        return True

    def _error(self, text: str) -> None:
        self.window.dialogs.error("Memory inspector", text)


def install_inspector(window: "MainWindow") -> InspectorManager:
    """Adds Run → Inspect Model and Run → Inspect Saved Model… to ``window`` (its actions,
    ``add_actions``, ``add_close_guard``, ``dialogs`` and ``training``); returns the manager
    (kept as ``window.inspectors``)."""
    manager = InspectorManager(window)
    window.inspectors = manager
    a = window.actions
    current = a.add("run.inspect", "&Inspect Model", shortcut="Ctrl+I",
                    tip="Run the current run's newest weights over a text or an example, token "
                        "by token: what each level wrote and what it returns")
    folder = a.add("run.inspect_folder", "Inspect Saved &Model…",
                   tip="The memory inspector on a run folder or an exported model")
    current.triggered.connect(lambda _c=False: manager.inspect_current())
    folder.triggered.connect(lambda _c=False: manager.inspect_folder())
    window.add_actions(MenuPlace.RUN, [current, folder])
    window.add_close_guard(manager.stop_background_work)
    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(manager.stop_background_work)
    return manager


__all__ = ["InspectorManager", "install_inspector"]
