"""The glue between the main window's document and actions, the training worker, the training
panel, the plot docks, run folders and exports.

    controller = install_training(window)      # once, after the window is built

What it needs from the window (``widgets/main_window.py`` provides all of it):

- ``window.actions``: the ActionRegistry with ``run.start``, ``run.pause``, ``run.stop`` (it
  adds ``run.open_run``, ``run.compare``, ``run.clear_compare``, ``run.export_model``,
  ``run.export_plots``);
- ``window.document``: ``snapshot()``, ``is_valid``, ``faults``, ``path``, ``name``,
  ``set_locked(locked, reason)``;
- ``window.set_training_available(True)``: run.start then follows validity and the lock;
- ``window.close_guards`` (a list of ``() -> bool``) and ``window.path_openers`` (a list of
  ``(accepts(path), open(path))``);
- ``window.dialogs``: ``error(title, text)``, ``info(title, text)``, ``question(title, text)``;
- optional: ``window.run_menu``, ``window.panels_menu``, a QMenu named ``fileMenu``.
"""
from __future__ import annotations

import math
import os
import sys
import traceback
from pathlib import Path

from PySide6.QtCore import QByteArray, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QFileDialog, QMainWindow, QMenu, QToolButton

from nlstudio import events as ev
from nlstudio.graph import levels_in_order
from nlstudio.runs import PLOTS_DIR, RunError, default_run_dir, is_run_dir, read_status
from nlstudio.widgets import export as exports
from nlstudio.widgets.plots.dock import PlotSet
from nlstudio.widgets.run_view import CompareRuns, RunView
from nlstudio.widgets.training_panel import TrainingDock, format_duration
from nlstudio.widgets.worker import Delivery, TrainingSession, warm_up_torch

LOCK_REASON = "Training is running"
IDLE, RUNNING, PAUSED, STOPPING = "idle", "running", "paused", "stopping"


class TrainingController(QObject):
    stateChanged = Signal(str)
    runStarted = Signal(str)  # run folder
    runEnded = Signal(object)  # RunResult, or an error message (str)
    exported = Signal(list)  # paths written by the last export

    def __init__(self, window: QMainWindow, runs_root: str | os.PathLike | None = None) -> None:
        super().__init__(window)
        self.setObjectName("trainingController")
        self.window = window
        self.runs_root: Path | None = Path(runs_root) if runs_root else None
        # Passed to the core Trainer (e.g. snapshot_interval_s); tests and the bench adjust.
        # A snapshot every 1/45 s at most (≈0.2 ms of the training thread each): fresh data
        # for every frame of a 30 Hz redraw when steps are fast, nothing extra when slow.
        self.trainer_options: dict = {"snapshot_interval_s": 1 / 45}
        self.state = IDLE
        self.session: TrainingSession | None = None
        self.run_dir: Path | None = None  # the live run's folder, or the opened run's
        self.last_progress: ev.Progress | None = None
        self.last_result: object = None
        self.view: RunView | None = None
        self.deliveries = 0
        self._pause_icon = None

        self.dock = TrainingDock(window)
        self.panel = self.dock.panel
        self.plots = PlotSet(self)
        self.compare = CompareRuns(self.plots, self)
        # A directory chooser that tests can replace: (title, start) -> path or "".
        self.ask_directory = lambda title, start: QFileDialog.getExistingDirectory(
            self.window, title, start)

        a = window.actions
        self.run_action: QAction = a["run.start"]
        self.pause_action: QAction = a["run.pause"]
        self.stop_action: QAction = a["run.stop"]
        self.open_action = a.add("run.open_run", "Open R&un…", shortcut="Ctrl+Shift+O",
                                 tip="Open a run folder: its curves, forgetting and ablation "
                                     "(followed live while another process trains it)")
        self.compare_action = a.add("run.compare", "&Compare Runs…",
                                    tip="Overlay the curves of other run folders")
        self.clear_compare_action = a.add("run.clear_compare", "Clear Comparison",
                                          tip="Remove the compared runs' curves",
                                          enabled=False)
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
        self.open_action.triggered.connect(lambda: self.open_run())
        self.compare_action.triggered.connect(lambda: self.compare_runs())
        self.clear_compare_action.triggered.connect(self.clear_comparison)
        self.export_model_action.triggered.connect(lambda: self.export_model())
        self.export_plots_action.triggered.connect(lambda: self.export_plots())
        self.compare.changed.connect(
            lambda paths: self.clear_compare_action.setEnabled(bool(paths)))
        self.panel.bind_actions(self.run_action, self.pause_action, self.stop_action)
        for dock in self.plots.docks:
            button = QToolButton()
            button.setObjectName(f"{dock.key}ExportButton")
            button.setText("Export…")
            button.setToolTip("Save this plot as PNG and SVG, and its data as CSV")
            button.clicked.connect(lambda _c=False, d=dock: self.export_plot(d))
            dock.toolbar.addWidget(button)
        self._set_state(IDLE)
        window.document.changed.connect(self._preview_levels)
        window.document.loaded.connect(self._preview_levels)
        self._preview_levels()

    def _preview_levels(self) -> None:
        """Before any run is shown, the spectrum places the document's levels at their
        designed frequency (what its empty-state text promises); a run replaces them."""
        document = self.window.document
        if (self.session is not None or self.view is not None
                or self.plots.spectrum.has_data() or not document.is_valid):
            return
        self.plots.spectrum.set_levels(levels_in_order(document.model))

    # ---- state -----------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.session is not None

    def _set_state(self, state: str) -> None:
        self.state = state
        live = state in (RUNNING, PAUSED)
        self.pause_action.setEnabled(live)
        self.pause_action.setText("&Resume" if state == PAUSED else "&Pause")
        if state == PAUSED and self._pause_icon is None:
            self._pause_icon = self.pause_action.icon()
            self.pause_action.setIcon(self.run_action.icon())  # ▶ resumes
        elif state != PAUSED and self._pause_icon is not None:
            self.pause_action.setIcon(self._pause_icon)
            self._pause_icon = None
        self.pause_action.setToolTip("Resume training (F6)" if state == PAUSED
                                     else "Pause training at the end of this step (F6)")
        self.stop_action.setEnabled(live)
        self.open_action.setEnabled(True)
        self.export_model_action.setEnabled(self.run_dir is not None)
        self.stateChanged.emit(state)

    def _lock(self, locked: bool) -> None:
        self.window.document.set_locked(locked, LOCK_REASON if locked else "")
        self.panel.set_locked(locked)

    # ---- a run -----------------------------------------------------------------------------
    def default_runs_root(self) -> Path:
        if self.runs_root is not None:
            return self.runs_root
        doc_path = self.window.document.path
        if doc_path:
            return Path(doc_path).parent / "runs"
        cwd = Path.cwd()
        if os.access(cwd, os.W_OK):
            return cwd / "runs"
        return Path.home() / "NL Studio" / "runs"

    def start(self, steps: int | None = None, out: str | os.PathLike | None = None) -> bool:
        """Train the document's project in the background. False (and says why) when it
        cannot start."""
        if self.session is not None:
            return False
        document = self.window.document
        if not document.is_valid:
            faults = document.faults
            self._error("Cannot train yet", "Fix the model first:\n" + "\n".join(
                "• " + f.text for f in faults[:8]))
            return False
        data = document.snapshot()
        base_dir = Path(document.path).parent if document.path else None
        try:
            warm_up_torch()
            if out is None:
                out = default_run_dir(data.get("name") or "run", self.default_runs_root())
            from nlstudio.trainer import Trainer

            trainer = Trainer(data, out=out, steps=steps, base_dir=base_dir, snapshots=True,
                              **self.trainer_options)
        except Exception as exc:  # ProjectError, TrainError, OSError...: one clear message
            self._error("Cannot start training", _message(exc))
            return False

        self._close_view()
        self.last_progress = None
        self.last_result = None
        self.run_dir = Path(trainer.run_dir)
        self.plots.start(levels_in_order(data["model"]), label=self.run_dir.name)
        self.panel.reset()
        self.panel.set_run_folder(str(self.run_dir))
        self.panel.set_device("starting…")
        self.panel.set_progress(0, trainer.total_steps)
        self.panel.show_status(f"Starting: building the model and the task "
                               f"({trainer.total_steps:,} steps)…".replace(",", "\u2009"))

        session = TrainingSession(trainer, self)
        session.delivered.connect(lambda d, s=session: self._on_delivery(s, d))
        session.ended.connect(lambda r, s=session: self._on_ended(s, r))
        self.session = session
        self._lock(True)
        self._set_state(RUNNING)
        self.dock.raise_()  # the panel shares a tab with the inspector, read-only now
        session.start()
        self.runStarted.emit(str(self.run_dir))
        self._status_bar(f"Training {data.get('name') or 'the model'} → {self.run_dir}")
        return True

    def toggle_pause(self) -> None:
        if self.state == PAUSED:
            self.resume()
        else:
            self.pause()

    def pause(self) -> None:
        if self.session is None or self.state != RUNNING:
            return
        self.session.pause()
        self._set_state(PAUSED)
        step = self.last_progress.step if self.last_progress else 0
        self.panel.show_status(f"Paused at step {step:,} (the step under way finishes "
                               "first). Resume to go on, Stop to end the run.".replace(",", "\u2009"))

    def resume(self) -> None:
        if self.session is None or self.state != PAUSED:
            return
        self.session.resume()
        self._set_state(RUNNING)
        self.panel.show_status("Training…")

    def stop(self) -> None:
        if self.session is None or self.state == STOPPING:
            return
        self.session.stop()
        self._set_state(STOPPING)
        self.pause_action.setEnabled(False)
        self.stop_action.setEnabled(False)
        self.panel.show_status("Stopping after the current step…")

    def _on_delivery(self, session: TrainingSession, delivery: Delivery) -> None:
        if session is not self.session:
            return  # a late tick of a run already let go of
        run_id = session.run_id
        events = [e for e in delivery.events if getattr(e, "run_id", run_id) == run_id]
        self.deliveries += 1
        for event in events:
            if isinstance(event, ev.Started):
                self.panel.show_started(event)
                if self.state == RUNNING:
                    self.panel.show_status("Training…")
                if list(event.levels) != self.plots.level_order:
                    specs = {str(lv["id"]): lv for lv in session.trainer.doc["model"]["levels"]}
                    self.plots.level_order = [lid for lid in event.levels if lid in specs]
                    self.plots.ablation.level_order = list(self.plots.level_order)
            elif isinstance(event, ev.Evaluation):
                self.panel.set_metric_name(event.metric_name)
        progress = delivery.progress
        if progress is not None and progress.run_id == run_id:
            self.last_progress = progress
            self.panel.show_progress(progress)
        snapshot = delivery.snapshot if (delivery.snapshot is not None
                                         and delivery.snapshot.run_id == run_id) else None
        self.plots.apply(snapshot, events)
        for event in events:
            if isinstance(event, ev.MetricsRow) and not self.export_model_action.isEnabled():
                self.export_model_action.setEnabled(True)  # weights exist from the first row

    def _on_ended(self, session: TrainingSession, result: object) -> None:
        if session is not self.session:
            return
        self.session = None
        self.last_result = result
        session.deleteLater()
        self._lock(False)
        self._set_state(IDLE)
        if isinstance(result, str):  # the worker caught what the trainer could not report
            self.panel.show_status(f"Training failed: {result}", error=True)
            self._status_bar("Training failed")
        elif result.reason == "failed":
            self.panel.show_status(f"Training failed at step {result.step}: {result.message}\n"
                                   f"The run folder keeps everything up to the last good step.",
                                   error=True)
            self._status_bar(f"Training failed at step {result.step}")
        elif result.reason == "stopped":
            self.panel.show_status(
                f"Stopped at step {result.step:,}. The run folder can be resumed with\n"
                f"nlstudio train --resume {result.run_dir}".replace(",", "\u2009"))
            self._status_bar(f"Stopped at step {result.step}")
        else:
            took = self.last_progress.elapsed_s if self.last_progress else math.nan
            loss = "–" if not math.isfinite(result.loss) else f"{result.loss:.4f}"
            self.panel.show_status(f"Finished {result.step:,} steps in {format_duration(took)}; "
                                   f"final loss {loss}.".replace(",", "\u2009"))
            self._status_bar(f"Training finished: {result.run_dir}")
        if not isinstance(result, str):
            self.panel.set_progress(result.step, self.panel.progress.maximum())
        self.runEnded.emit(result)

    # ---- run folders ---------------------------------------------------------------------
    def open_run(self, path: str | os.PathLike | None = None) -> bool:
        """Show a run folder in the plots (followed live if another process writes it). While
        a run is training, the folder is added as a compared run instead."""
        if path is None:
            path = self.ask_directory("Open run folder", str(self.default_runs_root()))
            if not path:
                return False
        path = Path(path)
        if self.session is not None:
            added = self.compare_runs([path])
            if added:
                self._status_bar(f"Training is running: {path.name} is shown as a compared run")
            return added
        try:
            view = RunView(path, self.plots, self)
        except RunError as exc:
            self._error("Cannot open run", str(exc))
            return False
        self._close_view()
        self.view = view
        view.statusChanged.connect(self._on_view_status)
        view.followingChanged.connect(self._on_following)
        try:
            view.open()
        except Exception as exc:
            self.view = None
            view.close()
            self._error("Cannot open run", _message(exc))
            return False
        self.run_dir = path
        self.panel.reset()
        self.panel.set_run_folder(str(path))
        self.panel.set_device("another process" if view.following else "–")
        self._on_view_status(view.status or read_status(path))
        self._set_state(IDLE)
        self._status_bar(f"Opened run {path}")
        return True

    def _on_view_status(self, status: dict) -> None:
        view = self.view
        if view is None:
            return
        step, total = int(status.get("step", 0) or 0), int(status.get("total_steps", 0) or 0)
        if total:
            self.panel.set_progress(step, total)
        state = status.get("state", "unknown")
        message = status.get("message") or ""
        if view.following:
            text = (f"Following {view.name} live ({state}, written by process "
                    f"{status.get('pid', '?')}).")
        elif state in ("running", "paused"):  # status.json says so, but its writer is gone
            steps = f"{step:,}".replace(",", "\u2009")
            text = (f"Opened run {view.name}: interrupted at step {steps} (the process that "
                    f"trained it ended without closing it). Continue it with\n"
                    f"nlstudio train --resume {view.path}")
        else:
            text = f"Opened run {view.name}: {state}" + (f" — {message}" if message else ".")
        self.panel.show_status(text, error=state == "failed")

    def _on_following(self, following: bool) -> None:
        if not following and self.view is not None:
            self._on_view_status(self.view.status)
            self.panel.set_device("–")

    def _close_view(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view.deleteLater()
            self.view = None

    def compare_runs(self, paths=None) -> bool:
        if paths is None:
            path = self.ask_directory("Add a run folder to compare", str(self.default_runs_root()))
            if not path:
                return False
            paths = [path]
        added, problems = [], []
        for path in paths:
            try:
                added.append(self.compare.add(path))
            except Exception as exc:
                problems.append(_message(exc))
        if problems:
            self._error("Cannot compare", "\n".join(problems))
        if added:
            self._status_bar("Comparing with " + ", ".join(added))
        return bool(added)

    def clear_comparison(self) -> None:
        self.compare.clear()

    # ---- exports ---------------------------------------------------------------------------
    def export_model(self, dest: str | os.PathLike | None = None) -> list[Path]:
        if self.run_dir is None:
            self._error("Nothing to export", "Train a model or open a run folder first.")
            return []
        if dest is None:
            dest = self.ask_directory("Export the model into a folder", str(self.run_dir))
            if not dest:
                return []
        try:
            written = exports.export_model(self.run_dir, dest)
        except Exception as exc:
            self._error("Export failed", _message(exc))
            return []
        from nlstudio.runs import MODEL_FILE

        step = _saved_step(Path(dest) / MODEL_FILE)
        when = f" (weights of step {step})" if step is not None else ""
        self._told("Model exported", f"The model{when} was written to {Path(dest)}:\n"
                   + "\n".join(p.name for p in written)
                   + f"\n\nEvaluate it with: nlstudio eval {Path(dest)}", written)
        return written

    def export_plots(self, folder: str | os.PathLike | None = None) -> list[Path]:
        """Every plot (PNG, SVG, CSV) into ``folder`` (default: the run's plots/)."""
        if folder is None:
            if self.run_dir is not None:
                folder = self.run_dir / PLOTS_DIR
            else:
                folder = self.ask_directory("Export all plots into a folder", str(Path.cwd()))
                if not folder:
                    return []
        try:
            written = exports.export_plots(self.plots.docks, folder)
        except Exception as exc:
            self._error("Export failed", _message(exc))
            return []
        self._told("Plots exported", f"{len(written)} files (PNG, SVG and CSV of "
                   f"{len(self.plots.docks)} plots) were written to {Path(folder)}.", written)
        return written

    def export_plot(self, dock, folder: str | os.PathLike | None = None) -> list[Path]:
        if folder is None:
            start = str(self.run_dir / PLOTS_DIR) if self.run_dir else str(Path.cwd())
            folder = self.ask_directory(f"Export “{dock.title}” into a folder", start)
            if not folder:
                return []
        try:
            written = exports.export_plot(dock, folder)
        except Exception as exc:
            self._error("Export failed", _message(exc))
            return []
        self._told("Plot exported", f"{dock.title} was written to {Path(folder)}:\n"
                   + "\n".join(p.name for p in written), written)
        return written

    # ---- closing -------------------------------------------------------------------------
    def can_close(self) -> bool:
        """The window's close guard: a live run is stopped (after asking) before closing."""
        if self.session is None:
            self._close_view()
            return True
        dialogs = getattr(self.window, "dialogs", None)
        ask = getattr(dialogs, "question", None)
        if ask is not None and not ask("Training is running",
                                       "A run is training. Stop it (the run folder stays "
                                       "resumable) and close?"):
            return False
        self.shutdown()
        return True

    def shutdown(self) -> None:
        """Stop everything this controller started and join every thread."""
        session, self.session = self.session, None
        if session is not None:
            session.shutdown()
            self._lock(False)
            self._set_state(IDLE)
        self._close_view()

    # ---- messages ----------------------------------------------------------------------------
    def _status_bar(self, text: str, ms: int = 8000) -> None:
        bar = self.window.statusBar() if hasattr(self.window, "statusBar") else None
        if bar is not None:
            bar.showMessage(text, ms)

    def _error(self, title: str, text: str) -> None:
        self._status_bar(f"{title}: {text.splitlines()[0] if text else ''}")
        dialogs = getattr(self.window, "dialogs", None)
        if dialogs is not None and hasattr(dialogs, "error"):
            dialogs.error(title, text)

    def _told(self, title: str, text: str, written: list[Path]) -> None:
        self._status_bar(f"{title}: {Path(written[0]).parent}" if written else title)
        self.exported.emit(list(written))
        dialogs = getattr(self.window, "dialogs", None)
        if dialogs is not None and hasattr(dialogs, "info"):
            dialogs.info(title, text)


def _message(exc: BaseException) -> str:
    """One line for the user; unexpected errors also go to stderr with their traceback."""
    from nlstudio.project import ProjectError

    known = (ProjectError, RunError, exports.ExportError, OSError, ValueError)
    try:
        from nlstudio.trainer import TrainError

        known = known + (TrainError,)
    except ImportError:
        pass
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    if not isinstance(exc, known):
        traceback.print_exc(file=sys.stderr)
        return f"{type(exc).__name__}: {exc}"
    return str(exc)


def _saved_step(path: Path) -> int | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return int((handle.metadata() or {}).get("step"))
    except Exception:
        return None


def _insert_after(menu: QMenu, anchor: QAction | None, actions: list[QAction]) -> None:
    items = menu.actions()
    if anchor in items and items.index(anchor) + 1 < len(items):
        menu.insertActions(items[items.index(anchor) + 1], actions)
    else:
        menu.addActions(actions)


def _insert_before(menu: QMenu, anchor: QAction | None, actions: list[QAction]) -> None:
    """Before ``anchor`` (and the separator above it), as a group of its own."""
    items = menu.actions()
    if anchor not in items:
        menu.addSeparator()
        menu.addActions(actions)
        return
    index = items.index(anchor)
    before = items[index - 1] if index and items[index - 1].isSeparator() else anchor
    menu.insertActions(before, actions)
    menu.insertSeparator(actions[0])


SWITCH_INTERVAL_S = 0.001


def install_training(window: QMainWindow, runs_root: str | os.PathLike | None = None
                     ) -> TrainingController:
    """Attach the training panel, the plot docks, the run/open/compare/export actions and the
    close guard to ``window``; returns the controller (kept as ``window.training``)."""
    # The training thread runs Python between its torch calls; with the default 5 ms switch
    # interval the GUI thread can wait that long for the interpreter lock at each of the many
    # hand-overs of a redraw. 1 ms lowered the largest event-loop stall under load (97 -> 50
    # ms, bench/gui.py) at no cost in tokens/s.
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    controller = TrainingController(window, runs_root)
    inspector = getattr(window, "inspector_dock", None)
    if inspector is not None:
        # Split before tabifying: splitting a tabbed dock would add to its tab group.
        controller.plots.arrange(window, beside=inspector)
        window.tabifyDockWidget(inspector, controller.dock)
        controller.dock.raise_()
    else:
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, controller.dock)
        controller.plots.arrange(window, beside=controller.dock)
    panels = getattr(window, "panels_menu", None)
    if panels is not None:
        panels.addSeparator()
        panels.addAction(controller.dock.toggleViewAction())
        for action in controller.plots.toggle_actions():
            panels.addAction(action)
    a = window.actions
    run_menu = getattr(window, "run_menu", None)
    if run_menu is not None:
        run_menu.addSeparator()
        run_menu.addActions([a["run.open_run"], a["run.compare"], a["run.clear_compare"]])
    file_menu = window.findChild(QMenu, "fileMenu")
    if file_menu is not None:
        _insert_after(file_menu, a.get("file.open"), [a["run.open_run"]])
        _insert_before(file_menu, a.get("file.quit"),
                       [a["run.export_model"], a["run.export_plots"]])
    elif run_menu is not None:
        run_menu.addActions([a["run.export_model"], a["run.export_plots"]])
    openers = getattr(window, "path_openers", None)
    if openers is not None:
        openers.insert(0, (is_run_dir, controller.open_run))
    guards = getattr(window, "close_guards", None)
    if guards is not None:
        guards.append(controller.can_close)
    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(controller.shutdown)
    # The window restored its saved dock layout before these docks existed: restore it again
    # now that they do (first launch: nothing saved, the arrangement above stands).
    settings = getattr(window, "settings", None)
    state = settings.value("windowState") if settings is not None else None
    if isinstance(state, QByteArray):
        window.restoreState(state)
    if hasattr(window, "set_training_available"):
        window.set_training_available(True)
    window.training = controller
    # torch's lazy initialisation (~150 ms holding the GIL) on the GUI thread, once the
    # window is up, instead of in the first run's thread.
    QTimer.singleShot(0, warm_up_torch)
    return controller


__all__ = ["TrainingController", "install_training", "LOCK_REASON"]
