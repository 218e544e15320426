"""The palette of level kinds: drag one onto the canvas (or double-click / Enter to add it)."""
from __future__ import annotations

from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (QAbstractItemView, QLabel, QListWidget, QListWidgetItem,
                               QVBoxLayout, QWidget)

from nlstudio.catalog import KINDS
from nlstudio.widgets import theme
from nlstudio.widgets.canvas.view import MIME_KIND

KIND_ROLE = Qt.ItemDataRole.UserRole + 1


class KindList(QListWidget):
    """The list itself; its drags carry :data:`MIME_KIND` with the kind name."""

    enterPressed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("palette")
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setIconSize(QSize(26, 26))
        self.setSpacing(1)
        self.setWordWrap(True)
        self.setMouseTracking(True)
        for kind, info in KINDS.items():
            item = QListWidgetItem(info.title)
            item.setData(KIND_ROLE, kind)
            item.setToolTip(f"<b>{info.title}</b><br>{info.summary}<br><br>"
                            "<i>Drag onto the canvas (its height sets the period), or "
                            "double-click to add.</i>")
            item.setStatusTip(info.summary)
            self.addItem(item)
        self.refresh_icons()

    def refresh_icons(self, _palette: object = None) -> None:
        p = theme.current()
        for row in range(self.count()):
            item = self.item(row)
            item.setIcon(theme.kind_icon(item.data(KIND_ROLE), p))

    def kind_item(self, kind: str) -> QListWidgetItem:
        for row in range(self.count()):
            if self.item(row).data(KIND_ROLE) == kind:
                return self.item(row)
        raise KeyError(kind)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        item = self.currentItem()
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and item is not None:
            self.enterPressed.emit(str(item.data(KIND_ROLE)))
            event.accept()
            return
        super().keyPressEvent(event)

    def mimeTypes(self) -> list[str]:  # noqa: N802 - Qt API
        return [MIME_KIND]

    def mimeData(self, items: list[QListWidgetItem]) -> QMimeData:  # noqa: N802 - Qt API
        mime = QMimeData()
        if items:
            kind = str(items[0].data(KIND_ROLE))
            mime.setData(MIME_KIND, kind.encode("utf-8"))
            mime.setText(kind)
        return mime

    def supportedDropActions(self) -> Qt.DropAction:  # noqa: N802 - Qt API
        return Qt.DropAction.CopyAction


class Palette(QWidget):
    """The dock's content: the kind list and a one-line hint."""

    addRequested = Signal(str)  # a kind, from double-click or Enter

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("paletteWidget")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 6)
        layout.setSpacing(6)
        self.list = KindList(self)
        layout.addWidget(self.list, 1)
        hint = QLabel("Drag a level onto the canvas. Its height is how often it learns: "
                      "top = every token, bottom = frozen.")
        hint.setObjectName("paletteHint")
        hint.setWordWrap(True)
        hint.setContentsMargins(10, 0, 10, 0)
        layout.addWidget(hint)
        self.list.itemDoubleClicked.connect(
            lambda item: self.addRequested.emit(str(item.data(KIND_ROLE))))
        self.list.enterPressed.connect(self.addRequested)
        theme.manager().themeChanged.connect(self.list.refresh_icons)
