"""Run folders: written incrementally by the trainer, read back (or followed live) by anyone.

::

    runs/<name>-<timestamp>/
      project.nlproj      the exact project that was trained
      metrics.csv         step, wall_s, loss, metric, tokens_per_s, <id>.updates, <id>.update_norm
      eval.csv            step, task, metric           (forgetting curves)
      delay.csv           step, silenced, delay, recall (recall by delay; per-level ablation)
      model.safetensors   weights (no pickle), metadata: step
      checkpoint.pt       outer optimizer + step, loaded with weights_only=True
      status.json         state (running/paused/stopped/finished/failed), step, message, pid
      plots/              exported figures and their data

Every CSV row is flushed when written, so a crash loses at most the rows since the last
checkpoint (which is written at every logging interval) and another process can follow the
run while it is written.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlstudio.fileio import atomic_write_text, atomic_write_with

PROJECT_FILE = "project.nlproj"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.csv"
DELAY_FILE = "delay.csv"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
STATUS_FILE = "status.json"
PLOTS_DIR = "plots"

BASE_METRIC_COLUMNS = ("step", "wall_s", "loss", "metric", "tokens_per_s")
EVAL_COLUMNS = ("step", "task", "metric")
DELAY_COLUMNS = ("step", "silenced", "delay", "recall")
CHECKPOINT_FORMAT = 1


class RunError(ValueError):
    """A run folder that cannot be read or resumed; the message names the file and the fault."""


def metric_columns(level_ids) -> list[str]:
    cols = list(BASE_METRIC_COLUMNS)
    for lid in level_ids:
        cols += [f"{lid}.updates", f"{lid}.update_norm"]
    return cols


def default_run_dir(project_name: str, root: str | os.PathLike = "runs") -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", project_name).strip("-").lower() or "run"
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


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if abs(value) >= 1e-4 or value == 0 else f"{value:.6e}"
    return str(value)


class _CsvAppender:
    """Appends rows to a CSV file, writing the header once, flushing every row."""

    def __init__(self, path: Path, columns):
        self.path, self.columns = path, list(columns)
        new = not path.exists() or path.stat().st_size == 0
        self._fh = open(path, "a", newline="", encoding="utf-8")
        if new:
            self._fh.write(",".join(self.columns) + "\n")
            self._fh.flush()

    def write(self, row: dict) -> None:
        self._fh.write(",".join(_fmt(row.get(c, "")) for c in self.columns) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class RunWriter:
    """Creates (or reopens, for resume) a run folder and writes into it."""

    def __init__(self, run_dir: str | os.PathLike, project_doc: dict, level_ids, *,
                 resume_step: int | None = None):
        from nlstudio.project import save_project

        self.path = Path(run_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / PLOTS_DIR).mkdir(exist_ok=True)
        if resume_step is None:
            save_project(project_doc, self.path / PROJECT_FILE)
        else:
            truncate_after(self.path, resume_step)
        self.metrics = _CsvAppender(self.path / METRICS_FILE, metric_columns(level_ids))
        self.eval = _CsvAppender(self.path / EVAL_FILE, EVAL_COLUMNS)
        self.delay = _CsvAppender(self.path / DELAY_FILE, DELAY_COLUMNS)

    def write_metrics(self, row: dict) -> None:
        self.metrics.write(row)

    def write_eval(self, step: int, rows, delays=(), recall=None) -> None:
        for task, metric in rows:
            self.eval.write({"step": step, "task": task, "metric": float(metric)})
        for silenced, values in (recall or {}).items():
            for delay, value in zip(delays, values):
                self.delay.write({"step": step, "silenced": silenced or "none",
                                  "delay": int(delay), "recall": float(value)})

    def save_checkpoint(self, model, optimizer, step: int, *, world_size: int = 1,
                        extra: dict | None = None) -> None:
        """Weights to safetensors, the optimizer to checkpoint.pt: each written atomically,
        the weights first, so the checkpoint never names a step the weights don't have."""
        import torch
        from safetensors.torch import save_file

        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        state = _dedupe_shared(state)
        atomic_write_with(self.path / MODEL_FILE, lambda p: save_file(
            state, str(p), metadata={"step": str(step), "format": "nlstudio.weights"}))
        ckpt = {"format": CHECKPOINT_FORMAT, "step": int(step), "world_size": int(world_size),
                "optimizer": optimizer.state_dict() if optimizer is not None else {},
                "extra": extra or {}}
        atomic_write_with(self.path / CHECKPOINT_FILE, lambda p: torch.save(ckpt, str(p)))

    def set_status(self, state: str, step: int, total_steps: int, message: str = "") -> None:
        atomic_write_text(self.path / STATUS_FILE, json.dumps({
            "state": state, "step": int(step), "total_steps": int(total_steps),
            "message": message, "pid": os.getpid(), "host": socket.gethostname(),
            "updated": time.time()}))

    def close(self) -> None:
        for appender in (self.metrics, self.eval, self.delay):
            appender.close()


def _dedupe_shared(state: dict) -> dict:
    """safetensors refuses tensors that share memory (tied embedding/head): keep one name."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride()) if tensor.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = name
        out[name] = tensor.clone() if tensor.numel() else tensor
    return out


def truncate_after(run_dir: Path, step: int) -> None:
    """Drop CSV rows logged after ``step`` (the checkpoint a resume starts from)."""
    for name in (METRICS_FILE, EVAL_FILE, DELAY_FILE):
        path = run_dir / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if not lines:
            continue
        kept = [lines[0]]
        for line in lines[1:]:
            head = line.split(",", 1)[0]
            try:
                if int(float(head)) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a torn last line from a crash
        atomic_write_text(path, "\n".join(kept) + "\n")


# ------------------------------------------------------------------------------------------
# Reading


def _parse_csv(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return [], []
    return rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]


def _to_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def metrics_columns_from_rows(header, rows) -> dict[str, np.ndarray]:
    return {name: np.array([_to_float(r[i]) for r in rows], dtype=np.float64)
            for i, name in enumerate(header)}


@dataclass
class Run:
    path: Path
    project: object  # nlstudio.project.Project
    metrics: dict[str, np.ndarray]
    eval_rows: list[tuple[int, str, float]]
    delay_rows: list[tuple[int, str, int, float]]
    status: dict = field(default_factory=dict)
    checkpoint_step: int | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def base_dir(self) -> Path | None:
        """The folder the trained project's relative paths (a charlm text_file) resolve
        against: recorded in the checkpoint, since the project copy lives in the run."""
        try:
            saved = (read_checkpoint(self.path).get("extra") or {}).get("base_dir")
        except RunError:
            return None
        return Path(saved) if saved else None

    @property
    def steps(self) -> int:
        s = self.metrics.get("step")
        return int(s[-1]) if s is not None and len(s) else 0

    def load_model(self, device: str = "cpu"):
        """The trained model: rebuilt from project.nlproj, weights from model.safetensors."""
        from nlstudio.build import build_model

        model = build_model(self.project, base_dir=self.base_dir)
        load_weights_into(model, self.path)
        return model.to(device)


def load_weights_into(model, run_dir: str | os.PathLike) -> int:
    """Loads model.safetensors of a run into ``model`` (strict: every tensor must match);
    returns the step the weights were saved at."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights = Path(run_dir) / MODEL_FILE
    if not weights.exists():
        raise RunError(f"{weights}: no weights saved yet")
    try:
        state = load_file(str(weights), device="cpu")
        with safe_open(str(weights), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise RunError(f"{weights}: not a readable safetensors file ({exc})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise RunError(f"{weights}: weights do not fit the project's model ({exc})") from None
    missing = [m for m in missing if not _is_tied_alias(model, m, state)]
    if missing or unexpected:
        raise RunError(f"{weights}: weights do not match the project "
                       f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    try:
        return int(meta.get("step", 0))
    except ValueError:
        return 0


def _is_tied_alias(model, name: str, state: dict) -> bool:
    """A missing key that shares storage with a saved one (tied embedding/head)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(name)
    if target is None:
        return False
    return any(p is target and other in state for other, p in params.items() if other != name)


def read_checkpoint(run_dir: str | os.PathLike) -> dict:
    import torch

    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise RunError(f"{path}: no checkpoint to resume from")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(f"{path}: refused: not a plain NL Studio checkpoint "
                       f"({type(exc).__name__}); checkpoints are loaded without running code"
                       ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not an NL Studio checkpoint (format "
                       f"{ckpt.get('format') if isinstance(ckpt, dict) else '?'})")
    return ckpt


# The fields of status.json and their types: a reader (the GUI's panel and follower, a resume)
# relies on them, so a damaged or hand-made file gives {} or only its well-typed fields.
_STATUS_FIELDS = {"state": str, "message": str, "host": str, "step": int, "total_steps": int,
                  "pid": int, "updated": float}


def _status_field_ok(key: str, value) -> bool:
    kind = _STATUS_FIELDS[key]
    if isinstance(value, bool):
        return False
    if kind is int:  # steps and pids fit a C int (progress bars, os.kill)
        return isinstance(value, int) and 0 <= value < 2**31
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, str)


def read_status(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(status, dict):
        return {}
    return {k: v for k, v in status.items() if k in _STATUS_FIELDS and _status_field_ok(k, v)}


def load_run(path: str | os.PathLike) -> Run:
    """A run folder read back: project, metrics columns, eval and delay rows, status."""
    from nlstudio.project import load_project

    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: not a run folder")
    if not (path / PROJECT_FILE).exists():
        raise RunError(f"{path}: not a run folder (no {PROJECT_FILE})")
    project = load_project(path / PROJECT_FILE)
    follower = RunFollower(path)
    update = follower.poll()
    ckpt_step = None
    if (path / CHECKPOINT_FILE).exists():
        try:
            ckpt_step = int(read_checkpoint(path)["step"])
        except RunError:
            ckpt_step = None
    return Run(path=path, project=project, metrics=follower.metrics_columns(),
               eval_rows=update.eval_rows, delay_rows=update.delay_rows,
               status=update.status or {}, checkpoint_step=ckpt_step)


# ------------------------------------------------------------------------------------------
# Following a run that another process is writing


@dataclass
class RunUpdate:
    metrics_rows: list[dict] = field(default_factory=list)
    eval_rows: list[tuple[int, str, float]] = field(default_factory=list)
    delay_rows: list[tuple[int, str, int, float]] = field(default_factory=list)
    status: dict | None = None
    reset: bool = False  # the files were truncated (a resume): earlier rows are void

    def __bool__(self) -> bool:
        return bool(self.metrics_rows or self.eval_rows or self.delay_rows or self.status
                    or self.reset)


class _Tail:
    """Reads only what was appended to a CSV since the last call; keeps a torn last line."""

    def __init__(self, path: Path):
        self.path, self.offset, self.header, self._partial = path, 0, None, ""
        self._ino = None
        self.was_reset = False

    def read_rows(self) -> list[list[str]]:
        self.was_reset = False
        try:
            st = self.path.stat()
        except OSError:
            return []
        size = st.st_size
        if self._ino is not None and (st.st_ino != self._ino or size < self.offset):
            # replaced or truncated (a resume rewrote it): start over
            self.offset, self.header, self._partial = 0, None, ""
            self.was_reset = True
        self._ino = st.st_ino
        if size == self.offset:
            return []
        # errors="replace": a damaged byte spoils its row (dropped below), not the whole file
        with open(self.path, "r", encoding="utf-8", errors="replace", newline="") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
            self.offset = fh.tell()
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # "" when the chunk ended with a newline
        rows = [r for r in csv.reader(lines) if r]
        if self.header is None and rows:
            self.header = rows.pop(0)
        return [r for r in rows if self.header and len(r) == len(self.header)]


class RunFollower:
    """Polls a run folder for new rows (used by load_run and by the GUI to follow live)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._metrics = _Tail(self.path / METRICS_FILE)
        self._eval = _Tail(self.path / EVAL_FILE)
        self._delay = _Tail(self.path / DELAY_FILE)
        self._status_mtime = None
        self._rows: list[list[str]] = []

    @property
    def metric_header(self) -> list[str]:
        return list(self._metrics.header or [])

    def metrics_columns(self) -> dict[str, np.ndarray]:
        return metrics_columns_from_rows(self.metric_header, self._rows)

    def poll(self) -> RunUpdate:
        update = RunUpdate()
        new = self._metrics.read_rows()
        eval_new, delay_new = self._eval.read_rows(), self._delay.read_rows()
        if self._metrics.was_reset or self._eval.was_reset or self._delay.was_reset:
            update.reset = True
            if self._metrics.was_reset:
                self._rows = []
        if new:
            self._rows.extend(new)
            header = self.metric_header
            update.metrics_rows = [{h: _to_float(v) for h, v in zip(header, r)} for r in new]
        for r in eval_new:
            try:
                update.eval_rows.append((int(float(r[0])), r[1], _to_float(r[2])))
            except (ValueError, IndexError, OverflowError):  # OverflowError: a step of inf
                continue
        for r in delay_new:
            try:
                update.delay_rows.append((int(float(r[0])), r[1], int(float(r[2])),
                                          _to_float(r[3])))
            except (ValueError, IndexError, OverflowError):
                continue
        status_path = self.path / STATUS_FILE
        try:
            mtime = status_path.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime is not None and mtime != self._status_mtime:
            self._status_mtime = mtime
            update.status = read_status(self.path)
        return update

    def is_live(self, stale_after_s: float = 30.0) -> bool:
        """Whether another process is still writing this run."""
        status = read_status(self.path)
        if status.get("state") not in ("running", "paused"):
            return False
        pid = status.get("pid")
        same_host = status.get("host") == socket.gethostname()
        if same_host and isinstance(pid, int) and pid > 0:
            try:
                os.kill(pid, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return time.time() - float(status.get("updated", 0)) < stale_after_s
