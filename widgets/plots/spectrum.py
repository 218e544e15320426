"""The spectrum: every level placed at its update frequency on one log axis, and the measured
power spectrum of each level's per-token write-norm series.

Top strip: each level at its designed frequency 1/C (filled dot) and at the frequency it was
measured to write at in the last sequence, writes/token (open diamond). Attention sits at the
right edge, "∞" (its context is re-read at every token, nothing is written); frozen levels at
the left edge, "0" (learned only by pre-training). Bottom: the power spectrum (log-log) of each
level's write norms, with its designed frequency as a dashed line: a level written every C
tokens peaks at k/C. One sequence's spectrum is noisy, so the curve is the mean of the
spectra of the last few snapshots (``AVERAGE_SNAPSHOTS``). Colours follow the level order, as
in every other plot.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from nlstudio import events as ev
from nlstudio import probes
from nlstudio.widgets import theme
from nlstudio.widgets.format import grouped, plural
from nlstudio.widgets.plots.base import PlotDock, parametric, pen, style_plot

EDGE = 0.7  # decades between the last finite decade and the "0" / "∞" edge positions
INF_POS = EDGE  # log10(1) = 0 is the fastest finite frequency (a write every token)
AVERAGE_SNAPSHOTS = 8
EMPTY_DECADES = (-3, 1)  # the power axis before any data: 10⁻³ … 10


def freq_position(freq: float, low_decade: int) -> float:
    """x position (decades) of a frequency on the axis: ∞ right, 0 left, log10 between."""
    if math.isinf(freq):
        return INF_POS
    if freq <= 0:
        return low_decade - EDGE
    return math.log10(freq)


def frequency_ticks(low_decade: int) -> list[list[tuple[float, str]]]:
    major = [(float(low_decade - EDGE), "0")]
    for d in range(low_decade, 1):
        major.append((float(d), "1" if d == 0 else f"1/{grouped(10 ** -d)}"))
    major.append((INF_POS, "∞"))
    minor = [(d + math.log10(k), "") for d in range(low_decade, 0) for k in range(2, 10)]
    return [major, minor]


@dataclass
class _LevelItems:
    designed: pg.ScatterPlotItem
    measured: pg.ScatterPlotItem
    label: pg.TextItem
    curve: pg.PlotDataItem
    line: pg.InfiniteLine
    placed: tuple | None = None  # (low decade, level count) the static items were set for
    shown_measured: float | None = None


class SpectrumDock(PlotDock):
    key = "spectrum"
    title = "Spectrum"
    empty_text = ("Levels are placed at their update frequency; the measured spectrum appears "
                  "with a live run.")
    max_hz = 5.0  # each curve is a mean over the last snapshots: it moves slowly

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.low_decade = -3
        self.levels: list[dict] = []
        self.items: dict[str, _LevelItems] = {}
        self.spectra: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # shown: freqs, mean power
        self.history: dict[str, deque] = {}  # the last spectra of each level
        self.measured_freq: dict[str, float] = {}
        self.step: int | None = None
        self._pending: ev.Snapshot | None = None

        self.strip: pg.PlotItem = self.view.addPlot(row=0, col=0)
        self.power: pg.PlotItem = self.view.addPlot(row=1, col=0)
        self.view.ci.layout.setRowStretchFactor(0, 2)
        self.view.ci.layout.setRowStretchFactor(1, 3)
        self.power.setXLink(self.strip)
        self.power.setLogMode(x=False, y=True)
        self.power.enableAutoRange(y=False)
        self._decades: tuple[int, int] | None = None  # the power axis range, in decades
        self.power.setYRange(*EMPTY_DECADES, padding=0.02)  # whole decades before any data
        self._title = ""
        self._depth = -1
        for plot in (self.strip, self.power):
            plot.setMenuEnabled(False)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
        self.strip.getAxis("bottom").setStyle(showValues=False)
        self.strip.setTitle("● designed 1/C   ◇ measured", color=self.palette_.muted,
                            size="8pt")
        self.strip.getAxis("left").setStyle(showValues=False)
        self.strip.getAxis("left").setWidth(40)
        self.power.getAxis("left").setWidth(40)
        self.power.setLabel("bottom", "frequency (per token)")
        self.frozen_band = pg.LinearRegionItem(movable=False)
        self.inf_band = pg.LinearRegionItem(movable=False)
        for band in (self.frozen_band, self.inf_band):
            for line in band.lines:
                line.setPen(pg.mkPen(None))
            self.strip.addItem(band)
        self.frozen_band.setToolTip("frequency 0: frozen in context, learned only by "
                                    "pre-training")
        self.inf_band.setToolTip("frequency ∞: attention re-reads its context at every token "
                                 "and writes nothing")
        self._set_axis()
        self.apply_theme(self.palette_)
        self.set_message(self.empty_text)

    # ---- data in ---------------------------------------------------------------------------
    def set_levels(self, levels: list[dict]) -> None:
        """``[{"id", "kind", "period"}, ...]`` in model order."""
        norm = [{"id": str(lv["id"]), "kind": str(lv.get("kind", "")),
                 "period": lv.get("period")} for lv in levels]
        if norm == self.levels:
            return
        self.levels = norm
        for items in self.items.values():
            for item in (items.designed, items.measured, items.label):
                self.strip.removeItem(item)
            self.power.removeItem(items.curve)
            self.power.removeItem(items.line)
        self.items.clear()
        self.spectra.clear()
        self.history.clear()
        self.measured_freq.clear()
        for lv in self.levels:
            f = probes.designed_frequency(lv["kind"], lv["period"])
            if 0 < f < math.inf:
                self._extend_decades(f)
        for i, lv in enumerate(self.levels):
            designed = pg.ScatterPlotItem(size=11)
            measured = pg.ScatterPlotItem(size=17, symbol="d")  # rings the designed dot
            label = pg.TextItem("", anchor=(0.0, 0.5))
            curve = pg.PlotDataItem(connect="finite")
            line = pg.InfiniteLine(angle=90, movable=False)
            for item in (designed, measured, label):
                self.strip.addItem(item)
            self.power.addItem(curve)
            self.power.addItem(line, ignoreBounds=True)
            self.items[lv["id"]] = _LevelItems(designed, measured, label, curve, line)
        self._set_axis()
        self._recolor()
        self.mark_dirty()

    def clear(self) -> None:
        self._decades = None
        self.power.setYRange(*EMPTY_DECADES, padding=0.02)
        self.spectra.clear()
        self.history.clear()
        self.measured_freq.clear()
        self._pending = None
        self.step = None
        self.set_message(self.empty_text)
        self.mark_dirty()

    def show_snapshot(self, snapshot: ev.Snapshot) -> None:
        if any(lid not in self.items for lid in snapshot.levels):
            self.set_levels([{"id": lid, "kind": s.kind, "period": s.period}
                             for lid, s in snapshot.levels.items()])
        self._pending = snapshot
        self.mark_dirty()

    def has_data(self) -> bool:
        return bool(self.spectra)

    # ---- drawing ---------------------------------------------------------------------------
    def redraw(self) -> None:
        snap, self._pending = self._pending, None
        if snap is not None:
            self._take(snap)
        n = len(self.levels)
        span: tuple[int, int] | None = None
        for i, lv in enumerate(self.levels):
            items = self.items[lv["id"]]
            y = n - i
            # Positions and labels only change with the levels or the axis: set them then.
            placed = (self.low_decade, n)
            if items.placed != placed:
                items.placed = placed
                x = freq_position(probes.designed_frequency(lv["kind"], lv["period"]),
                                  self.low_decade)
                items.designed.setData([x], [y])
                items.label.setText(_designed_text(lv))
                # Labels sit right of their dot in the slow half, left of it in the fast half.
                left_side = x > (self.low_decade - EDGE + INF_POS) / 2
                items.label.setAnchor((1.0, 0.5) if left_side else (0.0, 0.5))
                items.label.setPos(x + (-0.15 if left_side else 0.15), y)
                items.line.setPos(x)
                items.shown_measured = None
            measured = self.measured_freq.get(lv["id"])
            if not parametric(lv["kind"]):
                measured = None
            if measured != items.shown_measured:
                items.shown_measured = measured
                if measured is None:
                    items.measured.setData([], [])
                else:
                    items.measured.setData([freq_position(measured, self.low_decade)], [y])
            freqs, power = self.spectra.get(lv["id"], (np.zeros(0), np.zeros(0)))
            keep = (freqs > 0) & (power > 0) & np.isfinite(power)
            items.curve.setData(np.log10(freqs[keep]), power[keep])
            if keep.any():
                lo = math.floor(math.log10(float(power[keep].min())))
                hi = math.ceil(math.log10(float(power[keep].max())))
                span = (lo, hi) if span is None else (min(span[0], lo), max(span[1], hi))
        # The power axis only grows, by whole decades: its ticks stay put while streaming.
        if span is not None:
            grown = span if self._decades is None else (min(span[0], self._decades[0]),
                                                         max(span[1], self._decades[1]))
            if grown != self._decades:
                self._decades = grown
                self.power.setYRange(grown[0], max(grown[1], grown[0] + 1), padding=0.02)
        self.strip.setYRange(0.4, n + 0.6, padding=0)
        depth = max((len(h) for h in self.history.values()), default=0)
        if self._title != "set":  # a title change relayouts the plots: once per theme
            self._title = "set"
            self.power.setTitle("write norms' power", color=self.palette_.plot_foreground,
                                size="8pt")
        if self.step is not None:
            text = f"Step {grouped(self.step)}, mean of {plural(depth, 'snapshot')}"
            if text != self.message.text():
                self.set_message(text)
        if depth != self._depth:
            self._depth = depth
            self.power.setToolTip(f"Power spectrum of each level's per-token write norms, "
                                  f"mean of the last {plural(depth, 'snapshot')}; dashed: designed "
                                  f"frequency 1/C")

    def _take(self, snap: ev.Snapshot) -> None:
        self.step = snap.step
        for lid, level in snap.levels.items():
            if level.spectrum is not None and len(level.spectrum[0]):
                freqs = np.asarray(level.spectrum[0], dtype=np.float64)
                power = np.asarray(level.spectrum[1], dtype=np.float64)
                history = self.history.get(lid)
                shown = self.spectra.get(lid)
                if history is None or shown is None or not np.array_equal(shown[0], freqs):
                    history = self.history[lid] = deque(maxlen=AVERAGE_SNAPSHOTS)
                history.append(power)
                self.spectra[lid] = (freqs, np.mean(np.stack(history), axis=0))
                self._extend_decades(float(freqs[freqs > 0].min()) if np.any(freqs > 0) else 1)
            else:
                self.spectra.pop(lid, None)
                self.history.pop(lid, None)
            tokens = len(level.write_norms) if level.write_norms is not None else 0
            if tokens:
                self.measured_freq[lid] = level.updates / tokens
            else:
                self.measured_freq.pop(lid, None)

    def _extend_decades(self, freq: float) -> None:
        decade = math.floor(math.log10(freq) + 1e-9)
        if decade < self.low_decade:
            self.low_decade = decade
            self._set_axis()

    def _set_axis(self) -> None:
        ticks = frequency_ticks(self.low_decade)
        for plot in (self.strip, self.power):
            plot.getAxis("bottom").setTicks(ticks)
        left, right = self.low_decade - EDGE, INF_POS
        self.strip.setXRange(left - 0.35, right + 0.35, padding=0)
        self.power.setXRange(left - 0.35, right + 0.35, padding=0)
        self.frozen_band.setRegion((left - 0.35, left + 0.3))
        self.inf_band.setRegion((right - 0.3, right + 0.35))

    # ---- theme -------------------------------------------------------------------------------
    def _recolor(self) -> None:
        p = self.palette_
        for i, lv in enumerate(self.levels):
            items = self.items[lv["id"]]
            color = p.level_color(i)
            items.designed.setBrush(pg.mkBrush(color))
            items.designed.setPen(pg.mkPen(p.plot_background, width=1))
            items.measured.setBrush(pg.mkBrush(None))
            items.measured.setPen(pg.mkPen(color, width=1.6))
            items.label.setColor(QColor(p.plot_foreground))
            items.curve.setPen(pen(color, 1.0, alpha=210))
            items.line.setPen(pen(color, 1.0, Qt.PenStyle.DashLine, alpha=170))

    def apply_theme(self, palette: theme.Palette) -> None:
        super().apply_theme(palette)
        style_plot(self.strip, palette)
        style_plot(self.power, palette)
        # No grids: their replay on every frame cost more than the curves; the dashed
        # designed-frequency lines are the guides that matter here.
        self.strip.showGrid(x=False, y=False)
        self.power.showGrid(x=False, y=False)
        self.strip.setTitle("● designed 1/C   ◇ measured", color=palette.muted, size="8pt")
        self._title = ""  # redrawn in the new colours
        for band, name in ((self.frozen_band, "band_frozen"), (self.inf_band, "band_inf")):
            band.setBrush(pg.mkBrush(palette.qcolor(name, 46)))
        self._recolor()

    # ---- export --------------------------------------------------------------------------
    def csv_table(self) -> tuple[list[str], list[list]]:
        header = ["step", "level", "kind", "period", "designed_frequency",
                  "measured_writes_per_token", "frequency", "power"]
        rows: list[list] = []
        for lv in self.levels:
            lid = lv["id"]
            f = probes.designed_frequency(lv["kind"], lv["period"])
            period = "" if lv["period"] is None else lv["period"]
            measured = self.measured_freq.get(lid, "")
            freqs, power = self.spectra.get(lid, (np.zeros(0), np.zeros(0)))
            if not len(freqs):
                rows.append([self.step, lid, lv["kind"], period, f, measured, "", ""])
            for fr, pw in zip(freqs.tolist(), power.tolist()):
                rows.append([self.step, lid, lv["kind"], period, f, measured, fr, pw])
        return header, rows


def _designed_text(lv: dict) -> str:
    if not parametric(lv["kind"]):
        return f"{lv['id']} · ∞"
    if lv["period"] is None:
        return f"{lv['id']} · 0"
    return f"{lv['id']} · 1/{lv['period']}"
