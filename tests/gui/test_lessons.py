"""The lessons in the main window: Help → Lessons opens each one, each view changes as it steps,
Back and Reset undo, lesson 1 replaces the project on the canvas only when the user says so,
lesson 5 trains in the background without leaving a thread behind and opens on the first stage
of its story, and the welcome page opens a lesson."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (QAbstractButton, QApplication, QComboBox, QMenu, QProgressBar,
                               QPushButton)

from nlstudio import project as core
from nlstudio.widgets import theme
from nlstudio.lessons import LESSONS
from nlstudio.lessons.memory_loop import LoopConfig, describe_stage
from nlstudio.widgets.lessons import install_lessons, view_class
from nlstudio.widgets.lessons.base import LessonView
from nlstudio.widgets.lessons import memory_loop as loop_view
from nlstudio.widgets.lessons.welcome import SETTINGS_KEY, WelcomeDialog, wants_welcome
from nlstudio.widgets.main_window import MainWindow
from nlstudio.widgets.training_controller import install_training
from nlstudio.widgets.worker import running_threads

JOB_TIMEOUT_MS = 90000


@pytest.fixture
def studio(qtbot, tmp_path, monkeypatch, fake_dialogs):
    """The full window (editor, training, lessons) with settings and runs in tmp; lesson 5
    trains one step on few streams so that it finishes in seconds."""
    monkeypatch.setattr(loop_view, "CONFIG", LoopConfig(train_steps=1, return_rows=2,
                                                        max_gap=3))
    monkeypatch.setattr(loop_view, "_SHARED", {})  # each test trains its own model
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window.dialogs = fake_dialogs()
    qtbot.addWidget(window)
    install_training(window, runs_root=tmp_path / "runs")
    install_lessons(window)
    window.show()
    qtbot.waitExposed(window)
    yield window
    window.lessons.stop_background_work()
    window.training.shutdown()
    for view in window.lessons.windows.values():
        view.close()
    if window.lessons.welcome is not None:
        window.lessons.welcome.close()
    window.document.undo_stack.setClean()
    assert not running_threads()
    assert not window.dialogs.errors


def open_lesson(window, qtbot, number: int):
    action = window.findChild(type(window.actions[f"lesson.{number}"]),
                              f"action_lesson_{number}")
    assert action is window.actions[f"lesson.{number}"]
    action.trigger()
    view = window.lessons.windows[number]
    qtbot.waitExposed(view)
    assert view.objectName() == f"lesson{number}Window" and view.isVisible()
    assert view.text.text()  # it explains itself
    return view


def idle(view, qtbot) -> None:
    qtbot.waitUntil(lambda: not view.busy(), timeout=JOB_TIMEOUT_MS)


def click(view, qtbot, suffix: str) -> None:
    button = view.findChild(QPushButton, f"lesson{view.number}{suffix}")
    assert button is not None and button.isEnabled(), suffix
    with qtbot.waitSignal(view.stepped, timeout=JOB_TIMEOUT_MS):
        button.click()


def test_one_registry_names_every_view():
    for info in LESSONS:
        view = view_class(info.number)
        assert issubclass(view, LessonView) and view.__name__.endswith("View")
        assert view.lesson() is info


def test_help_menu_lists_every_lesson(studio):
    help_menu = studio.menuBar().findChild(QMenu, "helpMenu")
    lessons = studio.menuBar().findChild(QMenu, "lessonsMenu")
    assert lessons is not None and lessons.menuAction() in help_menu.actions()
    names = [a.objectName() for a in lessons.actions() if not a.isSeparator()]
    assert names == [f"action_lesson_{n}" for n in range(1, 6)] + ["action_help_welcome"]


def test_every_interactive_widget_has_an_object_name(studio, qtbot):
    for number in range(1, 6):
        view = open_lesson(studio, qtbot, number)
        widgets = [w for kind in (QAbstractButton, QComboBox, QProgressBar)
                   for w in view.findChildren(kind)]
        assert len(widgets) >= 4
        unnamed = [w for w in widgets if not w.objectName()]
        assert not unnamed, (number, unnamed)
        assert view.findChild(QPushButton, f"lesson{number}Next") is not None
        assert view.findChild(QPushButton, f"lesson{number}Reset") is not None
        idle(view, qtbot)


def test_lesson_1_measures_without_touching_the_canvas(studio, qtbot):
    """Issue 16 item 10: "Open it on the canvas" is off by default; opening the lesson and
    switching presets measures in the lesson window and leaves the user's project alone."""
    scene, dialogs = studio.scene, studio.dialogs
    before = set(scene.nodes)
    view = open_lesson(studio, qtbot, 1)
    qtbot.waitUntil(lambda: view.core.step_count == 1 and not view.busy(),
                    timeout=JOB_TIMEOUT_MS)
    assert not view.canvas_box.isChecked() and view.canvas_box.isEnabled()
    transformer = {lv.id for lv in core.load_preset("transformer").levels}
    assert set(view.spectrum.items) == transformer and view.spectrum.has_data()
    assert "re-reads its context" in view.status.text()
    assert view.spectrum.content["attn1"].rereads
    assert set(scene.nodes) == before and studio.document.path is None

    with qtbot.waitSignal(view.stepped, timeout=JOB_TIMEOUT_MS):
        view.findChild(type(view.radios["nsam"]), "lesson1Nsam").click()
    # designed beside measured, the numbers of the real measurement (core.describe_level)
    status = view.status.text()
    assert "cms_mid: designed 1/16; content " in status
    assert "cms_slow: designed 1/64; content " in status
    assert "frozen: designed 0; content 0" in status
    assert set(scene.nodes) == before
    assert not [c for c in dialogs.calls if c[0] in ("question", "ask_save_changes")]
    first = view.spectrum.content["cms_mid"]
    assert first is not None and len(first.lags) and "untrained" in view.spectrum.message.text()
    x, _ = view.spectrum.items["cms_mid"].curve.getData()
    assert len(x) == len(first.lags)  # the drift curve it comes from

    click(view, qtbot, "Next")  # another batch: the pooled measurement moves
    assert len(view.core.measurements) == 2 and "2 batches" in view.step_text.text()
    assert not np.allclose(view.spectrum.content["cms_mid"].replaced, first.replaced)
    assert view.spectrum.content["cms_mid"].sequences == 2 * first.sequences
    click(view, qtbot, "Back")
    assert view.core.step_count == 1
    np.testing.assert_allclose(view.spectrum.content["cms_mid"].replaced, first.replaced)
    click(view, qtbot, "Next")
    click(view, qtbot, "Reset")
    assert view.core.step_count == 1


def test_lessons_reach_the_window_through_lesson_host(studio, qtbot):
    """One explicit interface, no duck typing on the window: MainWindow implements
    LessonHost and is every lesson's host; lesson 1 without a host has no canvas to open on."""
    from nlstudio.widgets.lessons.base import LessonHost
    from nlstudio.widgets.lessons.spectrum import SpectrumView

    assert isinstance(studio, LessonHost)
    view = open_lesson(studio, qtbot, 1)
    assert view.host is studio and view.canvas_box.isEnabled()
    idle(view, qtbot)
    alone = SpectrumView(None)
    qtbot.addWidget(alone)
    try:
        assert alone.host is None and not alone.canvas_box.isEnabled()
    finally:
        alone.shutdown()


def _tick_canvas_box(view, qtbot) -> None:
    box = view.findChild(type(view.canvas_box), "lesson1Canvas")
    box.click()


def test_lesson_1_asks_before_replacing_an_unmodified_project(studio, qtbot):
    """Even an unmodified project is the user's: ticking the box asks, and No keeps it."""
    scene, dialogs = studio.scene, studio.dialogs
    view = open_lesson(studio, qtbot, 1)
    idle(view, qtbot)
    before = set(scene.nodes)
    assert studio.document.is_clean
    dialogs.answer = False
    _tick_canvas_box(view, qtbot)
    questions = [c for c in dialogs.calls if c[0] == "question"]
    assert len(questions) == 1 and "No keeps your project" in questions[0][2]
    assert set(scene.nodes) == before and not view.canvas_box.isChecked()
    assert "still shows your project" in view.status.text()

    dialogs.clear()
    dialogs.answer = True
    _tick_canvas_box(view, qtbot)
    transformer = {lv.id for lv in core.load_preset("transformer").levels}
    assert [c[0] for c in dialogs.calls] == ["question"]
    assert set(scene.nodes) == transformer and view.canvas_box.isChecked()
    assert scene.nodes["attn1"].pos().y() == scene.axis.y_inf
    assert scene.nodes["ffn1"].pos().y() == scene.axis.y_frozen

    # the canvas now shows the lesson's own, unedited copy: switching follows without asking
    dialogs.clear()
    with qtbot.waitSignal(view.stepped, timeout=JOB_TIMEOUT_MS):
        view.radios["nsam"].click()
    assert set(scene.nodes) == {"fast", "cms_mid", "cms_slow", "frozen"}
    assert scene.nodes["cms_mid"].pos().y() == scene.axis.y_for("mlp", 16)
    assert scene.nodes["cms_slow"].pos().y() > scene.nodes["cms_mid"].pos().y()
    assert not dialogs.calls

    # ... until the user edits it: then it is theirs again, and the lesson asks
    studio.document.edit("Rename", lambda d: d.update(name="Mine"))
    studio.document.undo_stack.setClean()  # saved, say: unmodified but edited
    dialogs.answer = False
    with qtbot.waitSignal(view.stepped, timeout=JOB_TIMEOUT_MS):
        view.radios["transformer"].click()
    assert [c[0] for c in dialogs.calls] == ["question"]
    assert studio.document.name == "Mine" and not view.canvas_box.isChecked()


def test_lesson_1_keeps_a_project_that_is_training(studio, qtbot):
    view = open_lesson(studio, qtbot, 1)
    idle(view, qtbot)
    before = set(studio.scene.nodes)
    studio.document.set_locked(True, "a run is training it")
    try:
        _tick_canvas_box(view, qtbot)
    finally:
        studio.document.set_locked(False)
    assert not studio.dialogs.calls and set(studio.scene.nodes) == before
    assert not view.canvas_box.isChecked()
    assert "(a run is training it)" in view.status.text()


def test_lesson_1_asks_before_replacing_a_modified_project(studio, qtbot):
    scene, dialogs = studio.scene, studio.dialogs
    view = open_lesson(studio, qtbot, 1)
    idle(view, qtbot)
    studio.document.edit("Rename", lambda d: d.update(name="Work in progress"))
    before = set(scene.nodes)
    dialogs.answer = False  # "No": keep my project
    _tick_canvas_box(view, qtbot)
    questions = [c for c in dialogs.calls if c[0] == "question"]
    assert len(questions) == 1 and "unsaved changes" in questions[0][2]
    assert "Work in progress" in questions[0][2]
    assert not dialogs.asked_to_save and set(scene.nodes) == before
    assert not studio.document.is_clean and studio.document.name == "Work in progress"

    dialogs.clear()
    dialogs.answer = True  # "Yes", then the window's own save question: Discard
    _tick_canvas_box(view, qtbot)
    assert [c[0] for c in dialogs.calls] == ["question", "ask_save_changes"]
    assert set(scene.nodes) == {lv.id for lv in core.load_preset("transformer").levels}


def test_lesson_2_steps_back_and_resets(studio, qtbot):
    view = open_lesson(studio, qtbot, 2)
    memory = view.cells["memory"]
    assert not memory.data.any() and not view.back_button.isEnabled()
    click(view, qtbot, "Next")
    after_one = memory.data.copy()
    assert after_one.any() and view.cells["surprise"].data is not None
    assert "write 1 · pair 1 of 6" in view.step_text.text()
    click(view, qtbot, "Next")
    assert "pair 2 of 6" in view.step_text.text()
    assert not np.array_equal(memory.data, after_one)
    assert len(view.loss_curve.getData()[1]) == 3
    view.proximal_box.setChecked(True)
    assert "max |difference|" in view.status.text()
    np.testing.assert_allclose(memory.data, view.core.current.proximal.astype(np.float32))
    click(view, qtbot, "Back")
    np.testing.assert_array_equal(memory.data, after_one)
    click(view, qtbot, "Reset")
    assert not memory.data.any() and view.core.step_count == 0


def test_lesson_3_steps_runs_and_resets(studio, qtbot):
    view = open_lesson(studio, qtbot, 3)
    start = view.paths["sgd"].getData()[0].copy()
    assert len(start) == 1
    click(view, qtbot, "Next")
    click(view, qtbot, "Next")
    xs, ys = view.paths["adam"].getData()
    assert len(xs) == 3 and len(view.loss_curves["m3"].getData()[0]) == 3
    m3_cells = [cell.data for cell in view.memory_cells]
    assert len(m3_cells) == 4 and all(c is not None for c in m3_cells)  # W, M1, M2, V
    click(view, qtbot, "Back")
    assert len(view.paths["adam"].getData()[0]) == 2
    view.memory_combo.setCurrentIndex(view.names.index("sgd"))
    assert len(view.memory_cells) == 1 and "No memory" in view.memory_text.text()
    view.memory_combo.setCurrentIndex(view.names.index("adam"))
    assert [c.data.shape for c in view.memory_cells] == [(3, 12)] * 3
    for _ in range(3):  # past the first step, where every run still sees the same gradient
        click(view, qtbot, "Next")
    own = view.memory_cells[1].data.copy()
    view.findChild(type(view.shared_box), "lesson3Shared").setChecked(True)
    assert "the same for all" in view.memory_cells[0]._text
    np.testing.assert_allclose(view.memory_cells[0].data,
                               view.core.regression.stream[-1].numpy().astype(np.float32))
    assert not np.array_equal(view.memory_cells[1].data, own)  # Adam's m of the shared stream

    view.findChild(QPushButton, "lesson3Run").click()
    qtbot.waitUntil(lambda: view.core.done, timeout=JOB_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not view.timer.isActive(), timeout=5000)
    assert "least" in view.status.text()
    assert len(view.loss_curves["sgd"].getData()[0]) == view.core.total_steps + 1
    click(view, qtbot, "Reset")
    assert len(view.paths["sgd"].getData()[0]) == 1


def test_lesson_4_shows_zero_difference_for_both_rules(studio, qtbot):
    view = open_lesson(studio, qtbot, 4)
    click(view, qtbot, "Next")
    first = view.cells["level"].data.copy()
    click(view, qtbot, "Next")
    assert not np.array_equal(view.cells["level"].data, first)
    assert "token 2 of" in view.step_text.text()
    diffs = view.diff_curve.getData()[1]
    assert len(diffs) == 2 and (10 ** diffs < 1e-13).all()  # log-mode data
    assert np.abs(view.cells["diff"].data).max() < 1e-13
    click(view, qtbot, "Back")
    np.testing.assert_array_equal(view.cells["level"].data, first)
    with qtbot.waitSignal(view.stepped):
        view.findChild(type(view.rule_group.buttons()[1]), "lesson4RuleDelta").click()
    assert view.rule == "delta" and view.core.step_count == 0
    click(view, qtbot, "Next")
    assert "½‖Mk − v‖²" in view.cells["update"]._text
    assert view.core.current.max_diff < 1e-13
    click(view, qtbot, "Reset")
    assert view.core.step_count == 0 and "token 0" in view.step_text.text()


def test_lesson_5_opens_on_its_first_stage_and_each_stage_says_its_own(studio, qtbot):
    """Issue 16 item 10: the story starts where it starts (a fact is shown), and the text
    under the buttons is what was measured at the stage shown, a different one at each."""
    view = open_lesson(studio, qtbot, 5)
    qtbot.waitUntil(lambda: view.result is not None and not view.busy(),
                    timeout=JOB_TIMEOUT_MS)
    result = view.result
    assert "step 0 of" in view.step_text.text()
    assert "a fact is shown once" in view.step_text.text()
    assert not len(view.delay_curves["none"].getData()[0] or [])
    assert not view.ablation.has_data() and not view.ablation.view.isVisibleTo(view)
    assert not view.back_button.isEnabled() and view.next_button.isEnabled()
    texts = [view.status.text()]
    assert texts[0] == describe_stage(result, 0)
    while view.next_button.isEnabled():
        click(view, qtbot, "Next")
        texts.append(view.status.text())
        assert view.ablation.view.isVisibleTo(view)
    assert len(texts) == result.stages and len(set(texts)) == len(texts)
    for stage, text in enumerate(texts):
        assert text == describe_stage(result, stage)
    assert f"{result.delay.delays[0]} tokens after it was shown" in texts[1]


def test_lesson_5_trains_in_the_background_and_steps(studio, qtbot):
    view = open_lesson(studio, qtbot, 5)
    qtbot.waitUntil(lambda: view.result is not None and not view.busy(),
                    timeout=JOB_TIMEOUT_MS)
    assert not running_threads()
    result = view.result
    assert result.trained_steps >= 1
    # the return freezes the slowest written level's writes; levels without writes (the
    # frozen MLP) are not offered
    assert view.freeze_combo.currentData() == "cms_slow"
    assert view.freeze_combo.objectName() == "lesson5Freeze"
    assert [view.freeze_combo.itemData(i) for i in range(view.freeze_combo.count())] == \
        result.written == ["fast", "cms_mid", "cms_slow"]
    assert "freezing one level's writes" in view.intro().lower()
    assert "frozen" in view.delay_plot.titleLabel.text
    for _ in range(result.stages - 1):  # the whole story
        click(view, qtbot, "Next")
    assert "training steps" in view.status.text() and "%" in view.status.text()
    # the Ablation panel shows freeze (the written levels), and silence (every level) on
    # request, each titled by what it is
    assert view.ablation.has_data() and view.ablation.kind == "freeze"
    assert view.ablation.names == result.written
    assert "frozen" in view.ablation.plot.titleLabel.text
    view.ablation.choose("silence")
    qtbot.waitUntil(lambda: view.ablation.kind == "silence" and not view.ablation.dirty)
    assert view.ablation.names == result.level_ids
    assert "silenced" in view.ablation.plot.titleLabel.text
    view.ablation.choose("freeze")
    qtbot.waitUntil(lambda: view.ablation.kind == "freeze" and not view.ablation.dirty)
    # its title never widens the heatmap past the panel (a sentence-long one cut off the last
    # delay and the colour bar)
    view.resize(1280, 820)
    qtbot.waitUntil(lambda: view.ablation.view.ci.minimumWidth() <= view.ablation.view.width())
    full = view.delay_curves["none"].getData()[1]
    np.testing.assert_allclose(full, result.delay.table[0])
    frozen = view.delay_curves["cms_mid"].getData()[1]
    np.testing.assert_allclose(frozen, result.delay.table[result.row("cms_mid")])
    assert "frozen" not in view.delay_curves  # the frozen MLP has no writes to freeze
    assert len(view.return_curves["relearned"].getData()[0]) == len(result.returns.gaps)
    r = result.returns
    np.testing.assert_allclose(view.return_curves["frozen"].getData()[1],
                               r.relearned[r.names.index("cms_slow")])
    labels = [label.text for _, label in view.return_plot.legend.items]
    assert "… with cms_slow's writes frozen" in labels
    view.freeze_combo.setCurrentIndex(view.freeze_combo.findData("fast"))
    np.testing.assert_allclose(view.return_curves["frozen"].getData()[1],
                               r.relearned[r.names.index("fast")])
    assert "… with fast's writes frozen" in [label.text for _, label in
                                             view.return_plot.legend.items]

    click(view, qtbot, "Back")  # the return is hidden again
    assert view.return_curves["relearned"].getData()[0] is None or \
        len(view.return_curves["relearned"].getData()[0]) == 0
    click(view, qtbot, "Back")
    shown = len(view.delay_curves["none"].getData()[0])
    assert shown == len(result.delay.delays) - 1
    assert view.ablation.drop.shape[1] == shown
    click(view, qtbot, "Reset")
    assert "a fact is shown once" in view.step_text.text()
    assert not view.ablation.has_data()
    click(view, qtbot, "Next")
    assert len(view.delay_curves["none"].getData()[0]) == 1

    # Train more: the trainer resumes its run; the stage shown stays where the user is
    with qtbot.waitSignal(view.stepped, timeout=JOB_TIMEOUT_MS):
        view.findChild(QPushButton, "lesson5Train").click()
    qtbot.waitUntil(lambda: not view.busy(), timeout=JOB_TIMEOUT_MS)
    assert view.result.trained_steps == result.trained_steps + 1
    assert "step 1 of" in view.step_text.text()
    view.close()
    assert not running_threads()


def test_welcome_page_opens_a_lesson_and_remembers(studio, qtbot, tmp_path):
    assert wants_welcome(studio.settings)
    studio.actions["help.welcome"].trigger()
    page = studio.lessons.welcome
    assert isinstance(page, WelcomeDialog) and page.objectName() == "welcomeDialog"
    qtbot.waitExposed(page)
    buttons = [page.findChild(QPushButton, f"welcomeLesson{n}") for n in range(1, 6)]
    assert all(b is not None for b in buttons)
    page.dont_show.setChecked(True)
    assert not wants_welcome(studio.settings)
    assert studio.settings.value(SETTINGS_KEY) in (False, "false")
    buttons[1].click()  # lesson 2
    assert not page.isVisible()
    assert studio.lessons.windows[2].isVisible()

    studio.lessons.show_welcome()
    page.findChild(QPushButton, "welcomeOpenDefault").click()
    assert "NSAM" in studio.windowTitle() and not page.isVisible()


def test_welcome_page_on_start_follows_the_setting(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    install_lessons(window, show_welcome=True)
    qtbot.waitUntil(lambda: window.lessons.welcome is not None
                    and window.lessons.welcome.isVisible(), timeout=5000)
    window.lessons.welcome.close()

    quiet = MainWindow(settings)  # NLSTUDIO_TESTING is set: no page unless asked
    qtbot.addWidget(quiet)
    install_lessons(quiet)
    QApplication.processEvents()
    assert quiet.lessons.welcome is None


def test_theme_switch_restyles_open_lessons(studio, qtbot):
    for number in (2, 3, 4):
        view = open_lesson(studio, qtbot, number)
        click(view, qtbot, "Next")
    try:
        studio.set_theme("dark")
        view = studio.lessons.windows[3]
        assert view.plots.backgroundBrush().color().name() == theme.current().plot_background
        click(view, qtbot, "Next")
    finally:
        studio.set_theme("light")


def test_closing_the_window_stops_lesson_5(qtbot, tmp_path, monkeypatch, fake_dialogs):
    monkeypatch.setattr(loop_view, "CONFIG", LoopConfig(train_steps=50, return_rows=2,
                                                        max_gap=2))
    monkeypatch.setattr(loop_view, "_SHARED", {})
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    window.dialogs = fake_dialogs()
    qtbot.addWidget(window)
    install_lessons(window)
    window.show()
    view = window.lessons.open(5)
    assert view.busy()
    window.document.undo_stack.setClean()
    assert window.close()  # the close guard stops the training and joins its thread
    assert not view.busy() and not running_threads()
    assert view.result is None
