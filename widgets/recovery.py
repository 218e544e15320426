"""Crash recovery: after every edit the document is written atomically to a recovery file; it is
deleted on a clean save or close, so one that exists at start-up holds unsaved work.

The folder is ``$NLSTUDIO_RECOVERY_DIR`` if set, else Qt's AppDataLocation.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QStandardPaths

from nlstudio.fileio import atomic_write_text

FORMAT = "nlstudio.recovery"
FILE_NAME = "recovery.nlrecover"


def recovery_dir() -> Path:
    override = os.environ.get("NLSTUDIO_RECOVERY_DIR")
    if override:
        return Path(override)
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".nlstudio")


@dataclass
class Recovered:
    document: dict
    path: str | None      # the project file the unsaved edits belong to (None: untitled)
    saved_at: float       # when the recovery file was written (seconds since the epoch)
    file: Path

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.saved_at))
        what = f"“{Path(self.path).name}”" if self.path else "an untitled project"
        name = self.document.get("name") or "Untitled"
        return (f"NL Studio did not close normally. Unsaved changes to {what} ({name}) from "
                f"{when} can be restored.")


class RecoveryStore:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or recovery_dir()

    @property
    def file(self) -> Path:
        return self.folder / FILE_NAME

    def write(self, document: dict, path: str | None) -> None:
        """Write atomically; a failure (disk full, read-only home) never interrupts editing."""
        payload = {"format": FORMAT, "version": 1, "path": path, "saved_at": time.time(),
                   "document": document}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.file, json.dumps(payload, ensure_ascii=False, indent=1))
        except OSError:
            pass

    def clear(self) -> None:
        try:
            self.file.unlink()
        except OSError:
            pass

    def read(self) -> Recovered | None:
        """The recovery file if it holds work newer than its project file's last save."""
        try:
            payload = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT \
                or not isinstance(payload.get("document"), dict):
            return None
        saved_at = float(payload.get("saved_at") or self.file.stat().st_mtime)
        path = payload.get("path") if isinstance(payload.get("path"), str) else None
        if path:
            try:
                if os.path.getmtime(path) > saved_at:
                    return None  # the project was saved after this recovery file was written
            except OSError:
                pass
        return Recovered(payload["document"], path, saved_at, self.file)
