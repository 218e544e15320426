"""The one registry of QActions: menus, the toolbar, shortcuts and tests all share it; and
the places in the main window where other parts put theirs (:class:`MenuPlace`).

    actions = window.actions
    actions["run.start"].triggered.connect(...)     # ids: "<menu>.<verb>"
    export = actions.add("run.export_all", "Export…", shortcut="Ctrl+E", tip="…")
    window.add_actions(MenuPlace.FILE_EXPORT, [export])

Every action gets the objectName ``action_<id with dots as underscores>`` (``action_run_start``).
"""
from __future__ import annotations

from enum import Enum
from typing import Iterator, Sequence

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import QWidget

Shortcut = str | QKeySequence.StandardKey | None


class ActionRegistry(QObject):
    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self.setObjectName("actionRegistry")
        self._actions: dict[str, QAction] = {}

    def add(self, action_id: str, text: str, *, shortcut: Shortcut | list[Shortcut] = None,
            tip: str = "", icon: QIcon | None = None, checkable: bool = False,
            enabled: bool = True) -> QAction:
        if action_id in self._actions:
            raise ValueError(f"action {action_id!r} is already registered")
        action = QAction(text, self.parent())
        action.setObjectName("action_" + action_id.replace(".", "_"))
        shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
        keys: list[QKeySequence] = []
        for sc in shortcuts:
            if sc is None:
                continue
            if isinstance(sc, QKeySequence.StandardKey):
                keys.extend(QKeySequence.keyBindings(sc))
            else:
                keys.append(QKeySequence(sc))
        if keys:
            action.setShortcuts(keys)
        if tip:
            shown = f"{tip} ({keys[0].toString(QKeySequence.SequenceFormat.NativeText)})" \
                if keys else tip
            action.setToolTip(shown)
            action.setStatusTip(tip)
        if icon is not None:
            action.setIcon(icon)
        action.setCheckable(checkable)
        action.setEnabled(enabled)
        self._actions[action_id] = action
        return action

    def __getitem__(self, action_id: str) -> QAction:
        return self._actions[action_id]

    def __contains__(self, action_id: str) -> bool:
        return action_id in self._actions

    def __iter__(self) -> Iterator[str]:
        return iter(self._actions)

    def get(self, action_id: str) -> QAction | None:
        return self._actions.get(action_id)

    def items(self):
        return self._actions.items()


def add_window_actions(a: ActionRegistry) -> None:
    """The main window's own actions; the training side and the lessons add theirs."""
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
    a.add("view.reset_layout", "&Reset Layout",
          tip="Every panel back in its default place and size")
    a.add("run.start", "&Run", shortcut="F5", tip="Train this model", enabled=False)
    a.add("run.pause", "&Pause", shortcut="F6", tip="Pause training", enabled=False)
    a.add("run.stop", "&Stop", shortcut="Shift+F5", tip="Stop training", enabled=False)
    a.add("help.shortcuts", "&Keyboard and Mouse", shortcut=std.HelpContents,
          tip="Every shortcut, and the mouse on the canvas")
    a.add("help.about", "&About NL Studio", tip="Version and credits")


class MenuPlace(str, Enum):
    """Where the training side, the inspector and the lessons put their actions
    (``MainWindow.add_actions(place, actions)``). The window owns its menus' order; other
    parts name a place, never a neighbouring action."""

    FILE_OPEN = "file.open"  # File: right after Open…, in its group
    FILE_EXPORT = "file.export"  # File: a group of its own before Quit
    RUN_CONTROL = "run.control"  # Run menu and toolbar: after Stop, in the Run/Pause/Stop group
    RUN = "run"  # Run: a group of its own at the end
    PANELS = "panels"  # View → Panels: a group of its own at the end
    HELP = "help"  # Help: a group of its own at the top (e.g. a submenu's menuAction())


def insert_actions(widget: QWidget, actions: Sequence[QAction], before: QAction | None, *,
                   separator_before: bool = False, separator_after: bool = False) -> None:
    """Insert ``actions`` into a QMenu or QToolBar before ``before`` (None: at the end), with
    a separator on either side where asked (never two in a row, never one at an edge)."""
    items = widget.actions()
    at = items.index(before) if before in items else len(items)
    if separator_before and at and not items[at - 1].isSeparator():
        widget.insertSeparator(before)
    widget.insertActions(before, list(actions))
    if separator_after and before is not None and not before.isSeparator():
        widget.insertSeparator(before)
