"""The model's parameter count, recounted after each edit without blocking the window.

    counter = ParameterCounter(document)
    counter.counted.connect(lambda text, tip: ...)   # "121 544", or "–" with the reason

The count is ``nlstudio.build.count_parameters`` (the model built on the ``meta`` device: the
number training will optimise). It runs in a short-lived Python thread that touches no Qt
object; the window polls for its result, so a count that finishes after the window is gone
reaches nothing. Edits during a count are counted once it ends (only the newest document).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from nlstudio.build import build_task, count_parameters
from nlstudio.project import parse_project
from nlstudio.widgets.document import Document
from nlstudio.widgets.format import grouped

DEBOUNCE_MS = 250  # a burst of edits (a spin box held down) is counted once
POLL_MS = 40


class _Count:
    """One count in its own thread: ``result`` is (count or None, error text)."""

    def __init__(self, snapshot: dict, base_dir: str | None, cache: dict) -> None:
        self.result: tuple[int | None, str] | None = None
        # Not a daemon: an interpreter that exits mid-count waits for it (well under a
        # second) instead of killing a thread inside torch.
        self._thread = threading.Thread(target=self._run, args=(snapshot, base_dir, cache),
                                        name="nlstudio-parameter-count")
        self._thread.start()

    def _run(self, snapshot: dict, base_dir: str | None, cache: dict) -> None:
        try:
            project = parse_project(snapshot)
            # The task only sizes the embedding and the head; building one may read data
            # (a corpus, a data set), so the last one is kept for the next edits.
            key = json.dumps([snapshot.get("task"), project.train.seq_len, project.train.seed,
                              base_dir], sort_keys=True, default=str)
            if cache.get("key") != key:
                cache.clear()
                cache.update(key=key, task=build_task(project, base_dir))
            self.result = (count_parameters(project, cache["task"]), "")
        except Exception as exc:  # noqa: BLE001 - shown as the reason there is no count
            self.result = (None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class ParameterCounter(QObject):
    counted = Signal(str, str)  # the count as shown ("121 544" or "–"), and a tooltip

    def __init__(self, document: Document, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("parameterCounter")
        self.document = document
        self.count: int | None = None  # the last count (None: none yet, or not countable)
        self.text, self.tip = "–", "counting…"
        self._running: _Count | None = None
        self._stale = False
        self._cache: dict = {}
        self._debounce = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self._debounce.timeout.connect(self._start)
        self._poll = QTimer(self, interval=POLL_MS)
        self._poll.timeout.connect(self._collect)
        document.changed.connect(self.request)
        self.request()

    def request(self) -> None:
        """Count again soon (after the edits of a burst have stopped)."""
        self._debounce.start()

    def busy(self) -> bool:
        return self._running is not None or self._debounce.isActive()

    def _start(self) -> None:
        if self._running is not None:
            self._stale = True  # count again when this one ends
            return
        if not self.document.is_valid:
            n = len(self.document.faults)
            self._show(None, f"fix {n} problem{'s' if n != 1 else ''} first to count the "
                             "parameters")
            return
        base_dir = str(Path(self.document.path).parent) if self.document.path else None
        self._running = _Count(self.document.snapshot(), base_dir, self._cache)
        self._poll.start()

    def _collect(self) -> None:
        count = self._running
        if count is None or not count.done():
            return
        self._running = None
        self._poll.stop()
        if self._stale:
            self._stale = False
            self._start()
            return
        n, error = count.result or (None, "the count failed")
        self._show(n, error or "trainable parameters of the model (nlstudio.build."
                               "count_parameters): embeddings, every level, the output head")

    def _show(self, n: int | None, tip: str) -> None:
        self.count = n
        self.text = "–" if n is None else grouped(n)
        self.tip = tip
        self.counted.emit(self.text, tip)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop counting (the window closes): wait for a running count to end."""
        self._debounce.stop()
        self._poll.stop()
        if self._running is not None:
            self._running.join(timeout)
            self._running = None
