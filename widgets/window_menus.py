"""The main window's menu bar and toolbar, built from its action registry, and the places where
the other parts (training, inspector, lessons) put their actions (:class:`MenuPlace`).

    menus = WindowMenus(window)             # once the window's actions are registered
    menus.menu("run")                       # a QMenu by name
    menus.add(MenuPlace.RUN, [action, ...]) # window.add_actions delegates here
    menus.refresh_icons()                   # toolbar icons in the theme's colours

The window owns the order of its menus: other parts name a place, never a neighbouring action.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QToolBar

from nlstudio.catalog import KINDS
from nlstudio.widgets import theme
from nlstudio.widgets.actions import MenuPlace, insert_actions
from nlstudio.widgets.dialogs import toolbar_icon

if TYPE_CHECKING:
    from nlstudio.widgets.main_window import MainWindow

MENU_NAMES = ("file", "edit", "view", "run", "help", "panels")

# place: (menu, the action it joins or goes before, a group of its own?)
_PLACES = {MenuPlace.FILE_OPEN: ("file", "file.open", False),
           MenuPlace.FILE_EXPORT: ("file", "file.quit", True),
           MenuPlace.RUN_CONTROL: ("run", "run.stop", False),
           MenuPlace.RUN: ("run", None, True),
           MenuPlace.PANELS: ("panels", None, True),
           MenuPlace.HELP: ("help", None, True)}

# The toolbar, in groups; each action's icon (dialogs._ICONS). RUN_CONTROL's actions join the
# last group.
TOOLBAR = ((("file.new", "new"), ("file.open", "open"), ("file.save", "save")),
           (("edit.undo", "undo"), ("edit.redo", "redo"), ("edit.delete", "delete")),
           (("view.zoom_out", "zoom_out"), ("view.zoom_in", "zoom_in"), ("view.fit", "fit")),
           (("run.start", "run"), ("run.pause", "pause"), ("run.stop", "stop")))
ICONS = {**{action_id: icon for group in TOOLBAR for action_id, icon in group},
         "run.continue": "continue"}


class WindowMenus:
    def __init__(self, window: "MainWindow") -> None:
        self.window = window
        self.actions = window.actions
        self._menus: dict[str, QMenu] = {}
        self._placed: dict[MenuPlace, QAction] = {}  # the last action put at each place
        self._build_menus()
        self.toolbar = self._build_toolbar()

    def menu(self, name: str) -> QMenu:
        """The menu ``name``: one of :data:`MENU_NAMES`."""
        return self._menus[name]

    def add(self, place: MenuPlace, actions: Sequence[QAction]) -> None:
        """Put ``actions`` at ``place``; RUN_CONTROL puts them on the toolbar too (after Stop).
        Actions added later at the same place follow the earlier ones."""
        place, actions = MenuPlace(place), list(actions)
        if not actions:
            return
        name, anchor_id, group = _PLACES[place]
        menu = self._menus[name]
        if not group:  # into the anchor's group: after it and after what joined it before
            after = self._placed.get(place) or self.actions[anchor_id]
            insert_actions(menu, actions, _follower(menu, after))
            if place is MenuPlace.RUN_CONTROL:
                after = self._placed.get(place) or self.actions[anchor_id]
                insert_actions(self.toolbar, actions, _follower(self.toolbar, after))
                self.refresh_icons()
        elif place is MenuPlace.FILE_EXPORT:  # a group before Quit's
            quit_ = self.actions[anchor_id]
            items = menu.actions()
            index = items.index(quit_)
            before = items[index - 1] if index and items[index - 1].isSeparator() else quit_
            insert_actions(menu, actions, before, separator_before=True, separator_after=True)
        elif place is MenuPlace.HELP:  # a group at the top
            first = menu.actions()[0] if menu.actions() else None
            insert_actions(menu, actions, first, separator_after=True)
        else:  # a group at the end
            insert_actions(menu, actions, None, separator_before=True)
        self._placed[place] = actions[-1]

    def refresh_icons(self) -> None:
        p = theme.current()
        for action_id, icon in ICONS.items():
            action = self.actions.get(action_id)  # run.continue: once training is installed
            if action is not None:
                action.setIcon(toolbar_icon(icon, p))

    # ---- construction -----------------------------------------------------------------------
    def _build_menus(self) -> None:
        w, a = self.window, self.actions
        bar = w.menuBar()
        file_menu = self._menu(bar, "file", "&File")
        file_menu.addActions([a["file.new"], a["file.open"]])
        self.recent = file_menu.addMenu("Open &Recent")  # filled by the window's ProjectFiles
        self.recent.setObjectName("recentMenu")
        self.presets = file_menu.addMenu("New from &Preset")
        self.presets.setObjectName("presetsMenu")
        self.presets.setToolTipsVisible(True)
        file_menu.addSeparator()
        file_menu.addActions([a["file.save"], a["file.save_as"]])
        file_menu.addSeparator()
        file_menu.addAction(a["file.quit"])

        edit_menu = self._menu(bar, "edit", "&Edit")
        edit_menu.addActions([a["edit.undo"], a["edit.redo"]])
        edit_menu.addSeparator()
        add_menu = edit_menu.addMenu("&Add Level")
        add_menu.setObjectName("addLevelMenu")
        for kind, info in KINDS.items():
            action = add_menu.addAction(theme.kind_icon(kind), info.title)
            action.setObjectName(f"action_add_{kind}")
            action.setStatusTip(info.summary)
            action.triggered.connect(lambda _c=False, k=kind: w.view.add_level(k))
        edit_menu.addActions([a["edit.delete"], a["edit.select_all"]])

        view_menu = self._menu(bar, "view", "&View")
        view_menu.addActions([a["view.zoom_in"], a["view.zoom_out"], a["view.fit"]])
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("&Theme")
        theme_menu.setObjectName("themeMenu")
        theme_menu.addActions(w.theme_group.actions())
        self._menu(view_menu, "panels", "&Panels")
        view_menu.addAction(a["view.reset_layout"])

        run_menu = self._menu(bar, "run", "&Run")
        run_menu.addActions([a["run.start"], a["run.pause"], a["run.stop"]])

        help_menu = self._menu(bar, "help", "&Help")
        help_menu.addActions([a["help.shortcuts"], a["help.about"]])

    def _menu(self, parent, name: str, title: str) -> QMenu:
        menu = parent.addMenu(title)
        menu.setObjectName(f"{name}Menu")
        self._menus[name] = menu
        return menu

    def _build_toolbar(self) -> QToolBar:
        w = self.window
        bar = QToolBar("Main toolbar", w)
        bar.setObjectName("mainToolBar")
        bar.setMovable(False)
        for i, group in enumerate(TOOLBAR):
            if i:
                bar.addSeparator()
            bar.addActions([self.actions[action_id] for action_id, _icon in group])
        w.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        return bar


def _follower(widget, action: QAction) -> QAction | None:
    """The item after ``action`` in a menu or toolbar (None: it is the last)."""
    items = widget.actions()
    index = items.index(action) + 1
    return items[index] if index < len(items) else None
