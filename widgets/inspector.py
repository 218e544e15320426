"""The inspector: edits the selected level (kind, id, period, objective, inner optimizer and
its hyper-parameters, kind options) or, with nothing selected, the project's settings.

Every editor is generated from metadata (KINDS[kind].options, OPTIMIZERS[name].hyper, a task's
pydantic Params), and every change is one undoable command (consecutive spin-box edits of one
field merge into one).
"""
from __future__ import annotations

import math
import re
import typing
from typing import Any, Callable

from PySide6.QtCore import QRegularExpression, QSize, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator, QValidator
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QScrollArea,
                               QSpinBox, QVBoxLayout, QWidget)

from pydantic import BaseModel

from nlstudio.catalog import (KINDS, MODEL_SETTINGS, OBJECTIVES, OPTIMIZERS, TRAIN_SETTINGS,
                               all_tasks)
from nlstudio.widgets import theme
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.document import Document


# ---- editors generated from metadata ---------------------------------------------------
MAX_PERIOD = 2 ** 20


def nice_step(value: float, steps: int, low: float, high: float) -> float:
    """Step along 1-2-5 × 10^k (how log-scaled rates are usually explored)."""
    v = value if value > 0 else max(low, 1e-12)
    for _ in range(abs(steps)):
        e = math.floor(math.log10(v))
        grid = sorted(m * 10.0 ** k for k in range(e - 1, e + 2) for m in (1, 2, 5))
        if steps > 0:
            v = next((g for g in grid if g > v * (1 + 1e-9)), v * 2)
        else:
            v = next((g for g in reversed(grid) if g < v * (1 - 1e-9)), v / 2)
    return float(min(high, max(low, float(f"{v:.12g}"))))


class SciSpinBox(QDoubleSpinBox):
    """A float editor that shows 0.0003 or 1e-05 (not 0.000300000000), with 1-2-5 steps when
    ``log`` and plain steps otherwise; with ``null_text`` its minimum stands for null."""

    edited = Signal(object)

    def __init__(self, low: float, high: float, log: bool = False,
                 null_text: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.log = log
        self.nullable = null_text is not None
        self.setDecimals(12)
        self.setRange(low, high)
        if null_text:
            self.setSpecialValueText(null_text)
        self.setKeyboardTracking(False)
        span = high - low
        self.setSingleStep(10 ** math.floor(math.log10(span / 20)) if span > 0 else 0.1)
        self.valueChanged.connect(lambda _v: self.edited.emit(self.current()))

    def current(self) -> float | None:
        if self.nullable and self.value() == self.minimum():
            return None
        return float(f"{self.value():.12g}")

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt API
        return f"{value:.6g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt API
        try:
            return float(text.strip())
        except ValueError:
            return self.minimum() if self.nullable and text.strip() == self.specialValueText() \
                else self.value()

    def validate(self, text: str, pos: int):  # noqa: D401 - Qt API
        stripped = text.strip()
        if self.nullable and stripped == self.specialValueText():
            return (QValidator.State.Acceptable, text, pos)
        try:
            value = float(stripped)
        except ValueError:
            partial = stripped in ("", "-", "+", ".", "-.") or stripped.lower().endswith(
                ("e", "e-", "e+")) or (self.nullable and self.specialValueText().startswith(
                    stripped))
            return (QValidator.State.Intermediate if partial else QValidator.State.Invalid,
                    text, pos)
        ok = self.minimum() <= value <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate, text, pos)

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        if self.log:
            low = self.minimum()
            if self.nullable or low <= 0:
                low = max(low, 1e-12)
            self.setValue(nice_step(self.value(), steps, low, self.maximum()))
        else:
            super().stepBy(steps)

    def set_value(self, value: Any) -> None:
        target = self.minimum() if value is None else value
        if isinstance(target, (int, float)) and not math.isclose(
                float(target), self.value(), rel_tol=1e-12, abs_tol=0):
            self.blockSignals(True)
            self.setValue(float(target))
            self.blockSignals(False)


class IntSpinBox(QSpinBox):
    """An integer editor; with ``null_text`` its minimum stands for null (e.g. "none")."""

    edited = Signal(object)

    def __init__(self, low: int, high: int, null_text: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.nullable = null_text is not None
        int_max = 2 ** 31 - 1  # QSpinBox is 32-bit
        low, high = max(-int_max + 1, int(low)), min(int_max, int(high))
        self.setRange(low - 1 if self.nullable else low, high)
        if self.nullable:
            self.setSpecialValueText(null_text)
        self.setKeyboardTracking(False)
        self.valueChanged.connect(lambda _v: self.edited.emit(self.current()))

    def current(self) -> int | None:
        if self.nullable and self.value() == self.minimum():
            return None
        return int(self.value())

    def set_value(self, value: Any) -> None:
        target = self.minimum() if value is None else int(value)
        if target != self.value():
            self.blockSignals(True)
            self.setValue(target)
            self.blockSignals(False)


class PeriodSpinBox(IntSpinBox):
    """A level's period: arrows double and halve it; 0 shows as "frozen" where allowed."""

    def __init__(self, allow_frozen: bool, parent: QWidget | None = None) -> None:
        super().__init__(1, MAX_PERIOD, "frozen (0)" if allow_frozen else None, parent)
        self.setSuffix(" tokens")

    def textFromValue(self, value: int) -> str:  # noqa: N802 - Qt API
        return f"{value}"

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        v = self.value()
        for _ in range(abs(steps)):
            if steps > 0:
                v = 1 if v <= 0 else 2 ** (math.floor(math.log2(v)) + 1)
            else:
                lower = 2 ** (math.ceil(math.log2(v)) - 1) if v > 1 else self.minimum()
                v = max(self.minimum(), lower)
        self.setValue(min(self.maximum(), v))


class ChoiceBox(QComboBox):
    """A combo box of (value, label, tooltip) choices."""

    edited = Signal(object)

    def __init__(self, choices: list[tuple[Any, str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)
        for value, label, tip in choices:
            self.addItem(label, value)
            if tip:
                self.setItemData(self.count() - 1, tip, role=3)  # Qt.ToolTipRole
        self.activated.connect(lambda i: self.edited.emit(self.itemData(i)))

    def set_value(self, value: Any) -> None:
        index = self.findData(value)
        if index < 0:
            self.addItem(f"{value} (unknown)", value)
            index = self.count() - 1
        if index != self.currentIndex():
            self.blockSignals(True)
            self.setCurrentIndex(index)
            self.blockSignals(False)


class Switch(QCheckBox):
    edited = Signal(object)

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.toggled.connect(lambda on: self.edited.emit(bool(on)))

    def set_value(self, value: Any) -> None:
        if bool(value) != self.isChecked():
            self.blockSignals(True)
            self.setChecked(bool(value))
            self.blockSignals(False)


class TextField(QLineEdit):
    """A line edit that reports its text when editing finishes (Enter or focus out); when
    ``nullable``, an empty field is null."""

    edited = Signal(object)

    def __init__(self, nullable: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.nullable = nullable
        if nullable:
            self.setPlaceholderText("none")
        self._committed = ""
        self.editingFinished.connect(self._finish)

    def _finish(self) -> None:
        if self.text() != self._committed:
            self._committed = self.text()
            self.edited.emit(None if self.nullable and not self.text() else self.text())

    def set_value(self, value: Any) -> None:
        text = "" if value is None else str(value)
        self._committed = text
        if text != self.text():
            self.setText(text)


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType",
                                                                 None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def pydantic_editor(field: Any) -> QWidget | None:
    """An editor for one pydantic field (int, float, bool, Literal/Enum choice, str)."""
    import enum

    annotation, optional = _unwrap_optional(field.annotation)
    low, high, low_shift, high_shift = None, None, 0, 0
    for meta in getattr(field, "metadata", []):
        for attr, is_low, shift in (("ge", True, 0), ("gt", True, 1), ("le", False, 0),
                                    ("lt", False, -1)):
            value = getattr(meta, attr, None)
            if value is not None:
                if is_low:
                    low, low_shift = value, shift
                else:
                    high, high_shift = value, shift
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return Switch()
    if origin is typing.Literal:
        return ChoiceBox([(v, str(v), "") for v in typing.get_args(annotation)])
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ChoiceBox([(m.value, str(m.value), "") for m in annotation])
    if annotation is int:
        lo = int(low + low_shift) if low is not None else 0
        hi = int(high + high_shift) if high is not None else 10 ** 9
        return IntSpinBox(lo, hi, "none" if optional else None)
    if annotation is float:
        lo = float(low) if low is not None else -1e9
        hi = float(high) if high is not None else 1e9
        # A float bounded by gt=0 is a rate or a scale: explored on a log scale, and its
        # spin box stops just above 0 (or, when optional, uses 0 for "none").
        open_low = low is not None and low_shift == 1
        log = open_low and lo >= 0 and hi / max(lo, 1e-12) >= 1000
        if optional:
            return SciSpinBox(min(lo, 0.0), hi, log=log, null_text="none")
        return SciSpinBox(max(lo, 1e-9) if open_low and lo == 0 else lo, hi, log=log)
    if annotation is str:
        return TextField(nullable=optional)
    return None


# ---- the inspector ----------------------------------------------------------------------------
LABEL_WIDTH = 118  # one label column width for every section, so the editors line up
SECTION_TITLES = {"optimizer": "Outer optimizer"}
FIELD_LABELS = {"model.d_model": "d_model", "model.tie_embeddings": "tie embeddings", "train.seq_len": "sequence length",
                "train.optimizer.lr": "learning rate"}
FIELD_TIPS = {
    "model.d_model": "width of the residual stream every level reads and writes",
    "model.heads": "attention/memory heads; must divide d_model",
    "model.tie_embeddings": "share the input embedding with the output head (token tasks)",
    "train.steps": "outer optimizer steps (pre-training)",
    "train.batch_size": "sequences per step",
    "train.seq_len": "tokens per sequence",
    "train.seed": "makes data, initialisation and CPU runs repeatable",
    "train.device": "auto: CUDA when available, else CPU",
    "train.grad_clip": "clip the outer gradient norm (none: no clipping)",
    "train.log_every": "steps between two rows of metrics.csv",
    "train.eval_every": "steps between two evaluations (forgetting curves)",
    "train.snapshot_every": "steps between two snapshots of the memories (plots)",
    "train.cuda_graphs": "on a GPU, capture each step's forward and backward once as a CUDA "
                         "graph and replay it (much faster for the chunked memories)",
    "train.optimizer.name": "the outer optimizer: it pre-trains every level's parameters",
    "train.optimizer.lr": "learning rate of the outer optimizer",
    "train.optimizer.weight_decay": "decoupled weight decay (adamw) or L2 (adam, sgd)",
    "train.optimizer.momentum": "momentum of the outer sgd (ignored by adam/adamw)",
}


def _section(text: str) -> QLabel:
    label = QLabel(text)
    label.setProperty("role", "section")
    return label


def _set_fault(widget: QWidget, messages: list[str], base_tip: str) -> None:
    faulty = bool(messages)
    if widget.property("fault") != faulty:
        widget.setProperty("fault", faulty)
        widget.style().unpolish(widget)
        widget.style().polish(widget)
    widget.setToolTip("\n".join(["⚠ " + m for m in messages] + ([base_tip] if base_tip else [])))


class Inspector(QWidget):
    """Edits the selection: one level, or (nothing selected) the project's settings.

    ``fields`` maps a document path to its editor while a form is shown: for a level
    "id", "period", "objective", "optimizer", "optimizer.<hyper>", "<option>"; for the project
    "name", "model.d_model", "model.heads", "model.tie_embeddings", "task.name",
    "task.<param>", "train.steps", "train.batch_size", "train.seq_len", "train.seed",
    "train.device", "train.optimizer.lr".
    """

    def __init__(self, document: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self.document = document
        self.level_id: str | None = None
        self.selection: list[str] = []
        self.edge: tuple[str, str] | None = None
        self.fields: dict[str, QWidget] = {}
        self._tips: dict[str, str] = {}
        self._readonly: dict[str, QLabel] = {}
        self._signature: tuple = ()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.lock_banner = QLabel()
        self.lock_banner.setObjectName("inspectorLock")
        self.lock_banner.setWordWrap(True)
        self.lock_banner.setProperty("role", "hint")
        self.lock_banner.setContentsMargins(10, 6, 10, 6)
        self.lock_banner.hide()
        layout.addWidget(self.lock_banner)
        self.scroll = QScrollArea(self)
        self.scroll.setObjectName("inspectorScroll")
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addWidget(self.scroll)
        document.changed.connect(self.refresh)
        document.levelRenamed.connect(self._renamed)
        document.lockedChanged.connect(self._locked)
        theme.manager().themeChanged.connect(self._theme_changed)
        self.rebuild()

    # ---- what to show --------------------------------------------------------------------------
    def show_selection(self, level_ids: list[str], edges: list[tuple[str, str]] = ()) -> None:
        self.selection = list(level_ids)
        self.level_id = level_ids[0] if len(level_ids) == 1 else None
        self.edge = tuple(edges[0]) if not level_ids and len(edges) == 1 else None
        self.rebuild()

    def _theme_changed(self, _palette: object) -> None:
        self.rebuild()

    def _renamed(self, old: str, new: str) -> None:
        if self.level_id == old:
            self.level_id = new
            self.selection = [new]

    def _locked(self, locked: bool) -> None:
        self.lock_banner.setText(f"🔒 {self.document.lock_reason or 'Editing is locked'}: "
                                 "settings are read-only until it ends.")
        self.lock_banner.setVisible(locked)
        self.scroll.widget().setEnabled(not locked)

    def _form_signature(self) -> tuple:
        if self.level_id is not None:
            level = self.document.level(self.level_id)
            if level is None:
                return ("gone",)
            opt = level.get("optimizer") if isinstance(level.get("optimizer"), dict) else {}
            return ("level", self.level_id, level.get("kind"), opt.get("name"))
        if len(self.selection) > 1 or self.edge:
            return ("multi", tuple(self.selection), self.edge)
        task = self.document.data.get("task") or {}
        return ("project", task.get("name"))

    def refresh(self) -> None:
        """After a document change: update values in place, or rebuild if the form changed."""
        if self.level_id is not None and self.document.level(self.level_id) is None:
            self.level_id, self.selection = None, []
        if self.edge and list(self.edge) not in [list(e) for e in
                                                 self.document.model.get("edges", [])]:
            self.edge = None
        if self._form_signature() != self._signature:
            self.rebuild()
            return
        self._fill()

    def rebuild(self) -> None:
        self.fields, self._tips, self._readonly = {}, {}, {}
        body = QWidget()
        body.setObjectName("inspectorBody")
        column = QVBoxLayout(body)
        column.setContentsMargins(12, 10, 12, 12)
        column.setSpacing(6)
        level = self.document.level(self.level_id) if self.level_id else None
        if level is not None:
            self._build_level(column, level)
        elif len(self.selection) > 1 or self.edge:
            self._build_multi(column)
        else:
            self.level_id = None
            self._build_project(column)
        column.addStretch(1)
        # The old form may be the sender of the edit that caused this rebuild (a combo box
        # switching the optimizer): delete it later, never inside its own signal.
        old = self.scroll.takeWidget()  # now parentless: findChild() no longer sees it
        if old is not None:
            old.hide()
            old.deleteLater()
        self._retired = old  # keeps Python from deleting it right now
        self.scroll.setWidget(body)
        body.setEnabled(not self.document.locked)
        self._signature = self._form_signature()
        self._fill()

    # ---- building ------------------------------------------------------------------------------
    def _header(self, column: QVBoxLayout, title: str, summary: str, kind: str | None = None) -> None:
        row = QHBoxLayout()
        row.setSpacing(8)
        if kind:
            icon = QLabel()
            icon.setPixmap(theme.kind_icon(kind).pixmap(QSize(28, 28)))
            row.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        label = QLabel(title)
        label.setObjectName("inspectorTitle")
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(label, 1)
        column.addLayout(row)
        text = QLabel(summary)
        text.setObjectName("inspectorSummary")
        text.setWordWrap(True)
        column.addWidget(text)
        self.problems = QLabel()
        self.problems.setObjectName("inspectorProblems")
        self.problems.setProperty("role", "fieldError")
        self.problems.setWordWrap(True)
        self.problems.hide()
        column.addWidget(self.problems)

    def _form(self, column: QVBoxLayout, title: str) -> QFormLayout:
        column.addWidget(_section(title))
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        column.addLayout(form)
        return form

    def _add(self, form: QFormLayout, key: str, label: str, widget: QWidget, tip: str,
             on_edit: Callable[[Any], None]) -> QWidget:
        name = "field_" + re.sub(r"[^A-Za-z0-9]+", "_", key)
        widget.setObjectName(name)
        widget.setToolTip(tip)
        widget.edited.connect(on_edit)
        text = QLabel(label)
        text.setToolTip(tip)
        text.setBuddy(widget)
        text.setMinimumWidth(LABEL_WIDTH)
        form.addRow(text, widget)
        self.fields[key] = widget
        self._tips[key] = tip
        return widget

    def _build_level(self, column: QVBoxLayout, level: dict) -> None:
        kind = str(level.get("kind"))
        info = KINDS.get(kind)
        self._header(column, str(level.get("id")), info.summary if info else f"unknown kind {kind}",
                     kind if info else None)
        doc = self.document
        form = self._form(column, "Level")
        kind_label = QLabel(info.title if info else kind)
        kind_label.setObjectName("field_kind")
        form.addRow("kind", kind_label)
        id_edit = self._add(form, "id", "id", TextField(), "the level's name in edges, plots "
                            "and run files (letters, digits, _)", self._rename)
        id_edit.setValidator(QRegularExpressionValidator(QRegularExpression(r"[A-Za-z_]\w*")))
        self.id_error = QLabel()
        self.id_error.setObjectName("idError")
        self.id_error.setProperty("role", "fieldError")
        self.id_error.setWordWrap(True)
        self.id_error.hide()
        form.addRow("", self.id_error)

        rule = info.period_rule if info else "positive_or_null"
        if rule == "inf":
            period = QLabel("∞ — re-reads its whole context at every token; nothing is written")
            period.setObjectName("field_period")
            period.setWordWrap(True)
            form.addRow("frequency", period)
        else:
            spin = PeriodSpinBox(rule == "positive_or_null")
            self._add(form, "period", "period", spin,
                      "tokens between two writes of this level's memory (arrows double and "
                      "halve it" + ("; 0 = frozen in context, learned only by the outer "
                                    "optimizer)" if rule == "positive_or_null" else ")"),
                      lambda v: commands.set_level_field(doc, self.level_id, ("period",), v))
            if rule == "one":
                spin.setEnabled(False)
                spin.setToolTip("pinned: this memory is written at every token")

        if info and info.objectives:
            choices = [(o, o, OBJECTIVES.get(o, "")) for o in info.objectives]
            self._add(form, "objective", "objective", ChoiceBox(choices),
                      "what the inner optimizer minimises when it writes this memory:\n" +
                      "\n".join(f"{o}: {OBJECTIVES.get(o, '')}" for o in info.objectives),
                      lambda v: commands.set_level_field(doc, self.level_id, ("objective",), v,
                                                         merge=False))
        if info and info.optimizers:
            names = [n for n in info.optimizers if n in OPTIMIZERS]
            choices = [(n, OPTIMIZERS[n].title, OPTIMIZERS[n].summary) for n in names]
            self._add(form, "optimizer", "inner optimizer", ChoiceBox(choices),
                      "the update rule that writes this memory in context (itself a memory)",
                      lambda v: commands.set_optimizer(doc, self.level_id, v))
            opt = level.get("optimizer") if isinstance(level.get("optimizer"), dict) else {}
            spec = OPTIMIZERS.get(opt.get("name", info.default_optimizer))
            if spec is not None:
                equation = QLabel(spec.equation)
                equation.setObjectName("optimizerEquation")
                equation.setProperty("role", "hint")
                equation.setWordWrap(True)
                form.addRow("", equation)
                for h in spec.hyper:
                    editor = IntSpinBox(int(h.low), int(h.high)) if h.integer else \
                        SciSpinBox(h.low, h.high, log=h.log)
                    label = f"{h.symbol}  {h.name}" if h.symbol and h.symbol != h.name else h.name
                    self._add(form, f"optimizer.{h.name}", label, editor,
                              f"{h.doc} [{h.low:g} … {h.high:g}]",
                              lambda v, n=h.name: commands.set_level_field(
                                  doc, self.level_id, ("optimizer", n), v))

        if info and info.options:
            form = self._form(column, f"{info.title} options")
            for option in info.options:
                editor = self._option_editor(option)
                if editor is None:
                    continue
                merge = option.type in ("int", "float", "int_or_null")
                self._add(form, option.name, option.name, editor, option.doc,
                          lambda v, n=option.name, m=merge: commands.set_level_field(
                              doc, self.level_id, (n,), v, merge=m))

    @staticmethod
    def _option_editor(option) -> QWidget | None:
        low = option.low if option.low is not None else 0
        if option.type == "bool":
            return Switch()
        if option.type == "choice":
            return ChoiceBox([(c, c, "") for c in option.choices])
        if option.type == "int":
            return IntSpinBox(int(low), int(option.high if option.high is not None else 1 << 20))
        if option.type == "int_or_null":
            return IntSpinBox(int(low), int(option.high if option.high is not None else 1 << 20),
                              "none")
        if option.type == "float":
            high = option.high if option.high is not None else 1e6
            return SciSpinBox(float(low), float(high), log=low > 0 and high / low >= 1000)
        return None

    def _build_multi(self, column: QVBoxLayout) -> None:
        if self.edge:
            src, dst = self.edge
            self._header(column, f"{src} → {dst}", "An edge: the output of the first node is "
                         "added to the input of the second.")
            button = QPushButton("Disconnect")
            button.setObjectName("disconnectButton")
            button.clicked.connect(lambda: commands.disconnect(self.document, src, dst))
            column.addWidget(button, 0, Qt.AlignmentFlag.AlignLeft)
            return
        self._header(column, f"{len(self.selection)} levels selected",
                     ", ".join(self.selection) + ". Drag them together, or press Delete to "
                     "remove them with their edges.")

    def _build_project(self, column: QVBoxLayout) -> None:
        doc = self.document
        self._header(column, "Project", "Nothing is selected: these settings apply to the whole "
                     "model and its training. Select a level on the canvas to edit it.")
        form = self._form(column, "Project")
        self._add(form, "name", "name", TextField(), "shown in the title bar and run folders",
                  lambda v: commands.set_project_field(doc, ("name",), v))
        self._settings(column, "Model", MODEL_SETTINGS, ("model",))

        form = self._form(column, "Task")
        tasks = self._tasks()
        choices = [(name, getattr(cls, "title", name), getattr(cls, "summary", ""))
                   for name, cls in sorted(tasks.items())]
        self._add(form, "task.name", "task", ChoiceBox(choices),
                  "what the model is trained on (data is generated, nothing is downloaded)",
                  lambda v: commands.set_task(doc, v))
        task = doc.data.get("task") or {}
        cls = tasks.get(task.get("name"))
        if cls is not None:
            summary = QLabel(getattr(cls, "summary", ""))
            summary.setObjectName("taskSummary")
            summary.setProperty("role", "hint")
            summary.setWordWrap(True)
            form.addRow(summary)
            self._settings_rows(form, getattr(cls, "Params", None), ("task",))
        self._settings(column, "Training", TRAIN_SETTINGS, ("train",))

    def _settings(self, column: QVBoxLayout, title: str, model: Any,
                  prefix: tuple[str, ...]) -> None:
        """A section generated from a pydantic model; nested models get their own section."""
        form = self._form(column, title)
        nested = self._settings_rows(form, model, prefix)
        for name, sub in nested:
            self._settings(column, SECTION_TITLES.get(name, name.replace("_", " ").capitalize()),
                           sub, (*prefix, name))

    def _settings_rows(self, form: QFormLayout, model: Any,
                       prefix: tuple[str, ...]) -> list[tuple[str, Any]]:
        nested: list[tuple[str, Any]] = []
        fields = getattr(model, "model_fields", None) or {}
        for name, field in fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                nested.append((name, annotation))
                continue
            keys = (*prefix, name)
            key = ".".join(keys)
            tip = field.description or FIELD_TIPS.get(key, name.replace("_", " "))
            editor = pydantic_editor(field)
            if editor is None:
                shown = QLabel()
                shown.setObjectName("field_" + key.replace(".", "_"))
                shown.setToolTip(tip + " (edit it in the project file)")
                shown.setProperty("role", "hint")
                form.addRow(name.replace("_", " "), shown)
                self._readonly[key] = shown
                continue
            merge = isinstance(editor, (IntSpinBox, SciSpinBox, TextField))
            self._add(form, key, FIELD_LABELS.get(key, name.replace("_", " ")), editor, tip,
                      lambda v, k=keys, m=merge: commands.set_project_field(
                          self.document, k, v, merge=m))
        return nested

    @staticmethod
    def _tasks() -> dict:
        try:
            return all_tasks()
        except Exception:  # a broken task module must not take the inspector down
            return {}

    # ---- values and faults -------------------------------------------------------------------------
    def _value(self, key: str) -> Any:
        data = self.document.data
        if self.level_id is not None:
            level = self.document.level(self.level_id) or {}
            if key == "optimizer":
                opt = level.get("optimizer")
                return opt.get("name") if isinstance(opt, dict) else None
            if key.startswith("optimizer."):
                opt = level.get("optimizer") if isinstance(level.get("optimizer"), dict) else {}
                name = key.split(".", 1)[1]
                spec = OPTIMIZERS.get(opt.get("name"))
                default = next((h.default for h in spec.hyper if h.name == name), None) \
                    if spec else None
                return opt.get(name, default)
            if key in level:
                return level[key]
            info = KINDS.get(level.get("kind"))
            if info:
                try:
                    return info.option(key).default
                except KeyError:
                    pass
            return None
        target: Any = data
        parts = key.split(".")
        for part in parts:
            target = target.get(part) if isinstance(target, dict) else None
        if target is None and parts[0] == "task" and len(parts) == 2:
            cls = self._tasks().get((data.get("task") or {}).get("name"))
            field = getattr(getattr(cls, "Params", None), "model_fields", {}).get(parts[1]) \
                if cls else None
            if field is not None and not field.is_required():
                return field.default
        return target

    def _fill(self) -> None:
        for key, widget in self.fields.items():
            widget.set_value(self._value(key))
        for key, label in self._readonly.items():
            value = self._value(key)
            label.setText(", ".join(map(str, value)) if isinstance(value, (list, tuple))
                          else str(value))
        self._show_faults()

    def _show_faults(self) -> None:
        if self.level_id is not None:
            faults = self.document.level_faults(self.level_id)
            for key, widget in self.fields.items():
                mine = [f.message for f in faults
                        if f.field and (f.field == key or f.field.startswith(key + "."))]
                _set_fault(widget, mine, self._tips.get(key, ""))
            messages = [f"{f.field}: {f.message}" if f.field else f.message for f in faults]
        elif self._signature[:1] == ("project",):
            faults = self.document.project_faults()
            for key, widget in self.fields.items():
                mine = [f.message for f in faults if f.path == key or f.path.startswith(key + ".")]
                _set_fault(widget, mine, self._tips.get(key, ""))
            messages = [f.text for f in faults]
        else:
            messages = []
        if hasattr(self, "problems"):
            self.problems.setText("\n".join("⚠ " + m for m in messages))
            self.problems.setVisible(bool(messages))

    def _rename(self, new_id: Any) -> None:
        old = self.level_id
        if old is None:
            return
        problem = commands.rename_level(self.document, old, str(new_id).strip())
        if problem:
            self.id_error.setText(problem)
            self.id_error.show()
            self.fields["id"].set_value(old)
        else:
            self.id_error.hide()
