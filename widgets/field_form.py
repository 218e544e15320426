"""One page of the inspector: rows of editors, each bound to a path in the document.

    page = FieldForm(column)                       # column: the page's QVBoxLayout
    form = page.section("Training")                # a titled QFormLayout
    page.add_field(form, "train.steps", "steps", TrainSection.model_fields["steps"],
                   ("train", "steps"), lambda value, merge: ...)
    page.fill(document.data)                       # show the document's values
    page.show_faults(lambda key: [...messages...]) # mark the faulty editors

An editor shows its field's default while the document leaves the value out.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget

from nlstudio.widgets.field_editors import MERGING_EDITORS, describe, editor_for

LABEL_WIDTH = 118  # one label column width for every section, so the editors line up
_MISSING = object()


def hint(text: str, name: str) -> QLabel:
    """A muted, word-wrapped line of explanation."""
    label = QLabel(text)
    label.setObjectName(name)
    label.setProperty("role", "hint")
    label.setWordWrap(True)
    return label


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _set_fault(widget: QWidget, messages: list[str], base_tip: str) -> None:
    faulty = bool(messages)
    if widget.property("fault") != faulty:
        widget.setProperty("fault", faulty)
        widget.style().unpolish(widget)
        widget.style().polish(widget)
    widget.setToolTip("\n".join(["⚠ " + m for m in messages] + ([base_tip] if base_tip else [])))


class FieldForm:
    """The editors of one page. ``fields`` maps a key ("period", "train.steps", ...) to its
    editor; ``readonly`` to the label of a value no editor fits (a list)."""

    def __init__(self, column: QVBoxLayout) -> None:
        self.column = column
        self.fields: dict[str, QWidget] = {}
        self.readonly: dict[str, QLabel] = {}
        self._tips: dict[str, str] = {}
        self._bindings: dict[str, tuple[tuple[str, ...], Any]] = {}  # key -> (path, default)

    def section(self, title: str) -> QFormLayout:
        heading = QLabel(title)
        heading.setProperty("role", "section")
        self.column.addWidget(heading)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        self.column.addLayout(form)
        return form

    def add(self, form: QFormLayout, key: str, label: str, widget: QWidget, tip: str,
            on_edit: Callable[[Any], None], path: tuple[str, ...], default: Any) -> QWidget:
        """One row: ``widget`` (an editor of field_editors) edits the value at ``path``,
        showing ``default`` while the document leaves it out."""
        widget.setObjectName("field_" + re.sub(r"[^A-Za-z0-9]+", "_", key))
        widget.setToolTip(tip)
        widget.edited.connect(on_edit)
        text = QLabel(label)
        text.setToolTip(tip)
        text.setBuddy(widget)
        text.setMinimumWidth(LABEL_WIDTH)
        form.addRow(text, widget)
        self.fields[key] = widget
        self._tips[key] = tip
        self._bindings[key] = (path, default)
        return widget

    def add_field(self, form: QFormLayout, key: str, name: str, field: Any,
                  path: tuple[str, ...], set_value: Callable[[Any, bool], Any]) -> None:
        """A row generated from a pydantic field; ``set_value(value, merge)`` makes the edit
        (``merge``: consecutive edits of this field may merge into one undo command)."""
        meta = describe(name, field)
        editor = editor_for(meta) if meta is not None else None
        if editor is None:
            shown = hint("", "field_" + key.replace(".", "_"))
            shown.setToolTip((field.description or name) + " (edit it in the project file)")
            form.addRow(name.replace("_", " "), shown)
            self.readonly[key] = shown
            self._bindings[key] = (path, field.get_default(call_default_factory=True))
            return
        merge = isinstance(editor, MERGING_EDITORS)
        label = f"{meta.symbol}  {meta.label}" if meta.symbol and meta.symbol != meta.label \
            else meta.label
        self.add(form, key, label, editor, editor.toolTip(),
                 lambda v, m=merge: set_value(v, m), path, meta.default)

    # ---- values and faults ----------------------------------------------------------------
    def value(self, root: Any, key: str) -> Any:
        """The value of ``key`` in ``root`` (the level or the project dict), or its field's
        default when ``root`` leaves it out."""
        path, default = self._bindings[key]
        value = _lookup(root, path)
        return default if value is _MISSING else value

    def fill(self, root: Any) -> None:
        for key, widget in self.fields.items():
            widget.set_value(self.value(root, key))
        for key, label in self.readonly.items():
            value = self.value(root, key)
            label.setText(", ".join(map(str, value)) if isinstance(value, (list, tuple))
                          else str(value))

    def show_faults(self, messages_for: Callable[[str], list[str]]) -> None:
        """Mark each editor with the fault messages ``messages_for(key)`` finds for it."""
        for key, widget in self.fields.items():
            _set_fault(widget, messages_for(key), self._tips.get(key, ""))
