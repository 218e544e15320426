"""One palette definition for the whole GUI: Qt widgets (QPalette + stylesheet), the canvas, and
the colours of the pyqtgraph plots.

    from nlstudio.widgets import theme
    p = theme.current()                       # the active Palette
    p.plot_background, p.plot_foreground      # pyqtgraph background / axes and text
    p.level_color(i)                          # categorical colour of the i-th level
    p.kind_color("mlp")                       # the colour of a level kind (canvas cards, icons)
    theme.diverging_colormap()                # pyqtgraph ColorMap for signed heatmaps
    theme.manager().themeChanged.connect(...) # repaint plots when the user switches theme
"""
from __future__ import annotations

from dataclasses import dataclass, field
from string import Template

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QByteArray, QObject, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QImage, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

from nlstudio import resources

THEMES = ("system", "dark", "light")


@dataclass(frozen=True)
class Palette:
    name: str
    dark: bool
    window: str
    panel: str
    base: str
    alt_base: str
    text: str
    muted: str
    border: str
    accent: str
    accent_text: str
    selection: str
    fault: str
    warning: str
    ok: str
    canvas: str
    grid: str
    grid_strong: str
    band_inf: str       # the "frequency ∞" band (attention)
    band_frozen: str    # the "frequency 0" band (frozen weights)
    band_fast: str      # gradient of the in-context continuum, fast end...
    band_slow: str      # ...and slow end
    card: str           # node card fill
    kinds: dict[str, str] = field(default_factory=dict)
    categorical: tuple[str, ...] = ()
    diverging: tuple[tuple[float, str], ...] = ()

    # The names the training engineer's plots read.
    @property
    def plot_background(self) -> str:
        return self.base

    @property
    def plot_foreground(self) -> str:
        return self.text

    @property
    def plot_grid(self) -> str:
        return self.grid_strong

    def kind_color(self, kind: str) -> str:
        return self.kinds.get(kind, self.muted)

    def level_color(self, index: int) -> str:
        return self.categorical[index % len(self.categorical)]

    def qcolor(self, name: str, alpha: int | None = None) -> QColor:
        color = QColor(getattr(self, name))
        if alpha is not None:
            color.setAlpha(alpha)
        return color


DARK = Palette(
    name="dark", dark=True,
    window="#1f2228", panel="#262a31", base="#181b20", alt_base="#21252b",
    text="#e4e7eb", muted="#99a2ad", border="#3a404a",
    accent="#4d9fff", accent_text="#ffffff", selection="#2f5f9e",
    fault="#ff5d5d", warning="#f2b33d", ok="#3fb950",
    canvas="#15171b", grid="#262a31", grid_strong="#353b45",
    band_inf="#a578ff", band_frozen="#4d8fd6", band_fast="#ff9f43", band_slow="#4d8fd6",
    card="#23272e",
    kinds={"attention": "#b48cff", "linear_attention": "#2fcfb9", "delta": "#5bd174",
           "titans": "#ff9a4d", "self_modifying": "#e77fd0", "mlp": "#5aa2ff"},
    categorical=("#5aa2ff", "#ff9a4d", "#5bd174", "#ff6b8b", "#b48cff", "#2fcfb9",
                 "#f2d16b", "#c9a27e", "#e88fd3", "#a0a8b3"),
    diverging=((0.0, "#3b82f6"), (0.25, "#2b4f86"), (0.5, "#181b20"), (0.75, "#8a3040"),
               (1.0, "#ff5d5d")),
)

LIGHT = Palette(
    name="light", dark=False,
    window="#f3f4f6", panel="#ffffff", base="#ffffff", alt_base="#f6f7f9",
    text="#1d2127", muted="#5c6672", border="#cfd5dc",
    accent="#0a66d6", accent_text="#ffffff", selection="#cfe1fb",
    fault="#d42c2c", warning="#b7791f", ok="#1a7f37",
    canvas="#fafbfc", grid="#e9ecf0", grid_strong="#d3d9e0",
    band_inf="#7c4ddb", band_frozen="#2f6fb8", band_fast="#e8770f", band_slow="#2f6fb8",
    card="#ffffff",
    kinds={"attention": "#7c4ddb", "linear_attention": "#0f8f7f", "delta": "#2b8a3e",
           "titans": "#c8590a", "self_modifying": "#b4338f", "mlp": "#1f63c9"},
    categorical=("#1f63c9", "#c8590a", "#2b8a3e", "#c8254b", "#7c4ddb", "#0f8f7f",
                 "#a68a00", "#8c5a3c", "#b0439a", "#5c6672"),
    diverging=((0.0, "#1f63c9"), (0.25, "#8db3ea"), (0.5, "#ffffff"), (0.75, "#eb9a9a"),
               (1.0, "#d42c2c")),
)

PALETTES = {"dark": DARK, "light": LIGHT}


def resolve(name: str) -> Palette:
    """The palette for a theme name; "system" follows the desktop's colour scheme."""
    if name == "system":
        hints = QGuiApplication.styleHints() if QGuiApplication.instance() else None
        dark = hints is not None and hints.colorScheme() == Qt.ColorScheme.Dark
        return DARK if dark else LIGHT
    return PALETTES.get(name, LIGHT)


def qpalette(p: Palette) -> QPalette:
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: p.window, QPalette.ColorRole.WindowText: p.text,
        QPalette.ColorRole.Base: p.base, QPalette.ColorRole.AlternateBase: p.alt_base,
        QPalette.ColorRole.Text: p.text, QPalette.ColorRole.Button: p.panel,
        QPalette.ColorRole.ButtonText: p.text, QPalette.ColorRole.ToolTipBase: p.panel,
        QPalette.ColorRole.ToolTipText: p.text, QPalette.ColorRole.Highlight: p.accent,
        QPalette.ColorRole.HighlightedText: p.accent_text, QPalette.ColorRole.Link: p.accent,
        QPalette.ColorRole.PlaceholderText: p.muted, QPalette.ColorRole.Mid: p.border,
        QPalette.ColorRole.Midlight: p.grid_strong, QPalette.ColorRole.Dark: p.border,
        QPalette.ColorRole.Light: p.panel, QPalette.ColorRole.Shadow: "#000000",
        QPalette.ColorRole.BrightText: p.fault,
    }
    for role, color in roles.items():
        pal.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text,
                 QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(p.muted))
    return pal


def stylesheet(p: Palette) -> str:
    try:
        template = resources.path("style.qss").read_text(encoding="utf-8")
    except OSError:
        return ""
    values = {k: v for k, v in vars(p).items() if isinstance(v, str)}
    values["icons"] = resources.path("icons").as_posix()
    return Template(template).safe_substitute(values)


class ThemeManager(QObject):
    """The active theme; emits ``themeChanged(Palette)`` after a switch."""

    themeChanged = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.name = "system"
        self.palette = LIGHT
        self._applied: tuple[int, str] | None = None  # (id of the app, palette name)

    def apply(self, name: str) -> Palette:
        """Switch theme. Re-styling every widget is costly, so nothing happens when the
        application already shows this palette."""
        self.name = name if name in THEMES else "system"
        palette = resolve(self.name)
        app = QApplication.instance()
        key = (id(app), palette.name)
        if key == self._applied and palette is self.palette:
            return palette
        self.palette = palette
        if app is not None:
            app.setStyle("Fusion")
            app.setPalette(qpalette(palette))
            app.setStyleSheet(stylesheet(palette))
            self._applied = key
        self.themeChanged.emit(palette)
        return palette


_manager: ThemeManager | None = None


def manager() -> ThemeManager:
    global _manager
    if _manager is None:
        _manager = ThemeManager()
    return _manager


def current() -> Palette:
    return manager().palette


def diverging_colormap(p: Palette | None = None):
    """A pyqtgraph ColorMap (negative → blue, 0 → background, positive → red)."""
    p = p or current()
    pos = np.array([s for s, _ in p.diverging])
    colors = [QColor(c) for _, c in p.diverging]
    return pg.ColorMap(pos, [(c.red(), c.green(), c.blue(), 255) for c in colors])


# ---- icons: one monochrome SVG per kind, tinted with the kind's colour of the active theme ----
_svg_cache: dict[tuple[str, str], bytes] = {}


def kind_svg(kind: str, color: str) -> bytes:
    """The kind's icon as SVG bytes, drawn in ``color`` (the files are drawn in #000000)."""
    key = (kind, color)
    if key not in _svg_cache:
        try:
            text = resources.path("icons", f"{kind}.svg").read_text(encoding="utf-8")
        except OSError:
            text = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">'
                    '<rect x="4" y="4" width="16" height="16" rx="4" fill="#000000"/></svg>')
        _svg_cache[key] = text.replace("#000000", color).encode("utf-8")
    return _svg_cache[key]


def svg_icon(data: bytes, size: int = 64):
    """A QIcon rendered from SVG bytes (crisp at any device pixel ratio up to 2)."""
    renderer = QSvgRenderer(QByteArray(data))
    icon = QIcon()
    for px in (size, size * 2):
        image = QImage(px, px, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(0)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter, QRectF(0, 0, px, px))
        painter.end()
        icon.addPixmap(QPixmap.fromImage(image))
    return icon


def kind_icon(kind: str, p: Palette | None = None):
    p = p or current()
    return svg_icon(kind_svg(kind, p.kind_color(kind)), 32)


def app_icon():
    try:
        return svg_icon(resources.path("icons", "app.svg").read_bytes(), 64)
    except OSError:
        return QIcon()
