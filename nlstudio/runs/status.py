"""status.json: what a run folder says about its writer (state, step, pid, host), written
atomically by the trainer, read by anyone (the GUI's panel and follower, a resume)."""
from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

from nlstudio.fileio import atomic_write_text
from nlstudio.run_state import RunState
from nlstudio.runs.layout import STATUS_FILE
from nlstudio.untrusted import STATUS_CAP, FileRefused, read_bytes

# The fields of status.json and their types: a damaged or hand-made file gives {} or only its
# well-typed fields.
_FIELDS = {"state": str, "message": str, "host": str, "step": int, "total_steps": int,
           "pid": int, "updated": float}
MAX_MESSAGE = 2000
_STATES = frozenset(s.value for s in RunState)
#: Run folders this process has open for writing (a status naming our own pid is live only
#: for these: a run of ours that died without a last status is not).
_WRITING: set[Path] = set()


def mark_writing(run_dir: Path, writing: bool) -> None:
    key = Path(run_dir).resolve()
    (_WRITING.add if writing else _WRITING.discard)(key)


def write_status(run_dir: Path, state: RunState, step: int, total_steps: int,
                 message: str = "") -> None:
    text = json.dumps({
        "state": RunState(state).value, "step": int(step), "total_steps": int(total_steps),
        "message": message[:MAX_MESSAGE], "pid": os.getpid(), "host": socket.gethostname(),
        "updated": time.time()}, ensure_ascii=True)
    atomic_write_text(Path(run_dir) / STATUS_FILE, text, point="status.write")


def _field_ok(key: str, value) -> bool:
    kind = _FIELDS[key]
    if isinstance(value, bool):
        return False
    if kind is int:  # steps and pids fit a C int (progress bars, os.kill)
        return isinstance(value, int) and 0 <= value < 2**31
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    if not isinstance(value, str):
        return False
    if key == "state":
        return value in _STATES
    return len(value) <= MAX_MESSAGE


def read_status(run_dir: str | os.PathLike) -> dict:
    """The well-typed fields of a run's status.json; {} when it is missing or unreadable
    (a FIFO, a device, too large, not JSON)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = json.loads(read_bytes(path, STATUS_CAP).decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # FileRefused is a ValueError
        return {}
    if not isinstance(status, dict):
        return {}
    return {k: v for k, v in status.items() if k in _FIELDS and _field_ok(k, v)}


def status_state(status: dict) -> RunState | None:
    try:
        return RunState(status.get("state"))
    except ValueError:
        return None


def is_live(run_dir: str | os.PathLike, stale_after_s: float = 30.0) -> bool:
    """Whether another process is still writing this run (its status says running or paused
    and, on this host, its pid is alive; elsewhere, it was updated recently)."""
    status = read_status(run_dir)
    state = status_state(status)
    if state is None or not state.live:
        return False
    pid = status.get("pid")
    if status.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0:
        if pid == os.getpid():
            return Path(run_dir).resolve() in _WRITING
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return time.time() - float(status.get("updated", 0)) < stale_after_s


__all__ = ["write_status", "read_status", "is_live", "status_state", "FileRefused"]
