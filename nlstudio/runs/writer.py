"""Writing a run folder: created for a new run, or reopened at a checkpoint for a resume.

A resume first validates everything it will rely on (the checkpoint's fields, its counts
against the CSV files) and only then cuts the CSVs back to the rows that checkpoint counted
(to the rows of steps up to it, for older folders; to nothing, for a run killed before its
first checkpoint), so rows logged after it (lost evaluation rows included) are written again
by the steps that follow, exactly as the first time.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from nlstudio.crashpoints import crashpoint
from nlstudio.fileio import atomic_write_bytes, atomic_write_text
from nlstudio.run_state import RunState
from nlstudio.runs import checkpoint as ckpt_files
from nlstudio.runs.checkpoint import Checkpoint, latest_checkpoint
from nlstudio.runs.csvfile import CsvAppender, count_rows, cut_after_step, cut_to
from nlstudio.runs.layout import (CSV_FILES, DELAY_FILE, EVAL_FILE, METRICS_FILE, PLOTS_DIR,
                                  PROJECT_FILE, RUN_ENTRIES, RunError)
from nlstudio.runs.rows import (DELAY_COLUMNS, EVAL_COLUMNS, FULL_MODEL, LEGACY_DELAY_COLUMNS,
                                DelayRow, StepMetrics, delay_cells, format_cell, format_line,
                                metric_columns, parse_delay, parse_step, split_line)
from nlstudio.runs.status import is_live, mark_writing, write_status
from nlstudio.untrusted import CSV_CAP, FileRefused, read_bytes, regular_file_size


class RunWriter:
    """The one writer of a run folder (rank 0 of a distributed run)."""

    def __init__(self, run_dir: str | os.PathLike, level_ids, *, project_text: str | None = None,
                 resume_from: Checkpoint | None = None, log_every: int = 1):
        """``project_text``: a new run (the folder is created, the project copied in);
        otherwise a resume from ``resume_from`` (None: from step 0)."""
        self.path = Path(run_dir)
        self.level_ids = list(level_ids)
        rows = {name: 0 for name in CSV_FILES}
        if project_text is not None:
            problem = new_run_folder_problem(self.path)
            if problem:
                raise RunError(self.path, problem)
            if self.path.is_dir():
                _clear_for_reuse(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path / PROJECT_FILE, project_text)
        else:
            ckpt_files.remove_temporaries(self.path)
            rows = prepare_resume(self.path, resume_from, log_every)
            if resume_from is not None:
                ckpt_files.settle(self.path, resume_from)
        (self.path / PLOTS_DIR).mkdir(exist_ok=True)
        self.metrics = CsvAppender(self.path / METRICS_FILE, metric_columns(self.level_ids),
                                   rows[METRICS_FILE])
        self.eval = CsvAppender(self.path / EVAL_FILE, EVAL_COLUMNS, rows[EVAL_FILE])
        self.delay = CsvAppender(self.path / DELAY_FILE, DELAY_COLUMNS, rows[DELAY_FILE])
        mark_writing(self.path, True)

    @property
    def appenders(self) -> tuple[CsvAppender, ...]:
        return (self.metrics, self.eval, self.delay)

    def write_metrics(self, row: StepMetrics) -> None:
        self.metrics.append(row.cells(self.metrics.columns))

    def write_eval(self, step: int, rows, delays=(), ablations: dict | None = None) -> None:
        """eval.csv rows ``(task, metric)`` and delay.csv rows from ``ablations``:
        ``{"silence": {"": full-model recall, level: recall...}, "freeze": {level: ...}}``
        (each recall a sequence over ``delays``; ``""`` is the full model)."""
        for task, metric in rows:
            self.eval.append([format_cell(int(step)), format_cell(str(task)),
                              format_cell(float(metric))])
        crashpoint("eval.rows")
        for row in delay_rows(step, delays, ablations or {}):
            self.delay.append(delay_cells(row))

    def save_checkpoint(self, step: int, *, weights: dict, optimizer: dict, rng: dict,
                        info: dict) -> None:
        """The checkpoint of ``step``, counting the rows logged so far (fsynced first)."""
        for appender in self.appenders:
            appender.sync()
        rows = {a.path.name: (a.size, a.rows) for a in self.appenders}
        ckpt_files.write_checkpoint(self.path, step, weights=weights, optimizer=optimizer,
                                    rng=rng, info=info, rows=rows)

    def set_status(self, state: RunState, step: int, total_steps: int, message: str = "") -> None:
        write_status(self.path, state, step, total_steps, message)

    def close(self) -> None:
        for appender in self.appenders:
            appender.close()
        mark_writing(self.path, False)


def new_run_folder_problem(folder: Path) -> str | None:
    """Why a new run cannot be written into ``folder`` (None if it can). It can when the
    folder is missing or empty, or holds a run killed before it trained a step: only run
    files, no checkpoint past step 0, no exported plots, no live writer."""
    folder = Path(folder)
    if not folder.exists():
        return None
    if not folder.is_dir():
        return "exists and is not a folder (choose another --out)"
    entries = {name for name in os.listdir(folder) if not _is_temporary(name)}
    if not entries:
        return None
    try:
        ckpt = latest_checkpoint(folder)
        trained = ckpt is not None and ckpt.step > 0
    except RunError:
        trained = True
    if entries <= RUN_ENTRIES and not trained and not is_live(folder) \
            and not any((folder / PLOTS_DIR).glob("*")):
        return None
    return ("exists and is not an empty folder (choose another --out, or --resume to "
            "continue a run there)")


def _is_temporary(name: str) -> bool:
    """A temporary file of an atomic write (``.status.json.x1y2.tmp``) a kill left behind."""
    return name.startswith(".") and name.endswith(".tmp")


def _clear_for_reuse(run_dir: Path) -> None:
    """Empties the folder of a run killed before it trained a step (see above)."""
    for name in os.listdir(run_dir):
        if _is_temporary(name):
            (Path(run_dir) / name).unlink(missing_ok=True)
    for name in RUN_ENTRIES:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()


def delay_rows(step: int, delays, ablations: dict) -> list[DelayRow]:
    """delay.csv rows: the full model's once (``ablation`` "none"), then each ablation's."""
    full = next((by_level[""] for by_level in ablations.values() if "" in (by_level or {})),
                None)
    out = [DelayRow(int(step), FULL_MODEL, int(d), float(v), "none")
           for d, v in zip(delays, full or ())]
    for kind, by_level in ablations.items():
        for level, values in (by_level or {}).items():
            if level != "":
                out += [DelayRow(int(step), level, int(d), float(v), kind)
                        for d, v in zip(delays, values)]
    return out


def prepare_resume(run_dir: Path, ckpt: Checkpoint | None, log_every: int
                   ) -> dict[str, int]:
    """Validates ``ckpt`` against the CSV files, then cuts them back to it. Returns the rows
    each file keeps. Nothing is changed when validation fails."""
    if ckpt is None:  # killed before its first checkpoint: start over from step 0
        for name in CSV_FILES:
            (run_dir / name).unlink(missing_ok=True)
        return {name: 0 for name in CSV_FILES}
    if ckpt.rows is not None:
        check_rows(run_dir, ckpt, log_every)
        for name in CSV_FILES:
            cut_to(run_dir / name, ckpt.rows[name][0])
        return {name: ckpt.rows[name][1] for name in CSV_FILES}
    last = _last_logged_step(run_dir / METRICS_FILE, None)
    if ckpt.step > last + log_every:
        raise RunError(ckpt.path, f"step {ckpt.step} is beyond the logged rows (the last "
                                  f"logged step is {last}, logged every {log_every})")
    for name in CSV_FILES:
        cut_after_step(run_dir / name, ckpt.step)
    _upgrade_delay_file(run_dir)
    return {name: _count(run_dir / name) for name in CSV_FILES}


def check_rows(run_dir: Path, ckpt: Checkpoint, log_every: int) -> None:
    """A checkpoint's row counts against the files: each file holds at least the bytes
    counted, and the last counted metrics row is at most one logging interval before the
    checkpoint's step (a step beyond the logged rows is refused)."""
    for name in CSV_FILES:
        nbytes, nrows = ckpt.rows[name]
        try:
            size = regular_file_size(run_dir / name)
        except FileNotFoundError:
            size = -1
        except FileRefused as exc:
            raise RunError(run_dir / name, exc.reason) from None
        if size < nbytes:
            raise RunError(run_dir / name, f"holds {max(size, 0)} bytes but the checkpoint of "
                                           f"step {ckpt.step} counted {nbytes}: logged rows "
                                           "were lost, so the run cannot continue exactly")
    nbytes, nrows = ckpt.rows[METRICS_FILE]
    last = _last_logged_step(run_dir / METRICS_FILE, nbytes)
    if not last <= ckpt.step <= last + log_every:
        raise RunError(ckpt.path, f"step {ckpt.step} does not follow the logged rows (the "
                                  f"last row it counted is step {last}, logged every "
                                  f"{log_every})")


def _last_logged_step(path: Path, nbytes: int | None) -> int:
    """The largest step among the first ``nbytes`` of metrics.csv (0 when none parses)."""
    try:
        data = read_bytes(path, nbytes if nbytes is not None else CSV_CAP,
                          truncate=nbytes is not None) if nbytes != 0 else b""
    except FileNotFoundError:
        return 0
    except FileRefused as exc:
        raise RunError(path, exc.reason) from None
    last = 0
    for line in data.split(b"\n")[1:]:
        cells = split_line(line)
        step = parse_step(cells[0]) if cells else None
        if step is not None:
            last = max(last, step)
    return last


def _count(path: Path) -> int:
    try:
        return count_rows(read_bytes(path, CSV_CAP))
    except (FileNotFoundError, FileRefused):
        return 0


def _upgrade_delay_file(run_dir: Path) -> None:
    """delay.csv of an older run (``step,silenced,delay,recall``) rewritten in the current
    format, so the resumed run appends rows of the same shape."""
    path = run_dir / DELAY_FILE
    try:
        data = read_bytes(path, CSV_CAP)
    except (FileNotFoundError, FileRefused):
        return
    lines = data.split(b"\n")
    if split_line(lines[0]) != list(LEGACY_DELAY_COLUMNS):
        return
    out = [format_line(DELAY_COLUMNS)]
    for line in lines[1:]:
        row = parse_delay(list(LEGACY_DELAY_COLUMNS), split_line(line) or [])
        if row is not None:
            out.append(format_line(delay_cells(row)))
    atomic_write_bytes(path, b"".join(out), point="csv.rewrite")
