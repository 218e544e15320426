"""The main window's panels: where each dock goes by default, View → Reset Layout, and the
window's geometry and dock state remembered between sessions (QSettings).

The default layout has four places (:class:`PanelSlot`) around the canvas::

    +------+---------------------------------+-------------+
    |      | TOP… (Levels) side by side      | Inspector   |
    | LEFT +---------------------------------+             |
    |  …   |                                 |             |
    |      |            canvas               +-------------+
    +------+---------------------------------+ RIGHT…      |
    | BOTTOM… side by side                   | (stacked)   |
    +----------------------------------------+-------------+

The right column runs the window's full height, so the Inspector is never a tab and never
squeezed by the plot row; it is wide enough for the training panel's rows (no horizontal
scrolling at 1280×800). The Levels palette is a strip above the canvas, leaving the canvas the
width a graph needs to be legible at 1280×800. A panel may instead be a tab of another panel
(``tab_with``): it is placed behind it, and its host stays in front. A panel of the bottom row
may ``fold_into`` another: it sits beside the others when the row gives every panel at least
:data:`ROW_PANEL_WIDTH`, else it is a tab behind that panel (the last added fold first). So the
plots stay legible at 1280×800 (two side by side) and a wider window shows more of them.

Saved state carries :data:`LAYOUT_VERSION`: a state saved by an older layout is not restored
(the default layout applies), so a changed default reaches users who never moved a panel.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow, QToolBar

LAYOUT_VERSION = 3
GEOMETRY_KEY = "layout/geometry"
STATE_KEY = "layout/state"
ROW_PANEL_WIDTH = 360  # px: the narrowest a plot is legible at (axis labels, legends, ticks)
COLUMN_WIDTH = (340, 480)  # px: the right column, 30 % of the window within these
ROW_HEIGHT = (260, 400)  # px: the bottom row, 36 % of the window within these (a plot and
#                          two rows of memory matrices legible; the canvas keeps the rest)


class PanelSlot(str, enum.Enum):
    TOP = "top"        # above the canvas, side by side (the Levels palette)
    LEFT = "left"      # a column left of the canvas, stacked (empty by default)
    RIGHT = "right"    # the right column (full height), stacked under the Inspector
    BOTTOM = "bottom"  # the row under the canvas, side by side, in the order added


@dataclass
class _Panel:
    dock: QDockWidget
    slot: PanelSlot
    tab_with: QDockWidget | None = None
    fold_into: QDockWidget | None = None
    share: float = 1.0  # of its row's width, relative to the other panels there


class WindowLayout:
    """Arranges ``window``'s docks: ``head`` (the Inspector) heads the right column; the other
    panels join with :meth:`add`."""

    def __init__(self, window: QMainWindow, settings: QSettings, head: QDockWidget) -> None:
        self.window = window
        self.settings = settings
        self.head = head
        self.panels: list[_Panel] = []
        self.restored = False  # restore() ran (it runs once)
        self._unshown: tuple | None = None  # the last reset's panels, sized before the first show
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, head)

    def add(self, dock: QDockWidget, slot: PanelSlot, tab_with: QDockWidget | None = None,
            fold_into: QDockWidget | None = None, share: float = 1.0) -> None:
        """Place ``dock`` in ``slot`` of the default layout (again: moves it there)."""
        slot = PanelSlot(slot)
        self.panels = [p for p in self.panels if p.dock is not dock]
        self.panels.append(_Panel(dock, slot, tab_with, fold_into, share))
        if self.window.dockWidgetArea(dock) == Qt.DockWidgetArea.NoDockWidgetArea:
            self.window.addDockWidget(self._area(slot), dock)

    def docks(self) -> list[QDockWidget]:
        return [self.head] + [p.dock for p in self.panels]

    @staticmethod
    def _area(slot: PanelSlot) -> Qt.DockWidgetArea:
        return {PanelSlot.TOP: Qt.DockWidgetArea.TopDockWidgetArea,
                PanelSlot.LEFT: Qt.DockWidgetArea.LeftDockWidgetArea,
                PanelSlot.RIGHT: Qt.DockWidgetArea.RightDockWidgetArea,
                PanelSlot.BOTTOM: Qt.DockWidgetArea.BottomDockWidgetArea}[slot]

    # ---- the default layout -----------------------------------------------------------------
    def reset(self) -> None:
        """Every panel back in its slot, shown, docked, sized for the window's current size."""
        w = self.window
        area = Qt.DockWidgetArea
        w.setCorner(Qt.Corner.TopRightCorner, area.RightDockWidgetArea)
        w.setCorner(Qt.Corner.BottomRightCorner, area.RightDockWidgetArea)
        w.setCorner(Qt.Corner.TopLeftCorner, area.LeftDockWidgetArea)
        w.setCorner(Qt.Corner.BottomLeftCorner, area.BottomDockWidgetArea)
        for dock in self.docks():
            dock.setFloating(False)
        tabs = self._tabs()
        placed = {slot: [p.dock for p in self.panels if p.slot == slot and p.dock not in tabs]
                  for slot in PanelSlot}
        w.addDockWidget(area.RightDockWidgetArea, self.head)
        stacks = {PanelSlot.RIGHT: [self.head, *placed[PanelSlot.RIGHT]],
                  PanelSlot.LEFT: placed[PanelSlot.LEFT]}
        rows = {PanelSlot.TOP: placed[PanelSlot.TOP], PanelSlot.BOTTOM: placed[PanelSlot.BOTTOM]}
        for slot, docks in [*stacks.items(), *rows.items()]:
            orientation = Qt.Orientation.Vertical if slot in stacks else Qt.Orientation.Horizontal
            for i, dock in enumerate(docks):
                w.addDockWidget(self._area(slot), dock)
                if i:
                    w.splitDockWidget(docks[i - 1], dock, orientation)
        for dock, host in tabs.items():
            w.tabifyDockWidget(host, dock)
        for dock in self.docks():
            dock.show()
        for host in tabs.values():
            host.raise_()
        self._size(stacks, rows, tabs)
        self._unshown = None if w.isVisible() else (stacks, rows, tabs)

    def shown(self) -> None:
        """The window was shown: a default layout sized before that is sized again, now that
        its panels' style sheets, icons and fonts give their true preferred sizes."""
        if self._unshown is not None:
            self._size(*self._unshown)
            self._unshown = None

    def column_width(self) -> int:
        return int(min(COLUMN_WIDTH[1], max(COLUMN_WIDTH[0], 0.3 * self.window.width())))

    def _tabs(self) -> dict[QDockWidget, QDockWidget]:
        """The panels placed as tabs for the window's current width: dock -> the panel it is
        behind (``tab_with``, and the bottom row's ``fold_into`` panels that do not fit)."""
        tabs = {p.dock: p.tab_with for p in self.panels if p.tab_with is not None}
        row = [p for p in self.panels if p.slot == PanelSlot.BOTTOM and p.tab_with is None]
        folded = set()
        room = max(self.window.width(), 640) - self.column_width()
        if any(p.slot == PanelSlot.LEFT for p in self.panels):
            room -= self._left_width()
        fits = max(1, room // ROW_PANEL_WIDTH)
        for panel in reversed([p for p in row if p.fold_into is not None]):
            if len(row) - len(folded) <= fits:
                break
            folded.add(panel.dock)
        tabs.update({p.dock: p.fold_into for p in row if p.dock in folded})  # in panel order
        for dock, host in tabs.items():  # behind a panel that is itself a tab: behind its host
            while host in tabs:
                host = tabs[host]
            tabs[dock] = host
        return tabs

    def _left_width(self) -> int:
        return int(min(300, 0.18 * max(self.window.width(), 640)))

    def _size(self, stacks: dict, rows: dict, tabs: dict) -> None:
        """Column widths and row heights as fractions of the window, within readable limits."""
        w = self.window
        width, height = max(w.width(), 640), max(w.height(), 480)
        horizontal, vertical = Qt.Orientation.Horizontal, Qt.Orientation.Vertical
        w.resizeDocks([self.head], [self.column_width()], horizontal)
        if stacks[PanelSlot.LEFT]:
            w.resizeDocks([stacks[PanelSlot.LEFT][0]], [self._left_width()], horizontal)
        top, bottom = rows[PanelSlot.TOP], rows[PanelSlot.BOTTOM]
        if top:
            w.resizeDocks([top[0]], [max(d.minimumSizeHint().height() for d in top)], vertical)
        if bottom:  # each place its panels' largest share (tabs share the place of their host)
            share = {p.dock: p.share for p in self.panels}
            for dock, host in tabs.items():
                share[host] = max(share[host], share[dock])
            w.resizeDocks(bottom, [int(100 * share[d]) for d in bottom], horizontal)
            w.resizeDocks([bottom[0]], [int(min(ROW_HEIGHT[1], max(ROW_HEIGHT[0],
                                                                 0.36 * height)))], vertical)
        # A column's panels under its first get their preferred height at the column's width
        # (QWidget.heightForWidth where a dock answers it, else its size hint), between 20 %
        # and 40 % of the column each; the first (the Inspector) the rest: a level's settings
        # without scrolling at 1280×800.
        column = height - sum(bar.sizeHint().height() for bar in (w.menuBar(), w.statusBar()))
        column -= sum(bar.sizeHint().height() for bar in w.findChildren(QToolBar)
                      if bar.isVisibleTo(w) and w.toolBarArea(bar) == Qt.ToolBarArea.TopToolBarArea)
        for docks, across in ((stacks[PanelSlot.RIGHT], self.column_width()),
                              (stacks[PanelSlot.LEFT], self._left_width())):
            if len(docks) > 1:
                below = [min(max(_height(d, across), int(0.2 * column)), int(0.4 * column))
                         for d in docks[1:]]
                w.resizeDocks(docks, [column - sum(below), *below], vertical)

    # ---- between sessions ---------------------------------------------------------------------
    def restore(self) -> bool:
        """The geometry and dock state of the last session (if saved by this layout version),
        else the default layout. Call once every panel exists; True if restored."""
        self.restored = True
        geometry = self.settings.value(GEOMETRY_KEY)
        if isinstance(geometry, QByteArray):
            self.window.restoreGeometry(geometry)
        state = self.settings.value(STATE_KEY)
        if isinstance(state, QByteArray) and self.window.restoreState(state, LAYOUT_VERSION):
            self._unshown = None
            return True
        self.reset()
        return False

    def save(self) -> None:
        self.settings.setValue(GEOMETRY_KEY, self.window.saveGeometry())
        self.settings.setValue(STATE_KEY, self.window.saveState(LAYOUT_VERSION))


def _height(dock: QDockWidget, width: int) -> int:
    """``dock``'s preferred height at ``width``."""
    height = dock.heightForWidth(width)
    return height if height > 0 else dock.sizeHint().height()
