"""The lessons in the main window: Help → Lessons (one action per lesson, ``action_lesson_<n>``),
the welcome page, and one window per lesson.

The lessons are those of the one registry, ``nlstudio.lessons.LESSONS``; lesson ``n``'s view
is the class ``info.view`` (its core's name with "View" for "Lesson") in this package's module
``info.key``, the same name as its core's module (:func:`view_class`).

    manager = install_lessons(window)        # called by nlstudio.app.create_main_window
    manager.open(3)                           # the lesson 3 window (created once, then raised)
    manager.show_welcome()

The welcome page opens on start unless the user ticked "Don't show again" (QSettings
``lessons/showWelcome``) or the app was started on a project file; never when
``NLSTUDIO_TESTING`` or ``NLSTUDIO_SCREENSHOT`` is set, unless asked with
``install_lessons(window, show_welcome=True)``.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QMenu, QWidget

from nlstudio.app import DEFAULT_PRESET
from nlstudio.lessons import LESSONS, lesson_info
from nlstudio.widgets.actions import MenuPlace
from nlstudio.widgets.lessons.welcome import WelcomeDialog, wants_welcome

if TYPE_CHECKING:
    from nlstudio.widgets.main_window import MainWindow


def view_class(number: int) -> type:
    """The view class of lesson ``number`` (its module is imported on first use)."""
    info = lesson_info(number)
    return getattr(importlib.import_module(f"{__name__}.{info.key}"), info.view)


class LessonManager(QObject):
    """Opens each lesson once per window and stops their background work on close."""

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.setObjectName("lessonManager")
        self.window = window
        self.windows: dict[int, QWidget] = {}
        self.welcome = None

    def open(self, number: int) -> QWidget | None:
        """Show lesson ``number`` (built on first use); None if it could not be built."""
        view = self.windows.get(number)
        if view is None:
            try:
                view = view_class(number)(self.window)
            except Exception as exc:  # never a traceback in front of the user
                traceback.print_exc(file=sys.stderr)
                self.window.dialogs.error("Could not open the lesson",
                                          f"Lesson {number}: {type(exc).__name__}: {exc}")
                return None
            self.windows[number] = view
        view.show()
        view.raise_()
        view.activateWindow()
        return view

    def show_welcome(self):
        if self.welcome is None:
            self.welcome = WelcomeDialog(self.window, self.window.settings, self.open,
                                         self.open_default_project)
        self.welcome.show()
        self.welcome.raise_()
        return self.welcome

    def welcome_on_start(self) -> None:
        """On start-up, unless a project file was opened (``nlstudio PROJECT``)."""
        if not self.window.document.path:
            self.show_welcome()

    def open_default_project(self) -> bool:
        return bool(self.window.open_preset(DEFAULT_PRESET))

    def stop_background_work(self) -> bool:
        """A close guard: join every lesson's background job (never refuses the close)."""
        for view in self.windows.values():
            view.shutdown()
        return True


def install_lessons(window: "MainWindow", show_welcome: bool | None = None) -> LessonManager:
    """Add Help → Lessons (and the welcome page) to ``window``: a submenu at the top of Help,
    and a close guard that joins the lessons' background work; returns the manager, also
    kept as ``window.lessons``."""
    manager = LessonManager(window)
    window.lessons = manager
    menu = QMenu("&Lessons", window.menu("help"))
    menu.setObjectName("lessonsMenu")
    for info in LESSONS:
        action = window.actions.add(f"lesson.{info.number}", f"&{info.number}  {info.title}",
                                    tip=info.summary)
        action.triggered.connect(lambda _c=False, n=info.number: manager.open(n))
        menu.addAction(action)
    menu.addSeparator()
    welcome = window.actions.add("help.welcome", "&Welcome Page…",
                                 tip="The lessons and the default project")
    welcome.triggered.connect(manager.show_welcome)
    menu.addAction(welcome)
    window.add_actions(MenuPlace.HELP, [menu.menuAction()])
    window.add_close_guard(manager.stop_background_work)
    if show_welcome is None:
        quiet = os.environ.get("NLSTUDIO_TESTING") or os.environ.get("NLSTUDIO_SCREENSHOT")
        show_welcome = not quiet and wants_welcome(window.settings)
    if show_welcome:
        QTimer.singleShot(0, manager.welcome_on_start)
    return manager


__all__ = ["install_lessons", "LessonManager", "view_class"]
