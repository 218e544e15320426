"""The training panel (a dock): Run / Pause / Stop bound to the window's actions, progress with
step/total, loss, metric, tokens/s, ETA, the device, the run folder and the status, and the
banner that says editing is locked while a run is live."""
from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (QDockWidget, QFrame, QGridLayout, QHBoxLayout, QLabel,
                               QProgressBar, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from nlstudio import events as ev
from nlstudio.widgets import theme

LOCK_TEXT = "Editing is locked while training; Stop to edit."


def format_duration(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def format_rate(tokens_per_s: float) -> str:
    if not math.isfinite(tokens_per_s) or tokens_per_s <= 0:
        return "–"
    if tokens_per_s >= 1e6:
        return f"{tokens_per_s / 1e6:.2f} M tok/s"
    return f"{tokens_per_s:,.0f} tok/s".replace(",", "\u2009")


def format_value(value: float, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


class TrainingPanel(QWidget):
    """The widget inside the training dock. The controller drives it; it never trains."""

    runFolderActivated = Signal(str)  # the user asked to open the run folder

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainingPanel")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(6)

        self.banner = QLabel(LOCK_TEXT)
        self.banner.setObjectName("editLockBanner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        layout.addWidget(self.banner)

        top = QHBoxLayout()
        top.setSpacing(4)
        self.run_button = self._button("trainingRunButton", "Run")
        self.pause_button = self._button("trainingPauseButton", "Pause")
        self.stop_button = self._button("trainingStopButton", "Stop")
        for b in (self.run_button, self.pause_button, self.stop_button):
            top.addWidget(b)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainingProgress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run")
        self.progress.setTextVisible(True)
        top.addWidget(self.progress, 1)
        layout.addLayout(top)

        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(2)
        self.loss_label = self._value("trainingLoss")
        self.metric_label = self._value("trainingMetric")
        self.metric_caption = self._caption("Metric")
        self.rate_label = self._value("trainingRate")
        self.eta_label = self._value("trainingEta")
        self.phase_label = self._value("trainingPhase")
        self.device_label = self._value("trainingDevice")
        cells = [("Loss", self.loss_label), (self.metric_caption, self.metric_label),
                 ("Speed", self.rate_label), ("Time", self.eta_label),
                 ("Device", self.device_label), ("Phase", self.phase_label)]
        for i, (caption, value) in enumerate(cells):
            row, col = divmod(i, 2)
            if isinstance(caption, str):
                caption = self._caption(caption)
            grid.addWidget(caption, row, 2 * col)
            grid.addWidget(value, row, 2 * col + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        self.folder_label = QLabel("–")
        self.folder_label.setObjectName("trainingRunFolder")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.folder_label.setOpenExternalLinks(False)
        self.folder_label.linkActivated.connect(self._open_folder)
        self.folder_label.setSizePolicy(QSizePolicy.Policy.Ignored,
                                        QSizePolicy.Policy.Preferred)
        self.copy_button = QToolButton()
        self.copy_button.setObjectName("copyRunFolderButton")
        self.copy_button.setText("Copy path")
        self.copy_button.setToolTip("Copy the run folder's path")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self.copy_run_folder)
        grid.addWidget(self._caption("Run"), 3, 0)
        grid.addWidget(self.folder_label, 3, 1, 1, 2)
        grid.addWidget(self.copy_button, 3, 3, Qt.AlignmentFlag.AlignRight)
        layout.addLayout(grid)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setObjectName("trainingSeparator")
        layout.addWidget(line)
        self.status = QLabel("Ready. Press Run to train the model on its task.")
        self.status.setObjectName("trainingStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.run_folder: str = ""
        self._error = False
        self.apply_theme(theme.current())
        theme.manager().themeChanged.connect(self.apply_theme)

    # ---- building --------------------------------------------------------------------------
    def _button(self, name: str, text: str) -> QToolButton:
        b = QToolButton()
        b.setObjectName(name)
        b.setText(text)
        b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        b.setMinimumWidth(58)
        return b

    def _caption(self, text: str) -> QLabel:
        label = QLabel(text)
        label.setProperty("role", "caption")
        return label

    def _value(self, name: str) -> QLabel:
        label = QLabel("–")
        label.setObjectName(name)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return label

    def bind_actions(self, run: QAction, pause: QAction, stop: QAction) -> None:
        """The buttons show and trigger the window's actions (one enabled state for menus,
        toolbar, shortcuts and these buttons)."""
        self.run_button.setDefaultAction(run)
        self.pause_button.setDefaultAction(pause)
        self.stop_button.setDefaultAction(stop)

    # ---- showing -----------------------------------------------------------------------
    def reset(self) -> None:
        for label in (self.loss_label, self.metric_label, self.rate_label, self.eta_label,
                      self.phase_label):
            label.setText("–")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run")

    def show_started(self, event: ev.Started) -> None:
        self.device_label.setText(event.device_name)
        self.device_label.setToolTip(f"torch device {event.device}")
        self.set_run_folder(event.run_dir)
        self.set_progress(event.start_step, event.total_steps)

    def set_progress(self, step: int, total: int) -> None:
        total = max(1, int(total))
        self.progress.setRange(0, total)
        self.progress.setValue(min(int(step), total))
        self.progress.setFormat(f"step {int(step):,} / {total:,}".replace(",", "\u2009"))

    def show_progress(self, event: ev.Progress) -> None:
        self.set_progress(event.step, event.total_steps)
        self.loss_label.setText(format_value(event.loss))
        self.metric_label.setText(format_value(event.metric, 3))
        self.rate_label.setText(format_rate(event.tokens_per_s))
        self.eta_label.setText(f"{format_duration(event.elapsed_s)} elapsed · "
                               f"{format_duration(event.eta_s)} left")
        self.phase_label.setText(event.phase or "–")

    def set_metric_name(self, name: str) -> None:
        self.metric_caption.setText(name[:1].upper() + name[1:] if name else "Metric")

    def set_device(self, text: str) -> None:
        self.device_label.setText(text)

    def set_run_folder(self, path: str) -> None:
        self.run_folder = str(path or "")
        self.copy_button.setEnabled(bool(path))
        if not path:
            self.folder_label.setText("–")
            self.folder_label.setToolTip("")
            return
        p = Path(path)
        url = QUrl.fromLocalFile(str(p.resolve())).toString()
        self.folder_label.setText(f'<a href="{url}">{p.name}</a>')
        self.folder_label.setToolTip(f"{p.resolve()}\nClick to open the folder")

    def copy_run_folder(self) -> None:
        if self.run_folder:
            QGuiApplication.clipboard().setText(str(Path(self.run_folder).resolve()))

    def _open_folder(self, url: str) -> None:
        self.runFolderActivated.emit(self.run_folder)
        QDesktopServices.openUrl(QUrl(url))

    def show_status(self, text: str, error: bool = False) -> None:
        self._error = error
        self.status.setText(text)
        self.status.setProperty("error", error)
        self._style_status()

    def set_locked(self, locked: bool) -> None:
        self.banner.setVisible(locked)

    @property
    def status_text(self) -> str:
        return self.status.text()

    # ---- theme -------------------------------------------------------------------------
    def apply_theme(self, p: theme.Palette) -> None:
        for label in self.findChildren(QLabel):
            if label.property("role") == "caption":
                label.setStyleSheet(f"color: {p.muted};")
        self.banner.setStyleSheet(
            f"QLabel#editLockBanner {{ background: {p.warning}; color: #1d2127; "
            f"border-radius: 4px; padding: 4px 6px; font-weight: 600; }}")
        self._style_status()

    def _style_status(self) -> None:
        p = theme.current()
        if self._error:
            self.status.setStyleSheet(
                f"QLabel#trainingStatus {{ color: {p.fault}; font-weight: 600; "
                f"border: 1px solid {p.fault}; border-radius: 4px; padding: 4px; }}")
        else:
            self.status.setStyleSheet(f"QLabel#trainingStatus {{ color: {p.text}; }}")


class TrainingDock(QDockWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Training", parent)
        self.setObjectName("trainingDock")
        self.panel = TrainingPanel()
        scroll = QScrollArea(self)  # a long failure message scrolls instead of being cut
        scroll.setObjectName("trainingScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.panel)
        self.setWidget(scroll)
