"""The memory inspector window through real widget interaction: text, examples and files are
traced in a background thread, the scrubber (slider, keys, play, clicks on the strip) moves
the view, generation streams into the text box and stops on demand, exports are files, and no
QThread is ever left running."""
from __future__ import annotations

import csv

import pytest
from PySide6.QtCore import QPointF, QSettings, Qt

import nlstudio
from nlstudio import generation as gen
from nlstudio.widgets.main_window import MainWindow
from nlstudio.widgets.trace_menu import install_inspector
from nlstudio.widgets.trace_window import InspectorWindow
from nlstudio.widgets.training_controller import install_training
from nlstudio.widgets.worker import running_threads

WAIT_MS = 60000


def tiny_doc(task: dict) -> dict:
    levels = [{"id": "att", "kind": "attention", "period": None, "window": 8},
              {"id": "cms", "kind": "mlp", "period": 4, "objective": "task",
               "optimizer": {"name": "sgd", "eta": 0.05}},
              {"id": "ffn", "kind": "mlp", "period": None}]
    return {"format": "nlstudio.project", "version": 1, "name": f"tiny-{task['name']}",
            "model": {"d_model": 16, "heads": 2, "levels": levels,
                      "edges": [["input", "att"], ["att", "cms"], ["cms", "ffn"],
                                ["ffn", "output"]]},
            "task": task,
            "train": {"steps": 2, "batch_size": 2, "seq_len": 32, "seed": 0, "device": "cpu",
                      "log_every": 1, "eval_every": 1000}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspector-runs")
    out = {}
    for name, task in (("charlm", {"name": "charlm"}),
                       ("mqar", {"name": "mqar", "num_pairs": 4, "key_vocab": 8,
                                 "value_vocab": 8})):
        result = nlstudio.train(tiny_doc(task), out=root / name, evaluate=False)
        assert result.reason == "completed", result.message
        out[name] = root / name
    return out


@pytest.fixture
def inspector(qtbot, runs):
    windows = []

    def make(name: str = "charlm") -> InspectorWindow:
        window = InspectorWindow(gen.load_model(runs[name]))
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.shutdown()
    assert not running_threads()


def inspect(qtbot, window, action) -> object:
    with qtbot.waitSignal(window.traceReady, timeout=WAIT_MS) as blocker:
        action()
    return blocker.args[0]


def test_text_is_traced_and_the_scrubber_moves_the_view(qtbot, inspector):
    w = inspector()
    assert w.text.isVisible() and w.generate_button.isVisible()
    w.text.setPlainText("def f(x):\n    return x\n")
    trace = inspect(qtbot, w, lambda: qtbot.mouseClick(w.inspect_button,
                                                        Qt.MouseButton.LeftButton))
    n = len("def f(x):\n    return x\n")
    assert len(trace) == n and w.scrubber.slider.maximum() == n - 1
    assert not w.busy and w.export_button.isEnabled()
    w.scrubber.slider.setFocus()
    qtbot.keyClick(w.scrubber.slider, Qt.Key.Key_Right)
    assert w.position == 1 and w.view.position == 1
    qtbot.keyClick(w, Qt.Key.Key_End)
    assert w.view.position == n - 1
    qtbot.keyClick(w, Qt.Key.Key_Home)
    assert w.view.position == 0
    w.step(5)
    assert w.view.position == 5 and w.scrubber.label.text() == f"5 / {n - 1}"
    # the cms level writes every 4 tokens: its strip has a tick per write
    assert trace.levels["cms"].write_positions.tolist() == list(range(3, n, 4))
    ticks = w.view.ticks["cms"].getData()[0]
    assert sorted(set(ticks.tolist())) == [t + 0.5 for t in range(3, n, 4)]


def test_a_click_on_the_strip_moves_the_cursor(qtbot, inspector):
    w = inspector()
    w.text.setPlainText("abcdefghijklmnopqrstuvwxyz" * 2)
    inspect(qtbot, w, w.inspect_text)
    vb = w.view.strip.vb
    scene_pos = vb.mapViewToScene(QPointF(30.5, 1.5))
    view_pos = w.view.view.mapFromScene(scene_pos)
    qtbot.mouseClick(w.view.view.viewport(), Qt.MouseButton.LeftButton, pos=view_pos)
    qtbot.waitUntil(lambda: w.position == 30, timeout=5000)
    assert w.view.cursor.value() == pytest.approx(30.5)


def test_new_example_has_the_chosen_length_and_changes_each_time(qtbot, inspector):
    w = inspector("mqar")
    assert not w.text.isVisible() and not w.generate_button.isVisible()
    w.length.setValue(40)
    first = inspect(qtbot, w, lambda: qtbot.mouseClick(w.example_button,
                                                        Qt.MouseButton.LeftButton))
    second = inspect(qtbot, w, w.new_example)
    assert len(first) == len(second) == 40
    assert (first.inputs != second.inputs).any()
    assert (first.targets != -100).any()  # the task's own targets


def test_a_file_of_token_ids_is_traced_and_bad_files_say_why(qtbot, inspector, tmp_path):
    w = inspector("mqar")
    good = tmp_path / "ids.txt"
    good.write_text("1 9 2 10 1 0 2")
    trace = inspect(qtbot, w, lambda: w.open_file(str(good)))
    assert trace.inputs.tolist() == [1, 9, 2, 10, 1, 0, 2]
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 345")
    assert w.open_file(str(bad)) is False
    assert "outside" in w.status.text() and str(bad) in w.status.text()


def test_cancel_stops_a_long_computation(qtbot, inspector):
    w = inspector()
    w.length.setValue(4096)
    w.new_example()
    assert w.busy and w.stop_button.isEnabled()
    qtbot.waitUntil(lambda: w.progress.value() > 0, timeout=WAIT_MS)
    qtbot.mouseClick(w.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=WAIT_MS)
    assert w.status.text() == "Cancelled." and w.trace is None
    assert not running_threads()


def test_closing_the_window_while_computing_joins_the_thread(qtbot, inspector):
    w = inspector()
    w.length.setValue(4096)
    w.new_example()
    qtbot.waitUntil(lambda: w.progress.value() > 0, timeout=WAIT_MS)
    w.close()
    assert not w.busy and not running_threads()


def test_generate_streams_into_the_text_and_then_traces_it(qtbot, inspector, runs):
    w = inspector()
    w.text.setPlainText("def ")
    w.gen_length.setValue(24)
    w.temperature.setValue(0.7)
    w.seed.setValue(3)
    with qtbot.waitSignal(w.generated, timeout=WAIT_MS) as gen_done, \
            qtbot.waitSignal(w.traceReady, timeout=WAIT_MS) as traced:
        qtbot.mouseClick(w.generate_button, Qt.MouseButton.LeftButton)
    tokens = list(nlstudio.generate(runs["charlm"], "def ", tokens=24, temperature=0.7, seed=3))
    expected = bytes(tokens).decode("utf-8", "replace")
    assert gen_done.args[0] == expected
    assert w.text.toPlainText() == "def " + expected
    # the trace reads the exact bytes the model read and wrote
    assert traced.args[0].inputs.tolist() == list(b"def ") + tokens


def test_stop_ends_generation_and_keeps_what_was_written(qtbot, inspector):
    w = inspector()
    w.text.setPlainText("ab")
    w.gen_length.setValue(10000)
    w.generate()
    qtbot.waitUntil(lambda: len(w.text.toPlainText()) > 6, timeout=WAIT_MS)
    assert w.text.isReadOnly()
    with qtbot.waitSignal(w.generated, timeout=WAIT_MS) as stopped, \
            qtbot.waitSignal(w.traceReady, timeout=WAIT_MS) as traced:
        qtbot.mouseClick(w.stop_button, Qt.MouseButton.LeftButton)
    text = stopped.args[0]
    assert w.text.toPlainText() == "ab" + text and not w.text.isReadOnly()
    assert 6 < len(traced.args[0]) < 10002  # the prompt and what was written before Stop
    assert bytes(traced.args[0].inputs.tolist()).decode("utf-8", "replace") == "ab" + text


def test_play_advances_until_paused(qtbot, inspector):
    w = inspector()
    w.text.setPlainText("x" * 200)
    inspect(qtbot, w, w.inspect_text)
    w.scrubber.rate.setCurrentIndex(3)
    qtbot.mouseClick(w.scrubber.play_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.position > 20, timeout=WAIT_MS)
    qtbot.mouseClick(w.scrubber.play_button, Qt.MouseButton.LeftButton)
    stopped = w.position
    qtbot.wait(100)
    assert w.position == stopped and not w.scrubber.playing


def test_export_writes_checked_png_svg_and_csv(qtbot, inspector, tmp_path):
    w = inspector()
    w.text.setPlainText("hello world\n")
    inspect(qtbot, w, w.inspect_text)
    w.set_position(4)
    written = w.export(str(tmp_path / "out"))
    assert sorted(p.suffix for p in written) == [".csv", ".png", ".svg"]
    with open(next(p for p in written if p.suffix == ".csv"), newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 1 + len("hello world\n")
    assert rows[0][:4] == ["position", "input", "target", "loss"]


def test_run_menu_opens_the_current_run_or_says_why_not(qtbot, tmp_path, runs, fake_dialogs):
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window.dialogs = fake_dialogs()
    qtbot.addWidget(window)
    controller = install_training(window, runs_root=tmp_path / "runs")
    manager = install_inspector(window)
    try:
        assert window.actions["run.inspect"] in window.menu("run").actions()
        window.actions["run.inspect"].trigger()
        assert window.dialogs.errors and "first" in window.dialogs.errors[-1][1]
        assert controller.open_run(runs["charlm"])  # File → Open Run: the run shown
        window.actions["run.inspect"].trigger()
        assert len(manager.windows) == 1 and manager.windows[0].loaded.path == runs["charlm"]
        manager.ask_directory = lambda title, start: str(tmp_path)
        window.actions["run.inspect_folder"].trigger()
        assert str(tmp_path) in window.dialogs.errors[-1][1]
        assert len(manager.windows) == 1
        assert manager.stop_background_work() is True
    finally:
        manager.stop_background_work()
        controller.shutdown()
    assert not running_threads()
