"""The inspector: edits the selected level (kind, id, period, objective, inner optimizer and
its hyper-parameters, kind options) or, with nothing selected, the project's settings.

Every editor comes from the schema (``nlstudio.schema``: a level's model per kind and inner
optimizer, the model and train sections, a task's ``Params``) through
:mod:`nlstudio.widgets.field_editors`: bounds, log scale, choices, labels and tooltips are the
fields' own metadata, and a value missing from the document shows the field's default (for a
level's inner optimizer: the kind's default, e.g. η = 0.003 for Titans). Every change is one
undoable command (consecutive spin-box edits of one field merge into one).
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QRegularExpression, QSize, Qt
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (QFormLayout, QFrame, QHBoxLayout, QLabel, QPushButton,
                               QScrollArea, QVBoxLayout, QWidget)

from pydantic import BaseModel

from nlstudio.catalog import (KINDS, MODEL_SETTINGS, OBJECTIVES, OPTIMIZERS, TRAIN_SETTINGS,
                               all_tasks)
from nlstudio.schema import Project, level_model
from nlstudio.widgets import theme
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.document import Document
from nlstudio.widgets.field_editors import ChoiceBox, PeriodSpinBox, TextField
from nlstudio.widgets.field_form import FieldForm, hint

class Inspector(QWidget):
    """Edits the selection: one level, or (nothing selected) the project's settings.

    ``fields`` maps a document path to its editor while a form is shown: for a level
    "id", "period", "objective", "optimizer", "optimizer.<hyper>", "<option>"; for the project
    "name", "model.d_model", "model.heads", "model.tie_embeddings", "task.name",
    "task.<param>", "train.<field>", "train.optimizer.<field>".
    """

    def __init__(self, document: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self.document = document
        self.level_id: str | None = None
        self.selection: list[str] = []
        self.edge: tuple[str, str] | None = None
        self.page = FieldForm(QVBoxLayout())
        self._signature: tuple = ()
        self._parameters = ("–", "")
        self.problems: QLabel | None = None
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

    @property
    def fields(self) -> dict[str, QWidget]:
        """The shown form's editors by key (see the class docstring)."""
        return self.page.fields

    # ---- what to show ------------------------------------------------------------------------
    def show_selection(self, level_ids: list[str], edges: list[tuple[str, str]] = ()) -> None:
        self.selection = list(level_ids)
        self.level_id = level_ids[0] if len(level_ids) == 1 else None
        self.edge = tuple(edges[0]) if not level_ids and len(edges) == 1 else None
        self.rebuild()

    def show_parameter_count(self, text: str, tip: str = "") -> None:
        """The model's parameter count (``ParameterCounter``), shown in the project form."""
        self._parameters = (text, tip)
        label = self.findChild(QLabel, "parameterCount")
        if label is not None:
            label.setText(text)
            label.setToolTip(tip)

    def _theme_changed(self, _palette: object) -> None:
        self.rebuild()

    def _renamed(self, old: str, new: str) -> None:
        if self.level_id == old:
            self.level_id = new
            self.selection = [new]

    def _locked(self, locked: bool) -> None:
        self.lock_banner.setText(f"{self.document.lock_reason or 'Editing is locked'}: "
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
        self.problems = None
        body = QWidget()
        body.setObjectName("inspectorBody")
        column = QVBoxLayout(body)
        column.setContentsMargins(12, 10, 12, 12)
        column.setSpacing(6)
        self.page = FieldForm(column)
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

    # ---- building blocks ---------------------------------------------------------------------
    def _header(self, column: QVBoxLayout, title: str, summary: str,
                kind: str | None = None) -> None:
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

    # ---- a level -----------------------------------------------------------------------------
    def _build_level(self, column: QVBoxLayout, level: dict) -> None:
        kind = str(level.get("kind"))
        info = KINDS.get(kind)
        self._header(column, str(level.get("id")), info.summary if info else f"unknown kind {kind}",
                     kind if info else None)
        form = self.page.section("Level")
        kind_label = QLabel(info.title if info else kind)
        kind_label.setObjectName("field_kind")
        kind_label.setWordWrap(True)
        form.addRow("kind", kind_label)
        if info is None:
            return
        opt = level.get("optimizer") if isinstance(level.get("optimizer"), dict) else {}
        opt_name = opt.get("name", info.default_optimizer)
        known = opt_name in info.optimizers and opt_name in OPTIMIZERS
        fields = level_model(kind, opt_name if known else None).model_fields

        id_field = fields["id"]
        id_edit = self.page.add(form, "id", "id", TextField(), id_field.description,
                                self._rename, ("id",), None)
        id_edit.setValidator(QRegularExpressionValidator(QRegularExpression(r"[A-Za-z_]\w*")))
        self.id_error = hint("", "idError")
        self.id_error.setProperty("role", "fieldError")
        self.id_error.hide()
        form.addRow("", self.id_error)
        self._level_period(form, info, fields["period"])
        if info.objectives or info.optimizers:
            self._level_optimizer(form, info, fields, known)
        if info.options:
            form = self.page.section(f"{info.title} options")
            for option in info.options:
                self.page.add_field(form, option.name, option.name, fields[option.name],
                                    (option.name,), self._level_setter((option.name,)))

    def _level_setter(self, keys: tuple[str, ...]) -> Callable[[Any, bool], Any]:
        return lambda value, merge: commands.set_level_field(
            self.document, self.level_id, keys, value, merge=merge)

    def _level_period(self, form: QFormLayout, info: Any, field: Any) -> None:
        if info.period_rule == "inf":
            period = QLabel(f"∞ — {field.description.removeprefix('∞: ')}")
            period.setObjectName("field_period")
            period.setWordWrap(True)
            form.addRow("frequency", period)
            return
        spin = PeriodSpinBox(info.period_rule == "positive_or_null")
        self.page.add(form, "period", "period", spin, field.description,
                      lambda v: commands.set_level_field(self.document, self.level_id,
                                                         ("period",), v),
                      ("period",), field.default)
        spin.setEnabled(info.period_rule != "one")  # pinned: shows "every token"

    def _level_optimizer(self, form: QFormLayout, info: Any, fields: dict, known: bool) -> None:
        doc = self.document
        objective = fields["objective"]
        if info.objectives:
            choices = [(o, o, OBJECTIVES.get(o, "")) for o in info.objectives]
            self.page.add(form, "objective", "objective", ChoiceBox(choices),
                          objective.description + ":\n" + "\n".join(
                              f"{o}: {OBJECTIVES.get(o, '')}" for o in info.objectives),
                          lambda v: commands.set_level_field(doc, self.level_id, ("objective",),
                                                             v, merge=False),
                          ("objective",), objective.default)
        if not info.optimizers:
            return
        optimizer = fields["optimizer"]
        names = [n for n in info.optimizers if n in OPTIMIZERS]
        choices = [(n, OPTIMIZERS[n].title, OPTIMIZERS[n].summary) for n in names]
        self.page.add(form, "optimizer", optimizer.title, ChoiceBox(choices),
                      optimizer.description,
                      lambda v: commands.set_optimizer(doc, self.level_id, v),
                      ("optimizer", "name"), info.default_optimizer)
        if not known:  # an optimizer this kind does not take: its fault says so
            return
        spec_model = optimizer.annotation  # the optimizer's model with this kind's defaults
        spec = OPTIMIZERS[spec_model.model_fields["name"].default]
        form.addRow("", hint(spec.equation, "optimizerEquation"))
        for name, field in spec_model.model_fields.items():
            if name != "name":
                self.page.add_field(form, f"optimizer.{name}", name, field,
                                    ("optimizer", name), self._level_setter(("optimizer", name)))

    # ---- several items, an edge --------------------------------------------------------------
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

    # ---- the project -------------------------------------------------------------------------
    def _build_project(self, column: QVBoxLayout) -> None:
        doc = self.document
        self._header(column, "Project", "Nothing is selected: these settings apply to the whole "
                     "model and its training. Select a level on the canvas to edit it.")
        form = self.page.section("Project")
        self._settings_rows(form, {"name": Project.model_fields["name"]}, ())
        form = self._settings(column, "Model", MODEL_SETTINGS, ("model",))
        count = QLabel(self._parameters[0])
        count.setObjectName("parameterCount")
        count.setToolTip(self._parameters[1])
        count.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("parameters", count)

        form = self.page.section("Task")
        tasks = self._tasks()
        choices = [(name, getattr(cls, "title", name), getattr(cls, "summary", ""))
                   for name, cls in sorted(tasks.items())]
        task = doc.data.get("task") or {}
        self.page.add(form, "task.name", "task", ChoiceBox(choices),
                      "what the model is trained on (data is generated, nothing is downloaded)",
                      lambda v: commands.set_task(doc, v), ("task", "name"), None)
        cls = tasks.get(task.get("name"))
        if cls is not None:
            form.addRow(hint(getattr(cls, "summary", ""), "taskSummary"))
            params = getattr(getattr(cls, "Params", None), "model_fields", None) or {}
            self._settings_rows(form, params, ("task",))
        self._settings(column, "Training", TRAIN_SETTINGS, ("train",))

    def _settings(self, column: QVBoxLayout, title: str, model: type[BaseModel],
                  prefix: tuple[str, ...]) -> QFormLayout:
        """A section generated from a pydantic model; nested models get their own section
        (titled by the field's ``title``). Returns the section's form."""
        form = self.page.section(title)
        fields = model.model_fields
        nested = {n: f for n, f in fields.items()
                  if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
        self._settings_rows(form, {n: f for n, f in fields.items() if n not in nested}, prefix)
        for name, field in nested.items():
            self._settings(column, field.title or name.replace("_", " ").capitalize(),
                           field.annotation, (*prefix, name))
        return form

    def _settings_rows(self, form: QFormLayout, fields: dict[str, Any],
                       prefix: tuple[str, ...]) -> None:
        for name, field in fields.items():
            keys = (*prefix, name)
            self.page.add_field(form, ".".join(keys), name, field, keys,
                                lambda v, m, k=keys: commands.set_project_field(
                                    self.document, k, v, merge=m))

    @staticmethod
    def _tasks() -> dict:
        try:
            return all_tasks()
        except Exception:  # a broken task module must not take the inspector down
            return {}

    # ---- values and faults -------------------------------------------------------------------
    def _fill(self) -> None:
        root = self.document.level(self.level_id) if self.level_id is not None \
            else self.document.data
        self.page.fill(root or {})
        self._show_faults()

    def _show_faults(self) -> None:
        if self.level_id is not None:
            faults = self.document.level_faults(self.level_id)
            self.page.show_faults(lambda key: [
                f.message for f in faults
                if f.field and (f.field == key or f.field.startswith(key + "."))])
            messages = [f"{f.field}: {f.message}" if f.field else f.message for f in faults]
        elif self._signature[:1] == ("project",):
            faults = self.document.project_faults()
            self.page.show_faults(lambda key: [
                f.message for f in faults if f.path == key or f.path.startswith(key + ".")])
            messages = [f.text for f in faults]
        else:
            messages = []
        if self.problems is not None:
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
