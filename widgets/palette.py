"""The palette of level kinds: drag one onto the canvas (or double-click / Enter to add it).

Docked above or below the canvas it is one row (the default: a strip over the canvas);
docked at a side, one column with a hint under it.
"""
from __future__ import annotations

from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (QAbstractItemView, QBoxLayout, QFrame, QLabel, QListView,
                               QListWidget, QListWidgetItem, QWidget)

from nlstudio.catalog import KINDS
from nlstudio.widgets import theme
from nlstudio.widgets.canvas.view import MIME_KIND

KIND_ROLE = Qt.ItemDataRole.UserRole + 1
HINT = ("Drag a level onto the canvas. Its height is how often it learns: top = every token, "
        "bottom = frozen.")


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
            item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            item.setStatusTip(info.summary)
            self.addItem(item)
        self.refresh_icons()

    def set_horizontal(self, horizontal: bool) -> None:
        """One row of compact items (no wrapping, a scroll bar if the row is too long) or one
        column."""
        self.setProperty("horizontal", horizontal)  # the style sheet's compact items
        self.style().unpolish(self)
        self.style().polish(self)
        self.setIconSize(QSize(22, 22) if horizontal else QSize(26, 26))
        self.setSpacing(0 if horizontal else 1)
        for row in range(self.count()):  # a row is short of width: titles without "(…)"
            item = self.item(row)
            title = KINDS[item.data(KIND_ROLE)].title
            item.setText(title.split(" (", 1)[0] if horizontal else title)
        self.setFlow(QListView.Flow.LeftToRight if horizontal else QListView.Flow.TopToBottom)
        self.setWrapping(False)
        self.setWordWrap(not horizontal)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded if horizontal
                                          else Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff if horizontal
                                        else Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        if horizontal:
            row = max(self.sizeHintForRow(0), self.iconSize().height() + 12)
            bar = self.horizontalScrollBar().sizeHint().height()
            self.setFixedHeight(row + 2 * self.frameWidth() + 2 * self.spacing() + bar // 2)
        else:
            self.setMinimumHeight(0)
            self.setMaximumHeight(16777215)
        self.doItemsLayout()

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
    """The dock's content: the kind list with, as a column, a hint under it and, as a row, a
    caption before it (the hint is then the caption's and the list's tooltip)."""

    addRequested = Signal(str)  # a kind, from double-click or Enter

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("paletteWidget")
        layout = QBoxLayout(QBoxLayout.Direction.TopToBottom, self)
        layout.setSpacing(6)
        self.caption = QLabel("Levels")
        self.caption.setObjectName("paletteCaption")
        self.caption.setProperty("role", "section")
        self.caption.setToolTip(HINT)
        layout.addWidget(self.caption)
        self.list = KindList(self)
        self.list.setFrameShape(QFrame.Shape.NoFrame)
        layout.addWidget(self.list, 1)
        self.hint = QLabel(HINT)
        self.hint.setObjectName("paletteHint")
        self.hint.setWordWrap(True)
        self.hint.setContentsMargins(10, 0, 10, 0)
        layout.addWidget(self.hint)
        self.horizontal = True
        self.set_horizontal(False)
        self.list.itemDoubleClicked.connect(
            lambda item: self.addRequested.emit(str(item.data(KIND_ROLE))))
        self.list.enterPressed.connect(self.addRequested)
        theme.manager().themeChanged.connect(self.list.refresh_icons)

    def set_horizontal(self, horizontal: bool) -> None:
        """One row (docked above or below the canvas) or one column (at a side)."""
        if horizontal == self.horizontal:
            return
        self.horizontal = horizontal
        self.list.set_horizontal(horizontal)
        self.caption.setVisible(horizontal)
        self.hint.setVisible(not horizontal)
        self.list.setToolTip(HINT if horizontal else "")
        layout: QBoxLayout = self.layout()  # type: ignore[assignment]
        layout.setDirection(QBoxLayout.Direction.LeftToRight if horizontal
                            else QBoxLayout.Direction.TopToBottom)
        layout.setContentsMargins(8 if horizontal else 0, 0 if horizontal else 4, 0,
                                  0 if horizontal else 6)
        layout.invalidate()
        self.updateGeometry()  # the dock caches this widget's size hints
