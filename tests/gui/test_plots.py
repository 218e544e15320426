"""The plot docks on synthetic trainer events: every plot receives data and updates its items
in place, hidden docks skip redraws, the redraw rate is bounded, smoothing touches only the
displayed copy, the spectrum places ∞ and 0 at the edges and the measured content beside the
designed frequency, the ablation dock switches between freeze and silence, and exports read
back."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PySide6.QtGui import QImage
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMainWindow

from nlstudio import events as ev
from nlstudio import probes
from nlstudio.widgets import export, theme
from nlstudio.widgets.plots.heatmap import SymmetricLevels
from nlstudio.widgets.plots.dock import PlotSet
from nlstudio.widgets.plots.loss import ema
from nlstudio.widgets.plots.spectrum import INF_POS, freq_position
from nlstudio.widgets.worker import EventMailbox

LEVELS = [{"id": "attn", "kind": "attention", "period": None},
          {"id": "fast", "kind": "self_modifying", "period": 8},
          {"id": "mid", "kind": "mlp", "period": 16},
          {"id": "frozen", "kind": "mlp", "period": None}]


def level_snapshot(kind, period, memory, write, tokens=64):
    norms = np.zeros(tokens, np.float32)
    if kind != "attention" and period is not None:
        norms[period - 1::period] = 1.0 + np.arange(len(norms[period - 1::period])) * 0.01
    spectrum = probes.power_spectrum(norms) if kind != "attention" else None
    return ev.LevelSnapshot(kind=kind, period=period,
                            frequency=probes.designed_frequency(kind, period), memory=memory,
                            write=write, write_norms=None if kind == "attention" else norms,
                            updates=int((norms != 0).sum()), spectrum=spectrum)


def snapshot(step, seed=0, run_id="r1"):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return ev.Snapshot(run_id, step, {
        "attn": level_snapshot("attention", None, None, None),
        "fast": level_snapshot("self_modifying", 8, f32(8, 8), f32(8, 8)),
        "mid": level_snapshot("mlp", 16, f32(32, 16), f32(32, 16)),
        "frozen": level_snapshot("mlp", None, f32(32, 16), None),
    })


LAGS = np.arange(1, 33)


def content_rate(kind, period, drift=None):
    """A ContentRate with drift ``drift`` (an array over LAGS; None: attention)."""
    if drift is None:
        return probes.rereading_rate(kind, period, 64, 2, 1.0)
    writes = 0.0 if period is None else 1.0 / period
    return probes.content_rate(kind, period, LAGS, np.asarray(drift, float), np.ones(len(LAGS)),
                               writes_per_token=writes, tokens=64, sequences=2)


def content(scale=1.0):
    return {"attn": content_rate("attention", None),
            "fast": content_rate("self_modifying", 8, np.minimum(LAGS / 16 * scale, 1.0)),
            "mid": content_rate("mlp", 16, LAGS / 200),      # never half replaced: a bound
            "frozen": content_rate("mlp", None, np.zeros(len(LAGS)))}


def evaluation(step, run_id="r1", scale=1.0):
    return ev.Evaluation(run_id, step, (("mapping 0", 0.5 * scale), ("mapping 1", 0.7 * scale)),
                         "recall", (4, 8, 16),
                         {"": (0.9, 0.6, 0.3), "attn": (0.1, 0.5, 0.3),
                          "fast": (0.8, 0.2, 0.3), "mid": (0.9, 0.6, 0.05),
                          "frozen": (0.9, 0.6, 0.3)},
                         {"": (0.9, 0.6, 0.3), "fast": (0.9, 0.55, 0.3),
                          "mid": (0.2, 0.1, 0.05), "frozen": (0.9, 0.6, 0.3)},
                         content(scale))


def rows(start, n, run_id="r1"):
    return [ev.MetricsRow(run_id, {"step": s, "loss": 3.0 / s, "metric": 1 - 1 / s})
            for s in range(start, start + n)]


def draw(plots) -> int:
    """Frames until every dirty, shown dock is drawn (a frame stops at its time budget)."""
    total = 0
    for _ in range(len(plots.docks)):
        for dock in plots.docks:
            dock.last_redraw = -1e9  # tests feed faster than each dock's own rate
        total += plots.scheduler.redraw_now()
        if not any(d.dirty and d.is_shown() for d in plots.docks):
            break
    return total


@pytest.fixture
def plots(qtbot):
    window = QMainWindow()
    window.setObjectName("plotsTestWindow")
    qtbot.addWidget(window)
    plots = PlotSet(window)
    # every dock in view at once (the main window's layout folds some into tabs at this size)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, plots.matrices)
    bottom = [plots.loss, plots.spectrum, plots.forgetting, plots.ablation]
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, bottom[0])
    for left, right in zip(bottom, bottom[1:]):
        window.splitDockWidget(left, right, Qt.Orientation.Horizontal)
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    plots.start(LEVELS, label="synthetic")
    plots.window = window  # keep the window (and its docks) alive for the test
    yield plots
    window.close()


def test_every_plot_receives_data_and_updates_in_place(plots):
    plots.apply(snapshot(1, seed=1), rows(1, 5) + [evaluation(5)])
    assert draw(plots) == 5
    loss_item = plots.loss.main.items["loss_s"][1]
    image = plots.matrices.cells[("fast", "memory")].image
    curve = plots.spectrum.items["fast"].curve
    task_item = plots.forgetting.main.task_items["mapping 0"]
    items_before = (loss_item, image, curve, task_item, plots.ablation.image)
    first = {
        "loss": loss_item.getData()[1].copy(),
        "image": image.image.copy(),
        "spectrum": curve.getData()[1].copy(),
        "tasks": task_item.getData()[1].copy(),
        "ablation": plots.ablation.image.image.copy(),
    }
    assert all(len(v) for v in first.values())
    assert image.image.dtype == np.float32 and image.image.flags["C_CONTIGUOUS"]
    assert image.axisOrder == "row-major"

    plots.apply(snapshot(2, seed=2), rows(6, 5) + [evaluation(10, scale=0.5)])
    draw(plots)
    # the same items, new data
    assert (plots.loss.main.items["loss_s"][1], plots.matrices.cells[("fast", "memory")].image,
            plots.spectrum.items["fast"].curve, plots.forgetting.main.task_items["mapping 0"],
            plots.ablation.image) == items_before
    assert len(loss_item.getData()[1]) == 10
    assert not np.array_equal(image.image, first["image"])
    assert len(task_item.getData()[1]) == 2
    # ablation = full model minus ablated, per delay, with level names on the y axis: freeze
    # by default (parametric levels only), silence on demand
    assert plots.ablation.kind == "freeze" and "freeze" in plots.ablation.windowTitle()
    np.testing.assert_allclose(plots.ablation.drop[0], [0.0, 0.05, 0.0], atol=1e-6)
    ticks = plots.ablation.plot.getAxis("left")._tickLevels[0]
    assert [t[1] for t in ticks] == ["fast", "mid", "frozen"]
    assert plots.ablation.plot.getAxis("left").labelText == "level frozen"
    plots.ablation.choose("silence")
    draw(plots)
    assert plots.ablation.kind == "silence" and "silence" in plots.ablation.windowTitle()
    np.testing.assert_allclose(plots.ablation.drop[1], [0.1, 0.4, 0.0], atol=1e-6)
    ticks = plots.ablation.plot.getAxis("left")._tickLevels[0]
    assert [t[1] for t in ticks] == ["attn", "fast", "mid", "frozen"]
    assert plots.ablation.plot.getAxis("left").labelText == "level silenced"
    assert "silenced" in plots.ablation.message.text()
    # attention has no matrices; a frozen level has no write
    assert plots.matrices.cells[("attn", "memory")].data is None
    assert plots.matrices.cells[("frozen", "write")].data is None
    assert plots.matrices.cells[("frozen", "memory")].data is not None


def test_heatmap_levels_are_symmetric_fixed_and_decay_slowly():
    levels = SymmetricLevels(half_life_s=2.0)
    assert levels.update(np.array([[-3.0, 1.0]]), now=0.0) == 3.0
    assert levels.update(np.array([[0.5]]), now=2.0) == pytest.approx(1.5)  # one half-life
    assert levels.update(np.array([[4.0]]), now=2.1) == 4.0  # grows at once
    assert levels.update(np.array([[0.1]]), now=2.2) == 4.0  # 3.86 rounds up: no change
    assert levels.update(np.array([[0.033]]), now=100) == pytest.approx(0.04)  # nice value


def test_matrix_levels_follow_symmetric_max(plots):
    snap = snapshot(1, seed=3)
    plots.apply(snap, [])
    draw(plots)
    cell = plots.matrices.cells[("mid", "memory")]
    peak = float(np.abs(snap.levels["mid"].memory).max())
    assert cell.image.levels is not None
    low, high = cell.image.levels
    # symmetric, never clipping, rounded up to a nice value (stable colour-bar ticks)
    assert low == -high and peak <= high <= 1.25 * peak
    assert cell.bar.level == high


def test_level_selector_shows_one_level_large(plots, qtbot):
    plots.apply(snapshot(1), [])
    draw(plots)
    combo = plots.matrices.level_combo
    combo.setCurrentText("mid")
    assert plots.matrices.shown_levels == ["mid"]
    draw(plots)
    items = plots.matrices.view.ci.items
    assert plots.matrices.cells[("mid", "memory")].view in items
    assert plots.matrices.cells[("fast", "memory")].view not in items
    assert "32×16" in plots.matrices.cells[("mid", "memory")].text
    combo.setCurrentText("All levels")
    assert plots.matrices.cells[("fast", "memory")].view in plots.matrices.view.ci.items


def test_hidden_docks_skip_redraws_until_shown(plots, qtbot):
    window = plots.window
    window.tabifyDockWidget(plots.spectrum, plots.forgetting)
    plots.spectrum.raise_()
    qtbot.waitUntil(lambda: not plots.forgetting.is_shown())
    before = plots.forgetting.redraws
    plots.apply(snapshot(1), rows(1, 3) + [evaluation(3)])
    draw(plots)
    assert plots.forgetting.redraws == before and plots.forgetting.dirty
    assert plots.spectrum.redraws > 0
    plots.forgetting.raise_()
    qtbot.waitUntil(lambda: plots.forgetting.redraws == before + 1, timeout=2000)
    assert not plots.forgetting.dirty


def test_redraws_are_bounded_to_30_hz(plots, qtbot):
    scheduler = plots.scheduler
    start = scheduler.frames
    import time

    t0 = time.monotonic()
    for i in range(200):  # data arrives far faster than 30 Hz
        plots.apply(snapshot(i, seed=i % 3), [])
        qtbot.wait(1)
    elapsed = time.monotonic() - t0
    frames = scheduler.frames - start
    assert 1 <= frames <= elapsed * 30 + 2


def test_smoothing_changes_only_the_displayed_copy(plots):
    plots.apply(None, rows(1, 20))
    plots.loss.smooth_slider.setValue(90)
    draw(plots)
    raw = plots.loss.main.items["loss"][1].getData()[1]
    shown = plots.loss.main.items["loss_s"][1].getData()[1]
    expected_raw = np.array([3.0 / s for s in range(1, 21)])
    np.testing.assert_allclose(raw, expected_raw)
    np.testing.assert_allclose(plots.loss.main.loss.y, expected_raw)
    np.testing.assert_allclose(shown, ema(expected_raw, 0.9))
    assert not np.allclose(shown, expected_raw)
    # incremental smoothing equals smoothing from scratch
    plots.apply(None, rows(21, 7))
    draw(plots)
    np.testing.assert_allclose(plots.loss.main.items["loss_s"][1].getData()[1],
                               ema(np.array([3.0 / s for s in range(1, 28)]), 0.9))
    plots.loss.log_check.setChecked(True)
    assert plots.loss.loss_plot.ctrl.logYCheck.isChecked()
    header, table = plots.loss.csv_table()
    assert header[:4] == ["run", "step", "loss", "metric"]
    assert [r[2] for r in table] == pytest.approx([3.0 / s for s in range(1, 28)])


def test_spectrum_places_attention_at_infinity_and_frozen_at_zero(plots):
    plots.apply(snapshot(1), [evaluation(1)])
    draw(plots)
    spectrum = plots.spectrum
    low = spectrum.low_decade
    xs = {lid: spectrum.items[lid].designed.getData()[0][0] for lid in
          ("attn", "fast", "mid", "frozen")}
    assert xs["attn"] == INF_POS
    assert xs["frozen"] == freq_position(0.0, low) < xs["mid"] < xs["fast"] < xs["attn"]
    assert xs["fast"] == pytest.approx(math.log10(1 / 8))
    ticks = dict((round(v, 6), t) for v, t in spectrum.strip.getAxis("bottom")._tickLevels[0])
    assert ticks[round(INF_POS, 6)] == "∞" and ticks[round(low - 0.7, 6)] == "0"
    # measured content beside the design: fast's drift Δ/16 reaches ½ at 8: ν = 1/16
    cx = {lid: spectrum.items[lid].content.getData()[0] for lid in xs}
    assert cx["fast"][0] == pytest.approx(math.log10(1 / 16))
    assert cx["attn"][0] == INF_POS  # re-reads: at ∞, with no drift curve
    ax, _ = spectrum.items["attn"].curve.getData()
    assert ax is None or len(ax) == 0
    assert cx["frozen"][0] == freq_position(0.0, low)  # never changes: 0
    # mid never reaches ½ within 32 lags: an upper bound 1/64, drawn as a triangle
    assert cx["mid"][0] == pytest.approx(math.log10(1 / 64))
    assert spectrum.items["mid"].content.opts["symbol"] == "t3"
    assert spectrum.items["fast"].content.opts["symbol"] == "d"
    assert "< 1/64" in spectrum.items["mid"].label.toPlainText()
    assert "re-reads" in spectrum.items["attn"].label.toPlainText()
    # the drift curve and the half-replacement mark of fast
    x, y = spectrum.items["fast"].curve.getData()
    np.testing.assert_allclose(y, np.minimum(LAGS / 16, 1.0))
    hx, hy = spectrum.items["fast"].half.getData()
    assert hx[0] == pytest.approx(math.log10(8)) and hy[0] == 0.5
    # the write schedule stays its own series: writes per token from the snapshot
    assert spectrum.schedule["fast"] == pytest.approx(1 / 8)
    sx, _ = spectrum.items["fast"].schedule.getData()
    assert sx[0] == pytest.approx(math.log10(1 / 8))
    assert "step 1" in spectrum.message.text() and "held-out" in spectrum.message.text()


def test_spectrum_before_any_evaluation_shows_no_drift_axes(plots):
    plots.apply(snapshot(1), [])
    draw(plots)
    assert not plots.spectrum.has_data() and not plots.spectrum.drift.isVisible()
    assert "evaluation" in plots.spectrum.message.text()
    plots.apply(None, [evaluation(2)])
    draw(plots)
    assert plots.spectrum.has_data() and plots.spectrum.drift.isVisible()


def test_mailbox_coalesces_and_drops_other_runs():
    box = EventMailbox("r1")
    for step in range(1, 1001):
        box.post(ev.Progress("r1", step, 1000, 1.0, 0.5, 10.0, 1.0, 1.0, "p"))
        box.post(snapshot(step) if step % 100 == 0 else ev.Progress("old", step, 1, 0, 0, 0, 0,
                                                                      0, ""))
    for row in rows(1, 3):
        box.post(row)
    box.post(ev.MetricsRow("old", {"step": 1}))
    got = box.take()
    assert got.progress.step == 1000 and got.snapshot.step == 1000
    assert [e.row["step"] for e in got.events] == [1, 2, 3]
    assert not box.take()


def test_export_reads_back_light_from_dark(plots, tmp_path):
    theme.manager().apply("dark")
    try:
        plots.apply(snapshot(1), rows(1, 5) + [evaluation(5)])
        draw(plots)
        written = export.export_plots(plots.docks, tmp_path / "plots")
        assert len(written) == 15
        for path in written:
            assert path.stat().st_size > 0
        image = QImage(str(tmp_path / "plots" / "loss.png"))
        assert image.width() >= export.PNG_MIN_WIDTH
        corner = image.pixelColor(2, 2)
        assert corner.lightness() > 200  # exported on the light background
        assert plots.loss.view.backgroundBrush().color().lightness() < 80  # screen stays dark
        with open(tmp_path / "plots" / "ablation.csv") as fh:
            table = list(csv.DictReader(fh))
        fast8 = {r["ablation"]: r for r in table if r["level"] == "fast" and r["delay"] == "8"}
        assert float(fast8["silence"]["recall_lost"]) == pytest.approx(0.4)
        assert float(fast8["freeze"]["recall_lost"]) == pytest.approx(0.05)
        with open(tmp_path / "plots" / "spectrum.csv") as fh:
            table = list(csv.DictReader(fh))
        fast = [r for r in table if r["level"] == "fast"]
        assert len(fast) == len(LAGS) and float(fast[0]["content_frequency"]) == \
            pytest.approx(1 / 16)
        with open(tmp_path / "plots" / "matrices.csv") as fh:
            assert sum(1 for _ in fh) == 1 + 64 * 2 + 32 * 16 * 2 + 32 * 16
    finally:
        theme.manager().apply("light")


def test_theme_switch_recolours_plots(plots):
    theme.manager().apply("dark")
    try:
        assert plots.loss.view.backgroundBrush().color().name() == theme.DARK.plot_background
    finally:
        theme.manager().apply("light")
    assert plots.loss.view.backgroundBrush().color().name() == theme.LIGHT.plot_background


# ---- what the first hour in the app showed (issue 16) ---------------------------------------
def tick_labels(axis) -> list[str]:
    """The tick labels an axis draws now, as pyqtgraph lays them out."""
    from PySide6.QtGui import QPainter

    image = QImage(8, 8, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _rect, _flags, text in specs[2]] if specs else []


def settle(plots) -> None:
    """Draw, and let the view boxes fit their ranges to the new data."""
    from PySide6.QtWidgets import QApplication

    draw(plots)
    QApplication.processEvents()
    for dock in plots.docks:
        for item in dock.view.ci.items:
            if hasattr(item, "vb"):
                item.vb.updateAutoRange()
    QApplication.processEvents()


def test_metric_ticks_keep_their_values_after_a_theme_change(plots):
    """After View → Theme the recall axis read 800/600/400 for the rest of the session."""
    plots.apply(None, [ev.MetricsRow("r1", {"step": s, "loss": 2.0 / s, "metric": 0.4 + s / 20})
                       for s in range(1, 11)])
    settle(plots)
    axis = plots.loss.metric_plot.getAxis("left")
    before = tick_labels(axis)
    assert before and all(0.0 <= float(t) <= 1.0 for t in before), before
    try:
        for name in ("dark", "light", "dark"):
            theme.manager().apply(name)
            settle(plots)
            assert tick_labels(axis) == before, name
    finally:
        theme.manager().apply("light")


def test_empty_plots_show_their_message_not_made_up_axes(plots):
    settle(plots)
    for dock in (plots.loss, plots.forgetting, plots.ablation):
        assert not dock.view.isVisible(), dock.key  # no −0.4…0.4 ablation axis, no 0…1 loss
        assert dock.message.isVisible() and dock.message.text(), dock.key
    plots.apply(snapshot(1), rows(1, 5) + [evaluation(5)])
    settle(plots)
    for dock in (plots.loss, plots.forgetting, plots.ablation):
        assert dock.view.isVisible() and dock.is_shown(), dock.key


def test_forgetting_axes_after_one_evaluation(plots):
    """One evaluation at step 20: the step axis runs from 0 to 20 (it spanned 19.6-20.4),
    and recall by delay has its ticks 0, 0.5 and 1 (it showed 0.5 alone)."""
    plots.apply(None, [evaluation(20)])
    settle(plots)
    forgetting = plots.forgetting
    (x0, x1), (y0, y1) = forgetting.tasks_plot.vb.viewRange()
    assert x0 <= 0 and 20 <= x1 < 25, (x0, x1)
    assert y0 <= 0 and y1 >= 1  # recall is a fraction: the whole unit range
    for plot in (forgetting.tasks_plot, forgetting.recall_plot):
        assert {"0", "0.5", "1"} <= set(tick_labels(plot.getAxis("left")))
    assert tick_labels(forgetting.recall_plot.getAxis("bottom")) == ["4", "8", "16"]


def panel_rect(matrices, lid: str, which: str = "memory"):
    """Where a level's heatmap is drawn (scene px = the dock's view px)."""
    cell = matrices.cells[(lid, which)]
    return cell.image.mapRectToScene(cell.image.boundingRect())


@pytest.mark.parametrize("size", [(1280, 800), (1600, 500), (700, 1000)])
def test_memory_matrices_are_square_panels_in_any_dock_shape(plots, size):
    """An 8×8 memory and a 32×16 weight alike fill a square, never a strip, however wide or
    tall the dock is."""
    plots.window.resize(*size)
    plots.apply(snapshot(1), [])
    settle(plots)
    for lid in ("fast", "mid"):
        rect = panel_rect(plots.matrices, lid)
        assert rect.width() == pytest.approx(rect.height(), rel=0.03), (lid, rect)


def test_dock_titles_show_their_ampersand(plots):
    """"Loss & metric" read "Loss  metric" in its title and "Loss _metric" in the Panels
    menu: Qt takes a single & for a mnemonic."""
    action = plots.loss.toggleViewAction()
    assert action.iconText() == "Loss & metric"  # what menus, tabs and title bars show
    assert plots.loss.title == "Loss & metric"  # and what exports say


def test_png_export_legend_is_in_proportion_to_the_svg(plots, tmp_path):
    """The PNG (2× the SVG's size) drew its legend at 1×: tiny text beside the SVG's."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgRenderer

    plots.apply(snapshot(1), rows(1, 5) + [evaluation(5), evaluation(10, scale=0.5)])
    settle(plots)
    dock = plots.forgetting
    export.export_plot(dock, tmp_path)
    png = QImage(str(tmp_path / "forgetting.png"))
    svg = QImage(png.size(), QImage.Format.Format_ARGB32)
    svg.fill(0xFFFFFFFF)
    painter = QPainter(svg)
    QSvgRenderer(str(tmp_path / "forgetting.svg")).render(painter, QRectF(svg.rect()))
    painter.end()
    with export._export_layout(dock) as item:  # where the legend lies in the exported figure
        band = dock.task_legend.mapRectToItem(item, dock.task_legend.boundingRect())
    scale = png.width() / export.EXPORT_SIZE[0]
    top, bottom = int(band.top() * scale), int(band.bottom() * scale)
    assert bottom - top > 10

    def ink(image: QImage) -> int:  # dark pixels of the legend's text and samples
        return sum(1 for y in range(top, bottom, 2) for x in range(0, image.width(), 2)
                   if image.pixelColor(x, y).lightness() < 150)

    assert 0.75 < ink(png) / max(ink(svg), 1) < 1.33, (ink(png), ink(svg))


def test_an_old_run_without_freeze_shows_silence_and_says_so(plots):
    """delay.csv of a run written before freeze was measured: silence rows only."""
    from nlstudio.runs import DelayRow

    old = [DelayRow(5, "none", 8, 0.9, "none"), DelayRow(5, "fast", 8, 0.2, "silence"),
           DelayRow(5, "none", 16, 0.6, "none"), DelayRow(5, "fast", 16, 0.6, "silence")]
    plots.ablation.set_delay_rows(old)
    draw(plots)
    assert plots.ablation.chosen == "freeze" and plots.ablation.kind == "silence"
    np.testing.assert_allclose(plots.ablation.drop, [[0.7, 0.0]], atol=1e-6)
    assert "freeze was not measured" in plots.ablation.message.text()
    assert plots.ablation.plot.getAxis("left").labelText == "level silenced"
    # rows with both kinds: freeze shown, no note
    plots.ablation.set_delay_rows(old + [DelayRow(5, "fast", 8, 0.85, "freeze"),
                                         DelayRow(5, "fast", 16, 0.6, "freeze")])
    draw(plots)
    assert plots.ablation.kind == "freeze" and "not measured" not in plots.ablation.message.text()
    np.testing.assert_allclose(plots.ablation.drop, [[0.05, 0.0]], atol=1e-6)


# ---- legible at any dock size: nothing overlapping, nothing pushed out of sight --------------

LONG_LEVELS = [{"id": "self_modifying_fast_memory", "kind": "self_modifying", "period": 8},
               {"id": "cms_medium_term_level", "kind": "mlp", "period": 16},
               {"id": "cms_slow", "kind": "mlp", "period": 64},
               {"id": "frozen_feed_forward_block", "kind": "mlp", "period": None}]


def dock_alone(qtbot, dock, size):
    """``dock`` as the central widget of a window of ``size`` (its whole area for the dock);
    keep the window returned (the dock lives as long as it does)."""
    from PySide6.QtWidgets import QApplication

    window = QMainWindow()
    qtbot.addWidget(window)
    window.setCentralWidget(dock)
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    QApplication.processEvents()
    return window


def long_snapshot(step=1):
    rng = np.random.default_rng(step)
    return ev.Snapshot("r1", step, {
        lv["id"]: level_snapshot(lv["kind"], lv["period"],
                                 rng.normal(size=(16, 16)).astype(np.float32),
                                 None if lv["period"] is None
                                 else rng.normal(size=(16, 16)).astype(np.float32))
        for lv in LONG_LEVELS})


def assert_titles_legible(matrices) -> None:
    """Every shown cell's title: inside its own rect, its text elided to that width, no two
    titles' rects overlapping, the full text in its tooltip."""
    from PySide6.QtGui import QFontMetricsF

    rects = []
    for lid in matrices.shown_levels:
        for which in ("memory", "write"):
            title = matrices.cells[(lid, which)].title
            rect = title.mapRectToScene(title.boundingRect())
            assert rect.width() > 0 and rect.height() > 0, (lid, which)
            assert rect.right() <= matrices.view.width() + 0.5, (lid, which, rect)
            for ink in title.text_rects():
                assert title.boundingRect().contains(ink), (lid, which, ink)
            assert lid in title.toolTip() or which == "write"
            rects.append(((lid, which), rect))
            metrics = [QFontMetricsF(f) for f in title._fonts]
            for shown, m in zip(title.shown_lines(), metrics):
                assert m.horizontalAdvance(shown) <= title.boundingRect().width(), shown
    for i, (a, ra) in enumerate(rects):
        for b, rb in rects[i + 1:]:
            assert not ra.intersects(rb), (a, b, ra, rb)


@pytest.mark.parametrize("size", [(560, 260), (450, 330), (300, 600), (1200, 260)])
def test_matrix_titles_fit_their_cells_and_never_overlap(qtbot, size):
    """Titles ran into each other (and widened their columns, so squares differed) in the
    default layout's matrices place: long names are elided to the cell, the tooltip has all."""
    from nlstudio.widgets.plots.matrices import MatricesDock

    dock = MatricesDock()
    window = dock_alone(qtbot, dock, size)
    dock.set_levels(LONG_LEVELS)
    dock.show_snapshot(long_snapshot())
    dock.redraw()
    qtbot.waitUntil(lambda: dock.cells[("cms_slow", "memory")].view.width() > 1)
    assert_titles_legible(dock)
    title = dock.cells[("self_modifying_fast_memory", "memory")].title
    assert title.shown_lines()[0].endswith("…")  # too long for any of these cells
    assert title.toolTip().startswith("self_modifying_fast_memory · C=8")


@pytest.mark.parametrize("size", [(560, 260), (450, 330), (300, 600), (1200, 260), (700, 700)])
def test_matrix_grid_estimate_is_the_square_the_layout_gives(qtbot, size):
    """grid_shape chose the grid from a square ~13 px larger than the layout gave (it left
    out the margins, the spacing and the colour bars' columns): its estimate is now what
    every heatmap measures, and every heatmap is the same square."""
    from PySide6.QtWidgets import QApplication

    from nlstudio.widgets.plots.matrices import MatricesDock, grid_side

    dock = MatricesDock()
    window = dock_alone(qtbot, dock, size)
    dock.set_levels(LEVELS)
    dock.show_snapshot(snapshot(1))
    dock.redraw()
    QApplication.processEvents()
    _shown, side_by_side, per_row = dock._arrangement
    estimate = grid_side(len(LEVELS), dock.view.width(), dock.view.height(), side_by_side,
                         per_row, dock.grid_metrics(False))
    squares = []
    for (lid, which), cell in dock.cells.items():
        view = cell.view.mapRectToScene(cell.view.boundingRect())
        squares.append(min(view.width(), view.height()))
    assert max(squares) - min(squares) <= 1.0, squares
    assert min(squares) == pytest.approx(estimate, abs=1.0), (squares, estimate)


def test_spectrum_with_no_levels_shows_its_message_and_no_axes(qtbot):
    """Before any project or run the strip drew made-up axes with its legend title over
    them: now the message alone; the strip appears with the levels."""
    from nlstudio.widgets.plots.spectrum import SpectrumDock

    dock = SpectrumDock()
    window = dock_alone(qtbot, dock, (560, 260))
    assert dock.message.isVisible() and dock.message.text() == dock.empty_text
    assert not dock.view.isVisible()
    dock.set_levels(LEVELS)
    dock.redraw()
    assert dock.view.isVisible() and dock.strip.isVisible() and not dock.drift.isVisible()
    assert dock.message.text() == dock.empty_text
    dock.set_levels([])
    dock.reset()
    dock.redraw()
    assert not dock.view.isVisible() and dock.message.isVisible()


def strip_texts(dock):
    """Scene rects of the strip's shown texts: each level's numbers and its name's tick."""
    rects = {f"label {lid}": items.label.mapRectToScene(items.label.boundingRect())
             for lid, items in dock.items.items() if items.label.isVisible()}
    return rects


@pytest.mark.parametrize("size", [(560, 240), (560, 330), (440, 330), (980, 560)])
def test_spectrum_labels_never_overlap_and_plots_fit_the_dock(qtbot, size):
    """A live run at 1280×800 drew the four levels' labels on top of each other and the drift
    plot's y ticks over one another; a long title pushed the axes' right end out of the dock.
    Now: names on the strip's axis (one per row), the rows' numbers only where they have room,
    the drift plot beside the strip in a wide dock, every plot inside the view."""
    from PySide6.QtWidgets import QApplication

    from nlstudio.widgets.plots.spectrum import SpectrumDock

    dock = SpectrumDock()
    window = dock_alone(qtbot, dock, size)
    dock.set_levels(LEVELS)
    dock.show_snapshot(snapshot(1))
    dock.show_content(5, evaluation(5).content)
    dock.redraw()
    QApplication.processEvents()
    dock.redraw()
    view = dock.view
    if view.width() >= 1.5 * view.height() + 60:  # wide, with room for both plots
        assert dock.side_by_side
    elif view.width() < 1.5 * view.height():
        assert not dock.side_by_side
    for plot in (dock.strip, dock.drift):
        rect = plot.mapRectToScene(plot.boundingRect())
        assert rect.left() >= -0.5 and rect.right() <= view.width() + 0.5, (plot, rect)
        assert rect.bottom() <= view.height() + 0.5 and rect.height() > 60, (plot, rect)
    ticks = dock.strip.getAxis("left")._tickLevels[0]
    assert [t[1] for t in ticks] == ["attn", "fast", "mid", "frozen"]
    pitch = dock.strip.vb.height() / (len(LEVELS) + 0.2)
    assert pitch >= 12, pitch  # a name per row, legible
    rects = strip_texts(dock)
    vb = dock.strip.vb.mapRectToScene(dock.strip.vb.boundingRect())
    names = list(rects)
    for i, a in enumerate(names):
        assert vb.adjusted(-2, -2, 2, 2).contains(rects[a]) or not rects[a].intersects(
            dock.strip.getAxis("left").mapRectToScene(
                dock.strip.getAxis("left").boundingRect())), a
        for b in names[i + 1:]:
            assert not rects[a].intersects(rects[b]), (a, b, rects[a], rects[b])
    assert dock.labels_shown == bool(rects)
    tip = dock.strip.toolTip()
    assert "fast: 1/8 → 1/16" in tip and "attn: ∞ · re-reads" in tip  # always there
    drift_ticks = [t[1] for t in dock.drift.getAxis("left")._tickLevels[0]]
    assert drift_ticks == ["0", "½", "1"]


def test_ablation_keeps_every_delay_in_a_narrow_dock(qtbot):
    """The plot title (a whole sentence) set the plot's minimum width: in the 290 px place of
    the 1600×1000 layout the delays from 32 on were cut off on the right."""
    from PySide6.QtWidgets import QApplication

    from nlstudio.widgets.plots.ablation import AblationDock

    dock = AblationDock()
    dock.level_order = [lv["id"] for lv in LEVELS]
    window = dock_alone(qtbot, dock, (290, 300))
    dock.set_evaluation(evaluation(5))
    dock.redraw()
    QApplication.processEvents()
    dock.redraw()
    view = dock.view
    rect = dock.plot.mapRectToScene(dock.plot.boundingRect())
    assert rect.right() <= view.width() + 0.5, rect
    bar = dock.bar.mapRectToScene(dock.bar.boundingRect())
    assert bar.right() <= view.width() + 0.5, bar
    assert dock.kind_combo.currentText() == "Freeze"
    assert "writes stopped" in dock.kind_combo.itemData(0, Qt.ItemDataRole.ToolTipRole)
    assert dock.message.text().startswith("Level frozen · step 5")
