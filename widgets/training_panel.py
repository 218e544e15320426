"""The training panel (a dock): Run / Pause / Stop / Continue bound to the window's actions,
progress with step/total, loss, metric, tokens/s, elapsed time and ETA, the device, the
model's parameter count, where the run is written (open the folder, copy its path), the
status, and the banner that says editing is locked while a run is live.

Every number shown is one the trainer sent (``events.Progress``) or one read from the run's
files: the panel never measures time itself, so the elapsed time and the ETA are the
trainer's (which leave paused time out)."""
from __future__ import annotations

import html
import math
from pathlib import Path

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import (QAction, QDesktopServices, QGuiApplication, QResizeEvent,
                           QTextDocumentFragment)
from PySide6.QtWidgets import (QDockWidget, QFrame, QGridLayout, QHBoxLayout, QLabel,
                               QProgressBar, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout,
                               QWidget)

from nlstudio import events as ev
from nlstudio.widgets import theme
from nlstudio.widgets.format import grouped

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
    return f"{grouped(tokens_per_s)} tok/s"


def format_value(value: float, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def format_time(elapsed_s: float, eta_s: float, paused: bool = False) -> str:
    """The Time cell: the trainer's elapsed training time and its estimate of what is left
    (no estimate while paused: nothing is being trained)."""
    left = "paused" if paused else f"{format_duration(eta_s)} left"
    return f"{format_duration(elapsed_s)} elapsed · {left}"


def short_path(path: Path) -> str:
    """A path as shown: the home folder as ~."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


class PathLabel(QLabel):
    """A folder's path on one line, elided in the middle to the width it is given, as a link
    that opens the folder (or as plain text)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.path: Path | None = None
        self.prefix = ""
        self.link = False

    def set_path(self, path: Path | None, prefix: str = "", link: bool = True) -> None:
        self.path, self.prefix, self.link = path, prefix, link
        self.setToolTip("" if path is None else str(path) + ("\nClick to open the folder"
                                                            if link else ""))
        self._elide()

    def shown_text(self) -> str:
        """The text as the user reads it (without markup)."""
        return QTextDocumentFragment.fromHtml(self.text()).toPlainText()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        if self.path is None:
            self.setText("–")
            return
        metrics = self.fontMetrics()
        room = max(self.width() - metrics.horizontalAdvance(self.prefix), 60)
        text = html.escape(metrics.elidedText(short_path(self.path),
                                              Qt.TextElideMode.ElideMiddle, room))
        if self.link:
            url = QUrl.fromLocalFile(str(self.path)).toString()
            text = f'<a href="{html.escape(url)}">{text}</a>'
        self.setText(html.escape(self.prefix) + text)


class TrainingPanel(QWidget):
    """The widget inside the training dock. The controller drives it; it never trains."""

    runFolderActivated = Signal(str)  # the user asked to open the run folder

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainingPanel")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.setSpacing(4)

        self.banner = QLabel(LOCK_TEXT)
        self.banner.setObjectName("editLockBanner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        layout.addWidget(self.banner)

        # The buttons on one row, the progress under them at full width: its text ("step
        # 1 234 / 5 000") is never squeezed by the buttons in a narrow column.
        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        self.run_button = self._button("trainingRunButton", "Run")
        self.pause_button = self._button("trainingPauseButton", "Pause")
        self.stop_button = self._button("trainingStopButton", "Stop")
        self.continue_button = self._button("trainingContinueButton", "Continue")
        for b in (self.run_button, self.pause_button, self.stop_button, self.continue_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainingProgress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run")
        self.progress.setTextVisible(True)
        layout.addWidget(self.progress)
        self.status = QLabel("Ready. Press Run to train the model on its task.")
        self.status.setObjectName("trainingStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # The status first: when the dock is short, the numbers below scroll, not it.
        layout.addWidget(self.status)

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
        self.params_label = self._value("trainingParameters")
        self.params_label.setToolTip("Trained parameters of the model (outer weights; the "
                                     "levels' in-context memories are not parameters)")
        cells = [("Loss", self.loss_label), (self.metric_caption, self.metric_label),
                 ("Speed", self.rate_label), ("Time", self.eta_label),
                 ("Device", self.device_label), ("Phase", self.phase_label),
                 ("Parameters", self.params_label)]
        for i, (caption, value) in enumerate(cells):
            row, col = divmod(i, 2)
            if isinstance(caption, str):
                caption = self._caption(caption)
            grid.addWidget(caption, row, 2 * col)
            grid.addWidget(value, row, 2 * col + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        layout.addSpacing(2)
        layout.addLayout(grid)

        # Where the run is written: its folder (a link that opens it), or where new runs go.
        where = QHBoxLayout()
        where.setContentsMargins(0, 0, 0, 0)
        where.setSpacing(6)
        self.folder_caption = self._caption("Run")
        self.folder_label = PathLabel()
        self.folder_label.setObjectName("trainingRunFolder")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.folder_label.setOpenExternalLinks(False)
        self.folder_label.linkActivated.connect(lambda _url: self.open_run_folder())
        self.open_button = QToolButton()
        self.open_button.setObjectName("openRunFolderButton")
        self.open_button.setText("Open folder")
        self.open_button.setToolTip("Show the run folder in the file manager")
        self.open_button.clicked.connect(self.open_run_folder)
        self.copy_button = QToolButton()
        self.copy_button.setObjectName("copyRunFolderButton")
        self.copy_button.setText("Copy path")
        self.copy_button.setToolTip("Copy the run folder's path")
        self.copy_button.clicked.connect(self.copy_run_folder)
        self.location_button = QToolButton()  # bound to the runs-folder action
        self.location_button.setObjectName("runsFolderButton")
        where.addWidget(self.folder_caption)
        where.addWidget(self.folder_label, 1)
        for button in (self.open_button, self.copy_button, self.location_button):
            where.addWidget(button)
        layout.addLayout(where)

        layout.addStretch(1)

        self.run_folder: str = ""
        self.runs_root: str = ""
        self._error = False
        self._last_progress: ev.Progress | None = None
        self._show_location()
        self.apply_theme(theme.current())
        theme.manager().themeChanged.connect(self.apply_theme)

    def height_for(self, width: int) -> int:
        """The height the panel needs at ``width``, with room for the lock banner, which
        appears when a run starts (the window's layout sizes the dock before that)."""
        self.ensurePolished()  # style sheets (the banner's padding) count before it is shown
        layout = self.layout()
        height = layout.totalHeightForWidth(width)
        if self.banner.isHidden():
            margins = layout.contentsMargins()
            inner = width - margins.left() - margins.right()
            height += self.banner.heightForWidth(inner) + layout.spacing()
        return height

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

    def bind_actions(self, run: QAction, pause: QAction, stop: QAction,
                     resume_run: QAction | None = None, runs_folder: QAction | None = None
                     ) -> None:
        """The buttons show and trigger the window's actions (one enabled state for menus,
        toolbar, shortcuts and these buttons)."""
        self.run_button.setDefaultAction(run)
        self.pause_button.setDefaultAction(pause)
        self.stop_button.setDefaultAction(stop)
        if resume_run is not None:
            self.continue_button.setDefaultAction(resume_run)
        self.continue_button.setVisible(resume_run is not None)
        if runs_folder is not None:
            self.location_button.setDefaultAction(runs_folder)
            self.location_button.setText("Change…")
        self._show_location()

    # ---- showing -----------------------------------------------------------------------
    def reset(self) -> None:
        for label in (self.loss_label, self.metric_label, self.rate_label, self.eta_label,
                      self.phase_label):
            label.setText("–")
        self._last_progress = None
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
        self.progress.setFormat(f"step {grouped(int(step))} / {grouped(total)}")

    def show_progress(self, event: ev.Progress) -> None:
        self._last_progress = event
        self.set_progress(event.step, event.total_steps)
        self.loss_label.setText(format_value(event.loss))
        self.metric_label.setText(format_value(event.metric, 3))
        self.rate_label.setText(format_rate(event.tokens_per_s))
        self.eta_label.setText(format_time(event.elapsed_s, event.eta_s))
        self.phase_label.setText(event.phase or "–")

    def show_paused(self, step: int, total: int) -> None:
        """The trainer confirmed the pause at ``step`` (a step boundary)."""
        self.set_progress(step, total)
        last = self._last_progress
        if last is not None:
            self.eta_label.setText(format_time(last.elapsed_s, last.eta_s, paused=True))

    def set_metric_name(self, name: str) -> None:
        self.metric_caption.setText(name[:1].upper() + name[1:] if name else "Metric")

    def set_device(self, text: str) -> None:
        self.device_label.setText(text)

    def set_parameters(self, count: int | None) -> None:
        self.params_label.setText("–" if count is None else grouped(count))

    def set_runs_root(self, root: str) -> None:
        """Where new runs go (shown while no run folder is)."""
        self.runs_root = str(root)
        self._show_location()

    def set_run_folder(self, path: str) -> None:
        self.run_folder = str(path or "")
        self._show_location()

    def _show_location(self) -> None:
        shown = bool(self.run_folder)
        self.open_button.setVisible(shown)
        self.copy_button.setVisible(shown)
        self.location_button.setVisible(not shown and self.location_button.defaultAction()
                                        is not None)
        if shown:
            self.folder_caption.setText("Run")
            self.folder_label.set_path(Path(self.run_folder).resolve())
        else:
            self.folder_caption.setText("Runs")
            self.folder_label.set_path(Path(self.runs_root) if self.runs_root else None,
                                       prefix="new runs go to ", link=False)

    def copy_run_folder(self) -> None:
        if self.run_folder:
            QGuiApplication.clipboard().setText(str(Path(self.run_folder).resolve()))

    def open_run_folder(self) -> None:
        if self.run_folder:
            self.runFolderActivated.emit(self.run_folder)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(self.run_folder).resolve())))

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

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt API
        """What the window's layout gives this dock in its column: the panel's height at
        that width (wrapped status text included), its banner's room, the title bar."""
        title = self.sizeHint().height() - self.widget().sizeHint().height()
        return self.panel.height_for(width) + max(title, 0)
