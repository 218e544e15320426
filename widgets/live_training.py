"""Training in the app: the document's project (Run) or a stopped run folder taken up again
(Continue, through the trainer's ``resume=``), in the worker thread, shown in the training
panel and the plots while it lives.

    live = LiveTraining(host, panel, plots, runs)
    live.start()                  # Run: a new run folder under the runs folder
    live.continue_run(run_dir)    # Continue: the same folder, from its last checkpoint
    live.pause(); live.resume(); live.stop()
    live.shutdown()               # stop and join the thread (closing the window)

``state`` is a :class:`~nlstudio.run_state.RunState`: IDLE while no run is live, else RUNNING
or PAUSED as the trainer confirmed it (``StateChanged``); ``stopping`` is set between Stop and
the run's end.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from nlstudio import events as ev
from nlstudio.build import build_task, count_parameters
from nlstudio.graph import levels_in_order
from nlstudio.project import parse_project
from nlstudio.run_state import EndReason, RunState
from nlstudio.runs import default_run_dir, load_run, read_status
from nlstudio.trainer import Trainer
from nlstudio.widgets.format import grouped
from nlstudio.widgets.messages import user_message
from nlstudio.widgets.plots.dock import PlotSet
from nlstudio.widgets.run_location import RunLocation
from nlstudio.widgets.training_host import TrainingHost
from nlstudio.widgets.training_panel import TrainingPanel, format_duration
from nlstudio.widgets.worker import Delivery, TrainingSession, warm_up_torch

LOCK_REASON = "Training is running"


class LiveTraining(QObject):
    stateChanged = Signal(str)  # RunState value
    runStarted = Signal(str)  # run folder
    runEnded = Signal(object)  # RunResult, or an error message (str)

    def __init__(self, host: TrainingHost, panel: TrainingPanel, plots: PlotSet,
                 runs: RunLocation, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("liveTraining")
        self.host = host
        self.panel = panel
        self.plots = plots
        self.runs = runs
        # Passed to the core Trainer (e.g. snapshot_interval_s); tests and the bench adjust.
        # A snapshot every 1/45 s at most (≈0.2 ms of the training thread each): fresh data
        # for every frame of a 30 Hz redraw when steps are fast, nothing extra when slow.
        self.trainer_options: dict = {"snapshot_interval_s": 1 / 45}
        self.state = RunState.IDLE
        self.stopping = False
        self.session: TrainingSession | None = None
        self.run_dir: Path | None = None  # the live run's folder (kept after it ends)
        self.last_progress: ev.Progress | None = None
        self.last_result: object = None
        self.deliveries = 0

    @property
    def live(self) -> bool:
        return self.session is not None

    # ---- starting ---------------------------------------------------------------------------
    def start(self, steps: int | None = None, out: str | os.PathLike | None = None) -> bool:
        """Train the document's project in a new run folder. False (and says why) when it
        cannot start."""
        if self.session is not None:
            return False
        document = self.host.document
        if not document.is_valid:
            self._error("Cannot train yet", "Fix the model first:\n" + "\n".join(
                "• " + f.text for f in document.faults[:8]))
            return False
        data = document.snapshot()
        base_dir = Path(document.path).parent if document.path else None

        def make():
            target = out if out is not None else default_run_dir(data.get("name") or "run",
                                                                  self.runs.root())
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            return Trainer(data, out=target, steps=steps, base_dir=base_dir, snapshots=True,
                           **self.trainer_options)

        return self._begin(make, "Starting: building the model and the task")

    def continue_run(self, run_dir: str | os.PathLike, steps: int | None = None) -> bool:
        """Train a stopped (or interrupted) run folder on from its last checkpoint, with the
        project saved in it, to its own total steps."""
        if self.session is not None:
            return False
        run_dir = Path(run_dir)
        total = steps or int(read_status(run_dir).get("total_steps") or 0) or None

        def make():
            return Trainer(resume=run_dir, steps=total, snapshots=True, **self.trainer_options)

        return self._begin(make, "Continuing: loading the checkpoint", history=True)

    def _begin(self, make, starting: str, history: bool = False) -> bool:
        try:
            warm_up_torch()
            trainer = make()
        except Exception as exc:  # ProjectError, TrainError, OSError...: one clear message
            self._error("Cannot start training", user_message(exc))
            return False
        self.last_progress = None
        self.last_result = None
        self.run_dir = Path(trainer.run_dir)
        self.plots.start(levels_in_order(trainer.doc["model"]), label=self.run_dir.name)
        if history:
            show_history(self.plots, self.run_dir, trainer.start_step)
        self.panel.reset()
        self.panel.set_run_folder(str(self.run_dir))
        self.panel.set_device("starting…")
        self.panel.set_progress(trainer.start_step, trainer.total_steps)
        self.panel.set_parameters(parameter_count(trainer.doc, trainer.task))
        metric = str(getattr(trainer.task, "metric_name", "") or "metric")
        self.panel.set_metric_name(metric)
        self.plots.loss.set_metric_name(metric)
        self.plots.forgetting.set_metric_name(metric)
        self.panel.show_status(f"{starting} ({grouped(trainer.total_steps)} steps)…")

        session = TrainingSession(trainer, self)
        session.delivered.connect(lambda d, s=session: self._on_delivery(s, d))
        session.ended.connect(lambda r, s=session: self._on_ended(s, r))
        self.session = session
        self.stopping = False
        self._lock(True)
        self._set_state(RunState.RUNNING)
        session.start()
        self.runStarted.emit(str(self.run_dir))
        self.host.show_status(f"Training {trainer.doc.get('name') or 'the model'} → "
                               f"{self.run_dir}")
        return True

    # ---- control ---------------------------------------------------------------------------
    def toggle_pause(self) -> None:
        if self.state == RunState.PAUSED:
            self.resume()
        else:
            self.pause()

    def pause(self) -> None:
        if self.session is None or self.state != RunState.RUNNING or self.stopping:
            return
        self.session.pause()
        self._set_state(RunState.PAUSED)  # asked for: Pause becomes Resume at once
        # "Paused at step N" waits for the trainer's StateChanged: the step under way ends
        # first, and N is then the step the progress bar shows.
        self.panel.show_status("Pausing after the step under way…")

    def resume(self) -> None:
        if self.session is None or self.state != RunState.PAUSED or self.stopping:
            return
        self.session.resume()
        self._set_state(RunState.RUNNING)
        self.panel.show_status("Training…")

    def stop(self) -> None:
        if self.session is None or self.stopping:
            return
        self.session.stop()
        self.stopping = True
        self.stateChanged.emit(str(self.state))
        self.panel.show_status("Stopping after the current step…")

    def shutdown(self) -> None:
        """Stop the live run (if any) and join its thread."""
        session, self.session = self.session, None
        if session is not None:
            session.shutdown()
            self._lock(False)
            self.stopping = False
            self._set_state(RunState.IDLE)

    # ---- events ----------------------------------------------------------------------------
    def _on_delivery(self, session: TrainingSession, delivery: Delivery) -> None:
        if session is not self.session:
            return  # a late tick of a run already let go of
        run_id = session.run_id
        events = [e for e in delivery.events if getattr(e, "run_id", run_id) == run_id]
        self.deliveries += 1
        progress = delivery.progress if (delivery.progress is not None
                                         and delivery.progress.run_id == run_id) else None
        if progress is not None:
            self.last_progress = progress
            self.panel.show_progress(progress)
        for event in events:
            if isinstance(event, ev.Started):
                self.panel.show_started(event)
                if self.state == RunState.RUNNING and not self.stopping:
                    self.panel.show_status("Training…")
                if list(event.levels) != self.plots.level_order:
                    known = {str(lv["id"]) for lv in session.trainer.doc["model"]["levels"]}
                    self.plots.level_order = [lid for lid in event.levels if lid in known]
                    self.plots.ablation.level_order = list(self.plots.level_order)
            elif isinstance(event, ev.Evaluation):
                self.panel.set_metric_name(event.metric_name)
            elif isinstance(event, ev.StateChanged):
                self._on_state(event, session)
        snapshot = delivery.snapshot if (delivery.snapshot is not None
                                         and delivery.snapshot.run_id == run_id) else None
        self.plots.apply(snapshot, events)

    def _on_state(self, event: ev.StateChanged, session: TrainingSession) -> None:
        """The trainer confirmed a pause or a resume at a step boundary. A confirmation the
        user has already overtaken (Resume before the pause took effect) is stale."""
        if self.stopping:
            return
        if event.state == RunState.PAUSED and session.paused:
            self._set_state(RunState.PAUSED)
            self.panel.show_paused(event.step, session.trainer.total_steps)
            self.panel.show_status(f"Paused at step {grouped(event.step)}. "
                                   "Resume to go on, Stop to end the run.")
        elif event.state == RunState.RUNNING and not session.paused:
            if self.state != RunState.RUNNING:
                self._set_state(RunState.RUNNING)
            self.panel.show_status("Training…")

    def _on_ended(self, session: TrainingSession, result: object) -> None:
        if session is not self.session:
            return
        self.session = None
        self.last_result = result
        self.stopping = False
        session.deleteLater()
        self._lock(False)
        if isinstance(result, str):  # the worker caught what the trainer could not report
            self.panel.show_status(f"Training failed: {result}", error=True)
            self.host.show_status("Training failed")
        elif result.reason == EndReason.FAILED:
            self.panel.show_status(f"Training failed at step {grouped(result.step)}: "
                                   f"{result.message}\nThe run folder keeps everything up to "
                                   f"the last good step.", error=True)
            self.host.show_status(f"Training failed at step {result.step}")
        elif result.reason == EndReason.STOPPED:
            self.panel.show_status(f"Stopped at step {grouped(result.step)}. Continue trains "
                                   "this run on from there; Run starts a new one.")
            self.panel.status.setToolTip(f"Headless: nlstudio train --resume {result.run_dir}")
            self.host.show_status(f"Stopped at step {result.step}")
        else:
            took = format_duration(self.last_progress.elapsed_s if self.last_progress
                                   else math.nan)
            loss = "–" if not math.isfinite(result.loss) else f"{result.loss:.4f}"
            first = session.trainer.start_step
            # The trainer's elapsed time is this session's: a continued run says which steps.
            done = (f"Finished {grouped(result.step)} steps in {took}" if not first else
                    f"Finished step {grouped(result.step)} (steps {grouped(first + 1)}–"
                    f"{grouped(result.step)} in {took})")
            self.panel.show_status(f"{done}; final loss {loss}.")
            self.host.show_status(f"Training finished: {result.run_dir}")
        if not isinstance(result, str):
            self.panel.set_progress(result.step, self.panel.progress.maximum())
        self._set_state(RunState.IDLE)
        self.runEnded.emit(result)

    # ---- helpers ---------------------------------------------------------------------------
    def _set_state(self, state: RunState) -> None:
        self.state = state
        self.stateChanged.emit(str(state))

    def _lock(self, locked: bool) -> None:
        self.host.document.set_locked(locked, LOCK_REASON if locked else "")
        self.panel.set_locked(locked)

    def _error(self, title: str, text: str) -> None:
        self.host.show_status(f"{title}: {text.splitlines()[0] if text else ''}")
        self.host.dialogs.error(title, text)


def parameter_count(doc: dict, task=None, base_dir=None) -> int | None:
    """``nlstudio.build.count_parameters`` of a project dict (None if it cannot be built)."""
    try:
        project = parse_project(doc)
        return int(count_parameters(project, task if task is not None
                                    else build_task(project, base_dir)))
    except Exception:  # noqa: BLE001 - an unbuildable project has no count to show
        return None


def show_history(plots: PlotSet, run_dir: Path, upto_step: int) -> None:
    """A run folder's rows up to ``upto_step`` into the plots (what a continued run has
    already done; the files' later rows are void and the trainer truncates them)."""
    try:
        run = load_run(run_dir)
    except Exception:  # noqa: BLE001 - the trainer opened it; a plot without history is fine
        return
    steps = run.metrics.get("step", np.zeros(0))
    keep = steps <= upto_step
    plots.loss.set_columns({k: np.asarray(v)[keep] for k, v in run.metrics.items()})
    eval_rows = [r for r in run.eval_rows if r[0] <= upto_step]
    delay_rows = [r for r in run.delay_rows if r[0] <= upto_step]
    plots.forgetting.set_rows(eval_rows, delay_rows)
    plots.ablation.set_delay_rows(delay_rows)
