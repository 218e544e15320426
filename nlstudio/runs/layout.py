"""What a run folder holds: its file names, and the one error type of run folders.

::

    runs/<name>-<timestamp>/
      project.nlproj        the exact project that was trained
      metrics.csv           step, wall_s, loss, metric, tokens_per_s, <id>.updates, <id>.update_norm
      eval.csv              step, task, metric                     (forgetting curves)
      delay.csv             step, ablation, level, delay, recall   (recall by delay)
      checkpoints/
        step-000000000040/  the newest complete checkpoint (one folder, renamed into place whole)
          model.safetensors   weights (no pickle); metadata: step
          state.pt            optimizer and RNG state, loaded with weights_only=True
          checkpoint.json     step, world size, wall time, logged-row counts of the three CSVs,
                              the sizes of the two files above
      model.safetensors     the newest checkpoint's weights (a hard link), for export and tools
      status.json           state (running/paused/stopped/finished/failed), step, message, pid
      error.log             the traceback of a failed run
      plots/                exported figures and their data

Older run folders keep their two-file layout (``model.safetensors`` and ``checkpoint.pt`` at
the top); they still open, evaluate and resume (their next checkpoint uses the folder above).
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from nlstudio.printable import one_line

PROJECT_FILE = "project.nlproj"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.csv"
DELAY_FILE = "delay.csv"
MODEL_FILE = "model.safetensors"
STATUS_FILE = "status.json"
ERROR_LOG = "error.log"
PLOTS_DIR = "plots"
CHECKPOINTS_DIR = "checkpoints"
#: The checkpoint file of run folders written before checkpoint folders (read, never written).
CHECKPOINT_FILE = "checkpoint.pt"

CSV_FILES = (METRICS_FILE, EVAL_FILE, DELAY_FILE)
#: Every name a run writes at the top of its folder: a folder holding only these (and no
#: checkpoint) is a run killed before its first checkpoint, which a new run may reuse.
RUN_ENTRIES = frozenset({PROJECT_FILE, *CSV_FILES, MODEL_FILE, STATUS_FILE, ERROR_LOG,
                         PLOTS_DIR, CHECKPOINTS_DIR})


class RunError(ValueError):
    """A run folder that cannot be read or resumed. ``str(err)`` is one printable line naming
    the file: ``RunError(path, "what is wrong")`` or ``RunError("file: what is wrong")``."""

    def __init__(self, source: str | os.PathLike, message: str | None = None):
        if message is None:
            source, message = "", str(source)
        self.source, self.message = str(source), message
        super().__init__(one_line(self.source, message))


def default_run_dir(project_name: str, root: str | os.PathLike = "runs") -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", project_name).strip("-.").lower()[:80] or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{slug}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{slug}-{stamp}-{n}"
    return path


def is_run_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / PROJECT_FILE).is_file()
