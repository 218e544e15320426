"""What every lesson view shares: the window frame (title, two or three sentences, controls,
a status line), Back / Next / Reset buttons, small signed heatmaps, embedded plot docks, and
background jobs that never outlive the window.

A lesson view is a non-modal top-level window owned by the main window (it closes with
it), which it reaches only through :class:`LessonHost` (``MainWindow`` implements it, and
``LessonManager`` passes it as every view's ``host``; ``None``: a view on its own). Its
computations live in its core (``self.core``, a ``nlstudio.lessons.LessonCore`` from the
module of the same name in ``nlstudio.lessons``); the view only steps the core and draws.
Which lesson a view shows comes from the one registry, ``nlstudio.lessons.LESSONS``, by its
module's name.
"""
from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                               QWidget)

from nlstudio.lessons import LessonInfo, lesson_by_key
from nlstudio.widgets import theme
from nlstudio.widgets.plots.base import (PlotDock, SymmetricColorBar, nice_ceil, pen,
                                         style_plot)
from nlstudio.widgets.worker import FunctionJob

if TYPE_CHECKING:  # typing only: no import cycle with the window
    from nlstudio.widgets.dialogs import Dialogs
    from nlstudio.widgets.document import Document


@runtime_checkable
class LessonHost(Protocol):
    """The main window as a lesson sees it: the project on the canvas, the dialogs that ask
    the user, and opening a bundled preset there. ``widgets.main_window.MainWindow``
    implements it; the host is that QMainWindow, the parent of the lesson windows."""

    @property
    def document(self) -> "Document":
        """``locked``, ``lock_reason``, ``path``, ``name``, ``is_clean``, ``data``,
        ``snapshot()``."""

    @property
    def dialogs(self) -> "Dialogs":
        """``question(title, text) -> bool``, ``error(title, text)``; looked up at each use
        (tests replace it)."""

    def open_preset(self, name: str) -> bool:
        """An untitled copy of the bundled preset ``name`` on the canvas (the window asks to
        save unsaved changes first); False if the user cancelled or it failed."""


class LessonView(QWidget):
    """The frame of a lesson: subclasses set ``self.core`` and fill ``controls`` and
    ``body``. The lesson is the registry entry whose ``key`` is the subclass's module name."""

    stepped = Signal()  # after every change of what the lesson shows
    #: True when the core's ``next()`` computes for longer than a frame: Next then runs it in
    #: a worker thread (the buttons wait for it) instead of on the GUI thread.
    background_next = False

    @classmethod
    def lesson(cls) -> LessonInfo:
        return lesson_by_key(cls.__module__.rsplit(".", 1)[-1])

    @property
    def number(self) -> int:
        return self.info.number

    def __init__(self, host: "LessonHost | None" = None) -> None:
        # The host (a QMainWindow) is also the parent: the lesson window closes with it.
        super().__init__(host, Qt.WindowType.Window)
        self.info = info = self.lesson()
        self.core = None  # the lesson's LessonCore (set by the subclass)
        self.back_button = self.next_button = self.reset_button = None  # step_buttons()
        self.host: LessonHost | None = host
        self.setObjectName(f"lesson{self.number}Window")
        self.setWindowTitle(f"Lesson {self.number} · {info.title}")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.jobs: list[BackgroundJob] = []
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 10, 12, 10)
        outer.setSpacing(6)
        self.title_label = QLabel(f"<b>{self.number}. {info.title}</b>", self)
        self.title_label.setObjectName(f"lesson{self.number}Title")
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        self.title_label.setFont(font)
        outer.addWidget(self.title_label)
        self.text = QLabel(self.intro(), self)
        self.text.setObjectName(f"lesson{self.number}Text")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.text)
        self.controls = QHBoxLayout()
        self.controls.setSpacing(8)
        outer.addLayout(self.controls)
        self.status = QLabel("", self)
        self.status.setObjectName(f"lesson{self.number}Status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status)
        self.body = QVBoxLayout()
        self.body.setSpacing(4)
        outer.addLayout(self.body, 1)
        self.palette_ = theme.current()
        theme.manager().themeChanged.connect(self._on_theme)

    # ---- to override -------------------------------------------------------------------------
    def intro(self) -> str:
        """Two or three sentences: what the lesson shows."""
        return ""

    def apply_theme(self, palette: theme.Palette) -> None:
        """Recolour plots (subclasses)."""

    # ---- building blocks ---------------------------------------------------------------------
    def name(self, suffix: str) -> str:
        return f"lesson{self.number}{suffix}"

    def button(self, text: str, suffix: str, slot: Callable[[], object], tip: str = "",
               shortcut: str | None = None) -> QPushButton:
        button = QPushButton(text, self)
        button.setObjectName(self.name(suffix))
        button.clicked.connect(lambda _checked=False: self._guarded(slot))
        if shortcut:
            button.setShortcut(QKeySequence(shortcut))
            tip = f"{tip} ({shortcut})" if tip else shortcut
        if tip:
            button.setToolTip(tip)
        self.controls.addWidget(button)
        return button

    def step_buttons(self, next_text: str = "Next ▶") -> None:
        """◀ Back, Next ▶ and Reset, wired to :meth:`back`, :meth:`next`, :meth:`reset`."""
        self.back_button = self.button("◀ Back", "Back", self.back, "Undo the last step",
                                       "Left")
        self.next_button = self.button(next_text, "Next", self.next, "Take the next step",
                                       "Right")
        self.reset_button = self.button("Reset", "Reset", self.reset, "Start over", "Home")

    def step_label(self) -> QLabel:
        label = QLabel("", self)
        label.setObjectName(self.name("Step"))
        self.controls.addWidget(label)
        return label

    def plot_area(self, suffix: str = "Plots") -> pg.GraphicsLayoutWidget:
        view = pg.GraphicsLayoutWidget(self)
        view.setObjectName(self.name(suffix))
        view.setBackground(self.palette_.plot_background)
        view.ci.setContentsMargins(4, 4, 4, 4)
        view.ci.setSpacing(6)
        return view

    def _guarded(self, slot: Callable[[], object]) -> None:
        """Run a user action; a failure is shown in the status line, never as a traceback."""
        try:
            slot()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            traceback.print_exc(file=sys.stderr)
            self.show_error(f"{type(exc).__name__}: {exc}")

    def show_error(self, message: str) -> None:
        self.status.setText(f"<span style='color:{self.palette_.fault}'>Could not compute "
                            f"this step: {message}</span>")

    def changed(self) -> None:
        self.stepped.emit()

    # ---- stepping the core (LessonCore) ------------------------------------------------------
    def next(self) -> None:
        """One step of the core (in a worker thread when ``background_next``); Next, Back and
        Reset wait while a background job runs."""
        if self.core is None or self.core.done or self._stepping():
            return
        if self.background_next:
            self.set_stepping(True)
            self.start_job(self.core.next, lambda _result: self._stepped(), "next")
            return
        self.core.next()
        self.redraw()

    def back(self) -> None:
        if self.core is not None and not self._stepping():
            self.core.back()
            self.redraw()

    def reset(self) -> None:
        if self.core is not None and not self._stepping():
            self.core.reset()
            self.redraw()

    def _stepping(self) -> bool:
        """A background step is computing (the core must not be stepped meanwhile)."""
        return self.background_next and self.busy()

    def _stepped(self) -> None:
        self.set_stepping(False)
        self.redraw()

    def set_stepping(self, busy: bool) -> None:
        """Buttons off while a step computes in the background (subclasses add theirs)."""
        for button in (self.back_button, self.next_button, self.reset_button):
            if button is not None:
                button.setEnabled(not busy)

    def redraw(self) -> None:
        """Draw what the lesson shows now (subclasses)."""

    # ---- background work -----------------------------------------------------------------------
    def start_job(self, fn: Callable[[], object], done: Callable[[object], None],
                  name: str) -> "BackgroundJob":
        job = BackgroundJob(self, fn, done, name)
        self.jobs.append(job)
        job.start()
        return job

    def busy(self) -> bool:
        return any(not job.finished for job in self.jobs)

    def shutdown(self) -> None:
        """Ask background work to stop (subclasses set their stop flags first) and join it."""
        for job in list(self.jobs):
            job.wait()
        self.jobs.clear()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)

    # ---- theme -----------------------------------------------------------------------------
    def _on_theme(self, palette: theme.Palette) -> None:
        self.palette_ = palette
        self.apply_theme(palette)


class BackgroundJob:
    """One :class:`FunctionJob` whose result (or error) reaches ``done`` on the GUI thread;
    an error is shown in the lesson's status line."""

    def __init__(self, lesson: LessonView, fn: Callable[[], object],
                 done: Callable[[object], None], name: str) -> None:
        self.lesson = lesson
        self.finished = False
        self._done = done
        self.job = FunctionJob(fn, lesson, name=f"lesson{lesson.number}-{name}")
        self.job.finished.connect(self._on_finished)

    def start(self) -> None:
        self.job.start()

    def wait(self) -> None:
        self.job.wait()

    def _on_finished(self, result: object, error: object) -> None:
        self.finished = True
        if self in self.lesson.jobs:
            self.lesson.jobs.remove(self)
        if error:
            self.lesson.show_error(str(error))
            self._done(None)
            return
        self._done(result)


def embed_dock(dock: PlotDock, on_dirty: Callable[[], object]) -> PlotDock:
    """A plot dock used as a plain panel inside a lesson (no title bar, not floatable).

    The lesson draws it itself (there is no redraw scheduler): ``on_dirty`` runs once the
    event loop is free whenever the dock asks for a redraw that has not happened yet (a theme
    switch, for example)."""
    dock.setFeatures(QDockWidget.DockWidgetFeature.NoDockWidgetFeatures)
    dock.setTitleBarWidget(QWidget(dock))

    def later() -> None:
        if dock.dirty:
            on_dirty()

    dock.redrawRequested.connect(lambda: QTimer.singleShot(0, dock, later))
    return dock


class _Title(pg.LabelItem):
    """A title that never widens its grid column (long text is clipped by the cell instead)."""

    def updateMin(self) -> None:  # noqa: N802 - pyqtgraph API
        super().updateMin()
        self.setMinimumWidth(10)
        self.setPreferredWidth(10)


class Heatmap:
    """A titled signed heatmap with a colour bar, in a cell of a GraphicsLayout.

    Colour levels are ±L with L the data's max |x| rounded up to a nice value, or a shared
    ``level`` so that matrices side by side compare by colour."""

    def __init__(self, layout: pg.GraphicsLayout, row: int, col: int, title: str,
                 palette: theme.Palette, bar: bool = True, column_width: int | None = None
                 ) -> None:
        self.palette = palette
        self.title = _Title("", justify="center")
        layout.addItem(self.title, row=row, col=col, colspan=2 if bar else 1)
        # A vector is drawn as a narrow column of fixed width; a matrix keeps square cells.
        self.view = pg.ViewBox(lockAspect=column_width is None, enableMenu=False, invertY=True)
        if column_width is not None:
            self.view.setFixedWidth(column_width)
        else:  # matrices side by side get equal widths
            self.view.setMinimumWidth(60)
            self.view.setPreferredWidth(200)
        self.view.setMouseEnabled(x=False, y=False)
        self.view.setDefaultPadding(0)
        layout.addItem(self.view, row=row + 1, col=col)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        cmap = theme.diverging_colormap(palette)
        self.image.setLookupTable(cmap.getLookupTable(nPts=256))
        self.bar = SymmetricColorBar(cmap, width=7) if bar else None
        if self.bar is not None:
            layout.addItem(self.bar, row=row + 1, col=col + 1)
        self.data: np.ndarray | None = None
        self.level = 1.0
        self._text = title
        self._shape: tuple[int, ...] | None = None
        self.set_title(title)
        self.apply_theme(palette)

    def set_title(self, text: str) -> None:
        self._text = text
        self.title.setText(text, color=self.palette.plot_foreground, size="9pt")

    def set(self, data: np.ndarray | None, level: float | None = None) -> None:
        if data is None or np.size(data) == 0:
            self.data = None
            self.image.clear()
            return
        arr = np.ascontiguousarray(np.atleast_2d(np.asarray(data, dtype=np.float32)))
        self.data = arr
        peak = float(np.abs(arr[np.isfinite(arr)]).max()) if np.isfinite(arr).any() else 0.0
        self.level = level if level is not None else (nice_ceil(peak) if peak > 0 else 1.0)
        self.image.setImage(arr, autoLevels=False, levels=(-self.level, self.level))
        if self.bar is not None:
            self.bar.set_level(self.level)
        if self._shape != arr.shape:
            self._shape = arr.shape
            self.image.setRect(0, 0, arr.shape[1], arr.shape[0])
            self.view.setRange(xRange=(0, arr.shape[1]), yRange=(0, arr.shape[0]), padding=0)

    def apply_theme(self, palette: theme.Palette) -> None:
        self.palette = palette
        cmap = theme.diverging_colormap(palette)
        self.image.setLookupTable(cmap.getLookupTable(nPts=256))
        self.view.setBorder(pg.mkPen(palette.border))
        if self.bar is not None:
            self.bar.set_colors(cmap, palette.plot_foreground, palette.border)
        self.set_title(self._text)


def shared_level(*arrays: np.ndarray | None) -> float:
    """One nice colour level for matrices shown side by side."""
    peaks = [float(np.abs(a).max()) for a in arrays if a is not None and np.size(a)]
    peak = max(peaks, default=0.0)
    return nice_ceil(peak) if peak > 0 else 1.0


def integer_ticks(plot: pg.PlotItem, count: int, axis: str = "bottom") -> None:
    """Whole-number tick spacing for a step axis of ``count`` steps (about ten labels)."""
    major = max(1, int(nice_ceil(max(count, 1) / 8)))
    plot.getAxis(axis).setTickSpacing(major=major, minor=major)


def style_markers(curve: pg.PlotDataItem, color: str, palette: theme.Palette) -> None:
    """A line with dot markers in ``color``, the dots ringed in the plot background."""
    curve.setPen(pen(color, 2.0))
    curve.setSymbolBrush(pg.mkBrush(color))
    curve.setSymbolPen(pg.mkPen(palette.plot_background))


def new_plot(layout: pg.GraphicsLayout, row: int, col: int, palette: theme.Palette,
             title: str = "", left: str = "", bottom: str = "", **span) -> pg.PlotItem:
    """A styled, static (no mouse zoom) PlotItem in the lesson's palette."""
    plot = layout.addPlot(row=row, col=col, **span)
    plot.setMenuEnabled(False)
    plot.setMouseEnabled(x=False, y=False)
    plot.hideButtons()
    if left:
        plot.setLabel("left", left)
    if bottom:
        plot.setLabel("bottom", bottom)
    style_plot(plot, palette, title or None)
    return plot



__all__ = ["LessonHost", "LessonView", "BackgroundJob", "Heatmap", "embed_dock", "new_plot",
           "shared_level", "style_markers", "style_plot", "integer_ticks"]
