"""The main window."""
from __future__ import annotations

from PySide6.QtWidgets import QLabel, QMainWindow

from nlstudio import __version__


class MainWindow(QMainWindow):
    TITLE = "NL Studio"

    def __init__(self):
        super().__init__()
        self.setObjectName("mainWindow")
        self.setWindowTitle(self.TITLE)
        self.resize(1280, 800)
        label = QLabel(f"NL Studio {__version__}")
        label.setObjectName("welcomeLabel")
        self.setCentralWidget(label)
        self.statusBar().showMessage("Ready")

    def open_path(self, path: str) -> None:
        self.statusBar().showMessage(f"Opened {path}")
