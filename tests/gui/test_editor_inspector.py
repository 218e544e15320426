"""The inspector: editors generated from metadata, edits that move the canvas, validation."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QPoint, QPointF, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QAbstractSpinBox, QLabel

from nlstudio.catalog import KINDS, OPTIMIZERS, all_tasks
from nlstudio.widgets.canvas import commands
from nlstudio.widgets.field_editors import (ChoiceBox, IntSpinBox, PeriodSpinBox, SciSpinBox,
                                           Switch, nice_step)
from nlstudio.widgets.main_window import MainWindow


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, fake_dialogs):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w.dialogs = fake_dialogs(answer=False, strict=True)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.close()  # the fake dialogs discard unsaved changes
    w.deleteLater()
    # outside an event loop deferred deletes wait forever: windows would pile up
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def add(window, kind: str, period=commands.KEEP) -> str:
    new_id = window.view.add_level(kind, 300.0, period)
    assert new_id is not None
    return new_id


def commit(qtbot, widget, text: str) -> None:
    """Type into an editor like a user and press Enter."""
    line = widget.lineEdit() if isinstance(widget, QAbstractSpinBox) else widget
    line.selectAll()
    qtbot.keyClicks(line, text)
    qtbot.keyClick(line, Qt.Key.Key_Return)


def test_period_in_the_inspector_moves_the_node(window, qtbot):
    level_id = add(window, "titans")
    assert window.inspector.level_id == level_id
    spin = window.inspector.fields["period"]
    assert isinstance(spin, PeriodSpinBox)
    assert spin.value() == 16
    commit(qtbot, spin, "128")
    assert window.document.level(level_id)["period"] == 128
    axis = window.scene.axis
    assert window.scene.nodes[level_id].pos().y() == pytest.approx(axis.y_for_period(128))
    # arrows double and halve
    spin.stepBy(1)
    assert window.document.level(level_id)["period"] == 256
    spin.stepBy(-3)
    assert window.document.level(level_id)["period"] == 32
    assert window.scene.nodes[level_id].pos().y() == pytest.approx(axis.y_for_period(32))


def test_mlp_period_offers_frozen_and_rules_pin_the_others(window, qtbot):
    window.scene.select_only(["mlp"])
    spin = window.inspector.fields["period"]
    assert spin.text() == "frozen (0)"
    spin.stepBy(1)
    assert window.document.level("mlp")["period"] == 1
    spin.stepBy(-1)
    assert window.document.level("mlp")["period"] is None
    assert window.scene.nodes["mlp"].pos().y() == pytest.approx(window.scene.axis.y_frozen)

    add(window, "delta")
    assert not window.inspector.fields["period"].isEnabled()
    add(window, "attention")
    assert "period" not in window.inspector.fields
    assert "∞" in window.inspector.findChild(object, "field_period").text()


@pytest.mark.parametrize("kind", list(KINDS))
def test_editors_are_generated_from_the_kind_and_optimizer_metadata(window, kind):
    level_id = add(window, kind)
    info = KINDS[kind]
    fields = window.inspector.fields
    for option in info.options:
        assert option.name in fields, option.name
    if info.optimizers:
        name = window.document.level(level_id)["optimizer"]["name"]
        for h in OPTIMIZERS[name].hyper:
            editor = fields[f"optimizer.{h.name}"]
            assert isinstance(editor, IntSpinBox if h.integer else SciSpinBox)
            assert editor.minimum() <= h.default <= editor.maximum()
            assert h.doc in editor.toolTip()
        combo = fields["optimizer"]
        assert [combo.itemData(i) for i in range(combo.count())] == \
            [n for n in info.optimizers if n in OPTIMIZERS]
    else:
        assert "optimizer" not in fields
    assert window.inspector.findChild(object, "inspectorTitle").text() == level_id


def test_switching_optimizer_rebuilds_its_hyper_parameters(window, qtbot):
    level_id = add(window, "mlp", period=16)
    combo: ChoiceBox = window.inspector.fields["optimizer"]
    target = next(n for n in KINDS["mlp"].optimizers if n in OPTIMIZERS and n != "sgd"
                  and len(OPTIMIZERS[n].hyper) > 1)
    combo.setCurrentIndex(combo.findData(target))
    combo.activated.emit(combo.currentIndex())
    level = window.document.level(level_id)
    assert level["optimizer"]["name"] == target
    hyper = {h.name for h in OPTIMIZERS[target].hyper}
    assert set(level["optimizer"]) == {"name", *hyper}
    assert {k.split(".", 1)[1] for k in window.inspector.fields if k.startswith("optimizer.")} \
        == hyper
    # the new level is not connected yet; its optimizer itself is valid
    assert not any((f.field or "").startswith("optimizer")
                   for f in window.document.level_faults(level_id))


def test_hyper_parameter_edit_and_log_steps(window, qtbot):
    level_id = add(window, "mlp", period=16)
    eta: SciSpinBox = window.inspector.fields["optimizer.eta"]
    assert eta.log
    commit(qtbot, eta, "0.003")
    assert window.document.level(level_id)["optimizer"]["eta"] == pytest.approx(0.003)
    assert eta.text() == "0.003"
    eta.stepBy(1)
    assert window.document.level(level_id)["optimizer"]["eta"] == pytest.approx(0.005)
    assert nice_step(0.1, 2, 1e-5, 10) == pytest.approx(0.5)
    assert nice_step(0.1, -1, 1e-5, 10) == pytest.approx(0.05)


def test_kind_options_edit(window, qtbot):
    level_id = add(window, "self_modifying")
    switch: Switch = window.inspector.fields["momentum"]
    switch.click()
    assert window.document.level(level_id)["momentum"] is True
    depth = window.inspector.fields["depth"]
    assert (depth.minimum(), depth.maximum()) == (1, 2)
    commit(qtbot, window.inspector.fields["conv"], "2")
    assert window.document.level(level_id)["conv"] == 2
    add(window, "attention")
    window_spin: IntSpinBox = window.inspector.fields["window"]
    assert window_spin.text() == "none"


def test_rename_validates_and_updates_edges_and_canvas(window, qtbot):
    window.scene.select_only(["mlp"])
    id_edit = window.inspector.fields["id"]
    commit(qtbot, id_edit, "slow")
    assert window.document.level("slow") is not None
    assert ["input", "slow"] in window.document.model["edges"]
    assert "slow" in window.scene.nodes and window.scene.nodes["slow"].isSelected()
    assert window.inspector.level_id == "slow"

    add(window, "titans")
    id_edit = window.inspector.fields["id"]
    commit(qtbot, id_edit, "slow")
    error = window.inspector.findChild(object, "idError")
    assert error.isVisible() and "already" in error.text()
    assert window.document.level("titans_1") is not None
    assert id_edit.text() == "titans_1"
    assert commands.id_problem(window.document.data, "output") is not None


def test_fault_shows_on_the_field_with_the_core_message(window, qtbot):
    window.scene.clearSelection()
    heads = window.inspector.fields["model.heads"]
    commit(qtbot, heads, "5")
    assert not window.document.is_valid
    fault = next(f for f in window.document.faults if f.path == "model.heads")
    assert heads.property("fault") is True
    assert fault.message in heads.toolTip()
    problems = window.inspector.findChild(object, "inspectorProblems")
    assert problems.isVisible() and fault.message in problems.text()
    commit(qtbot, heads, "8")
    assert window.document.is_valid
    assert heads.property("fault") is False


def test_project_settings_and_task_params_are_generated(window, qtbot):
    window.scene.clearSelection()
    fields = window.inspector.fields
    for key in ("name", "model.d_model", "model.heads", "model.tie_embeddings", "task.name",
                "train.steps", "train.batch_size", "train.seq_len", "train.seed",
                "train.device", "train.optimizer.lr"):
        assert key in fields, key
    # read from files but never used (snapshots are paced by time): no editor offers it
    assert "train.snapshot_every" not in fields
    assert window.inspector.findChild(QLabel, "field_train_snapshot_every") is None
    commit(qtbot, fields["train.steps"], "1234")
    assert window.document.data["train"]["steps"] == 1234
    commit(qtbot, fields["train.optimizer.lr"], "0.0005")
    assert window.document.data["train"]["optimizer"]["lr"] == pytest.approx(0.0005)
    commit(qtbot, fields["name"], "My model")
    assert window.windowTitle().startswith("NL Studio — My model")

    tasks = all_tasks()
    other = next(n for n in sorted(tasks) if n != window.document.data["task"]["name"])
    combo = window.inspector.fields["task.name"]
    combo.setCurrentIndex(combo.findData(other))
    combo.activated.emit(combo.currentIndex())
    task = window.document.data["task"]
    assert task["name"] == other
    params = tasks[other].Params.model_fields
    for name in params:
        assert f"task.{name}" in window.inspector.fields or \
            window.inspector.findChild(object, f"field_task_{name}") is not None
    assert window.document.is_valid, window.document.faults


def test_every_edit_of_the_inspector_is_undoable(window, qtbot):
    level_id = add(window, "titans")
    stack = window.document.undo_stack
    count = stack.count()
    commit(qtbot, window.inspector.fields["period"], "64")
    assert stack.count() == count + 1
    window.actions["edit.undo"].trigger()
    assert window.document.level(level_id)["period"] == 16
    assert window.inspector.fields["period"].value() == 16


# ---- editors from the schema's own metadata (issue 17 item 6) ------------------------------
def test_a_missing_hyper_parameter_shows_the_kinds_default_not_the_optimizers(window):
    """Titans writes with η = 0.003 (KindInfo.optimizer_overrides), not momentum's own 0.1."""
    level_id = add(window, "titans")
    index = window.document.level_ids().index(level_id)
    window.document.edit("drop eta", lambda d: d["model"]["levels"][index]["optimizer"].pop("eta"))
    assert "eta" not in window.document.level(level_id)["optimizer"]
    eta = window.inspector.fields["optimizer.eta"]
    assert KINDS["titans"].optimizer_overrides("momentum")["eta"] == 0.003
    assert eta.value() == pytest.approx(0.003)
    assert OPTIMIZERS["momentum"].defaults()["eta"] != pytest.approx(0.003)


def test_tooltips_labels_and_bounds_come_from_the_schema(window):
    from nlstudio.schema import MAX_PERIOD, TrainSection

    window.scene.clearSelection()
    fields = window.inspector.fields
    for name, field in TrainSection.model_fields.items():
        if f"train.{name}" in fields:
            assert field.description and field.description in fields[f"train.{name}"].toolTip()
    steps = TrainSection.model_fields["steps"].metadata
    assert fields["train.steps"].maximum() == next(m.le for m in steps if hasattr(m, "le"))
    assert fields["train.optimizer.lr"].log  # json_schema_extra {"log": True}
    assert not fields["train.optimizer.momentum"].log
    label = window.inspector.findChild(QLabel, "field_train_seq_len")
    assert label is None  # the editor has the name; its label is the schema's title
    assert any(w.text() == "sequence length" for w in window.inspector.findChildren(QLabel))
    add(window, "titans")
    assert window.inspector.fields["period"].maximum() == MAX_PERIOD
    assert KINDS["titans"].option("depth").doc in window.inspector.fields["depth"].toolTip()


def test_a_pinned_period_reads_every_token(window):
    """Linear attention is written at every token: "every token", never "1 tokens"."""
    add(window, "linear_attention")
    spin = window.inspector.fields["period"]
    assert not spin.isEnabled()
    assert spin.text() == "every token"
    add(window, "titans")
    spin = window.inspector.fields["period"]
    assert spin.text() == "every 16 tokens"
    spin.setValue(1024)
    assert spin.text() == "every 1\u2009024 tokens"


# ---- the mouse wheel (issue 16 item 4) --------------------------------------------------------
def _wheel(window, widget, dy: int = -120) -> None:
    """A real (spontaneous) wheel event through the window system, delivered by Qt to whatever
    widget is under the pointer and propagated to its parents as a user's wheel would be."""
    QTest.wheelEvent(window.windowHandle(), QPointF(widget.mapTo(window, widget.rect().center())),
                     QPoint(0, dy))
    QCoreApplication.processEvents()


def test_wheel_over_the_inspector_scrolls_it_and_edits_nothing(window, qtbot):
    window.resize(1280, 800)
    window.scene.clearSelection()  # the project form: longer than the panel
    bar = window.inspector.scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    before, count = window.document.snapshot(), window.document.undo_stack.count()
    for key in ("model.d_model", "model.heads", "task.name"):
        editor = window.inspector.fields[key]
        assert editor.isVisible() and not editor.hasFocus()
        bar.setValue(0)
        qtbot.waitUntil(lambda e=editor: e.visibleRegion().boundingRect().contains(
            e.rect().center()))
        _wheel(window, editor)
        assert bar.value() > 0, key  # the panel scrolled
        assert window.document.snapshot() == before, key  # nothing was edited
    assert window.document.undo_stack.count() == count
    # a focused editor still takes the wheel (the user clicked into it)
    bar.setValue(0)
    heads = window.inspector.fields["model.heads"]
    heads.setFocus()
    qtbot.waitUntil(heads.hasFocus)
    _wheel(window, heads, dy=120)
    assert window.document.data["model"]["heads"] == before["model"]["heads"] + 1


def test_the_precision_setting_is_a_choice_from_the_schema(window, qtbot):
    """``train.precision`` (fp32 | bf16) is generated like every training setting: a choice of
    the schema's values with its description as the tooltip, edited through the undo stack."""
    from nlstudio.schema import TrainSection

    window.scene.clearSelection()
    combo = window.inspector.fields["train.precision"]
    assert isinstance(combo, ChoiceBox)
    assert [combo.itemData(i) for i in range(combo.count())] == ["fp32", "bf16"]
    assert TrainSection.model_fields["precision"].description in combo.toolTip()
    assert combo.currentData() == "fp32"
    assert window.document.data["train"].get("precision", "fp32") == "fp32"
    combo.setCurrentIndex(combo.findData("bf16"))
    combo.activated.emit(combo.currentIndex())
    assert window.document.data["train"]["precision"] == "bf16"
    assert window.document.is_valid, window.document.faults
    window.actions["edit.undo"].trigger()
    assert window.document.data["train"].get("precision", "fp32") == "fp32"
