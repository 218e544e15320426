"""The inspector's scrubber: back / play / step buttons, a play rate, a slider over the
positions of a trace and the position read-out. It only knows a length and a position; the
window draws what ``positionChanged`` asks for."""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSlider, QToolButton, QWidget

TICK_MS = 33  # play advances at this interval, by as many tokens as the rate asks
PLAY_RATES = (("10 tokens/s", 10), ("30 tokens/s", 30), ("100 tokens/s", 100),
              ("300 tokens/s", 300))


class Scrubber(QWidget):
    positionChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspectorScrubber")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.back_button = self._tool("◀", "inspectorBackButton", "Previous token (←)",
                                      lambda: self.step(-1), row)
        self.play_button = self._tool("▶", "inspectorPlayButton", "Play / pause",
                                      self.toggle_play, row)
        self.forward_button = self._tool("▶|", "inspectorForwardButton", "Next token (→)",
                                         lambda: self.step(1), row)
        self.rate = QComboBox(self)
        self.rate.setObjectName("inspectorRate")
        for text, value in PLAY_RATES:
            self.rate.addItem(text, value)
        self.rate.setCurrentIndex(1)
        row.addWidget(self.rate)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setObjectName("inspectorSlider")
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self._on_slider)
        row.addWidget(self.slider, 1)
        self.label = QLabel("", self)
        self.label.setObjectName("inspectorPosition")
        self.label.setMinimumWidth(110)
        row.addWidget(self.label)
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._on_tick)

    def _tool(self, text, name, tip, slot, layout) -> QToolButton:
        b = QToolButton(self)
        b.setText(text)
        b.setObjectName(name)
        b.setToolTip(tip)
        b.clicked.connect(lambda _c=False: slot())
        layout.addWidget(b)
        return b

    @property
    def length(self) -> int:
        return self.slider.maximum() + 1

    @property
    def position(self) -> int:
        return self.slider.value()

    def set_length(self, n: int) -> None:
        """A new trace of ``n`` positions, shown from position 0 (no signal)."""
        self.stop_play()
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(n - 1, 0))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self._label()

    def set_position(self, t: int) -> None:
        self.slider.setValue(int(min(max(t, 0), self.slider.maximum())))

    def step(self, delta: int) -> None:
        self.set_position(self.position + delta)

    def _on_slider(self, t: int) -> None:
        self._label()
        self.positionChanged.emit(t)

    def _label(self) -> None:
        self.label.setText(f"{self.position} / {self.slider.maximum()}")

    # ---- play ----------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def toggle_play(self) -> None:
        if self.playing:
            self.stop_play()
        elif self.slider.maximum() > 0:
            if self.position >= self.slider.maximum():
                self.set_position(0)
            self.timer.start()
            self.play_button.setText("❚❚")

    def stop_play(self) -> None:
        self.timer.stop()
        self.play_button.setText("▶")

    def _on_tick(self) -> None:
        if self.position >= self.slider.maximum():
            self.stop_play()
            return
        stride = max(1, round(int(self.rate.currentData()) * TICK_MS / 1000))
        self.step(stride)
