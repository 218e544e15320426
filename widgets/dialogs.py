"""The main window's modal dialogs and toolbar icons.

:class:`Dialogs` is every modal the window shows, in one place, so that tests replace it
(``window.dialogs = FakeDialogs(...)``) and the training side and the lessons ask through it.
"""
from __future__ import annotations

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from nlstudio.widgets import theme

FILE_FILTER = "NL Studio projects (*.nlproj);;All files (*)"


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
    "continue": '<path d="M5 4v16"/><path d="M9 4l11 8-11 8z" fill="currentColor"/>',  # |▶
    "stop": '<rect x="5" y="5" width="14" height="14" rx="1.5" fill="currentColor"/>',
}


def _svg(name: str, color: str, opacity: float = 1.0) -> bytes:
    body = _ICONS[name].replace("currentColor", color)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" '
            f'stroke="{color}" stroke-width="1.8" stroke-linecap="round" '
            f'stroke-linejoin="round"><g opacity="{opacity}">{body}</g></svg>').encode("utf-8")


def toolbar_icon(name: str, p: theme.Palette):
    """A toolbar icon in the text colour, with an explicit muted look when disabled (Qt's
    generated disabled state barely changes filled glyphs such as Run/Stop)."""
    icon = theme.svg_icon(_svg(name, p.text), 24)
    disabled = theme.svg_icon(_svg(name, p.muted, 0.45), 24)
    for size in (24, 48):
        icon.addPixmap(disabled.pixmap(size, size), QIcon.Mode.Disabled)
    return icon
