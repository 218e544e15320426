"""Showing a run folder opened from disk (File → Open Run…, or a run folder given to the
window): its curves in the plots, followed live while another process writes it, and what
state it is in, in the training panel.

    opened = OpenedRun(host, panel, plots)
    opened.open(path)        # False (and one "Cannot open run" dialog) for a bad folder
    opened.close()           # stop following, join the snapshot thread
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from nlstudio.run_state import RunState
from nlstudio.runs import RunError, read_status
from nlstudio.widgets.format import grouped
from nlstudio.widgets.live_training import parameter_count
from nlstudio.widgets.messages import user_message
from nlstudio.widgets.plots.dock import PlotSet
from nlstudio.widgets.run_view import RunView
from nlstudio.widgets.training_host import TrainingHost
from nlstudio.widgets.training_panel import TrainingPanel


def interrupted(status: dict, following: bool) -> bool:
    """status.json says the run is live, but nobody writes it any more (killed, crashed)."""
    return not following and status.get("state") in (RunState.RUNNING, RunState.PAUSED)


class OpenedRun(QObject):
    changed = Signal()  # a run was opened or closed, or its status changed

    def __init__(self, host: TrainingHost, panel: TrainingPanel, plots: PlotSet,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("openedRun")
        self.host = host
        self.panel = panel
        self.plots = plots
        self.view: RunView | None = None

    @property
    def path(self) -> Path | None:
        return self.view.path if self.view is not None else None

    def open(self, path: str | os.PathLike) -> bool:
        path = Path(path)
        try:
            view = RunView(path, self.plots, self)
        except RunError as exc:
            self.host.dialogs.error("Cannot open run", str(exc))
            return False
        self.close()
        self.view = view
        view.statusChanged.connect(self._on_status)
        view.followingChanged.connect(self._on_following)
        try:
            view.open()
        except Exception as exc:  # noqa: BLE001 - a damaged run folder: one clear message
            self.view = None
            view.close()
            self.host.dialogs.error("Cannot open run", user_message(exc))
            return False
        self.panel.reset()
        self.panel.set_run_folder(str(path))
        self.panel.set_device("another process" if view.following else "–")
        self.panel.set_parameters(parameter_count(view.doc))
        self._on_status(view.status or read_status(path))
        self.host.show_status(f"Opened run {path}")
        self.changed.emit()
        return True

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view.deleteLater()
            self.view = None
            self.changed.emit()

    def status(self) -> dict:
        return dict(self.view.status) if self.view is not None else {}

    @property
    def following(self) -> bool:
        return self.view is not None and self.view.following

    def _on_status(self, status: dict) -> None:
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
        elif interrupted(status, view.following):
            text = (f"Opened run {view.name}: interrupted at step {grouped(step)} (the process "
                    f"that trained it ended without closing it). Continue trains it on from "
                    f"its last checkpoint; headless: nlstudio train --resume {view.path}")
        else:
            text = f"Opened run {view.name}: {state}" + (f" — {message}" if message else ".")
            if state == RunState.STOPPED:
                text += " Continue trains it on from there."
        self.panel.show_status(text, error=state == RunState.FAILED)
        self.changed.emit()

    def _on_following(self, following: bool) -> None:
        if not following and self.view is not None:
            self._on_status(self.view.status)
            self.panel.set_device("–")
