"""The GUI entry point: the only place in the core that touches QtWidgets."""
from __future__ import annotations

import os
import sys

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication


def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def create_application(argv: list[str] | None = None):
    """The QApplication, created once, with the settings every window relies on."""
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
    window = create_main_window()
    if path:
        window.open_path(path)
    else:
        window.open_preset(DEFAULT_PRESET)
    window.show()
    shot = os.environ.get("NLSTUDIO_SCREENSHOT")
    if shot:  # smoke tests and README screenshots: save the window as PNG, then quit
        def grab_and_quit():
            window.grab().save(shot)
            window.document.undo_stack.setClean()
            window.close()
            app.quit()

        QTimer.singleShot(int(os.environ.get("NLSTUDIO_SCREENSHOT_DELAY_MS", "800")),
                          grab_and_quit)
    return app.exec()


DEFAULT_PRESET = "nsam_kv_stream"


def create_main_window(settings=None, runs_root=None):
    """The full application window: the model editor with live training attached, its panels
    in the default layout (or where the user left them last time). ``settings`` (a
    QSettings) and ``runs_root`` are for tests."""
    # lazy: a cycle (the lessons import DEFAULT_PRESET from here), and start-up time (main
    # says "no display" before the widgets, torch and pyqtgraph are imported)
    from nlstudio.widgets.lessons import install_lessons
    from nlstudio.widgets.main_window import MainWindow
    from nlstudio.widgets.trace_menu import install_inspector
    from nlstudio.widgets.training_controller import install_training

    window = MainWindow(settings)
    install_training(window, runs_root)  # the training panel and the plots (place_docks)
    install_lessons(window)  # Help → Lessons and the welcome page
    install_inspector(window)  # Run → Inspect Model: the memory inspector
    window.restore_layout()  # every panel exists now
    return window
