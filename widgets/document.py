"""The editable project document: the one truth the canvas and the inspector show.

The document holds the project as the plain dict of the file format (docs/internals.md §4).
Every change goes through :meth:`Document.edit`, which pushes one snapshot command on the
document's QUndoStack; undo and redo swap whole snapshots, so no view keeps state of its own.

    doc = window.document
    doc.data                   # the current dict (read it, never mutate it; snapshot() copies)
    doc.changed.connect(...)   # after every edit, undo, redo and load
    doc.validityChanged        # bool: check_document() found no fault
    doc.set_locked(True, "Training is running")   # refuse edits during a run
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from nlstudio import project as core

_LEVEL_PATH = re.compile(r"^model\.levels\[(\d+)\](?:\.(.+))?$")
_EDGE_PATH = re.compile(r"^model\.edges\[(\d+)\]")
MERGE_ID = 0x4E4C  # QUndoCommand.id() of mergeable edits; merge_key decides what merges


@dataclass(frozen=True)
class FaultView:
    """A core fault located on the canvas: on a level (by id), an edge (by index) or the project."""

    path: str
    message: str
    level_id: str | None = None
    field: str | None = None  # inside the level: "period", "optimizer.eta", ...
    edge_index: int | None = None

    @property
    def text(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class EditCommand(QUndoCommand):
    """One undoable edit, stored as the document before and after it."""

    def __init__(self, document: "Document", text: str, before: dict, after: dict,
                 merge_key: Any = None, rename: tuple[str, str] | None = None) -> None:
        super().__init__(text)
        self.document = document
        self.before = before
        self.after = after
        self.merge_key = merge_key
        self.rename = rename

    def id(self) -> int:  # noqa: A003 - Qt API
        return MERGE_ID if self.merge_key is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt API
        if not isinstance(other, EditCommand) or other.merge_key != self.merge_key:
            return False
        self.after = other.after
        self.setObsolete(self.after == self.before)
        return True

    def redo(self) -> None:
        if self.rename:
            self.document._rename_signal(*self.rename)
        self.document._replace(self.after)

    def undo(self) -> None:
        if self.rename:
            self.document._rename_signal(self.rename[1], self.rename[0])
        self.document._replace(self.before)


class Document(QObject):
    changed = Signal()                # the data changed (edit, undo, redo, load)
    loaded = Signal()                 # another document replaced this one (new, open, restore)
    levelRenamed = Signal(str, str)   # old id, new id (emitted before `changed`)
    faultsChanged = Signal(list)      # list[FaultView]
    validityChanged = Signal(bool)
    pathChanged = Signal(str)         # "" when untitled
    cleanChanged = Signal(bool)
    lockedChanged = Signal(bool)
    editRefused = Signal(str)         # why an edit was refused (locked)

    def __init__(self, data: dict | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setObjectName("undoStack")
        self.undo_stack.cleanChanged.connect(self.cleanChanged)
        self._data: dict = data if data is not None else core.new_project()
        self._path: str | None = None
        self._faults: list[FaultView] = []
        self._locked = False
        self._lock_reason = ""
        self._revalidate()

    # ---- reading -------------------------------------------------------------------------
    @property
    def data(self) -> dict:
        return self._data

    def snapshot(self) -> dict:
        return copy.deepcopy(self._data)

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def name(self) -> str:
        return str(self._data.get("name") or "Untitled")

    @property
    def model(self) -> dict:
        return self._data.get("model", {})

    def levels(self) -> list[dict]:
        return list(self.model.get("levels", []))

    def edges(self) -> list[tuple[str, str]]:
        return [tuple(e) for e in self.model.get("edges", []) if len(e) == 2]

    def level(self, level_id: str) -> dict | None:
        for level in self.levels():
            if level.get("id") == level_id:
                return level
        return None

    def level_ids(self) -> list[str]:
        return [str(level.get("id")) for level in self.levels()]

    @property
    def faults(self) -> list[FaultView]:
        return list(self._faults)

    @property
    def is_valid(self) -> bool:
        return not self._faults

    def level_faults(self, level_id: str) -> list[FaultView]:
        return [f for f in self._faults if f.level_id == level_id]

    def edge_faults(self, index: int) -> list[FaultView]:
        return [f for f in self._faults if f.edge_index == index]

    def project_faults(self) -> list[FaultView]:
        return [f for f in self._faults if f.level_id is None and f.edge_index is None]

    @property
    def is_clean(self) -> bool:
        return self.undo_stack.isClean()

    @property
    def locked(self) -> bool:
        return self._locked

    @property
    def lock_reason(self) -> str:
        return self._lock_reason

    # ---- changing --------------------------------------------------------------------------
    def edit(self, text: str, mutate: Callable[[dict], Any], merge_key: Any = None,
             rename: tuple[str, str] | None = None) -> bool:
        """Apply ``mutate`` to a copy of the data and push it as one undoable command.

        Returns False (and pushes nothing) when the document is locked or nothing changed.
        ``merge_key``: consecutive edits with the same key merge into one command.
        """
        if self._locked:
            self.editRefused.emit(self._lock_reason or "Editing is locked")
            return False
        after = copy.deepcopy(self._data)
        mutate(after)
        if after == self._data:
            return False
        self.undo_stack.push(EditCommand(self, text, self._data, after, merge_key, rename))
        return True

    def undo(self) -> bool:
        if self._locked:
            self.editRefused.emit(self._lock_reason or "Editing is locked")
            return False
        if not self.undo_stack.canUndo():
            return False
        self.undo_stack.undo()
        return True

    def redo(self) -> bool:
        if self._locked:
            self.editRefused.emit(self._lock_reason or "Editing is locked")
            return False
        if not self.undo_stack.canRedo():
            return False
        self.undo_stack.redo()
        return True

    def load(self, data: dict, path: str | None = None, clean: bool = True) -> None:
        """Replace the whole document (new, open, preset, recovery); clears undo history."""
        self.undo_stack.clear()
        self._data = data
        self._set_path(path)
        self._revalidate()
        self.loaded.emit()
        self.changed.emit()
        if clean:
            self.undo_stack.setClean()
        else:
            self.undo_stack.resetClean()

    def mark_saved(self, path: str) -> None:
        self._set_path(path)
        self.undo_stack.setClean()

    def set_locked(self, locked: bool, reason: str = "") -> None:
        """Lock (or unlock) editing, e.g. while a training run uses this document."""
        self._lock_reason = reason if locked else ""
        if locked != self._locked:
            self._locked = locked
            self.lockedChanged.emit(locked)

    # ---- internals ---------------------------------------------------------------------------
    def _set_path(self, path: str | None) -> None:
        if path != self._path:
            self._path = path
            self.pathChanged.emit(path or "")

    def _rename_signal(self, old: str, new: str) -> None:
        self.levelRenamed.emit(old, new)

    def _replace(self, data: dict) -> None:
        self._data = data
        self._revalidate()
        self.changed.emit()

    def _revalidate(self) -> None:
        was_valid = not self._faults
        try:
            raw = core.check_document(self._data)
        except Exception as exc:  # a core bug must not take the editor down
            raw = [core.Fault("", f"could not be checked: {exc}")]
        ids = self.level_ids()
        faults = []
        for fault in raw:
            path, message = str(fault.path or ""), str(fault.message)
            m = _LEVEL_PATH.match(path)
            if m and int(m.group(1)) < len(ids):
                faults.append(FaultView(path, message, level_id=ids[int(m.group(1))],
                                        field=m.group(2)))
                continue
            m = _EDGE_PATH.match(path)
            if m:
                faults.append(FaultView(path, message, edge_index=int(m.group(1))))
                continue
            faults.append(FaultView(path, message))
        changed = faults != self._faults
        self._faults = faults
        if changed:
            self.faultsChanged.emit(self.faults)
        if was_valid != (not faults):
            self.validityChanged.emit(not faults)
