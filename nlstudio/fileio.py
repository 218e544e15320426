"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

Every file is written with the permissions ``open()`` would give it (0666 less the umask), so
run folders can be shared: no file of a run is private when its siblings are not.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from nlstudio.crashpoints import crashpoint


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it is fsynced and renamed over
    ``path``; on any failure it is removed and ``path`` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600, and some writers (safetensors) recreate the file: set the mode
        # open() would have given, after the write
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Makes the rename itself durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, point: str | None = None) -> None:
    """``point`` names the crash point (``nlstudio.crashpoints``) between the two halves of
    the temporary file's content, where the crash tests kill a writer mid-write."""
    with atomic_path(path) as tmp:
        if point is None:
            tmp.write_bytes(data)
            return
        with open(tmp, "wb") as handle:
            half = len(data) // 2
            handle.write(data[:half])
            handle.flush()
            crashpoint(point)
            handle.write(data[half:])


def atomic_write_text(path: str | os.PathLike, text: str, point: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), point)


def write_new_file(path: str | os.PathLike, data: bytes, point: str | None = None) -> None:
    """Creates ``path`` (which must not exist) with ``data``, fsynced: for files inside a
    folder that is itself renamed into place whole (a checkpoint)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 0o666)
    try:
        view = memoryview(data)
        half = len(data) // 2
        for part in (view[:half], view[half:]):
            while part:
                part = part[os.write(fd, part):]
            if point is not None and half:
                crashpoint(point)
                point = None
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp_path)`` fills the temporary file (e.g. ``torch.save`` or safetensors)."""
    with atomic_path(path) as tmp:
        write(tmp)
