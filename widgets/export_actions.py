"""The export commands: the model, every plot, one plot. Each asks for a folder (a new name
is fine), writes through ``widgets/export.py`` (every file read back before it is reported),
and says what was written, or the one-line reason it was not.

All three go through :meth:`ExportActions.export`, which differs only by what is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Signal
from safetensors import safe_open

from nlstudio.runs import MODEL_FILE, PLOTS_DIR
from nlstudio.widgets import export as files
from nlstudio.widgets.messages import user_message
from nlstudio.widgets.plots.dock import PlotSet
from nlstudio.widgets.training_host import TrainingHost


@dataclass(frozen=True)
class _Export:
    """One kind of export: how to ask, what to write, how to say it."""

    ask: str  # the folder chooser's title
    done: str  # the title of the report
    write: Callable[[Path], list[Path]]
    describe: Callable[[Path, list[Path]], str]


class ExportActions(QObject):
    exported = Signal(list)  # the paths written by the last export

    def __init__(self, host: TrainingHost, plots: PlotSet, run_dir: Callable[[], Path | None],
                 ask_folder: Callable[[str, str], str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("exportActions")
        self.host = host
        self.plots = plots
        self.run_dir = run_dir  # the run shown now (live, ended or opened), or None
        self.ask_folder = ask_folder  # (title, start) -> folder or ""

    # ---- the three exports -------------------------------------------------------------------
    def export_model(self, dest: str | os.PathLike | None = None) -> list[Path]:
        run_dir = self.run_dir()
        if run_dir is None:
            self.host.dialogs.error("Nothing to export",
                                    "Train a model or open a run folder first.")
            return []
        return self.export(_Export(
            ask="Export the model into a folder", done="Model exported",
            write=lambda folder: files.export_model(run_dir, folder),
            describe=_describe_model), dest, start=run_dir)

    def export_plots(self, folder: str | os.PathLike | None = None) -> list[Path]:
        """Every plot (PNG, SVG, CSV) into ``folder``; without one, the run's plots/ folder
        (asked for when no run is shown)."""
        run_dir = self.run_dir()
        if folder is None and run_dir is not None:
            folder = run_dir / PLOTS_DIR
        docks = self.plots.docks
        return self.export(_Export(
            ask="Export all plots into a folder", done="Plots exported",
            write=lambda f: files.export_plots(docks, f),
            describe=lambda f, written: (f"{len(written)} files (PNG, SVG and CSV of "
                                         f"{len(docks)} plots) were written to {f}.")),
            folder, start=None)

    def export_plot(self, dock, folder: str | os.PathLike | None = None) -> list[Path]:
        run_dir = self.run_dir()
        return self.export(_Export(
            ask=f"Export “{dock.title}” into a folder", done="Plot exported",
            write=lambda f: files.export_plot(dock, f),
            describe=lambda f, written: f"{dock.title} was written to {f}:\n"
                                        + "\n".join(p.name for p in written)),
            folder, start=run_dir / PLOTS_DIR if run_dir is not None else None)

    # ---- the one routine -------------------------------------------------------------------
    def export(self, what: _Export, folder: str | os.PathLike | None,
               start: Path | None) -> list[Path]:
        if folder is None:
            folder = self.ask_folder(what.ask, str(start or Path.home()))
            if not folder:
                return []
        folder = Path(folder)
        try:
            written = what.write(folder)
        except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
            self.host.show_status(f"Export failed: {user_message(exc)}")
            self.host.dialogs.error("Export failed", user_message(exc))
            return []
        self.host.show_status(f"{what.done}: {folder}")
        self.exported.emit(list(written))
        self.host.dialogs.info(what.done, what.describe(folder, written))
        return written


def _describe_model(folder: Path, written: list[Path]) -> str:
    step = saved_step(folder / MODEL_FILE)
    when = f" (weights of step {step})" if step is not None else ""
    return (f"The model{when} was written to {folder}:\n"
            + "\n".join(p.name for p in written)
            + f"\n\nEvaluate it with: nlstudio eval {folder}")


def saved_step(path: Path) -> int | None:
    """The step recorded in a weights file's metadata, if it says."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return int((handle.metadata() or {}).get("step"))
    except Exception:  # noqa: BLE001 - no step to name
        return None
