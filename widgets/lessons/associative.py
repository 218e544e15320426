"""Lesson 2 view: a linear layer learning pairs one at a time, each step a write of
surprise ⊗ input into W; optionally the same step as the proximal problem's solution."""
from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel

from nlstudio.lessons.associative import AssocStep, AssociativeMemoryLesson
from nlstudio.widgets import theme
from nlstudio.widgets.lessons.base import (Heatmap, LessonHost, LessonView, integer_ticks,
                                           new_plot, shared_level, style_markers,
                                           style_plot)

ETAS = (0.1, 0.5, 1.0)


class AssociativeMemoryView(LessonView):

    def intro(self) -> str:
        return ("A 6×6 layer W learns six input → target pairs, one per step. The gradient of "
                "the loss with respect to the layer's output is the surprise u, and each SGD "
                "step adds −η u xᵀ to W: the layer is a memory that stores (input, surprise) "
                "pairs. The same step is also the minimiser of ⟨Wx, u⟩ + ‖W − W<sub>t</sub>‖²/2η, "
                "solved here numerically.")

    def __init__(self, host: LessonHost | None = None) -> None:
        super().__init__(host)
        self.core = AssociativeMemoryLesson(eta=0.5)
        self.step_buttons()
        self.step_text = self.step_label()
        self.controls.addStretch(1)
        eta_label = QLabel("step size η", self)
        self.controls.addWidget(eta_label)
        self.eta_combo = QComboBox(self)
        self.eta_combo.setObjectName(self.name("Eta"))
        self.eta_combo.setToolTip("The SGD step size; changing it starts over")
        for eta in ETAS:
            self.eta_combo.addItem(f"{eta:g}", eta)
        self.eta_combo.setCurrentIndex(ETAS.index(0.5))
        self.eta_combo.currentIndexChanged.connect(lambda _i: self._guarded(self._new_eta))
        self.controls.addWidget(self.eta_combo)
        self.proximal_box = QCheckBox("Show the step as the proximal solution", self)
        self.proximal_box.setObjectName(self.name("Proximal"))
        self.proximal_box.setToolTip("Draw W_{t+1} as argmin ⟨Wx, u⟩ + ‖W − W_t‖²/2η, found by "
                                     "Newton's method with torch.linalg, and print its "
                                     "difference from the SGD step")
        self.proximal_box.toggled.connect(lambda _on: self._guarded(self.redraw))
        self.controls.addWidget(self.proximal_box)

        self.plots = self.plot_area()
        self.body.addWidget(self.plots, 1)
        layout = self.plots.ci
        p = self.palette_
        self.cells = {
            "x": Heatmap(layout, 0, 0, "input x", p, bar=False, column_width=44),
            "target": Heatmap(layout, 0, 1, "target y*", p, bar=False, column_width=44),
            "recall": Heatmap(layout, 0, 2, "recall W<sub>t</sub>x", p, bar=False,
                              column_width=44),
            "surprise": Heatmap(layout, 0, 3, "surprise u", p,
                                column_width=44),
            "write": Heatmap(layout, 0, 5, "write −η u xᵀ", p),
            "memory": Heatmap(layout, 0, 7, "memory W", p),
        }
        for col, stretch in ((0, 1), (1, 1), (2, 1), (3, 1), (5, 5), (7, 5)):
            layout.layout.setColumnStretchFactor(col, stretch)
        self.loss_plot = new_plot(layout, 2, 0, p, "mean loss over the six pairs", "loss",
                                  "writes", colspan=9)
        layout.layout.setRowStretchFactor(1, 3)
        layout.layout.setRowStretchFactor(2, 2)
        self.loss_curve = self.loss_plot.plot([], [], symbol="o", symbolSize=5)
        self.resize(1080, 640)
        self.redraw()

    # ---- actions (Next/Back/Reset: LessonWindow's) ---------------------------------------------
    def _new_eta(self) -> None:
        eta = float(self.eta_combo.currentData())
        self.core = AssociativeMemoryLesson(eta=eta)
        self.redraw()

    # ---- drawing ---------------------------------------------------------------------------------
    def redraw(self) -> None:
        step: AssocStep | None = self.core.current
        proximal = self.proximal_box.isChecked()
        self.back_button.setEnabled(step is not None)
        n = self.core.pairs
        if step is None:
            for key in ("x", "target", "recall", "surprise", "write"):
                self.cells[key].set(None)
            self.cells["memory"].set(self.core.memory())
            self.cells["memory"].set_title("memory W<sub>0</sub> = 0")
            self.step_text.setText(f"0 writes · {n} pairs to learn")
            self.status.setText("Press Next to show the first pair.")
        else:
            vec_level = shared_level(step.x, step.target, step.prediction, step.surprise)
            self.cells["x"].set(step.x[:, None], vec_level)
            self.cells["target"].set(step.target[:, None], vec_level)
            self.cells["recall"].set(step.prediction[:, None], vec_level)
            self.cells["surprise"].set(step.surprise[:, None], vec_level)
            self.cells["write"].set(step.write)
            memory = step.proximal if proximal else step.after
            self.cells["memory"].set(memory)
            self.cells["memory"].set_title(
                "W<sub>t+1</sub> = argmin ⟨Wx, u⟩ + ‖W − W<sub>t</sub>‖²/2η" if proximal
                else "memory W<sub>t+1</sub> = W<sub>t</sub> − η u xᵀ")
            self.step_text.setText(f"write {step.number} · pair {step.pair + 1} of {n}")
            text = (f"Loss over all pairs {step.loss_before:.3f} → {step.loss_after:.3f}; "
                    f"‖u‖ = {np.linalg.norm(step.surprise):.3f}.")
            if proximal:
                text += (f" Proximal solution vs SGD step: max |difference| = "
                         f"{step.proximal_gap:.1e} (float64); gradient of the objective at "
                         f"the solution {step.proximal_residual:.1e}.")
            self.status.setText(text)
        losses = self.core.losses()
        self.loss_curve.setData(np.arange(len(losses)), losses)
        self.loss_plot.setXRange(0, max(len(losses) - 1, n), padding=0.02)
        integer_ticks(self.loss_plot, max(len(losses) - 1, n))
        self.apply_colors()
        self.changed()

    def apply_colors(self) -> None:
        style_markers(self.loss_curve, self.palette_.level_color(0), self.palette_)

    def apply_theme(self, palette: theme.Palette) -> None:
        self.plots.setBackground(palette.plot_background)
        for cell in self.cells.values():
            cell.apply_theme(palette)
        style_plot(self.loss_plot, palette)
        self.apply_colors()
