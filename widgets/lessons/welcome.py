"""The welcome page: the five lessons, the default project, and "Don't show again"."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (QCheckBox, QDialog, QHBoxLayout, QLabel, QPushButton,
                               QVBoxLayout, QWidget)

from nlstudio.lessons import LESSONS

SETTINGS_KEY = "lessons/showWelcome"


def wants_welcome(settings: QSettings) -> bool:
    """False once the user ticked "Don't show again"."""
    value = settings.value(SETTINGS_KEY, True)
    if isinstance(value, str):
        return value.lower() not in ("false", "0", "no")
    return bool(value)


class WelcomeDialog(QDialog):
    """Non-modal: lessons open beside it; picking one closes the page."""

    def __init__(self, parent: QWidget | None, settings: QSettings,
                 open_lesson: Callable[[int], object],
                 open_default: Callable[[], object]) -> None:
        super().__init__(parent)
        self.setObjectName("welcomeDialog")
        self.setWindowTitle("Welcome to NL Studio")
        self.setModal(False)
        self.settings = settings
        self._open_lesson = open_lesson
        self._open_default = open_default
        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 16, 18, 14)
        layout.setSpacing(8)
        title = QLabel("<b>Welcome to NL Studio</b>", self)
        title.setObjectName("welcomeTitle")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        title.setFont(font)
        layout.addWidget(title)
        intro = QLabel("A model here is a set of memories that learn at different speeds. "
                       "Five short lessons make the idea playable, each in a few seconds on "
                       "the CPU; or start from the default project and train it.", self)
        intro.setObjectName("welcomeText")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.lesson_buttons: dict[int, QPushButton] = {}
        for info in LESSONS:
            button = QPushButton(f"{info.number}.  {info.title}", self)
            button.setObjectName(f"welcomeLesson{info.number}")
            button.setToolTip(info.summary)
            button.setStyleSheet("text-align: left; padding: 6px 10px; font-weight: bold;")
            button.clicked.connect(lambda _c=False, n=info.number: self.choose_lesson(n))
            summary = QLabel(info.summary, self)
            summary.setObjectName(f"welcomeLesson{info.number}Summary")
            summary.setWordWrap(True)
            summary.setContentsMargins(14, 0, 0, 4)
            layout.addWidget(button)
            layout.addWidget(summary)
            self.lesson_buttons[info.number] = button
        row = QHBoxLayout()
        self.dont_show = QCheckBox("Don't show this again", self)
        self.dont_show.setObjectName("welcomeDontShow")
        self.dont_show.setToolTip("Help → Lessons → Welcome page… brings it back")
        self.dont_show.setChecked(not wants_welcome(settings))
        self.dont_show.toggled.connect(self._remember)
        row.addWidget(self.dont_show)
        row.addStretch(1)
        self.default_button = QPushButton("Open the default project", self)
        self.default_button.setObjectName("welcomeOpenDefault")
        self.default_button.setToolTip("The NSAM on shifting key→value streams, ready to train")
        self.default_button.clicked.connect(self.choose_default)
        row.addWidget(self.default_button)
        close = QPushButton("Close", self)
        close.setObjectName("welcomeClose")
        close.clicked.connect(self.close)
        row.addWidget(close)
        layout.addLayout(row)
        self.setMinimumWidth(520)

    def _remember(self, dont_show: bool) -> None:
        self.settings.setValue(SETTINGS_KEY, not dont_show)

    def choose_lesson(self, number: int) -> None:
        self.close()
        self._open_lesson(number)

    def choose_default(self) -> None:
        self.close()
        self._open_default()

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.key() == Qt.Key.Key_Escape:
            self.close()
            return
        super().keyPressEvent(event)
