"""The training side of the window, assembled: the training panel, the plot docks, and the
run actions wired to the four jobs, each in its own module:

- ``live_training.LiveTraining``: Run / Pause / Resume / Stop, and Continue (a stopped run
  trained on through the trainer's ``resume=``);
- ``opened_run.OpenedRun``: a run folder opened from disk, followed while it is written;
- ``compare_runs.CompareRuns``: other runs overlaid on the curves;
- ``export_actions.ExportActions``: the model, all plots, one plot.

    controller = install_training(window)      # once, after the window is built

The window is reached only through ``training_host.TrainingHost``, which ``MainWindow``
implements. Which run the plots show is decided here: the live run, else the last
run trained, else an opened run folder; loading another project clears it (the run stays on
disk: File → Open Run shows it again).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication, QFileDialog, QToolButton

from nlstudio.graph import levels_in_order
from nlstudio.run_state import RunState
from nlstudio.runs import RunError, is_run_dir, latest_checkpoint, read_status
from nlstudio.widgets import theme
from nlstudio.widgets.compare_runs import CompareRuns
from nlstudio.widgets.dialogs import toolbar_icon
from nlstudio.widgets.export_actions import ExportActions
from nlstudio.widgets.folder_dialog import choose_folder
from nlstudio.widgets.live_training import LOCK_REASON, LiveTraining, parameter_count
from nlstudio.widgets.opened_run import OpenedRun, interrupted
from nlstudio.widgets.plots.dock import PlotSet
from nlstudio.widgets.run_location import RunLocation
from nlstudio.widgets.run_view import RunView
from nlstudio.widgets.training_host import MenuPlace, TrainingHost
from nlstudio.widgets.training_panel import TrainingDock
from nlstudio.widgets.worker import TrainingSession, warm_up_torch

PARAMETER_COUNT_DELAY_MS = 300  # after the last edit: one count per pause in editing


class TrainingController(QObject):
    stateChanged = Signal(str)  # RunState value
    runStarted = Signal(str)  # run folder
    runEnded = Signal(object)  # RunResult, or an error message (str)
    exported = Signal(list)  # paths written by the last export

    def __init__(self, host: TrainingHost,
                 runs_root: str | os.PathLike | None = None) -> None:
        super().__init__(host)  # the host is the main window (a QMainWindow)
        self.setObjectName("trainingController")
        self.host = host
        self.runs = RunLocation(host.settings, runs_root)
        self.dock = TrainingDock(host)
        self.panel = self.dock.panel
        self.plots = PlotSet(self)
        self.live_run = LiveTraining(host, self.panel, self.plots, self.runs, self)
        self.opened = OpenedRun(host, self.panel, self.plots, self)
        self.compare = CompareRuns(self.plots, self)
        # A folder chooser that tests can replace: (title, start) -> path or "".
        self.ask_directory = lambda title, start: choose_folder(host, title, start)
        self.ask_existing_directory = lambda title, start: QFileDialog.getExistingDirectory(
            host, title, start)
        self.exports = ExportActions(host, self.plots, lambda: self.run_dir,
                                     lambda title, start: self.ask_directory(title, start), self)
        self._create_actions()
        self.live_run.stateChanged.connect(self._sync)
        theme.manager().themeChanged.connect(self._sync)
        self.live_run.stateChanged.connect(self.stateChanged)
        self.live_run.runStarted.connect(self._on_run_started)
        self.live_run.runStarted.connect(self.runStarted)
        self.live_run.runEnded.connect(self.runEnded)
        self.live_run.runEnded.connect(lambda _r: self._sync())
        self.opened.changed.connect(self._sync)
        self.exports.exported.connect(self.exported)
        self.compare.changed.connect(
            lambda paths: self.clear_compare_action.setEnabled(bool(paths)))
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(PARAMETER_COUNT_DELAY_MS)
        self._count_timer.timeout.connect(self._count_parameters)
        document = host.document
        document.changed.connect(self._on_document_changed)
        document.loaded.connect(self._on_project_replaced)
        self.panel.set_runs_root(str(self.runs.root()))
        self._sync()
        # Starts the count's timer: counting imports torch, which start-up leaves for later.
        self._on_document_changed()

    # ---- actions ---------------------------------------------------------------------------
    def _create_actions(self) -> None:
        a = self.host.actions
        self.run_action = a["run.start"]
        self.pause_action = a["run.pause"]
        self.stop_action = a["run.stop"]
        self.continue_action = a.add(
            "run.continue", "&Continue", shortcut="Ctrl+F5", enabled=False,
            tip="Train the stopped run on from its last checkpoint (its own saved project)")
        self.open_action = a.add("run.open_run", "Open R&un…", shortcut="Ctrl+Shift+O",
                                 tip="Open a run folder: its curves, forgetting and ablation "
                                     "(followed live while another process trains it)")
        self.compare_action = a.add("run.compare", "&Compare Runs…",
                                    tip="Overlay the curves of other run folders")
        self.clear_compare_action = a.add("run.clear_compare", "Clear Comparison",
                                          tip="Remove the compared runs' curves",
                                          enabled=False)
        self.runs_folder_action = a.add("run.runs_folder", "Runs &Folder…",
                                        tip="Choose the folder new runs are written into")
        self.export_model_action = a.add("run.export_model", "Export &Model…",
                                         tip="Copy the trained weights and the project into a "
                                             "folder (nlstudio eval FOLDER reloads them)",
                                         enabled=False)
        self.export_plots_action = a.add("run.export_plots", "Export All &Plots",
                                         shortcut="Ctrl+Shift+E",
                                         tip="Every plot as PNG, SVG and CSV into the run's "
                                             "plots/ folder")
        self.run_action.triggered.connect(lambda: self.start())
        self.pause_action.triggered.connect(self.toggle_pause)
        self.stop_action.triggered.connect(self.stop)
        self.continue_action.triggered.connect(lambda: self.continue_run())
        self.open_action.triggered.connect(lambda: self.open_run())
        self.compare_action.triggered.connect(lambda: self.compare_runs())
        self.clear_compare_action.triggered.connect(self.clear_comparison)
        self.runs_folder_action.triggered.connect(lambda: self.choose_runs_folder())
        self.export_model_action.triggered.connect(lambda: self.export_model())
        self.export_plots_action.triggered.connect(lambda: self.export_plots())
        self.panel.bind_actions(self.run_action, self.pause_action, self.stop_action,
                                self.continue_action, self.runs_folder_action)
        for dock in self.plots.docks:
            button = QToolButton()
            button.setObjectName(f"{dock.key}ExportButton")
            button.setText("Export…")
            button.setToolTip("Save this plot as PNG and SVG, and its data as CSV")
            button.clicked.connect(lambda _c=False, d=dock: self.export_plot(d))
            dock.toolbar.addWidget(button)

    def _sync(self, *_args) -> None:
        """Every action's enabled state and text from the live run's state."""
        state, live = self.live_run.state, self.live_run.live
        stopping = self.live_run.stopping
        paused = state == RunState.PAUSED
        self.pause_action.setEnabled(live and not stopping)
        self.pause_action.setText("&Resume" if paused else "&Pause")
        # ▶ resumes. In the theme's colours: this runs on a theme change too, after the
        # window drew its toolbar icons (Qt calls slots in the order they were connected).
        self.pause_action.setIcon(toolbar_icon("run" if paused else "pause", theme.current()))
        self.pause_action.setToolTip("Resume training (F6)" if paused
                                     else "Pause training at the end of this step (F6)")
        self.stop_action.setEnabled(live and not stopping)
        self.open_action.setEnabled(True)
        self.export_model_action.setEnabled(self.run_dir is not None)
        target = self.continuable()
        self.continue_action.setEnabled(target is not None)
        self.continue_action.setToolTip(
            f"Train {target.name} on from its last checkpoint, with the project saved in it "
            f"(Ctrl+F5)" if target is not None else
            "Continue a stopped run: stop a run, or open a stopped run folder (Ctrl+F5)")

    # ---- which run is shown (and the jobs' state, as tests, bench/gui.py and
    # tools/screenshots.py read it) ----------------------------------------------------------
    @property
    def state(self) -> RunState:
        return self.live_run.state

    @property
    def live(self) -> bool:
        return self.live_run.live

    @property
    def session(self) -> TrainingSession | None:
        return self.live_run.session

    @property
    def view(self) -> RunView | None:
        return self.opened.view

    @property
    def last_progress(self):
        return self.live_run.last_progress

    @property
    def last_result(self):
        return self.live_run.last_result

    @property
    def trainer_options(self) -> dict:
        return self.live_run.trainer_options

    @property
    def run_dir(self) -> Path | None:
        """The run the plots show: the live (or last trained) run, else the opened one."""
        if self.opened.view is not None:
            return self.opened.path
        return self.live_run.run_dir

    def continuable(self) -> Path | None:
        """The shown run, if it can be trained on: stopped, or interrupted (its writer gone),
        with a checkpoint short of its last step."""
        run_dir = self.run_dir
        if self.live_run.live or run_dir is None or self.opened.following:
            return None
        status = read_status(run_dir)
        state = status.get("state")
        if state != RunState.STOPPED and not interrupted(status, False):
            return None
        step, total = status.get("step", 0), status.get("total_steps", 0)
        if not total or step >= total:
            return None
        try:  # the runs package's own reading of its checkpoints (folders, or the old file)
            checkpoint = latest_checkpoint(run_dir)
        except RunError:  # a damaged newest checkpoint: nothing to continue from
            return None
        return run_dir if checkpoint is not None and checkpoint.step < total else None

    # ---- the live run ------------------------------------------------------------------------
    def start(self, steps: int | None = None, out: str | os.PathLike | None = None) -> bool:
        """Train the document's project in the background (a new run folder)."""
        if self.live_run.live:
            return False
        self.opened.close()
        return self.live_run.start(steps=steps, out=out)

    def continue_run(self, run_dir: str | os.PathLike | None = None) -> bool:
        """Train a stopped run on, in the app (Run → Continue)."""
        run_dir = Path(run_dir) if run_dir is not None else self.continuable()
        if run_dir is None or self.live_run.live:
            return False
        self.opened.close()
        return self.live_run.continue_run(run_dir)

    def toggle_pause(self) -> None:
        self.live_run.toggle_pause()

    def pause(self) -> None:
        self.live_run.pause()

    def resume(self) -> None:
        self.live_run.resume()

    def stop(self) -> None:
        self.live_run.stop()

    def _on_run_started(self, _run_dir: str) -> None:
        self.dock.raise_()  # in front, should the user have tabbed it behind another panel
        self._count_timer.stop()  # the run's own count is shown

    # ---- run folders ---------------------------------------------------------------------------
    def open_run(self, path: str | os.PathLike | None = None) -> bool:
        """Show a run folder in the plots (followed live if another process writes it). While
        a run is training, the folder is added as a compared run instead."""
        if path is None:
            path = self.ask_existing_directory("Open run folder", str(self.runs.root()))
            if not path:
                return False
        path = Path(path)
        if self.live_run.live:
            added = self.compare_runs([path])
            if added:
                self.host.show_status(f"Training is running: {path.name} is shown as a "
                                      "compared run", 8000)
            return added
        return self.opened.open(path)

    def _close_view(self) -> None:
        self.opened.close()

    def compare_runs(self, paths=None) -> bool:
        if paths is None:
            path = self.ask_existing_directory("Add a run folder to compare",
                                               str(self.runs.root()))
            if not path:
                return False
            paths = [path]
        added, problems = self.compare.add_all(paths)
        if problems:
            self.host.dialogs.error("Cannot compare", "\n".join(problems))
        if added:
            self.host.show_status("Comparing with " + ", ".join(added), 8000)
        return bool(added)

    def clear_comparison(self) -> None:
        self.compare.clear()

    def choose_runs_folder(self, folder: str | os.PathLike | None = None) -> bool:
        """Where the next runs go (remembered); the default is the app's data folder."""
        if folder is None:
            folder = self.ask_directory("Write new runs into this folder",
                                        str(self.runs.root()))
            if not folder:
                return False
        self.runs.choose(folder)
        self.panel.set_runs_root(str(self.runs.root()))
        self.host.show_status(f"New runs go to {self.runs.root()}", 8000)
        return True

    # ---- the document --------------------------------------------------------------------------
    def _on_document_changed(self) -> None:
        """Before any run is shown, the spectrum places the document's levels at their
        designed frequency (what its empty-state text promises); a run replaces them. The
        parameter count follows the edits."""
        document = self.host.document
        if self.live_run.live:
            return
        if document.is_valid and self.run_dir is None and not self.plots.spectrum.has_data():
            self.plots.spectrum.set_levels(levels_in_order(document.model))
        self._count_timer.start()

    def _count_parameters(self) -> None:
        document = self.host.document
        if self.live_run.live:
            return
        base_dir = Path(document.path).parent if document.path else None
        self.panel.set_parameters(parameter_count(document.snapshot(), base_dir=base_dir)
                                  if document.is_valid else None)

    def _on_project_replaced(self) -> None:
        """Another project replaced the document (New, Open, a preset, a lesson): the plots
        and the panel showed the previous project's run, so they are cleared. Nothing is
        lost: the run folder stays on disk and File → Open Run shows it again."""
        if self.live_run.live:
            return  # the document is locked while a run is live; nothing to clear
        previous = self.run_dir
        self.opened.close()
        self.compare.clear()
        self.live_run.run_dir = None
        self.plots.start([], label="this run")
        self.panel.reset()
        self.panel.set_run_folder("")
        self.panel.set_device("–")
        self.panel.set_metric_name("")
        self._on_document_changed()
        self._count_timer.stop()
        self._count_parameters()
        self.panel.show_status(
            "Ready. Press Run to train the model on its task."
            + (f"\nThe previous project's run stays in its folder, {previous.name} (File → "
               "Open Run shows it again)." if previous is not None else ""))
        self.panel.status.setToolTip(str(previous) if previous is not None else "")
        self._sync()

    # ---- exports -------------------------------------------------------------------------------
    def export_model(self, dest: str | os.PathLike | None = None) -> list[Path]:
        return self.exports.export_model(dest)

    def export_plots(self, folder: str | os.PathLike | None = None) -> list[Path]:
        return self.exports.export_plots(folder)

    def export_plot(self, dock, folder: str | os.PathLike | None = None) -> list[Path]:
        return self.exports.export_plot(dock, folder)

    # ---- closing -------------------------------------------------------------------------
    def can_close(self) -> bool:
        """The window's close guard: a live run is stopped (after asking) before closing."""
        if not self.live_run.live:
            self.opened.close()
            return True
        if not self.host.dialogs.question("Training is running", "A run is training. Stop it "
                                          "(the run folder stays resumable) and close?"):
            return False
        self.shutdown()
        return True

    def shutdown(self) -> None:
        """Stop everything this controller started and join every thread."""
        self.live_run.shutdown()
        self.opened.close()


SWITCH_INTERVAL_S = 0.001


def install_training(window: TrainingHost,
                     runs_root: str | os.PathLike | None = None) -> TrainingController:
    """Attach the training panel, the plot docks, the run/open/compare/export actions and the
    close guard to ``window`` (the MainWindow); returns the controller (kept as
    ``window.training``).
    ``runs_root``: where runs go (default: the user's choice, else the app's data folder)."""
    # The training thread runs Python between its torch calls; with the default 5 ms switch
    # interval the GUI thread can wait that long for the interpreter lock at each of the many
    # hand-overs of a redraw. 1 ms lowered the largest event-loop stall under load (97 -> 50
    # ms, bench/gui.py) at no cost in tokens/s.
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    controller = TrainingController(window, runs_root)
    window.place_docks(controller.dock, controller.plots)  # their toggles join View → Panels
    a = window.actions
    window.add_actions(MenuPlace.RUN_CONTROL, [a["run.continue"]])
    window.add_actions(MenuPlace.RUN, [a["run.open_run"], a["run.compare"],
                                       a["run.clear_compare"], a["run.runs_folder"]])
    window.add_actions(MenuPlace.FILE_OPEN, [a["run.open_run"]])
    window.add_actions(MenuPlace.FILE_EXPORT, [a["run.export_model"], a["run.export_plots"]])
    window.add_path_opener(is_run_dir, controller.open_run)
    window.add_close_guard(controller.can_close)
    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(controller.shutdown)
    window.set_training_available(True)
    window.training = controller
    # torch's lazy initialisation (~150 ms holding the GIL) on the GUI thread, once the
    # window is up, instead of in the first run's thread.
    QTimer.singleShot(0, warm_up_torch)
    return controller


__all__ = ["TrainingController", "install_training", "LOCK_REASON"]
