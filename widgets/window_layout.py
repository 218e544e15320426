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
squeezed by the plot row. The Levels palette is a strip above the canvas, leaving the canvas
the width a graph needs to be legible at 1280×800. A panel may instead be a tab of another
panel (``tab_with``): it is placed behind it, and its host stays in front.

Saved state carries :data:`LAYOUT_VERSION`: a state saved by an older layout is not restored
(the default layout applies), so a changed default reaches users who never moved a panel.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow, QToolBar

LAYOUT_VERSION = 2
GEOMETRY_KEY = "layout/geometry"
STATE_KEY = "layout/state"


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


class WindowLayout:
    """Arranges ``window``'s docks: ``head`` (the Inspector) heads the right column; the other
    panels join with :meth:`add`."""

    def __init__(self, window: QMainWindow, settings: QSettings, head: QDockWidget) -> None:
        self.window = window
        self.settings = settings
        self.head = head
        self.panels: list[_Panel] = []
        self.restored = False  # restore() ran (it runs once)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, head)

    def add(self, dock: QDockWidget, slot: PanelSlot, tab_with: QDockWidget | None = None
            ) -> None:
        """Place ``dock`` in ``slot`` of the default layout (again: moves it there)."""
        slot = PanelSlot(slot)
        self.panels = [p for p in self.panels if p.dock is not dock]
        self.panels.append(_Panel(dock, slot, tab_with))
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
        placed = {slot: [p.dock for p in self.panels if p.slot == slot and p.tab_with is None]
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
        for panel in self.panels:
            if panel.tab_with is not None:
                w.tabifyDockWidget(panel.tab_with, panel.dock)
        for dock in self.docks():
            dock.show()
        for panel in self.panels:
            if panel.tab_with is not None:
                panel.tab_with.raise_()
        self._size(stacks, rows)

    def _size(self, stacks: dict, rows: dict) -> None:
        """Column widths and row heights as fractions of the window, within readable limits;
        the Inspector keeps ~60 % of its column."""
        w = self.window
        width, height = max(w.width(), 640), max(w.height(), 480)
        horizontal, vertical = Qt.Orientation.Horizontal, Qt.Orientation.Vertical
        w.resizeDocks([self.head], [int(min(440, max(340, 0.26 * width)))], horizontal)
        if stacks[PanelSlot.LEFT]:
            w.resizeDocks([stacks[PanelSlot.LEFT][0]], [int(min(300, 0.18 * width))], horizontal)
        top, bottom = rows[PanelSlot.TOP], rows[PanelSlot.BOTTOM]
        if top:
            w.resizeDocks([top[0]], [max(d.minimumSizeHint().height() for d in top)], vertical)
        if bottom:
            w.resizeDocks(bottom, [1] * len(bottom), horizontal)
            w.resizeDocks([bottom[0]], [int(min(360, max(220, 0.3 * height)))], vertical)
        # A column's panels under its first get their preferred height, at least 28 % of the
        # column (room for a banner that appears during a run) and at most a third each; the
        # first (the Inspector) the rest.
        column = height - sum(bar.sizeHint().height() for bar in (w.menuBar(), w.statusBar()))
        column -= sum(bar.sizeHint().height() for bar in w.findChildren(QToolBar)
                      if bar.isVisibleTo(w) and w.toolBarArea(bar) == Qt.ToolBarArea.TopToolBarArea)
        for docks in (stacks[PanelSlot.RIGHT], stacks[PanelSlot.LEFT]):
            if len(docks) > 1:
                below = [min(max(d.sizeHint().height(), int(0.28 * column)), column // 3)
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
            return True
        self.reset()
        return False

    def save(self) -> None:
        self.settings.setValue(GEOMETRY_KEY, self.window.saveGeometry())
        self.settings.setValue(STATE_KEY, self.window.saveState(LAYOUT_VERSION))
