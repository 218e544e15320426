"""Reading files NL Studio did not necessarily write: every file of a run folder, a project
file, a task's data file. Two rules, applied before a byte is read:

- **only regular files, only so much**: a FIFO, a device, a socket or a folder is refused
  *before* it is opened (opening a FIFO blocks forever, /dev/zero never ends), and a file
  larger than the caller's cap is refused (or, for tails, read only up to it);
- **paths stay inside their folder**: a relative path a project names is resolved (``..``,
  symlinks) and must still lie inside the project's folder.

Failures raise :class:`FileRefused` (a ``ValueError``) whose ``reason`` is plain English; the
caller turns it into its own error type naming the file (``RunError``, ``ProjectError``).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

#: Caps per kind of file (bytes). A status file is a few hundred bytes; a checkpoint manifest
#: a few KiB per level; CSVs grow with the run (~100 bytes per row and level).
STATUS_CAP = 64 << 10
MANIFEST_CAP = 4 << 20
CSV_CAP = 512 << 20
DATA_FILE_CAP = 256 << 20


class FileRefused(ValueError):
    """A file that is not read: ``reason`` says why (not a regular file, too large, ...)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path.name or self.path}: {reason}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file_size(path: str | os.PathLike, cap: int | None = None) -> int:
    """The size of ``path`` if it is a regular file (symlinks followed) no larger than
    ``cap``; raises FileRefused otherwise and FileNotFoundError if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a loop of symbolic links, a name too long, no permission
        raise FileRefused(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(path, f"is {_kind(st.st_mode)}, not a regular file")
    if cap is not None and st.st_size > cap:
        raise FileRefused(path, f"is too large ({st.st_size} bytes; at most {cap} expected)")
    return st.st_size


def _open_regular(path: str | os.PathLike) -> int:
    """An fd of ``path`` opened without blocking (a FIFO swapped in after the check still
    cannot hang us), re-checked to be a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(path, f"is {_kind(st.st_mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: str | os.PathLike, cap: int, *, offset: int = 0,
               truncate: bool = False) -> bytes:
    """The bytes of a regular file from ``offset``: at most ``cap`` of them. Past the cap it
    raises FileRefused, or with ``truncate=True`` returns the first ``cap`` bytes."""
    regular_file_size(path, None if truncate else cap + offset)
    try:
        fd = _open_regular(path)
    except (FileRefused, FileNotFoundError):
        raise
    except OSError as exc:
        raise FileRefused(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        chunks, left = [], cap + (0 if truncate else 1)
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise FileRefused(path, f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > cap:
        if truncate:
            return data[:cap]
        raise FileRefused(path, f"is too large (over {cap} bytes)")
    return data


def read_text(path: str | os.PathLike, cap: int) -> str:
    """UTF-8 text of a regular file of at most ``cap`` bytes (FileRefused if not UTF-8)."""
    data = read_bytes(path, cap)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(path, f"is not UTF-8 text (byte {exc.start})") from None


def confined(base: str | os.PathLike, relative: str) -> Path:
    """``base / relative`` resolved (``..`` and symlinks followed), refused unless it still
    lies inside ``base`` (itself resolved): a project's paths never leave its folder."""
    try:
        root = Path(base).resolve()
        target = (root / relative).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise FileRefused(relative, f"cannot be resolved ({exc})") from None
    if target != root and root not in target.parents:
        raise FileRefused(relative, f"leads outside the project's folder {root} (after "
                                    "resolving '..' and symbolic links)")
    return target
