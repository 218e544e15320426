"""The core trainer in a background QThread (worker-object pattern), and how its events reach
the GUI thread without ever making training wait for the GUI.

    session = TrainingSession(trainer)          # a core ``nlstudio.trainer.Trainer``
    session.delivered.connect(on_delivery)      # Delivery: newest progress/snapshot + rare events
    session.ended.connect(on_end)               # RunResult (or an error message) once the thread is gone
    session.start(); session.pause(); session.resume(); session.stop()
    session.shutdown()                          # stop, quit and wait: never a running thread left

Coalescing (measured when this was built: a signal per step cut training 7-10×): the trainer's
callback only stores events in a lock-protected :class:`EventMailbox`: the newest
``Progress`` and ``Snapshot`` replace older ones, the rare events (``Started``,
``MetricsRow``, ``Evaluation``, ``Finished``, ``Failed``) are queued. A GUI-side QTimer pulls
whatever is there at ≈30 Hz and emits it as one :class:`Delivery`, so there is never a
backlog. The end of the run crosses threads as a queued signal. Events of any other run id are
dropped.
"""
from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass, field

import torch
from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

import nlstudio.trainer  # noqa: F401 - its import cost is paid with the GUI's, never in a worker
from nlstudio import events as ev
from nlstudio.threads import configure_torch

DELIVERY_INTERVAL_MS = 33  # ≈30 Hz

_THREADS: set[QThread] = set()  # every QThread this module started and has not joined


def running_threads() -> list[QThread]:
    """Our QThreads that are still running (tests fail when one is left behind)."""
    return [t for t in list(_THREADS) if t.isRunning()]


def worker_torch_threads() -> int:
    """Torch threads for the training thread: every core but one, which is left to the GUI."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


_warm = False


def warm_up_torch() -> None:
    """Initialise torch on the GUI thread, once (the trainer is imported with this module).

    torch's lazy initialisation holds the GIL for 130-190 ms; done in the training thread it
    would freeze the window at the start of the first run.
    """
    global _warm
    if _warm:
        return
    x = torch.ones(8, 8, requires_grad=True)
    (torch.tanh(x @ x).sum()).backward()
    _warm = True


_frozen = False


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic GC's reach while a run is live.

    A full collection of this process's heap (torch, Qt, pyqtgraph, the model) holds the GIL
    for 100-350 ms: measured, it was the largest event-loop stall during training. Frozen
    objects are not scanned; young objects are still collected as usual."""
    global _frozen
    gc.freeze()
    _frozen = True


def thaw_heap() -> None:
    """Give the frozen objects back to the collector once no run is live."""
    global _frozen
    if _frozen and not running_threads():
        gc.unfreeze()
        _frozen = False


@dataclass
class Delivery:
    """What one timer tick hands to the GUI: the newest progress and snapshot, if any arrived
    since the last tick, and every rare event, in order."""

    progress: ev.Progress | None = None
    snapshot: ev.Snapshot | None = None
    events: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.progress is not None or self.snapshot is not None or bool(self.events)


class EventMailbox:
    """The only state shared by the training thread and the GUI thread."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._lock = threading.Lock()
        self._progress: ev.Progress | None = None
        self._snapshot: ev.Snapshot | None = None
        self._events: list = []
        self.posted = 0  # events accepted (for benchmarks)

    def post(self, event) -> None:
        """Called by the trainer on its own thread: O(1), never blocks on the GUI."""
        if getattr(event, "run_id", None) != self.run_id:
            return
        with self._lock:
            self.posted += 1
            if isinstance(event, ev.Progress):
                self._progress = event
            elif isinstance(event, ev.Snapshot):
                self._snapshot = event
            else:
                self._events.append(event)

    def take(self) -> Delivery:
        with self._lock:
            out = Delivery(self._progress, self._snapshot, self._events)
            self._progress, self._snapshot, self._events = None, None, []
        return out


class _Worker(QObject):
    """Lives in the training thread; runs the trainer there."""

    done = Signal(object)  # RunResult, or str: an error the trainer itself could not report

    def __init__(self, trainer, threads: int) -> None:
        super().__init__()
        self._trainer = trainer
        self._threads = threads

    @Slot()
    def run(self) -> None:
        result: object
        try:
            # Thread-local (torch's OpenMP pool, the flush of subnormals): set here, in the thread
            # that trains.
            configure_torch(self._threads)
            result = self._trainer.run()
        except BaseException as exc:  # noqa: BLE001 - the GUI shows it; nothing may escape
            result = f"{type(exc).__name__}: {exc}"
        self.done.emit(result)


class TrainingSession(QObject):
    """One run of the trainer in its own QThread, seen from the GUI thread."""

    delivered = Signal(object)  # Delivery
    ended = Signal(object)  # RunResult | str, after the thread has finished

    def __init__(self, trainer, parent: QObject | None = None, *,
                 interval_ms: int = DELIVERY_INTERVAL_MS, threads: int | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainingSession")
        self.trainer = trainer
        self.run_id: str = trainer.run_id
        self.mailbox = EventMailbox(self.run_id)
        trainer.subscribe(self.mailbox.post)
        self.threads = threads or worker_torch_threads()
        self._thread: QThread | None = None
        self._worker: _Worker | None = None
        self._timer = QTimer(self)
        self._timer.setObjectName("trainingDeliveryTimer")
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)
        self.result: object = None
        self.started_at = 0.0
        self._ended = False

    # ---- control -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a session runs once; make a new one for a new run")
        warm_up_torch()
        freeze_heap()
        thread = QThread()
        thread.setObjectName(f"trainingThread-{self.run_id}")
        worker = _Worker(self.trainer, self.threads)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._thread, self._worker = thread, worker
        _THREADS.add(thread)
        self.started_at = time.perf_counter()
        thread.start()
        self._timer.start()

    def pause(self) -> None:
        self.trainer.pause()

    def resume(self) -> None:
        self.trainer.resume()

    def stop(self) -> None:
        self.trainer.stop()

    @property
    def paused(self) -> bool:
        return bool(self.trainer.paused)

    @property
    def is_running(self) -> bool:
        return self._thread is not None and not self._ended

    def shutdown(self, timeout_ms: int = 60000) -> bool:
        """Stop the run and join its thread (stop acts within one step). Returns True when the
        thread is gone. Pending events are dropped: whoever shuts down has stopped listening."""
        self.trainer.stop()
        thread = self._thread
        if thread is None or self._ended:
            return True
        deadline = time.monotonic() + timeout_ms / 1000
        # The worker's run() returns at the next step boundary; only then can the thread's
        # own event loop see quit().
        while thread.isRunning() and time.monotonic() < deadline:
            thread.quit()
            thread.wait(100)
        if thread.isRunning():
            return False
        self._timer.stop()
        self._finish_thread()
        self._ended = True
        return True

    # ---- GUI thread ----------------------------------------------------------------------
    @Slot()
    def flush(self) -> Delivery:
        """Pull what the trainer posted since the last tick and hand it on (≤ 30 Hz)."""
        delivery = self.mailbox.take()
        if delivery:
            if not self._ended and any(isinstance(e, ev.Started) for e in delivery.events):
                # the model and task the worker has just built (not after the run has ended:
                # the last flush of a run stopped before its first tick would freeze the heap
                # again after thaw_heap() and leave it frozen while no run is live)
                freeze_heap()
            self.delivered.emit(delivery)
        return delivery

    @Slot(object)
    def _on_done(self, result: object) -> None:
        if self._ended:
            return
        self._timer.stop()
        thread = self._thread
        if thread is not None:
            thread.quit()
            thread.wait()
        self._finish_thread()
        self._ended = True
        self.result = result
        self.flush()  # Finished/Failed and the last progress were posted before run() returned
        self.ended.emit(result)

    def _finish_thread(self) -> None:
        if self._thread is not None:
            _THREADS.discard(self._thread)
        self._worker = None
        thaw_heap()


class _FunctionWorker(QObject):
    done = Signal(object, object)  # result, error message (None on success)

    def __init__(self, fn, threads: int) -> None:
        super().__init__()
        self._fn = fn
        self._threads = threads

    @Slot()
    def run(self) -> None:
        try:
            configure_torch(self._threads)
            result, error = self._fn(), None
        except BaseException as exc:  # noqa: BLE001 - reported to the GUI as a message
            result, error = None, f"{type(exc).__name__}: {exc}"
        self.done.emit(result, error)


class FunctionJob(QObject):
    """A short background computation (e.g. one forward pass for an opened run's snapshot):
    ``fn()`` runs in its own QThread; ``finished(result, error)`` arrives on the GUI thread."""

    finished = Signal(object, object)

    def __init__(self, fn, parent: QObject | None = None, name: str = "job") -> None:
        super().__init__(parent)
        self.setObjectName(f"functionJob-{name}")
        self._thread = QThread()
        self._thread.setObjectName(f"jobThread-{name}")
        self._worker = _FunctionWorker(fn, worker_torch_threads())
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self.done = False
        self.result: object = None
        self.error: str | None = None

    def start(self) -> None:
        warm_up_torch()
        _THREADS.add(self._thread)
        self._thread.start()

    def wait(self, timeout_ms: int = 60000) -> bool:
        """Join the thread (the function cannot be interrupted; it is short by contract)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while self._thread.isRunning() and time.monotonic() < deadline:
            self._thread.quit()
            self._thread.wait(100)
        if not self._thread.isRunning():
            _THREADS.discard(self._thread)
            return True
        return False

    @Slot(object, object)
    def _on_done(self, result: object, error: object) -> None:
        self._thread.quit()
        self._thread.wait()
        _THREADS.discard(self._thread)
        self.done = True
        self.result, self.error = result, error
        self.finished.emit(result, error)
