"""The two vocabularies of a run's life, in one place.

``RunState`` is what a run folder's ``status.json`` says and what ``StateChanged`` events and
the trainer report while it lives; ``EndReason`` is why ``Trainer.run()`` returned
(``RunResult.reason``, ``Finished.reason``). Both are ``str`` enums, so they compare equal to
(and serialise as) their plain string values: ``RunState.RUNNING == "running"``.
"""
from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    IDLE = "idle"  # built, not started
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"  # ended early by the user or a signal; resumable
    FINISHED = "finished"  # reached its last step
    FAILED = "failed"  # diverged or crashed; the last good checkpoint stays resumable

    def __str__(self) -> str:
        return self.value

    @property
    def live(self) -> bool:
        return self in (RunState.RUNNING, RunState.PAUSED)


class EndReason(str, Enum):
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @property
    def final_state(self) -> RunState:
        """The ``status.json`` state a run that ended for this reason is left in."""
        return {EndReason.COMPLETED: RunState.FINISHED, EndReason.STOPPED: RunState.STOPPED,
                EndReason.FAILED: RunState.FAILED}[self]
