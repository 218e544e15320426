"""The spectrum: every level at its designed update frequency beside the measured frequency
of its content, on one log axis, and the drift curves the content frequency comes from.

Strip, one row per level, named on its left axis (colours follow the level order, as in
every other plot):

- filled dot: the designed frequency 1/C (attention at the right edge, "∞": it re-reads its
  context at every token and writes nothing; frozen levels at the left edge, "0");
- open diamond: the measured content frequency ν = 1/τ (``nlstudio.probes``, "Content
  rate"): how fast what the level *returns* on fixed probe inputs is replaced along a
  held-out stream. A left-pointing triangle is an upper bound (never half replaced within
  the stream: slower than that); attention's diamond sits at ∞ ("re-reads"), with no curve;
- small bar under the row: the write *schedule*, writes per token in the latest snapshot (or
  on the measured streams). It says when a level writes, not what changes (a level written
  every C tokens sits at 1/C whatever it writes), so it is drawn apart and labelled so.

Each row's numbers ("1/16 → < 1/256": designed → content) sit on the row beside its markers,
on the side with room for them (left out where neither side has room, or the rows are closer
than a line of text); the strip's tooltip always has them. Decade labels that would run into
each other in a narrow strip are left out ("0" and "∞" always stay).

Drift plot: D(Δ), the share of a level's content replaced after a lag of Δ tokens, per level on
a log lag axis; ν is read where a curve crosses ½ (τ½, marked; τ = 2·τ½). It appears with the
first measurement, under the strip, or beside it in a dock wider than tall (the bottom row of
a small window). The content is measured at every evaluation of a run
(``Evaluation.content``), from a run folder's saved weights (``Snapshot.content``), or by
lesson 1. With no levels at all the dock shows only its message, no axes.

One file of ~490 lines: the strip and the drift plot are one figure whose items are placed
from the same levels, axis range and pixel sizes (rows, labels, arrangement); its pure axis
helpers live in ``spectrum_axes.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QFontMetricsF

from nlstudio import events as ev
from nlstudio import probes
from nlstudio.widgets import theme
from nlstudio.widgets.format import grouped
from nlstudio.widgets.plots.base import PlotDock, parametric, pen, style_plot
from nlstudio.widgets.plots.spectrum_axes import (EDGE, INF_POS, freq_position,  # noqa: F401
                                                  frequency_range, frequency_ticks, label_font,
                                                  lag_ticks, legible_ticks, short_name)

UNBOUNDED = 16_777_215.0  # QWIDGETSIZE_MAX: no maximum height
# Short titles: a plot's title sets its minimum width, and a longer one than the dock pushed
# the right end of the axes out of sight. The tooltips say the rest.
STRIP_TITLE = "● designed  ◇ content  | writes/token"
DRIFT_TITLE = "content replaced after lag Δ"
CONTENT_SIZE = 17  # px: the content marker, the largest of a row
ROW_PX = CONTENT_SIZE + 5  # px: a row of the strip with room around its markers
SIDE_BY_SIDE_RATIO = 1.5  # a view this much wider than tall puts the drift beside the strip


@dataclass
class _LevelItems:
    designed: pg.ScatterPlotItem
    content: pg.ScatterPlotItem
    schedule: pg.ScatterPlotItem
    label: pg.TextItem
    curve: pg.PlotDataItem  # the drift D(Δ)
    half: pg.ScatterPlotItem  # τ½ on the half line
    placed: tuple | None = None  # (low decade, level count) the static items were set for


class SpectrumDock(PlotDock):
    key = "spectrum"
    title = "Spectrum"
    empty_text = ("Levels sit at their designed update frequency; the measured content "
                  "frequency appears at the first evaluation of a run.")
    max_hz = 5.0

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.low_decade = -3
        self.levels: list[dict] = []
        self.items: dict[str, _LevelItems] = {}
        self.content: dict[str, ev.ContentRate] = {}  # the latest measurement
        self.content_step: int | None = None
        self.content_source = ""  # what it was measured on, in words (the message line)
        self.schedule: dict[str, float] = {}  # writes per token in the latest snapshot
        self.step: int | None = None  # of the latest snapshot
        self._pending: ev.Snapshot | None = None
        self._max_lag = 1
        self._drift_shown = True
        self.side_by_side = False  # the drift beside the strip (else under it)
        self.labels_shown = True  # rows far enough apart for their numbers

        self.strip: pg.PlotItem = self.view.addPlot(row=0, col=0)
        self.drift: pg.PlotItem = self.view.addPlot(row=1, col=0)
        self.view.ci.layout.setRowStretchFactor(0, 3)
        self.view.ci.layout.setRowStretchFactor(1, 2)
        for plot in (self.strip, self.drift):
            plot.setMenuEnabled(False)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
        self.strip.getAxis("left").setStyle(tickFont=label_font())
        self.strip.getAxis("bottom").setStyle(tickFont=label_font())
        self.strip.getAxis("left").setWidth(40)
        self.strip.setLabel("bottom", "frequency (per token)")
        self.drift.getAxis("left").setWidth(40)
        self.drift.setLabel("bottom", "lag Δ (tokens)")
        self.drift.setLabel("left", "replaced")
        self.drift.setYRange(0, 1.05, padding=0)
        self.drift.getAxis("left").setTicks([[(0.0, "0"), (0.5, "½"), (1.0, "1")], []])
        self.half_line = pg.InfiniteLine(pos=probes.HALF, angle=0, movable=False)
        self.drift.addItem(self.half_line, ignoreBounds=True)
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
        self.strip_tip = (
            "Dot: designed frequency 1/C. Diamond: measured content frequency ν = 1/τ, how fast "
            "what the level returns on fixed probe inputs is replaced along a held-out stream "
            "(a triangle: slower than that, not half replaced within the stream). Bar: the "
            "write schedule, writes per token, which says when a level writes, not what "
            "changes.")
        self.strip.setToolTip(self.strip_tip)
        self.drift.setToolTip(
            "Content replaced after a lag, D(Δ): the share of each level's content (its "
            "read-out minus that of its initial memory) replaced after Δ tokens. It crosses ½ at τ½; the content frequency is "
            "ν = 1/(2·τ½), so a level that replaces all it holds every C tokens measures 1/C.")
        self._set_axis()
        self._set_lag_axis(1)
        self.apply_theme(self.palette_)
        self._show_plot()
        self.strip.vb.sigResized.connect(self._fit_labels)
        self.view.installEventFilter(self)
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
            for item in (items.designed, items.content, items.schedule, items.label):
                self.strip.removeItem(item)
            self.drift.removeItem(items.curve)
            self.drift.removeItem(items.half)
        self.items.clear()
        self.content.clear()
        self.schedule.clear()
        for lv in self.levels:
            self._extend_decades(probes.designed_frequency(lv["kind"], lv["period"]))
        for lv in self.levels:
            designed = pg.ScatterPlotItem(size=11)
            content = pg.ScatterPlotItem(size=CONTENT_SIZE)  # rings the dot when they agree
            schedule = pg.ScatterPlotItem(size=9, symbol="|")
            label = pg.TextItem("", anchor=(0.0, 0.5))
            label.setFont(label_font())
            curve = pg.PlotDataItem(connect="finite")
            half = pg.ScatterPlotItem(size=8, symbol="o")
            for item in (schedule, designed, content, label):
                self.strip.addItem(item)
            self.drift.addItem(curve)
            self.drift.addItem(half)
            self.items[lv["id"]] = _LevelItems(designed, content, schedule, label, curve, half)
        self._set_axis()
        self._set_level_axis()
        self._recolor()
        self._show_plot()
        self._set_stretch()
        self._fit_labels()
        self.mark_dirty()

    def clear(self) -> None:
        self.content.clear()
        self.schedule.clear()
        self.content_step = self.step = None
        self.content_source = ""
        self._pending = None
        self.set_message(self.empty_text)
        self.mark_dirty()

    def show_snapshot(self, snapshot: ev.Snapshot) -> None:
        """The write schedule of a live snapshot (and its content, where it carries one)."""
        if any(lid not in self.items for lid in snapshot.levels):
            self.set_levels([{"id": lid, "kind": s.kind, "period": s.period}
                             for lid, s in snapshot.levels.items()])
        self._pending = snapshot
        if snapshot.content:
            self.show_content(snapshot.step, snapshot.content)
        self.mark_dirty()

    def show_content(self, step: int | None, content: dict[str, ev.ContentRate],
                     source: str = "") -> None:
        """The content rates of one measurement (``probes.content_rates``) at ``step``;
        ``source`` says what it was measured on (default: its held-out streams)."""
        if not content:
            return
        missing = [lid for lid in content if lid not in self.items]
        if missing:
            self.set_levels([*self.levels, *({"id": lid, "kind": content[lid].kind,
                                               "period": content[lid].period}
                                              for lid in missing)])
        self.content = dict(content)
        self.content_step = step
        first = next(iter(content.values()))
        self.content_source = source or (f"{first.sequences} held-out streams of "
                                         f"{grouped(first.tokens)} tokens")
        for rate in content.values():
            if 0 < rate.frequency < math.inf:
                self._extend_decades(rate.frequency)
            if 0 < rate.writes_per_token < math.inf:
                self._extend_decades(rate.writes_per_token)
        self.mark_dirty()

    def has_data(self) -> bool:
        return bool(self.content)

    # ---- drawing ---------------------------------------------------------------------------
    def redraw(self) -> None:
        snap, self._pending = self._pending, None
        if snap is not None:
            self._take(snap)
        self._show_plot()
        n = len(self.levels)
        max_lag = 1
        top = 1.05
        for i, lv in enumerate(self.levels):
            items = self.items[lv["id"]]
            y = n - i
            designed = probes.designed_frequency(lv["kind"], lv["period"])
            placed = (self.low_decade, n)
            if items.placed != placed:  # positions change only with the levels or the axis
                items.placed = placed
                items.designed.setData([freq_position(designed, self.low_decade)], [y])
            rate = self.content.get(lv["id"])
            marks = [freq_position(designed, self.low_decade)]
            marks += self._draw_content(items, rate, y)
            writes = self.schedule.get(lv["id"])
            if writes is None and rate is not None and not math.isnan(rate.writes_per_token):
                writes = rate.writes_per_token
            if writes is None or not parametric(lv["kind"]):
                items.schedule.setData([], [])
            else:  # just under the row: its own series, never hidden by the dots
                marks.append(freq_position(writes, self.low_decade))
                items.schedule.setData([marks[-1]], [y - 0.3])
            self._draw_label(items, lv, rate, designed, y, marks)
            if rate is not None and len(rate.lags):
                drift = rate.drift
                items.curve.setData(np.log10(rate.lags.astype(float)), drift)
                max_lag = max(max_lag, int(rate.lags[-1]))
                top = max(top, float(drift.max()) * 1.05)
                tau_half = probes.half_lag(rate.lags, drift)
                if tau_half is None:
                    items.half.setData([], [])
                else:
                    items.half.setData([math.log10(max(tau_half, 1.0))], [probes.HALF])
            else:
                items.curve.setData([], [])
                items.half.setData([], [])
        self.strip.setToolTip("\n".join(
            [self.strip_tip, ""] + [f"{lv['id']}: {self.items[lv['id']].label.toPlainText()}"
                                    for lv in self.levels]) if self.levels else self.strip_tip)
        if max_lag != self._max_lag:
            self._set_lag_axis(max_lag)
        self.drift.setYRange(0, top, padding=0)
        self.strip.setYRange(0.4, n + 0.6, padding=0)
        if self.content:
            text = (f"Content measured at step {grouped(self.content_step)} on "
                    f"{self.content_source}" if self.content_step is not None else
                    f"Content measured on {self.content_source}")
            if text != self.message.text():
                self.set_message(text)
        elif self.step is not None:
            self.set_message("Write schedule from the live snapshots; the content frequency "
                             "is measured at each evaluation.")

    def _draw_content(self, items: _LevelItems, rate: ev.ContentRate | None, y: float
                      ) -> list[float]:
        """The content marker; returns its x ([] when there is none)."""
        if rate is None or rate.note or math.isnan(rate.frequency):
            items.content.setData([], [])
            return []
        x = freq_position(rate.frequency, self.low_decade)
        items.content.setData([x], [y], symbol="t3" if rate.bound else "d")
        return [x]

    def _draw_label(self, items: _LevelItems, lv: dict, rate: ev.ContentRate | None,
                    designed: float, y: float, marks: list[float]) -> None:
        """The row's numbers on its own line, beside its markers (``marks``: their x), on
        the side with room for them; left out where neither side has room (the strip's
        tooltip has them)."""
        text = probes.frequency_text(designed)  # the name is on the axis
        if not parametric(lv["kind"]):
            text += " · re-reads"
        elif rate is not None:
            text += f" → {probes.content_text(rate)}"
        if items.label.toPlainText() != text:
            items.label.setText(text)
        left, right = self.x_range()
        scale = self.strip.vb.width() / (right - left)
        if scale <= 0:
            return
        pad = (CONTENT_SIZE / 2 + 3) / scale  # clear of the largest marker
        width = (QFontMetricsF(label_font()).horizontalAdvance(text) + 8) / scale
        after, before = right - (max(marks) + pad), (min(marks) - pad) - left
        fits = self.labels_shown and max(after, before) >= width
        items.label.setVisible(fits)
        if after >= width or (fits and after >= before):
            items.label.setAnchor((0.0, 0.5))
            items.label.setPos(max(marks) + pad, y)
        else:
            items.label.setAnchor((1.0, 0.5))
            items.label.setPos(min(marks) - pad, y)

    def x_range(self) -> tuple[float, float]:
        return frequency_range(self.low_decade)

    def _show_plot(self) -> None:
        """No levels: the message alone. Levels: the strip, and the drift plot once there is
        a measurement (no made-up axes before)."""
        self.show_view(bool(self.levels))
        shown = self.has_data()
        if self._drift_shown != shown:  # kept in the layout (a plot taken out is orphaned)
            self._drift_shown = shown
            self.drift.setMaximumSize(UNBOUNDED if shown else 0, UNBOUNDED if shown else 0)
            self.drift.setVisible(shown)
            self._set_stretch()
            self._arrange(self.view.width(), self.view.height())

    def _set_stretch(self) -> None:
        """Side by side: half the width each. Stacked: the strip prefers the height that
        gives each row its markers (:data:`ROW_PX`), the drift plot its axes and a plot a
        little taller than its title; whatever is left is shared."""
        layout, shown = self.view.ci.layout, self._drift_shown
        minimum = Qt.SizeHint.MinimumSize
        strip = self.strip.layout.effectiveSizeHint(minimum).height()
        drift = self.drift.layout.effectiveSizeHint(minimum).height()
        self.strip.setPreferredHeight(strip + (max(len(self.levels), 1) + 0.2) * ROW_PX)
        self.drift.setPreferredHeight(drift + 2 * ROW_PX)
        if self.side_by_side:
            layout.setRowStretchFactor(0, 1)
            layout.setRowStretchFactor(1, 0)
            layout.setColumnStretchFactor(0, 1)
            layout.setColumnStretchFactor(1, 1 if shown else 0)
        else:
            layout.setRowStretchFactor(0, 1)
            layout.setRowStretchFactor(1, 1 if shown else 0)
            layout.setColumnStretchFactor(0, 1)
            layout.setColumnStretchFactor(1, 0)

    def _arrange(self, width: float, height: float) -> None:
        """The drift plot beside the strip in a view wider than tall that has room for both
        plots' minimum widths (titles and axes), else under it."""
        layout = self.view.ci.layout
        left, _top, right, _bottom = layout.getContentsMargins()
        need = left + right + layout.horizontalSpacing() + sum(
            plot.layout.effectiveSizeHint(Qt.SizeHint.MinimumSize).width()
            for plot in (self.strip, self.drift))
        side = width >= SIDE_BY_SIDE_RATIO * height and width >= need
        if side == self.side_by_side:
            return
        self.side_by_side = side
        ci = self.view.ci
        ci.removeItem(self.drift)
        ci.addItem(self.drift, row=0 if side else 1, col=1 if side else 0)
        self._set_stretch()

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt API
        if watched is self.view and event.type() == QEvent.Type.Resize:
            self._arrange(event.size().width(), event.size().height())
        return super().eventFilter(watched, event)

    def _fit_labels(self) -> None:
        """For the strip's size in px: the rows' numbers only where rows are a line of text
        apart (the tooltip has them always), and the decades' tick labels that do not run
        into each other."""
        rows = max(len(self.levels), 1) + 0.2
        pitch = self.strip.vb.height() / rows
        self.labels_shown = pitch >= max(QFontMetricsF(label_font()).height(),
                                         CONTENT_SIZE) + 2
        self._fit_frequency_ticks()
        self.mark_dirty()  # where the labels fit depends on the px

    def _fit_frequency_ticks(self) -> None:
        """The decade labels that fit the strip's width (``legible_ticks``)."""
        major, minor = frequency_ticks(self.low_decade)
        left, right = self.x_range()
        metrics = QFontMetricsF(label_font())
        major = legible_ticks(major, left, self.strip.vb.width() / (right - left),
                              metrics.horizontalAdvance)
        self.strip.getAxis("bottom").setTicks([major, minor])

    def _set_level_axis(self) -> None:
        """The levels' names on the strip's left axis, one per row."""
        n = len(self.levels)
        names = [short_name(lv["id"]) for lv in self.levels]
        axis = self.strip.getAxis("left")
        axis.setTicks([[(float(n - i), name) for i, name in enumerate(names)], []])
        metrics = QFontMetricsF(label_font())
        axis.setWidth(int(max([metrics.horizontalAdvance(t) for t in names] + [24])) + 10)

    def _take(self, snap: ev.Snapshot) -> None:
        self.step = snap.step
        for lid, level in snap.levels.items():
            tokens = len(level.write_norms) if level.write_norms is not None else 0
            if tokens:
                self.schedule[lid] = level.updates / tokens
                if level.updates:
                    self._extend_decades(level.updates / tokens)
            else:
                self.schedule.pop(lid, None)

    def _extend_decades(self, freq: float) -> None:
        if not 0 < freq < math.inf:
            return
        decade = math.floor(math.log10(freq) + 1e-9)
        if decade < self.low_decade:
            self.low_decade = decade
            self._set_axis()
            for items in self.items.values():
                items.placed = None

    def _set_axis(self) -> None:
        self._fit_frequency_ticks()
        left, right = self.low_decade - EDGE, INF_POS
        self.strip.setXRange(*self.x_range(), padding=0)
        self.frozen_band.setRegion((left - 0.35, left + 0.3))
        self.inf_band.setRegion((right - 0.3, right + 0.35))

    def _set_lag_axis(self, max_lag: int) -> None:
        self._max_lag = max_lag
        self.drift.getAxis("bottom").setTicks(lag_ticks(max_lag))
        self.drift.setXRange(-0.05, math.log10(max(2, max_lag)) + 0.05, padding=0)

    # ---- theme -------------------------------------------------------------------------------
    def _recolor(self) -> None:
        p = self.palette_
        for i, lv in enumerate(self.levels):
            items = self.items[lv["id"]]
            color = p.level_color(i)
            items.designed.setBrush(pg.mkBrush(color))
            items.designed.setPen(pg.mkPen(p.plot_background, width=1))
            items.content.setBrush(pg.mkBrush(None))
            items.content.setPen(pg.mkPen(color, width=1.8))
            items.schedule.setPen(pen(color, 2.0, alpha=170))
            items.schedule.setBrush(pg.mkBrush(None))
            items.label.setColor(QColor(p.plot_foreground))
            items.curve.setPen(pen(color, 1.6))
            items.half.setBrush(pg.mkBrush(color))
            items.half.setPen(pg.mkPen(p.plot_background, width=1))

    def apply_theme(self, palette: theme.Palette) -> None:
        super().apply_theme(palette)
        style_plot(self.strip, palette)
        style_plot(self.drift, palette)
        self.strip.showGrid(x=False, y=False)
        self.drift.showGrid(x=False, y=False)
        self.strip.setTitle(STRIP_TITLE, color=palette.muted, size="8pt")
        self.drift.setTitle(DRIFT_TITLE, color=palette.plot_foreground, size="8pt")
        self.half_line.setPen(pen(palette.muted, 1.0, Qt.PenStyle.DashLine))
        for band, name in ((self.frozen_band, "band_frozen"), (self.inf_band, "band_inf")):
            band.setBrush(pg.mkBrush(palette.qcolor(name, 46)))
        self._recolor()

    # ---- export --------------------------------------------------------------------------
    def csv_table(self) -> tuple[list[str], list[list]]:
        header = ["content_step", "level", "kind", "period", "designed_frequency",
                  "content_frequency", "content_is_upper_bound", "turnover_tokens",
                  "writes_per_token", "lag", "replaced_share"]
        rows: list[list] = []
        for lv in self.levels:
            lid = lv["id"]
            designed = probes.designed_frequency(lv["kind"], lv["period"])
            period = "" if lv["period"] is None else lv["period"]
            rate = self.content.get(lid)
            writes = self.schedule.get(lid, "" if rate is None else rate.writes_per_token)
            if rate is None:
                rows.append([self.content_step, lid, lv["kind"], period, designed, "", "", "",
                             writes, "", ""])
                continue
            head = [self.content_step, lid, lv["kind"], period, designed, rate.frequency,
                    int(rate.bound), rate.turnover, writes]
            if not len(rate.lags):
                rows.append(head + ["", ""])
            for lag, share in zip(rate.lags.tolist(), rate.drift.tolist()):
                rows.append(head + [lag, share])
        return header, rows
