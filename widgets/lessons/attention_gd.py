"""Lesson 4 view: token by token, the real linear-attention (or delta-rule) level's memory
beside one gradient step on its inner objective, and their difference."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QButtonGroup, QComboBox, QLabel, QRadioButton

from nlstudio.lessons.attention_gd import GradientStepLesson, TokenStep
from nlstudio.widgets import theme
from nlstudio.widgets.lessons.base import (Heatmap, LessonHost, LessonView, integer_ticks,
                                           new_plot, shared_level, style_markers,
                                           style_plot)
from nlstudio.widgets.plots.base import pen

RULE_TEXT = {
    "linear_attention": ("Linear attention", "−⟨Mk, v⟩", "η"),
    "delta": ("Delta rule", "½‖Mk − v‖²", "η<sub>t</sub>"),
}


class GradientStepView(LessonView):

    def intro(self) -> str:
        return ("Linear attention writes v kᵀ into a matrix memory M at every token; that is "
                "exactly one gradient step on −⟨Mk, v⟩. Step through the real level token by "
                "token: its memory is set beside the step computed by autograd, and the "
                "difference is zero up to rounding. Switch to the delta rule: one step on "
                "½‖Mk − v‖², with the level's own step size η<sub>t</sub>.")

    def __init__(self, host: LessonHost | None = None) -> None:
        super().__init__(host)
        self.cores = {rule: GradientStepLesson(rule) for rule in RULE_TEXT}
        self.rule = "linear_attention"
        self.core = self.cores[self.rule]
        self.step_buttons("Next token ▶")
        self.step_text = self.step_label()
        self.controls.addStretch(1)
        self.rule_group = QButtonGroup(self)
        for rule, (label, _obj, _eta) in RULE_TEXT.items():
            radio = QRadioButton(label, self)
            radio.setObjectName(self.name("Rule" + "".join(w.title() for w in rule.split("_"))))
            radio.setChecked(rule == self.rule)
            radio.toggled.connect(lambda on, r=rule: on and self._guarded(lambda: self.set_rule(r)))
            self.rule_group.addButton(radio)
            self.controls.addWidget(radio)
        self.controls.addWidget(QLabel("head", self))
        self.head_combo = QComboBox(self)
        self.head_combo.setObjectName(self.name("Head"))
        self.head_combo.setToolTip("Which head's memory to draw (the difference is over all)")
        for h in range(self.core.heads):
            self.head_combo.addItem(str(h + 1), h)
        self.head_combo.currentIndexChanged.connect(lambda _i: self._guarded(self.redraw))
        self.controls.addWidget(self.head_combo)

        self.plots = self.plot_area()
        self.body.addWidget(self.plots, 1)
        layout = self.plots.ci
        p = self.palette_
        self.cells = {
            "key": Heatmap(layout, 0, 0, "k", p, bar=False, column_width=22),
            "value": Heatmap(layout, 0, 1, "v", p, bar=False, column_width=22),
            "before": Heatmap(layout, 0, 2, "M<sub>t−1</sub>", p, bar=False),
            "update": Heatmap(layout, 0, 3, "GD step −η∇L", p),
            "gd": Heatmap(layout, 0, 5, "M<sub>t−1</sub> − η∇L (autograd)", p, bar=False),
            "level": Heatmap(layout, 0, 6, "M<sub>t</sub> read from the level", p),
            "diff": Heatmap(layout, 0, 8, "level − GD", p),
        }
        self.diff_plot = new_plot(layout, 2, 0, p, "max |level − GD| per token (all heads)",
                                  "|difference|", "token", colspan=10)
        self.diff_plot.setLogMode(y=True)
        self.diff_plot.setYRange(-19.5, -12.5, padding=0)
        self.eps_line = pg.InfiniteLine(pos=np.log10(np.finfo(np.float64).eps), angle=0,
                                        movable=False, label="float64 ε",
                                        labelOpts={"position": 0.95})
        self.diff_plot.addItem(self.eps_line)
        self.diff_curve = self.diff_plot.plot([], [], symbol="o", symbolSize=5)
        layout.layout.setRowStretchFactor(1, 1)
        layout.layout.setRowStretchFactor(2, 1)
        for col in range(10):  # the five matrices share the width equally
            layout.layout.setColumnStretchFactor(col, 1 if col in (2, 3, 5, 6, 8) else 0)
        self.resize(1180, 620)
        self.redraw()

    # ---- actions (Next/Back/Reset: LessonWindow's) ---------------------------------------------
    def set_rule(self, rule: str) -> None:
        self.rule = rule
        self.core = self.cores[rule]
        self.redraw()

    # ---- drawing ---------------------------------------------------------------------------------
    def redraw(self) -> None:
        core, step = self.core, self.core.current
        label, objective, eta_symbol = RULE_TEXT[self.rule]
        head = int(self.head_combo.currentData() or 0)
        self.back_button.setEnabled(step is not None)
        self.next_button.setEnabled(not core.done)
        self.cells["update"].set_title(f"GD step −{eta_symbol}∇L, L = {objective}")
        self.cells["gd"].set_title(f"M<sub>t−1</sub> − {eta_symbol}∇L (autograd)")
        if step is None:
            for cell in self.cells.values():
                cell.set(None)
            self.cells["before"].set(core.state["M"][0, head].numpy())
            self.step_text.setText(f"token 0 of {core.tokens}")
            self.status.setText(f"{label} level from the {core.spec['id']} block of its "
                                f"preset (d_model {core.d_model}, {core.heads} heads, "
                                f"η = {core.eta:g}, float64). Press Next token.")
        else:
            self._draw_step(step, head)
        diffs = core.max_diffs()
        floor = 10 ** -19  # an exact 0 is drawn at the bottom edge
        self.diff_curve.setData(np.arange(1, len(diffs) + 1), np.maximum(diffs, floor))
        self.diff_plot.setXRange(0.5, core.tokens + 0.5, padding=0)
        integer_ticks(self.diff_plot, core.tokens)
        self.apply_colors()
        self.changed()

    def _draw_step(self, step: TokenStep, head: int) -> None:
        core = self.core
        vec = shared_level(step.key[head], step.value[head])
        self.cells["key"].set(step.key[head][:, None], vec)
        self.cells["value"].set(step.value[head][:, None], vec)
        mem = shared_level(step.before[head], step.gd_after[head], step.level_after[head])
        self.cells["before"].set(step.before[head], mem)
        self.cells["update"].set(step.gd_update[head])
        self.cells["gd"].set(step.gd_after[head], mem)
        self.cells["level"].set(step.level_after[head], mem)
        diff = step.level_after[head] - step.gd_after[head]
        self.cells["diff"].set(diff, max(float(np.abs(diff).max()), 1e-300) if diff.any()
                               else 1e-16)
        eta = step.eta[head]
        self.step_text.setText(f"token {step.number} of {core.tokens}")
        self.status.setText(
            f"Step size {eta:.4g} (head {head + 1}). Max |level − GD| over all heads: "
            f"{step.max_diff:.1e}; the level's output vs reading M<sub>GD</sub> q: "
            f"{step.read_diff:.1e} (float64). Objective {step.objective_before:.3f} → "
            f"{step.objective_after:.3f}.")

    def apply_colors(self) -> None:
        p = self.palette_
        style_markers(self.diff_curve, p.level_color(2), p)
        self.eps_line.setPen(pen(p.muted, 1.0, Qt.PenStyle.DashLine))
        self.eps_line.label.setColor(p.muted)

    def apply_theme(self, palette: theme.Palette) -> None:
        self.plots.setBackground(palette.plot_background)
        for cell in self.cells.values():
            cell.apply_theme(palette)
        style_plot(self.diff_plot, palette)
        self.apply_colors()
