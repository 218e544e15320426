"""Lesson 1 view: the Transformer's two timescales against the NSAM's spectrum, on the main
window's canvas (its vertical axis is the update frequency) and in the spectrum plot (each
level's designed frequency and the measured power spectrum of its writes)."""
from __future__ import annotations

from PySide6.QtWidgets import QButtonGroup, QCheckBox, QRadioButton, QWidget

from nlstudio.lessons import spectrum as core
from nlstudio.widgets import theme
from nlstudio.widgets.lessons.base import LessonWindow, embed_dock
from nlstudio.widgets.plots.spectrum import SpectrumDock


class SpectrumLesson(LessonWindow):
    number = 1

    def intro(self) -> str:
        return ("A Transformer has two timescales only: attention re-reads its context at "
                "every token (frequency ∞) and its MLPs are frozen after training (frequency 0). "
                "An NSAM fills the middle with levels written every 8, 16 and 64 tokens. The "
                "canvas places each level at its frequency; the plot also measures it, from "
                "the write norms of one forward pass of the untrained model on its task.")

    def __init__(self, host: QWidget | None = None) -> None:
        super().__init__(host)
        self.preset = "transformer"
        self.measurements: list[core.SpectrumMeasurement] = []
        self.canvas_note = ""
        self._pending: tuple[str, int] | None = None
        self.preset_group = QButtonGroup(self)
        self.radios: dict[str, QRadioButton] = {}
        for name, label in core.PRESETS.items():
            radio = QRadioButton(label, self)
            radio.setObjectName(self.name("Nsam" if name == "nsam" else "Transformer"))
            radio.setToolTip(f"Measure the {label} preset and show it on the canvas")
            radio.setChecked(name == self.preset)
            radio.toggled.connect(lambda on, n=name: on and self._guarded(lambda: self.switch(n)))
            self.preset_group.addButton(radio)
            self.controls.addWidget(radio)
            self.radios[name] = radio
        self.canvas_box = QCheckBox("Open it on the canvas", self)
        self.canvas_box.setObjectName(self.name("Canvas"))
        self.canvas_box.setToolTip("Open the preset in the main window, whose canvas places "
                                   "every level at its update frequency")
        self.canvas_box.setChecked(host is not None and hasattr(host, "open_preset"))
        self.canvas_box.setEnabled(host is not None and hasattr(host, "open_preset"))
        self.canvas_box.toggled.connect(lambda on: on and self._guarded(self.show_on_canvas))
        self.controls.addWidget(self.canvas_box)
        self.controls.addSpacing(12)
        self.step_buttons(self.back, self.next, self.reset, "Another batch ▶")
        self.next_button.setToolTip("Measure one more task batch; the plot shows the mean "
                                    "spectrum of the batches measured (Right)")
        self.step_text = self.step_label()
        self.controls.addStretch(1)

        self.spectrum = embed_dock(SpectrumDock(self), self._draw)
        self.spectrum.setObjectName(self.name("Spectrum"))
        self.body.addWidget(self.spectrum, 1)
        self.resize(980, 700)
        self.switch(self.preset)

    # ---- actions ------------------------------------------------------------------------------
    def switch(self, preset: str) -> None:
        """Show ``preset``: on the canvas (if asked) and measured in the plot."""
        self.preset = preset
        if not self.radios[preset].isChecked():
            self.radios[preset].blockSignals(True)
            self.radios[preset].setChecked(True)
            self.radios[preset].blockSignals(False)
        self.measurements = []
        self.spectrum.clear()
        self.canvas_note = ""
        if self.canvas_box.isChecked():
            self.show_on_canvas()
        self.measure(0)

    def show_on_canvas(self) -> None:
        """Open the preset in the main window (it asks first if the project has unsaved
        changes; training in progress keeps the canvas as it is)."""
        opened = bool(self.host.open_preset(self.preset))
        self.canvas_note = "" if opened else (" The canvas still shows your project (it was "
                                              "not replaced).")

    def next(self) -> None:
        self.measure(len(self.measurements))

    def back(self) -> None:
        if len(self.measurements) > 1:
            self.measurements.pop()
            self._replay()

    def reset(self) -> None:
        del self.measurements[1:]
        self._replay()

    def measure(self, batch_index: int) -> None:
        """Measure batch ``batch_index`` of the current preset in the background."""
        if self.busy():
            self._pending = (self.preset, batch_index)
            return
        preset = self.preset
        self._set_busy(True)
        self.status.setText(f"Measuring {core.PRESETS[preset]}: one forward pass on batch "
                            f"{batch_index + 1}…")
        self.start_job(lambda: core.measure(preset, batch_index),
                       lambda result: self._measured(preset, result), "measure")

    def _measured(self, preset: str, result: core.SpectrumMeasurement | None) -> None:
        self._set_busy(False)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if pending[0] != preset or result is None:
                self.measure(pending[1] if pending[0] == preset else 0)
                return
        if result is None or preset != self.preset:
            return
        self.measurements.append(result)
        self.spectrum.set_levels(core.levels_of(result))
        self.spectrum.show_snapshot(result.snapshot)
        self._draw()

    def _replay(self) -> None:
        self.spectrum.clear()
        for m in self.measurements:
            self.spectrum.show_snapshot(m.snapshot)
            self.spectrum.dirty = False
            self.spectrum.redraw()
        self._draw()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self.measurements:  # the dock skipped drawing while hidden
            self._draw()

    def _set_busy(self, busy: bool) -> None:
        for button in (self.next_button, self.back_button, self.reset_button):
            button.setEnabled(not busy)
        if not busy:
            self.back_button.setEnabled(len(self.measurements) > 1)

    # ---- drawing ---------------------------------------------------------------------------------
    def _draw(self) -> None:
        self.spectrum.dirty = False
        self.spectrum.redraw()
        self._set_busy(False)
        if not self.measurements:
            return
        last = self.measurements[-1]
        n = len(self.measurements)
        self.spectrum.set_message(
            f"Power spectrum of each level's write norms, mean of {n} batch"
            f"{'es' if n > 1 else ''} of {last.tokens} tokens; dashed: the designed 1/C.")
        self.step_text.setText(f"{n} batch{'es' if n > 1 else ''} · {last.tokens} tokens each")
        lines = "<br>".join(core.describe_level(lv) for lv in last.levels.values())
        self.status.setText(f"<b>{core.PRESETS[self.preset]}</b>, measured on batch "
                            f"{last.batch_index + 1}:<br>{lines}{self.canvas_note}")
        self.changed()

    def apply_theme(self, palette: theme.Palette) -> None:
        """The embedded spectrum dock follows the theme by itself."""
