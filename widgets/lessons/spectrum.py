"""Lesson 1 view: the Transformer's two timescales against the NSAM's spectrum, in the spectrum
plot (each level's designed frequency beside the measured frequency of its content, and the
drift curves it comes from) and, if the user asks for it, on the main window's canvas (its
vertical axis is the update frequency).

The canvas holds the user's project: "Open it on the canvas" is off by default and replacing
the project shown there always asks first (with "No" keeping it), whether or not it has unsaved
changes. Only the lesson's own, unedited copy of a preset is replaced without asking when the
user switches presets with the box ticked."""
from __future__ import annotations

import html

from PySide6.QtWidgets import QButtonGroup, QCheckBox, QRadioButton

from nlstudio.lessons import spectrum as core
from nlstudio.widgets import theme
from nlstudio.widgets.lessons.base import LessonHost, LessonView, embed_dock
from nlstudio.widgets.plots.spectrum import SpectrumDock


class SpectrumView(LessonView):
    background_next = True  # each step is one forward pass of a preset model

    def intro(self) -> str:
        return ("A Transformer has two timescales only: attention re-reads its context at "
                "every token (frequency ∞) and its MLPs are frozen after training (frequency 0). "
                "An NSAM fills the middle with levels written every 8, 16 and 64 tokens. The "
                "plot places each level at its designed frequency 1/C (dot) and beside it the "
                "frequency of its content, measured (diamond): held-out streams of the task go "
                "through the untrained model one token per call, each level is read on 32 "
                "fixed probe inputs after every token, and the content frequency is 1/τ, τ "
                "being twice the lag after which half of that read-out has been replaced "
                "(the plot of D(Δ), content replaced after lag Δ). A level that replaced "
                "everything at each write would sit on "
                "its dot; writes that change a little sit to the left. The bars are the write "
                "schedule, which says when a level writes, not what changes. A run's Spectrum "
                "dock measures the trained model the same way at every evaluation.")

    def __init__(self, host: LessonHost | None = None) -> None:
        super().__init__(host)
        self.core = core.SpectrumLesson("transformer")
        self.canvas_note = ""
        self._canvas_copy: dict | None = None  # the preset this lesson put on the canvas
        self._drawn: list[core.RateMeasurement] = []  # what the spectrum dock holds
        self.preset_group = QButtonGroup(self)
        self.radios: dict[str, QRadioButton] = {}
        for name, label in core.PRESETS.items():
            radio = QRadioButton(label, self)
            radio.setObjectName(self.name("Nsam" if name == "nsam" else "Transformer"))
            radio.setToolTip(f"Measure the {label} preset")
            radio.setChecked(name == self.core.preset)
            radio.toggled.connect(lambda on, n=name: on and self._guarded(lambda: self.switch(n)))
            self.preset_group.addButton(radio)
            self.controls.addWidget(radio)
            self.radios[name] = radio
        can_open = host is not None  # a lesson window of its own has no canvas to open on
        self.canvas_box = QCheckBox("Open it on the canvas", self)
        self.canvas_box.setObjectName(self.name("Canvas"))
        self.canvas_box.setToolTip("Open the preset in the main window, whose canvas places "
                                   "every level at its update frequency (asks before it "
                                   "replaces your project)")
        self.canvas_box.setChecked(False)
        self.canvas_box.setEnabled(can_open)
        self.canvas_box.toggled.connect(lambda on: on and self._guarded(self._canvas_ticked))
        self.controls.addWidget(self.canvas_box)
        self.controls.addSpacing(12)
        self.step_buttons("Another batch ▶")
        self.next_button.setToolTip("Measure another batch of held-out streams; the plot "
                                    "pools every batch measured (Right)")
        self.step_text = self.step_label()
        self.controls.addStretch(1)

        self.spectrum = embed_dock(SpectrumDock(self), self._draw_dock)
        self.spectrum.setObjectName(self.name("Spectrum"))
        self.body.addWidget(self.spectrum, 1)
        self.resize(980, 700)
        self.next()  # the first batch, in the background

    # ---- actions ------------------------------------------------------------------------------
    def switch(self, preset: str) -> None:
        """Measure ``preset`` (and show it on the canvas, if the box is ticked)."""
        if not self.radios[preset].isChecked():
            self.radios[preset].blockSignals(True)
            self.radios[preset].setChecked(True)
            self.radios[preset].blockSignals(False)
        self.core.select(preset)  # a measurement still running for the old one is dropped
        self._sync_dock()
        self.canvas_note = ""
        if self.canvas_box.isChecked():
            self.show_on_canvas()
        self.next()

    def _canvas_ticked(self) -> None:
        self.show_on_canvas()
        if not self.busy():
            self.redraw()

    def show_on_canvas(self) -> None:
        """Open the preset in the main window, after asking whenever that replaces a project
        the user had there (the main window then also asks to save unsaved changes; training
        in progress keeps the canvas as it is)."""
        host, preset = self.host, self.core.preset
        document = host.document
        if document.locked:  # a run is training that project: nothing to ask
            self._keep_project(f" ({document.lock_reason or 'editing is locked'})")
            return
        ours = (self._canvas_copy is not None and document.path is None
                and document.is_clean and document.data == self._canvas_copy)
        if not ours:
            unsaved = " It has unsaved changes." if not document.is_clean else ""
            if not host.dialogs.question(
                    "Replace the project on the canvas?",
                    f"Open the {core.PRESETS[preset]} preset on the canvas in place of "
                    f"“{document.name}”?{unsaved}\n\nNo keeps your project on the canvas; the "
                    "lesson goes on in its own window."):
                self._keep_project()
                return
        if not host.open_preset(preset):
            self._keep_project()
            return
        self._canvas_copy = host.document.snapshot()
        self.canvas_note = ""

    def _keep_project(self, why: str = "") -> None:
        self.canvas_box.blockSignals(True)
        self.canvas_box.setChecked(False)
        self.canvas_box.blockSignals(False)
        self.canvas_note = f" The canvas still shows your project (it was not replaced){why}."

    def _stepped(self) -> None:
        if self.core.step_count == 0:  # the preset changed while a batch was measured
            self.set_stepping(False)
            self.next()
            return
        super()._stepped()

    def set_stepping(self, busy: bool) -> None:
        super().set_stepping(busy)
        if not busy:
            self.back_button.setEnabled(self.core.step_count > 1)
        if busy:
            self.status.setText(f"Measuring {core.PRESETS[self.core.preset]}: batch "
                                f"{self.core.step_count + 1} of held-out streams, one token "
                                "per call…")

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self._drawn:  # the dock skipped drawing while hidden
            self._draw_dock()

    # ---- drawing ---------------------------------------------------------------------------------
    def _sync_dock(self) -> None:
        """The dock holds the content pooled over exactly the core's measurements."""
        measurements = list(self.core.measurements)
        if len(measurements) == len(self._drawn) and all(
                a is b for a, b in zip(measurements, self._drawn)):
            return
        if not measurements:
            self.spectrum.clear()
            self._drawn = []
            return
        last = measurements[-1]
        self.spectrum.set_levels(core.levels_of(last))
        n = len(measurements)
        self.spectrum.show_content(
            None, self.core.pooled(),
            source=f"{n * core.BATCH} held-out streams of {last.tokens} tokens "
                   f"({n} batch{'es' if n > 1 else ''}), untrained model")
        self._drawn = measurements

    def _draw_dock(self) -> None:
        self.spectrum.dirty = False
        self.spectrum.redraw()

    def redraw(self) -> None:
        self._sync_dock()
        self._draw_dock()
        last, n = self.core.current, self.core.step_count
        if not self.busy():
            self.back_button.setEnabled(n > 1)
            self.reset_button.setEnabled(n > 1)
        if last is None:
            self.step_text.setText("")
            self.status.setText(f"Measuring {core.PRESETS[self.core.preset]}…"
                                f"{self.canvas_note}")
            self.changed()
            return
        self.step_text.setText(f"{n} batch{'es' if n > 1 else ''} · {n * core.BATCH} "
                               f"streams of {last.tokens} tokens")
        pooled = self.core.pooled()
        lines = "<br>".join(html.escape(core.describe_level(lv, pooled.get(lid)))
                            for lid, lv in last.levels.items())  # "< 1/512" is not a tag
        self.status.setText(f"<b>{core.PRESETS[self.core.preset]}</b> (untrained), designed "
                            f"frequency vs measured content frequency:<br>{lines}"
                            f"{self.canvas_note}")
        self.changed()

    def apply_theme(self, palette: theme.Palette) -> None:
        """The embedded spectrum dock follows the theme by itself."""
