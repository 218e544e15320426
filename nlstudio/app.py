"""The GUI entry point: the only place in the core that touches QtWidgets."""
from __future__ import annotations

import os
import sys


def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def create_application(argv: list[str] | None = None):
    """The QApplication, created once, with the settings every window relies on."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
            Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv or [sys.argv[0]])
        app.setOrganizationName("NL Studio")
        app.setApplicationName("NL Studio")
    return app


def main(path: str | None = None) -> int:
    if not _has_display():
        print("nlstudio: no display found (DISPLAY is not set). Run it on a desktop, under "
              "xvfb-run, or set QT_QPA_PLATFORM=offscreen; headless training: nlstudio train "
              "PROJECT", file=sys.stderr)
        return 2
    app = create_application()
    from nlstudio.widgets.main_window import MainWindow

    window = MainWindow()
    if path:
        window.open_path(path)
    window.show()
    return app.exec()
