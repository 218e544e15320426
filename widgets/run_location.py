"""Where runs started from the app are written.

A run goes into the user's data folder (``QStandardPaths.AppDataLocation``/runs, e.g.
``~/.local/share/NL Studio/NL Studio/runs`` on Linux), never next to the project file (a
bundled preset lives inside the installed package) and never into the working directory,
unless the user chose a folder (Run → Runs Folder…), which is remembered in the settings.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

SETTINGS_KEY = "runsFolder"


def standard_runs_root() -> Path:
    """``AppDataLocation/runs`` (the home folder's ``NL Studio/runs`` if Qt knows none)."""
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) / "runs" if base else Path.home() / "NL Studio" / "runs"


class RunLocation:
    """The runs folder: a fixed one (tests, scripts), the user's choice, or the standard one."""

    def __init__(self, settings: QSettings | None,
                 fixed: str | os.PathLike | None = None) -> None:
        self.settings = settings
        self.fixed = Path(fixed) if fixed is not None else None

    @property
    def chosen(self) -> Path | None:
        """The folder the user chose, if any."""
        if self.settings is None:
            return None
        value = self.settings.value(SETTINGS_KEY, "")
        return Path(str(value)) if value else None

    def root(self) -> Path:
        return self.fixed or self.chosen or standard_runs_root()

    def choose(self, folder: str | os.PathLike | None) -> None:
        """Remember ``folder`` for the next runs; None goes back to the standard folder."""
        if self.settings is not None:
            self.settings.setValue(SETTINGS_KEY, str(folder) if folder else "")
        if folder is not None:
            self.fixed = None  # the user's choice wins over a default given at start-up

    def describe(self) -> str:
        why = ("chosen in Run → Runs Folder…" if self.fixed is None and self.chosen
               else "the app's data folder" if self.fixed is None else "set at start-up")
        return f"{self.root()} ({why})"
