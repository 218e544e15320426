"""Editors for the fields of a project, built from the schema's own metadata.

Every editable value of a project is a pydantic field (``nlstudio.schema``: the model and
train sections, a level's model per kind and inner optimizer, a task's ``Params``). The field
says everything an editor needs: its type (int, float, bool, a ``Literal`` of choices, str),
whether null is allowed, its bounds (``ge``/``gt``/``le``/``lt``), its label (``title``), its
tooltip (``description``) and whether it is explored on a log scale (``json_schema_extra``
``{"log": True}``). :func:`describe` reads that into a :class:`FieldMeta`; :func:`editor_for`
makes the widget. A level's period has its own editor (:class:`PeriodSpinBox`) bounded by
``schema.MAX_PERIOD``.

Every editor has ``edited`` (a signal with the new value, None for null) and
``set_value(value)`` (shows a value without emitting). Spin boxes and combo boxes take the
mouse wheel only while they have keyboard focus: scrolling a form over them scrolls the form
and never edits a field the pointer passes over.
"""
from __future__ import annotations

import enum
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator, QWheelEvent
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox, QWidget

from nlstudio.schema import MAX_PERIOD
from nlstudio.widgets.canvas.axis import period_text

INT_MAX = 2 ** 31 - 1  # QSpinBox holds a 32-bit int
FLOAT_LIMIT = 1e9  # the range of an unbounded float field
LOG_SPAN = 1000  # a positive (gt=0) float spanning this ratio is a rate or a scale: log steps


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


# ---- what a field says about itself ------------------------------------------------------
@dataclass(frozen=True)
class FieldMeta:
    """An editable field as the schema describes it."""

    name: str
    label: str
    tip: str
    default: Any
    type: str  # "bool" | "choice" | "int" | "float" | "text"
    nullable: bool = False
    low: float | None = None  # inclusive (an int's gt=0 is low=1)
    high: float | None = None
    open_low: bool = False  # gt rather than ge: the value may only approach ``low``
    log: bool = False
    choices: tuple = ()
    symbol: str = ""

    @property
    def range_text(self) -> str:
        if self.type not in ("int", "float") or (self.low is None and self.high is None):
            return ""
        low = "…" if self.low is None else f"{self.low:g}"
        high = "…" if self.high is None else f"{self.high:g}"
        return f"[{'>' if self.open_low else ''}{low} … {high}]"


def _unwrap(annotation: Any) -> tuple[Any, bool, list]:
    """(the bare type, whether None is allowed, the constraints found on the way)."""
    metadata: list = []
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata.extend(extra)
        elif origin in (typing.Union, types.UnionType):
            args = typing.get_args(annotation)
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return annotation, nullable, metadata
            nullable = nullable or len(rest) < len(args)
            annotation = rest[0]
        else:
            return annotation, nullable, metadata


def _bounds(metadata: list) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low is exclusive, high is exclusive) from annotated-types constraints,
    also inside nested ``Field(...)`` infos."""
    low = high = None
    open_low = open_high = False
    for meta in metadata:
        nested = getattr(meta, "metadata", None)
        if isinstance(nested, list):
            lo, hi, ol, oh = _bounds(nested)
            low, open_low = (lo, ol) if lo is not None else (low, open_low)
            high, open_high = (hi, oh) if hi is not None else (high, open_high)
        for attr, is_low, exclusive in (("ge", True, False), ("gt", True, True),
                                        ("le", False, False), ("lt", False, True)):
            value = getattr(meta, attr, None)
            if isinstance(value, (int, float)):
                if is_low:
                    low, open_low = value, exclusive
                else:
                    high, open_high = value, exclusive
    return low, high, open_low, open_high


def describe(name: str, field: Any) -> FieldMeta | None:
    """The :class:`FieldMeta` of a pydantic ``FieldInfo``; None if no editor fits (a list,
    a nested model)."""
    annotation, nullable, metadata = _unwrap(field.annotation)
    low, high, open_low, open_high = _bounds([*metadata, *field.metadata])
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    label = field.title or name.replace("_", " ")
    default = field.get_default(call_default_factory=True)
    common = dict(name=name, label=label, tip=field.description or label, default=default,
                  nullable=nullable, symbol=str(extra.get("symbol") or ""))
    if annotation is bool:
        return FieldMeta(type="bool", **common)
    if typing.get_origin(annotation) is typing.Literal:
        return FieldMeta(type="choice", choices=typing.get_args(annotation), **common)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return FieldMeta(type="choice", choices=tuple(m.value for m in annotation), **common)
    if annotation is int:
        lo = None if low is None else int(math.floor(low)) + (1 if open_low else 0)
        hi = None if high is None else int(math.ceil(high)) - (1 if open_high else 0)
        return FieldMeta(type="int", low=lo, high=hi, **common)
    if annotation is float:
        log = extra.get("log")
        if log is None:  # not said: a positive rate or scale over three decades is log
            log = bool(open_low and low is not None and low >= 0 and high is not None
                       and high / max(low, 1e-12) >= LOG_SPAN)
        return FieldMeta(type="float", low=low, high=high, open_low=open_low, log=bool(log),
                         **common)
    if annotation is str:
        return FieldMeta(type="text", **common)
    return None


def editor_for(meta: FieldMeta) -> QWidget | None:
    """The widget that edits ``meta``'s values (its ``tip`` is set as the tooltip)."""
    if meta.type == "bool":
        editor: QWidget = Switch()
    elif meta.type == "choice":
        editor = ChoiceBox([(c, str(c), "") for c in meta.choices])
    elif meta.type == "int":
        low = 0 if meta.low is None else meta.low
        high = 10 ** 9 if meta.high is None else meta.high
        editor = IntSpinBox(low, high, "none" if meta.nullable else None)
    elif meta.type == "float":
        low = -FLOAT_LIMIT if meta.low is None else float(meta.low)
        high = FLOAT_LIMIT if meta.high is None else float(meta.high)
        if meta.nullable:  # the minimum (0 or below) stands for null
            editor = SciSpinBox(min(low, 0.0), high, log=meta.log, null_text="none")
        else:  # gt=0: stop just above 0
            editor = SciSpinBox(max(low, 1e-9) if meta.open_low and low == 0 else low, high,
                                log=meta.log)
    elif meta.type == "text":
        editor = TextField(nullable=meta.nullable)
    else:
        return None
    editor.setToolTip(" ".join(t for t in (meta.tip, meta.range_text) if t))
    return editor


# ---- the editors --------------------------------------------------------------------------
class WheelWhenFocused:
    """Mixin for spin and combo boxes: the wheel edits only a focused editor (the user clicked
    or tabbed into it); otherwise the event goes to the parent, which scrolls."""

    def _wheel_needs_focus(self) -> None:
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # never focused by the wheel itself

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt API
        if not self.hasFocus():
            event.ignore()
            return
        super().wheelEvent(event)


class SciSpinBox(WheelWhenFocused, QDoubleSpinBox):
    """A float editor that shows 0.0003 or 1e-05 (not 0.000300000000), with 1-2-5 steps when
    ``log`` and plain steps otherwise; with ``null_text`` its minimum stands for null."""

    edited = Signal(object)

    def __init__(self, low: float, high: float, log: bool = False,
                 null_text: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._wheel_needs_focus()
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


class IntSpinBox(WheelWhenFocused, QSpinBox):
    """An integer editor; with ``null_text`` its minimum stands for null (e.g. "none")."""

    edited = Signal(object)

    def __init__(self, low: int, high: int, null_text: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._wheel_needs_focus()
        self.nullable = null_text is not None
        low, high = max(-INT_MAX + 1, int(low)), min(INT_MAX, int(high))
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
    """A level's period, shown as on the canvas ("every token", "every 16 tokens"): arrows
    double and halve it; 0 shows as "frozen" where the kind allows it. Typing a number (or
    any text containing one) sets it."""

    def __init__(self, allow_frozen: bool, parent: QWidget | None = None) -> None:
        super().__init__(1, MAX_PERIOD, "frozen (0)" if allow_frozen else None, parent)

    def textFromValue(self, value: int) -> str:  # noqa: N802 - Qt API
        return period_text(value)

    def valueFromText(self, text: str) -> int:  # noqa: N802 - Qt API
        if self.nullable and text.strip() == self.specialValueText():
            return self.minimum()
        digits = re.sub(r"\D", "", text)
        return int(digits) if digits else self.value()

    def validate(self, text: str, pos: int):  # noqa: D401 - Qt API
        stripped = text.strip()
        if self.nullable and self.specialValueText().startswith(stripped) and stripped:
            state = QValidator.State.Acceptable if stripped == self.specialValueText() \
                else QValidator.State.Intermediate
            return (state, text, pos)
        digits = re.sub(r"\D", "", stripped)
        if not digits:
            return (QValidator.State.Intermediate, text, pos)
        ok = self.minimum() <= int(digits) <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate, text, pos)

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        v = self.value()
        for _ in range(abs(steps)):
            if steps > 0:
                v = 1 if v <= 0 else 2 ** (math.floor(math.log2(v)) + 1)
            else:
                lower = 2 ** (math.ceil(math.log2(v)) - 1) if v > 1 else self.minimum()
                v = max(self.minimum(), lower)
        self.setValue(min(self.maximum(), v))


class ChoiceBox(WheelWhenFocused, QComboBox):
    """A combo box of (value, label, tooltip) choices."""

    edited = Signal(object)

    def __init__(self, choices: list[tuple[Any, str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._wheel_needs_focus()
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)
        for value, label, tip in choices:
            self.addItem(label, value)
            if tip:
                self.setItemData(self.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
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
            if not self.hasFocus():
                self.setCursorPosition(0)  # a long name shows its start, not its end


#: Editors whose consecutive edits of one field merge into one undo command.
MERGING_EDITORS = (IntSpinBox, SciSpinBox, TextField)

__all__ = ["FieldMeta", "describe", "editor_for", "nice_step", "SciSpinBox", "IntSpinBox",
           "PeriodSpinBox", "ChoiceBox", "Switch", "TextField", "WheelWhenFocused",
           "MERGING_EDITORS"]
