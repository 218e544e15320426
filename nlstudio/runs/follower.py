"""Following a run folder that another process is writing (and reading one once: load_run is a
follower polled once).

Each poll reads only the bytes appended since the last one, keeps a torn last line for the
next poll, and skips (and counts) rows that do not parse. When a file is replaced or shrinks
(a resume cut it back to its checkpoint) the follower starts that file over and says so
(``RunUpdate.reset``). Reads are bounded: at most ``CSV_CAP`` bytes per file, in chunks, and
a "line" longer than ``MAX_LINE`` is skipped without being kept.
"""
from __future__ import annotations

import math
import os
import stat
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlstudio.runs.layout import DELAY_FILE, EVAL_FILE, METRICS_FILE, STATUS_FILE
from nlstudio.runs.rows import (BASE_METRIC_COLUMNS, DelayRow, EvalRecord, LevelMetrics,
                                StepMetrics, parse_delay, parse_eval, parse_float, parse_step,
                                split_line)
from nlstudio.runs.status import is_live, read_status
from nlstudio.untrusted import CSV_CAP, FileRefused, read_bytes

CHUNK = 4 << 20
MAX_LINE = 1 << 20


class MetricsTable:
    """metrics.csv as columns of floats (8 bytes a cell, whatever the run's length)."""

    def __init__(self, header: list[str] | None = None):
        self.header = list(header or [])
        self.columns = {name: array("d") for name in self.header}
        self.n = 0

    def append(self, cells: list[str]) -> bool:
        if len(cells) != len(self.header) or "step" not in self.columns:
            return False
        step = parse_step(cells[self.header.index("step")])
        if step is None:
            return False
        for name, cell in zip(self.header, cells):
            self.columns[name].append(float(step) if name == "step" else parse_float(cell))
        self.n += 1
        return True

    @property
    def level_ids(self) -> list[str]:
        """The levels of the run, in the model's order (the trainer writes their columns in
        that order)."""
        return [name[: -len(".updates")] for name in self.header if name.endswith(".updates")]

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.array(col, dtype=np.float64) for name, col in self.columns.items()}

    def row(self, i: int) -> StepMetrics:
        value = {name: col[i] for name, col in self.columns.items()}
        levels = {}
        for name in self.header:
            if name.endswith(".updates"):
                lid = name[: -len(".updates")]
                u = value[name]
                levels[lid] = LevelMetrics(int(u) if math.isfinite(u) else None,
                                           value.get(f"{lid}.update_norm", math.nan))
        return StepMetrics(int(value["step"]), *(value.get(c, math.nan)
                                                 for c in BASE_METRIC_COLUMNS[1:]),
                           levels=levels)


@dataclass
class RunUpdate:
    """What a poll found. ``rows`` are typed; ``metrics_rows`` the same rows as flat dicts."""

    eval_rows: list[EvalRecord] = field(default_factory=list)
    delay_rows: list[DelayRow] = field(default_factory=list)
    status: dict | None = None
    reset: bool = False  # a file was cut back (a resume): rows read before are void
    _table: MetricsTable | None = field(default=None, repr=False)
    _span: tuple[int, int] = (0, 0)

    @property
    def rows(self) -> list[StepMetrics]:
        if self._table is None:
            return []
        return [self._table.row(i) for i in range(*self._span)]

    @property
    def metrics_rows(self) -> list[dict]:
        return [r.as_dict() for r in self.rows]

    def __bool__(self) -> bool:
        return bool(self._span[1] > self._span[0] or self.eval_rows or self.delay_rows
                    or self.status or self.reset)


class _Tail:
    """The new complete lines of one file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset, self.header, self._partial = 0, None, b""
        self._ino = None
        self._dropping = False  # inside an over-long line: skip up to its end
        self.was_reset = False
        self.skipped = 0  # lines that did not parse (the header's caller counts rows)
        self.capped = False  # the file is larger than CSV_CAP: the rest is not read

    def _start_over(self) -> None:
        self.offset, self.header, self._partial, self._dropping = 0, None, b"", False
        self.skipped, self.capped = 0, False
        self.was_reset = True

    def lines(self) -> list[bytes]:
        self.was_reset = False
        try:
            st = os.stat(self.path)
        except OSError:
            if self._ino is not None:  # removed (a resume from step 0): start over
                self._ino = None
                self._start_over()
            return []
        if not stat.S_ISREG(st.st_mode):
            return []
        if self._ino is not None and (st.st_ino != self._ino or st.st_size < self.offset):
            self._start_over()
        self._ino = st.st_ino
        out: list[bytes] = []
        while self.offset < st.st_size and not self.capped:
            budget = CSV_CAP - self.offset
            if budget <= 0:
                self.capped = True
                break
            try:
                data = read_bytes(self.path, min(CHUNK, budget, st.st_size - self.offset),
                                  offset=self.offset, truncate=True)
            except (OSError, FileRefused):
                break
            if not data:
                break
            self.offset += len(data)
            out += self._split(data)
        return out

    def _split(self, data: bytes) -> list[bytes]:
        parts = (self._partial + data).split(b"\n")
        self._partial = parts.pop()
        if self._dropping and parts:
            parts.pop(0)  # the end of an over-long line
            self._dropping = False
        if len(self._partial) > MAX_LINE:
            self._partial, self._dropping = b"", True
            self.skipped += 1
        return parts


class _CsvTail:
    """A _Tail whose rows are parsed (``parse(header, cells) -> row | None``)."""

    def __init__(self, path: Path, parse):
        self.tail, self.parse = _Tail(path), parse

    def rows(self, lines: list[bytes]) -> list:
        out = []
        for line in lines:
            cells = split_line(line)
            if self.tail.header is None:
                self.tail.header = cells or []
                continue
            row = self.parse(self.tail.header, cells) if cells is not None else None
            if row is not None:
                out.append(row)
            elif line:
                self.tail.skipped += 1
        return out


class RunFollower:
    """Polls a run folder for new rows (used by load_run and by the GUI to follow live)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._metrics = _Tail(self.path / METRICS_FILE)
        self._eval = _CsvTail(self.path / EVAL_FILE, parse_eval)
        self._delay = _CsvTail(self.path / DELAY_FILE, parse_delay)
        self._status_mtime = None
        self.table = MetricsTable()

    @property
    def metric_header(self) -> list[str]:
        return list(self.table.header)

    @property
    def level_ids(self) -> list[str]:
        """The run's level ids in model order, from metrics.csv (empty before its header)."""
        return self.table.level_ids

    def metrics_columns(self) -> dict[str, np.ndarray]:
        """metrics.csv as ``{column: float64 array}`` (what the loss plot takes)."""
        return self.table.arrays()

    @property
    def skipped(self) -> dict[str, int]:
        """Lines that did not parse so far, per file (damage, never fatal)."""
        return {t.path.name: t.skipped for t in (self._metrics, self._eval.tail,
                                                 self._delay.tail) if t.skipped}

    @property
    def capped(self) -> list[str]:
        """Files larger than the cap, read only up to it."""
        return [t.path.name for t in (self._metrics, self._eval.tail, self._delay.tail)
                if t.capped]

    def poll(self) -> RunUpdate:
        update = RunUpdate()
        tails = (self._metrics, self._eval.tail, self._delay.tail)
        lines = [t.lines() for t in tails]
        if any(t.was_reset for t in tails):
            # one file was cut back (a resume): every earlier row is void, read all anew
            for t in tails:
                t._start_over()
            self.table = MetricsTable()
            lines = [t.lines() for t in tails]
            update.reset = True
        start = self.table.n
        for line in lines[0]:
            if self._metrics.header is None:
                self._metrics.header = split_line(line) or []
                self.table, start = MetricsTable(self._metrics.header), 0
                continue
            cells = split_line(line)
            if (cells is None or not self.table.append(cells)) and line:
                self._metrics.skipped += 1
        update._table, update._span = self.table, (start, self.table.n)
        update.eval_rows = self._eval.rows(lines[1])
        update.delay_rows = self._delay.rows(lines[2])
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
        return is_live(self.path, stale_after_s)
