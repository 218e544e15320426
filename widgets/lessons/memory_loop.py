"""Lesson 5 view: on the real NSAM kv_stream model, recall by delay with each level's writes
frozen in turn (its output kept: what the level stores; one curve per frozen level, and the
level × delay view, which also switches to the silence ablation: what the model depends on),
then the return of a mapping: what was still held, and how fast it is relearned with and
without the slow level's writes.

The core trains the model through the real trainer in a worker thread (the GUI polls the job's
progress and never waits for it, except to join it when the window closes, after asking it to
stop). The story opens on its first stage, the fact being shown; Next moves it on."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QProgressBar

from nlstudio import probes
from nlstudio.lessons import memory_loop as core
from nlstudio.widgets import theme
from nlstudio.widgets.lessons.base import (LessonHost, LessonView, embed_dock, new_plot,
                                           style_plot)
from nlstudio.widgets.plots.ablation import AblationDock
from nlstudio.widgets.plots.base import pen

#: The lesson's setup; tests shrink ``train_steps``.
CONFIG = core.LoopConfig()
POLL_MS = 100
_SHARED: dict[core.LoopConfig, core.MemoryLoopLesson] = {}


def shared_lesson(config: core.LoopConfig) -> core.MemoryLoopLesson:
    """One model per setup and session: reopening the lesson keeps what it learned. Built on
    first use by the worker thread (it loads the preset and builds the task)."""
    if config not in _SHARED:
        _SHARED[config] = core.MemoryLoopLesson(config)
    return _SHARED[config]


class MemoryLoopView(LessonView):

    def intro(self) -> str:
        return ("Facts are shown once; the stream moves on and each level forgets at its own "
                "rate. Freezing one level's writes at a time (it keeps its output, stops "
                "learning in context) shows which level's memory still held a fact after a "
                "given delay; silencing a level (its output zeroed, in the panel on the right) "
                "shows only what the model depends on. Then a mapping returns: is it still "
                "recalled, and is it relearned faster than the first time, with and without "
                "the slowest level's writes? The default project's NSAM is trained for a few "
                "seconds first: untrained, its CMS levels already learn in context, but weakly "
                "(dotted curve).")

    def __init__(self, host: LessonHost | None = None,
                 config: core.LoopConfig | None = None) -> None:
        super().__init__(host)
        self.config = config or CONFIG
        self.core: core.MemoryLoopLesson | None = _SHARED.get(self.config)
        if self.core is not None:
            self.core.reset()  # a new window opens on the first stage
        self.result: core.LoopResult | None = None  # what the plots show
        self.job: core.LoopJob | None = None
        self.step_buttons()
        self.step_text = self.step_label()
        self.train_button = self.button(f"Train {self.config.train_steps} more steps", "Train",
                                        self.train_more, "Continue training, then measure "
                                        "again")
        self.bar = QProgressBar(self)
        self.bar.setObjectName(self.name("Progress"))
        self.bar.setMinimumWidth(220)
        self.bar.setTextVisible(True)
        self.bar.setVisible(False)  # only while training and measuring
        self.controls.addWidget(self.bar)
        self.controls.addStretch(1)
        self.controls.addWidget(QLabel("on return, freeze", self))
        self.freeze_combo = QComboBox(self)
        self.freeze_combo.setObjectName(self.name("Freeze"))
        self.freeze_combo.setToolTip("Which level's writes to freeze in the return plot (it "
                                     "keeps its output; levels without writes are not listed)")
        self.freeze_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.freeze_combo.currentIndexChanged.connect(lambda _i: self._guarded(self.redraw))
        self.controls.addWidget(self.freeze_combo)
        self.poll = QTimer(self)
        self.poll.setObjectName(self.name("ProgressTimer"))
        self.poll.setInterval(POLL_MS)
        self.poll.timeout.connect(self._show_progress)

        row = QHBoxLayout()
        self.body.addLayout(row, 1)
        self.plots = self.plot_area()
        row.addWidget(self.plots, 3)
        p = self.palette_
        layout = self.plots.ci
        self.delay_plot = new_plot(layout, 0, 0, p, "recall by delay, one level's writes frozen",
                                   "recall", "delay since the fact was shown (tokens)")
        self.return_plot = new_plot(layout, 1, 0, p, "when the mapping returns", "recall",
                                    "tokens of other mappings before it returns")
        for plot in (self.delay_plot, self.return_plot):
            # Headroom above recall 1 for the legend, so that it never hides a curve.
            plot.setYRange(0, 1.45, padding=0)
            plot.getAxis("left").setTicks([[(v, f"{v:g}") for v in (0, 0.2, 0.4, 0.6, 0.8,
                                                                    1.0)]])
            plot.addLegend(offset=(-4, 4), labelTextSize="8pt", verSpacing=-6, colCount=2)
        self.delay_curves: dict[str, pg.PlotDataItem] = {}
        self.return_curves: dict[str, pg.PlotDataItem] = {}
        self.ablation = embed_dock(AblationDock(self), self.redraw)
        self.ablation.setObjectName(self.name("Ablation"))
        row.addWidget(self.ablation, 2)
        self.resize(1240, 760)
        self._show_result(self.core.result if self.core is not None else None)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self.result is None and not self.busy():  # first opened, or stopped by a close
            self.start(self.config.train_steps)

    # ---- the background run ------------------------------------------------------------------
    def start(self, steps: int) -> None:
        """Train ``steps`` more outer steps and measure, in the background."""
        if self.busy():
            return
        config = self.config
        self.job = job = core.LoopJob(total=steps)
        self.bar.setRange(0, max(steps, 1))
        self.bar.setValue(0)
        self.bar.setVisible(True)
        self.bar.setFormat("building the model…")
        self.train_button.setEnabled(False)
        self.status.setText(f"Training the NSAM for {steps} steps with the lab's trainer on its "
                            "own task batches, then measuring recall by delay and on return, "
                            "each level's writes frozen in turn (and each level silenced, for "
                            "the panel on the right; a few seconds)…")

        def work() -> core.LoopResult | None:
            return shared_lesson(config).run(steps, job)

        self.start_job(work, self._finished, "train")
        self.poll.start()

    def train_more(self) -> None:
        self.start(self.config.train_steps)

    def _show_progress(self) -> None:
        progress = self.job
        if progress is None:
            return
        if progress.phase == "training":
            self.bar.setValue(progress.step)
            loss = "" if math.isnan(progress.loss) else f", loss {progress.loss:.2f}"
            self.bar.setFormat(f"training %v/%m{loss}")
        elif progress.phase.startswith("measuring the untrained"):
            self.bar.setFormat("measuring the untrained model…")
        elif progress.phase in ("measuring", "done"):
            self.bar.setValue(self.bar.maximum())
            self.bar.setFormat("measuring recall…")

    def _finished(self, result: core.LoopResult | None) -> None:
        self.poll.stop()
        self.train_button.setEnabled(True)
        self.bar.setVisible(False)
        self.core = _SHARED.get(self.config)
        if result is None:
            if self.job is not None and self.job.stopped:
                self.status.setText("Training was stopped; press Train to go on.")
            return
        self._show_result(result)

    def shutdown(self) -> None:
        if self.job is not None:
            self.job.stop()
        self.poll.stop()
        super().shutdown()

    def _show_result(self, result: core.LoopResult | None) -> None:
        self.result = result
        if result is None:
            self.redraw()
            return
        current = self.freeze_combo.currentData()
        self.freeze_combo.blockSignals(True)
        self.freeze_combo.clear()
        for lid in result.written:
            self.freeze_combo.addItem(f"{lid} (every {result.periods.get(lid)})", lid)
        slow = current if current in result.written else core.slowest_level(result)
        if slow in result.written:
            self.freeze_combo.setCurrentIndex(result.written.index(slow))
        self.freeze_combo.blockSignals(False)
        self.ablation.level_order = list(result.level_ids)
        self._make_curves(result)
        self.redraw()

    def _make_curves(self, result: core.LoopResult) -> None:
        for plot, curves in ((self.delay_plot, self.delay_curves),
                             (self.return_plot, self.return_curves)):
            for item in curves.values():
                plot.removeItem(item)
            curves.clear()
            if plot.legend is not None:
                plot.legend.clear()
        p = self.palette_
        self.delay_curves["untrained"] = self.delay_plot.plot(
            [], [], name="untrained, all levels", pen=pen(p.muted, 1.6, Qt.PenStyle.DotLine),
            symbol="o", symbolSize=4, symbolBrush=p.muted)
        self.delay_curves["none"] = self.delay_plot.plot(
            [], [], name="all levels", pen=pen(p.plot_foreground, 2.6), symbol="o",
            symbolSize=6, symbolBrush=p.plot_foreground)
        for lid in result.written:  # colours follow the model order of every level
            color = p.level_color(result.level_ids.index(lid))
            self.delay_curves[lid] = self.delay_plot.plot(
                [], [], name=f"{lid} frozen", pen=pen(color, 1.8, Qt.PenStyle.DashLine),
                symbol="o", symbolSize=5, symbolBrush=color)
        for key, label, style, width in (
                ("first", "first time (2nd pass)", Qt.PenStyle.DotLine, 1.6),
                ("held", "on return, before re-showing", Qt.PenStyle.SolidLine, 1.2),
                ("relearned", "on return, after one re-showing", Qt.PenStyle.SolidLine, 2.6),
                ("frozen", "… with the level's writes frozen", Qt.PenStyle.DashLine, 2.2)):
            self.return_curves[key] = self.return_plot.plot(
                [], [], name=label, pen=pen(p.plot_foreground, width, style), symbol="o",
                symbolSize=5)
        style_plot(self.delay_plot, p)
        style_plot(self.return_plot, p)
        ticks = [[(math.log2(d), str(int(d))) for d in result.delay.delays]]
        self.delay_plot.getAxis("bottom").setTicks(ticks)
        self.delay_plot.setXRange(math.log2(result.delay.delays[0]) - 0.3,
                                  math.log2(result.delay.delays[-1]) + 0.3, padding=0)
        gaps = result.returns.gaps
        self.return_plot.getAxis("bottom").setTicks([[(float(g), str(int(g))) for g in gaps]])
        self.return_plot.setXRange(gaps[0] - 10, gaps[-1] + 10, padding=0)

    # ---- drawing ---------------------------------------------------------------------------------
    def redraw(self) -> None:
        result = self.result
        stage = self.core.step_count if self.core is not None and result is not None else 0
        last = result.stages - 1 if result is not None else 0
        self.back_button.setEnabled(result is not None and stage > 0)
        self.next_button.setEnabled(result is not None and stage < last)
        self.reset_button.setEnabled(result is not None and stage > 0)
        self.freeze_combo.setEnabled(result is not None and bool(result.written))
        if result is None:
            self.step_text.setText("")
            self.changed()
            return
        d = result.delay
        shown = min(stage, len(d.delays))
        x = np.log2(d.delays[:shown].astype(float))
        for i, name in enumerate(d.names):
            self.delay_curves[name].setData(x, d.table[i, :shown])
        untrained = result.untrained if result.trained_steps else None
        self.delay_curves["untrained"].setData(x if untrained is not None else [],
                                               untrained[:shown] if untrained is not None
                                               else [])
        if shown:
            # Both ablations, freeze shown unless the user picks silence in the panel (its
            # title and axis say which one is shown).
            tables = [d] + ([result.silenced] if result.silenced is not None else [])
            for t in tables:
                self.ablation.set_table(result.trained_steps, t.names, t.delays[:shown],
                                        t.table[:, :shown], t.ablation)
            self.ablation.dirty = False
            self.ablation.redraw()
            kind = self.ablation.kind
            self.ablation.set_message(f"Recall lost per level {probes.ABLATION_VERB[kind]} "
                                      f"(after {result.trained_steps} training steps)")
        else:
            self.ablation.clear()
            self.ablation.dirty = False
            self.ablation.redraw()
            self.ablation.set_message("The fact has just been shown: nothing is lost yet. "
                                      "Next moves the stream on.")
        self.ablation.view.setVisible(shown > 0)  # an empty grid would show made-up axes
        self._draw_return(result, stage > len(d.delays))
        if stage == 0:
            where = "a fact is shown once"
        elif stage <= len(d.delays):
            where = f"the stream has moved on {d.delays[shown - 1]} tokens"
        else:
            where = "the mapping returns"
        self.step_text.setText(f"step {stage} of {last}: {where} · model "
                               f"trained {result.trained_steps} steps")
        self.status.setText(core.describe_stage(result, stage))
        self.changed()

    def _draw_return(self, result: core.LoopResult, visible: bool) -> None:
        r = result.returns
        lid = self.freeze_combo.currentData() or core.slowest_level(result)
        i = r.names.index(lid) if lid in r.names else None
        gaps = r.gaps.astype(float)
        series = {"first": r.first_sight[0], "held": r.held[0], "relearned": r.relearned[0],
                  "frozen": r.relearned[i] if i is not None else np.zeros(0)}
        p = self.palette_
        color = p.level_color(result.level_ids.index(lid)) if lid in result.level_ids \
            else p.muted
        for key, curve in self.return_curves.items():
            shown = visible and len(series[key]) == len(gaps)
            curve.setData(gaps if shown else [], series[key] if shown else [])
            c = color if key == "frozen" else (p.muted if key == "first"
                                               else p.plot_foreground)
            curve.setSymbolBrush(pg.mkBrush(c))
            curve.setSymbolPen(pg.mkPen(c))
            width, style = {"first": (1.6, Qt.PenStyle.DotLine),
                            "held": (1.2, Qt.PenStyle.SolidLine),
                            "relearned": (2.6, Qt.PenStyle.SolidLine),
                            "frozen": (2.2, Qt.PenStyle.DashLine)}[key]
            curve.setPen(pen(c, width, style))
        legend = self.return_plot.legend
        if legend is not None:
            for sample, label in legend.items:
                if sample.item is self.return_curves["frozen"]:
                    label.setText(f"… with {lid}'s writes frozen" if i is not None
                                  else "… no level writes", color=p.plot_foreground)

    def apply_theme(self, palette: theme.Palette) -> None:
        self.plots.setBackground(palette.plot_background)
        style_plot(self.delay_plot, palette)
        style_plot(self.return_plot, palette)
        if self.result is not None:
            self._make_curves(self.result)
        self.redraw()
