"""Appending to a run's CSV files, and cutting them back to what a checkpoint counted.

Rows are appended with ``os.write`` on an ``O_APPEND`` descriptor: nothing is buffered in the
process, so a kill loses at most the row being written (a torn last line, which readers skip)
and closing never retries a failed write. The appender counts bytes and rows, which a
checkpoint records; a resume cuts every file back to exactly those bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

from nlstudio.crashpoints import crashpoint
from nlstudio.fileio import atomic_write_with
from nlstudio.runs.layout import RunError
from nlstudio.runs.rows import format_line, parse_step, split_line
from nlstudio.untrusted import CSV_CAP, FileRefused, read_bytes, regular_file_size


class CsvAppender:
    """Appends rows to one CSV file, writing its header first when the file is empty."""

    def __init__(self, path: Path, columns, rows: int = 0):
        self.path, self.columns, self.rows = Path(path), list(columns), int(rows)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                           | getattr(os, "O_CLOEXEC", 0), 0o666)
        if os.fstat(self._fd).st_size == 0:
            self._write(format_line(self.columns))

    @property
    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def append(self, cells: list[str]) -> None:
        self._write(format_line(cells))
        self.rows += 1

    def _write(self, data: bytes) -> None:
        half = len(data) // 2
        _write_all(self._fd, data[:half])
        crashpoint("csv.append")
        _write_all(self._fd, data[half:])

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def cut_to(path: Path, nbytes: int) -> None:
    """Rewrites ``path`` (atomically, so a follower sees a new file) with its first ``nbytes``
    bytes: the rows a checkpoint counted. A file shorter than that lost rows a checkpoint
    promised: RunError, and nothing is changed."""
    try:
        size = regular_file_size(path, None)
    except FileNotFoundError:
        size = -1
    except FileRefused as exc:
        raise RunError(path, exc.reason) from None
    if size == nbytes:
        return
    if size < nbytes:
        raise RunError(path, f"holds {max(size, 0)} bytes but the checkpoint counted {nbytes}: "
                             "logged rows were lost, so the run cannot continue exactly")
    data = read_bytes(path, nbytes, truncate=True) if nbytes else b""
    _rewrite(path, data)


def cut_after_step(path: Path, step: int) -> None:
    """For checkpoints of older run folders, which counted no rows: drops the rows logged
    after ``step`` and a torn last line. Everything before the first row past ``step`` is kept
    as it is (damaged rows included: readers skip them)."""
    try:
        data = read_bytes(path, CSV_CAP)
    except FileNotFoundError:
        return
    except FileRefused as exc:
        raise RunError(path, exc.reason) from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" after a final newline, else a torn line: dropped
    kept = lines[:1]
    for line in lines[1:]:
        cells = split_line(line)
        step_n = parse_step(cells[0]) if cells else None
        if step_n is not None and step_n > step:
            break
        kept.append(line)
    text = b"\n".join(kept) + b"\n" if kept else b""
    if text != data or tail:
        _rewrite(path, text)


def _rewrite(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            crashpoint("csv.rewrite")
            fh.write(data[half:])

    atomic_write_with(path, write)


def count_rows(data: bytes) -> int:
    """Complete data lines (after the header) in a CSV file's bytes."""
    return max(0, data.count(b"\n") - 1)
