"""Exports: the trained model (weights + project, reloadable by ``nlstudio eval``), every plot
as PNG and SVG (pyqtgraph exporters, on a light background even from the dark theme) and the
data behind it as CSV.

Every file is written atomically (a temporary file, then a rename) and read back before it is
reported: the PNG loads as a QImage, the SVG renders with QSvgRenderer, the CSV parses with a
header and rows of equal width, the weights open with safetensors and the project validates.
A file that fails its check raises :class:`ExportError` naming it, never a silent "OK".
"""
from __future__ import annotations

import csv
import io
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np
import pyqtgraph.exporters as pgx
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRectF
from PySide6.QtGui import QColor, QImage
from PySide6.QtSvg import QSvgRenderer
from safetensors import safe_open

from nlstudio.fileio import atomic_write_bytes
from nlstudio.project import load_project
from nlstudio.runs import MODEL_FILE, PLOTS_DIR, PROJECT_FILE
from nlstudio.widgets import theme

# Plots are laid out at this size for export, whatever their size on screen (a dock may be
# 300 px wide; scaling that up would scale its fonts with it), and PNGs are rendered at
# PNG_SCALE × (crisp on slides and in print).
EXPORT_SIZE = (960, 600)
PNG_SCALE = 2
PNG_MIN_WIDTH = EXPORT_SIZE[0] * PNG_SCALE


class ExportError(RuntimeError):
    """An export that did not produce a valid file; the message names the file."""


# ---- checks ------------------------------------------------------------------------------
def verify_png(path: Path) -> QImage:
    image = QImage(str(path))
    if image.isNull() or image.width() < 2 or image.height() < 2:
        raise ExportError(f"{path}: the PNG written cannot be read back")
    return image


def verify_svg(path: Path) -> None:
    data = path.read_bytes()
    renderer = QSvgRenderer(QByteArray(data))
    size = renderer.defaultSize()
    if not data or not renderer.isValid() or size.width() < 2 or size.height() < 2:
        raise ExportError(f"{path}: the SVG written does not render")


def verify_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or not rows[0]:
        raise ExportError(f"{path}: the CSV written has no header")
    width = len(rows[0])
    if any(len(r) != width for r in rows[1:]):
        raise ExportError(f"{path}: the CSV written has rows of unequal width")
    return rows


# ---- model -------------------------------------------------------------------------------
def export_model(run_dir: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Copies the run's ``model.safetensors`` and ``project.nlproj`` into ``dest`` (created if
    needed): with both, ``nlstudio eval DEST`` rebuilds and evaluates the model."""
    src, dest = Path(run_dir), Path(dest)
    missing = [name for name in (MODEL_FILE, PROJECT_FILE) if not (src / name).is_file()]
    if missing:
        raise ExportError(f"{src}: nothing to export yet (no {', '.join(missing)}; the weights "
                          "are saved at the first logging interval)")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in (MODEL_FILE, PROJECT_FILE):
        # model.safetensors is replaced atomically by the trainer: one read is one version.
        atomic_write_bytes(dest / name, (src / name).read_bytes())
        written.append(dest / name)
    try:
        with safe_open(str(dest / MODEL_FILE), framework="pt") as handle:
            if not list(handle.keys()):
                raise ExportError(f"{dest / MODEL_FILE}: holds no tensors")
        load_project(dest / PROJECT_FILE)
    except ExportError:
        raise
    except Exception as exc:  # safetensors and project errors: name the file
        raise ExportError(f"{dest}: the exported model cannot be read back ({exc})") from None
    return written


# ---- plots -------------------------------------------------------------------------------
def _png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise ExportError("the plot could not be encoded as PNG")
    buffer.close()
    return bytes(data)


def _csv_text(header: list[str], rows: Iterable[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])
    return out.getvalue()


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


@contextmanager
def _export_layout(dock):
    """Lay the dock's plots out at EXPORT_SIZE for the export, then back as on screen."""
    item = dock.export_item()
    before = item.geometry()
    item.setGeometry(QRectF(0, 0, *EXPORT_SIZE))
    item.layout.activate()
    try:
        yield item
    finally:
        item.setGeometry(before)
        item.layout.activate()


def _write_images(item, folder: Path, stem: str, background: QColor) -> None:
    png = pgx.ImageExporter(item)
    png.parameters()["width"] = EXPORT_SIZE[0] * PNG_SCALE
    png.parameters()["background"] = background
    image = png.export(toBytes=True)
    if image is None or image.isNull():
        raise ExportError(f"{folder / (stem + '.png')}: the plot rendered empty")
    atomic_write_bytes(folder / f"{stem}.png", _png_bytes(image))

    svg = pgx.SVGExporter(item)
    svg.parameters()["background"] = background
    data = svg.export(toBytes=True)
    if not data:
        raise ExportError(f"{folder / (stem + '.svg')}: the plot rendered empty")
    atomic_write_bytes(folder / f"{stem}.svg", data)


def export_plot(dock, folder: str | os.PathLike, stem: str | None = None, *,
                light: bool = True) -> list[Path]:
    """``<stem>.png``, ``<stem>.svg`` and ``<stem>.csv`` of one plot dock, checked."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or dock.key
    palette = theme.current()
    export_palette = theme.LIGHT if (light and palette.dark) else palette
    if export_palette is not palette:
        dock.apply_theme(export_palette)
    try:
        dock.redraw()  # the newest data, drawn in the export palette
        with _export_layout(dock) as item:
            _write_images(item, folder, stem, QColor(export_palette.plot_background))
    finally:
        if export_palette is not palette:
            dock.apply_theme(palette)
            dock.redraw()

    header, rows = dock.csv_table()
    atomic_write_bytes(folder / f"{stem}.csv", _csv_text(header, rows).encode("utf-8"))

    paths = [folder / f"{stem}.{ext}" for ext in ("png", "svg", "csv")]
    verify_png(paths[0])
    verify_svg(paths[1])
    verify_csv(paths[2])
    return paths


def export_plots(docks: Iterable, folder: str | os.PathLike, *, light: bool = True
                 ) -> list[Path]:
    """Every dock into ``folder`` (by default a run's ``plots/``)."""
    written: list[Path] = []
    for dock in docks:
        written += export_plot(dock, folder, light=light)
    return written


def plots_folder(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / PLOTS_DIR
