"""A folder chooser that also takes the name of a folder that does not exist yet.

``QFileDialog.getExistingDirectory`` answers a typed new name with "Directory not found";
exports and the runs folder want exactly that (a new folder, created when written). Qt's own
(non-native) dialog is used so that the behaviour is the same on every platform.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QDialog, QFileDialog, QWidget


class FolderDialog(QFileDialog):
    """Directory mode; a typed path whose parent exists is accepted as a new folder."""

    def __init__(self, parent: QWidget | None, title: str, start: str = "", *,
                 allow_new: bool = True) -> None:
        super().__init__(parent, title, start)
        self.setObjectName("folderDialog")
        self.setFileMode(QFileDialog.FileMode.Directory)
        self.setOption(QFileDialog.Option.ShowDirsOnly, True)
        self.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        self.allow_new = allow_new
        self.chosen: str = ""

    def accept(self) -> None:  # noqa: D401 - Qt API
        files = self.selectedFiles()
        path = Path(files[0]) if files else None
        if (path is not None and self.allow_new and not path.exists()
                and path.parent.is_dir()):
            self.chosen = str(path)  # the export creates it
            QDialog.accept(self)  # QFileDialog.accept would refuse: "Directory not found"
            return
        if files:
            self.chosen = files[0]
        super().accept()


def choose_folder(parent: QWidget | None, title: str, start: str = "", *,
                  allow_new: bool = True) -> str:
    """The folder the user picked or typed, or "" if cancelled."""
    dialog = FolderDialog(parent, title, start, allow_new=allow_new)
    return dialog.chosen if dialog.exec() else ""
