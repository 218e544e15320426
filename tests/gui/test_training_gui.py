"""Live training from the main window, for real: the NSAM kv_stream preset, shrunk through the
document, trained by the core trainer in the worker thread. Every plot receives data that
changes, pause holds the step, resume goes on, stop ends a resumable run, a restart trains to
the end, and every export is read back (the model by ``nlstudio eval``)."""
from __future__ import annotations

import csv
import io
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtGui import QImage
from PySide6.QtSvg import QSvgRenderer

from nlstudio import project as core
from nlstudio.runs import MODEL_FILE, PROJECT_FILE, read_status
from nlstudio.widgets.format import grouped
from nlstudio.widgets.main_window import MainWindow
from nlstudio.widgets.training_controller import LOCK_REASON, install_training
from nlstudio.widgets.plots.matrices import grid_side
from nlstudio.widgets.training_host import TrainingHost
from nlstudio.widgets.training_panel import format_duration
from nlstudio.widgets.worker import running_threads

EVERY_PLOT_SHOWN = (2400, 900)  # px: the window size whose default layout shows every plot


def shrink(doc: dict, steps: int) -> None:
    """The preset, small enough for a test: what a user would do in the inspector."""
    doc["model"]["d_model"] = 16
    doc["task"].update(num_keys=32, pairs_per_mapping=4, num_mappings=4, segment_len=16,
                       value_vocab=8)
    doc["train"].update(steps=steps, batch_size=4, seq_len=64, log_every=5, eval_every=15,
                        device="cpu")


@pytest.fixture
def studio(qtbot, tmp_path, monkeypatch, fake_dialogs):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window.dialogs = fake_dialogs()
    qtbot.addWidget(window)
    controller = install_training(window, runs_root=tmp_path / "runs")
    # Wide enough for all five plots side by side (narrower windows fold some into tabs,
    # which draw only when raised): these tests follow the data into every plot.
    window.resize(*EVERY_PLOT_SHOWN)
    window.show()
    qtbot.waitExposed(window)
    window.document.load(core.project_to_dict(core.load_preset("nsam_kv_stream")))
    yield window, controller
    controller.shutdown()
    assert not running_threads()


def set_steps(window, steps: int) -> None:
    assert window.document.edit("Shrink for the test", lambda d: shrink(d, steps))


def plot_arrays(controller) -> dict[str, np.ndarray]:
    """The data arrays inside the pyqtgraph items of every plot."""
    p = controller.plots
    out = {"loss": p.loss.main.items["loss_s"][1].getData()[1],
           "metric": p.loss.main.items["metric_s"][1].getData()[1],
           "ablation": p.ablation.image.image}
    for (lid, which), cell in p.matrices.cells.items():
        if cell.image.image is not None:
            out[f"matrix {lid} {which}"] = cell.image.image
    for lid, items in p.spectrum.items.items():
        y = items.curve.getData()[1]
        if y is not None and len(y):
            out[f"spectrum {lid}"] = y
    for task, item in p.forgetting.main.task_items.items():
        out[f"task {task}"] = item.getData()[1]
    recall = p.forgetting.main.recall_item.getData()[1]
    if recall is not None:
        out["recall"] = recall
    return {k: np.array(v, copy=True) for k, v in out.items() if v is not None}


def test_live_run_pause_resume_stop_restart_and_export(studio, qtbot, tmp_path):
    window, c = studio
    actions = window.actions
    set_steps(window, 3000)
    assert actions["run.start"].isEnabled()
    assert not actions["run.pause"].isEnabled() and not actions["run.stop"].isEnabled()

    # ---- run: the window locks editing, every plot fills ---------------------------------
    actions["run.start"].trigger()
    assert c.state == "running" and c.session is not None
    assert window.document.locked and window.document.lock_reason == LOCK_REASON
    assert c.panel.banner.isVisible() and "Stop to edit" in c.panel.banner.text()
    assert not actions["run.start"].isEnabled()
    assert not window.document.edit("refused", lambda d: d.update(name="x"))
    assert len(running_threads()) == 1

    def every_plot_has_data():
        arrays = plot_arrays(c)
        keys = {"loss", "metric", "ablation", "recall", "spectrum fast", "matrix fast memory",
                "matrix cms_mid memory", "matrix cms_mid write", "matrix frozen memory"}
        return keys <= arrays.keys() and all(arrays[k].size for k in keys) and any(
            k.startswith("task ") for k in arrays)

    qtbot.waitUntil(every_plot_has_data, timeout=60000)
    first = plot_arrays(c)
    qtbot.waitUntil(lambda: c.last_progress is not None and c.last_progress.step >= 40,
                    timeout=60000)
    qtbot.waitUntil(lambda: all(not np.array_equal(plot_arrays(c)[k], first[k]) for k in (
        "loss", "matrix fast memory", "matrix cms_mid memory", "spectrum fast", "ablation")),
        timeout=60000)
    assert "step" in c.panel.progress.text() and "/ 3" in c.panel.progress.text()
    assert c.panel.device_label.text().startswith("CPU")
    assert c.panel.loss_label.text() not in ("", "–")
    assert c.panel.rate_label.text().endswith("tok/s")
    assert c.panel.folder_label.text() and c.run_dir is not None
    assert all(d.redraws > 0 for d in c.plots.docks)

    # ---- pause: the step stops advancing ----------------------------------------------------
    actions["run.pause"].trigger()
    assert c.state == "paused" and actions["run.pause"].text() == "&Resume"
    run_dir = c.run_dir
    qtbot.waitUntil(lambda: read_status(run_dir).get("state") == "paused", timeout=30000)
    c.session.flush()
    held = c.last_progress.step
    qtbot.wait(400)  # a dozen delivery ticks
    c.session.flush()
    assert c.last_progress.step == held and c.session.trainer.paused
    # "Paused at step N" is the step the trainer held at, the one the progress bar shows
    # (it named the step of the click, one or more before); the comma is prose, not a number
    assert c.panel.status_text == (f"Paused at step {grouped(held)}. Resume to go on, Stop "
                                   "to end the run.")
    assert c.panel.progress.value() == held == read_status(run_dir)["step"]
    # the Time cell shows the trainer's elapsed time; no estimate while nothing trains
    elapsed = format_duration(c.last_progress.elapsed_s)
    assert c.panel.eta_label.text() == f"{elapsed} elapsed · paused"

    # ---- resume: it goes on --------------------------------------------------------------
    actions["run.pause"].trigger()
    assert c.state == "running"
    qtbot.waitUntil(lambda: c.last_progress.step > held + 2, timeout=30000)
    last = c.last_progress  # what is shown is what the trainer sent, nothing measured here
    assert c.panel.eta_label.text() == (f"{format_duration(last.elapsed_s)} elapsed · "
                                        f"{format_duration(last.eta_s)} left")

    # ---- stop: prompt, resumable, editing unlocked -----------------------------------------
    with qtbot.waitSignal(c.runEnded, timeout=30000) as ended:
        actions["run.stop"].trigger()
    stopped = ended.args[0]
    assert stopped.reason == "stopped" and stopped.step < 3000
    assert read_status(run_dir)["state"] == "stopped"
    assert not running_threads()
    assert not window.document.locked and not c.panel.banner.isVisible()
    assert f"Stopped at step {grouped(stopped.step)}." in c.panel.status_text
    assert actions["run.start"].isEnabled() and not actions["run.stop"].isEnabled()
    assert actions["run.continue"].isEnabled()  # the stopped run can be trained on

    # ---- restart: a new run folder, trained to the end -------------------------------------
    set_steps(window, 30)
    with qtbot.waitSignal(c.runEnded, timeout=120000) as ended:
        assert c.start()
    done = ended.args[0]
    assert done.reason == "completed" and done.step == 30 and c.run_dir != run_dir
    assert "Finished 30 steps" in c.panel.status_text
    qtbot.waitUntil(lambda: plot_arrays(c)["loss"].size == 6, timeout=5000)  # rows 5..30
    assert c.plots.forgetting.main.recall is not None and c.plots.forgetting.main.recall[0] == 30

    # ---- export everything, read it all back ---------------------------------------------
    written = c.export_plots()
    assert len(written) == 15 and all(p.parent == c.run_dir / "plots" for p in written)
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert not QImage(str(path)).isNull()
        elif path.suffix == ".svg":
            assert QSvgRenderer(str(path)).isValid()
        else:
            with open(path, newline="") as fh:
                table = list(csv.reader(fh))
            assert len(table) > 1 and len({len(r) for r in table}) == 1
    assert window.dialogs.infos and str(c.run_dir / "plots") in window.dialogs.infos[-1][1]
    assert str(c.run_dir / "plots") in window.statusBar().currentMessage()
    with open(c.run_dir / "plots" / "loss.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert losses == pytest.approx(list(c.plots.loss.main.loss.y))

    model_dir = tmp_path / "exported model"
    files = c.export_model(model_dir)
    assert sorted(p.name for p in files) == [MODEL_FILE, PROJECT_FILE]
    from nlstudio.cli import main as cli_main

    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(["eval", str(model_dir)])
    assert code == 0, out.getvalue()
    assert "mapping 0" in out.getvalue() and "recall by delay" in out.getvalue()
    assert not window.dialogs.errors


def test_spectrum_shows_the_documents_levels_before_any_run(studio, qtbot):
    window, c = studio
    spectrum = c.plots.spectrum
    assert [lv["id"] for lv in spectrum.levels] == ["fast", "cms_mid", "cms_slow", "frozen"]
    assert [lv["period"] for lv in spectrum.levels] == [8, 16, 64, None]
    assert not spectrum.has_data()
    window.document.edit("slower", lambda d: d["model"]["levels"][1].update(period=32))
    assert [lv["period"] for lv in spectrum.levels] == [8, 32, 64, None]
    window.document.edit("break", lambda d: d["model"].update(edges=[["input", "fast"]]))
    assert [lv["period"] for lv in spectrum.levels] == [8, 32, 64, None]  # invalid: kept
    window.document.load(core.project_to_dict(core.load_preset("transformer")))
    assert {lv["kind"] for lv in spectrum.levels} == {"attention", "mlp"}


def test_invalid_project_does_not_start(studio, qtbot):
    window, c = studio
    window.document.edit("break", lambda d: d["model"].update(edges=[["input", "fast"]]))
    assert not window.document.is_valid
    assert not c.start()
    assert window.dialogs.errors and "Fix the model first" in window.dialogs.errors[-1][1]
    assert c.session is None and not running_threads()


def test_failed_run_is_shown_clearly(studio, qtbot):
    window, c = studio

    def diverge(d):
        shrink(d, 200)
        d["train"]["optimizer"]["lr"] = 10.0
        d["train"]["grad_clip"] = None
        for level in d["model"]["levels"]:
            level["optimizer"]["eta"] = 10.0

    window.document.edit("diverge", diverge)
    with qtbot.waitSignal(c.runEnded, timeout=60000) as ended:
        assert c.start()
    result = ended.args[0]
    assert result.reason == "failed"
    assert "Training failed" in c.panel.status_text and "diverged" in c.panel.status_text
    assert c.panel.status.property("error") is True
    assert "Traceback" not in c.panel.status_text
    assert not window.document.locked


def test_closing_the_window_stops_the_run(studio, qtbot):
    window, c = studio
    set_steps(window, 5000)
    assert c.start()
    qtbot.waitUntil(lambda: c.last_progress is not None, timeout=60000)
    window.dialogs.answer = False
    window.close()  # the user keeps it running
    assert window.isVisible() and c.session is not None
    window.dialogs.answer = True
    window.close()
    assert not window.isVisible()
    assert c.session is None and not running_threads()
    assert read_status(c.run_dir)["state"] == "stopped"


def test_late_events_of_an_old_run_are_dropped(studio, qtbot):
    window, c = studio
    set_steps(window, 20)
    with qtbot.waitSignal(c.runEnded, timeout=60000):
        assert c.start()
    old = c.last_progress
    from nlstudio import events as ev
    from nlstudio.widgets.worker import Delivery

    rows_before = len(c.plots.loss.main.loss)
    late = Delivery(ev.Progress(old.run_id, 999, 999, 0.0, 0.0, 1.0, 1.0, 0.0, "x"), None,
                    [ev.MetricsRow(old.run_id, {"step": 999, "loss": 1.0, "metric": 1.0})])
    c.live_run._on_delivery(object(), late)  # a tick of a session no longer current
    assert c.last_progress is old and len(c.plots.loss.main.loss) == rows_before
    assert Path(c.run_dir).is_dir()


# ---- what the first hour in the app showed (issue 16) ---------------------------------------
def metrics_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [int(float(r["step"])) for r in csv.DictReader(fh)]


def test_continue_trains_the_stopped_run_on_in_the_app(studio, qtbot):
    """After Stop the panel pointed at the CLI and Run started again from step 0: Continue
    resumes the same run folder through the trainer's resume path."""
    window, c = studio
    actions = window.actions
    set_steps(window, 40)
    assert not actions["run.continue"].isEnabled()  # nothing stopped yet
    assert c.start()
    qtbot.waitUntil(lambda: c.last_progress is not None and c.last_progress.step >= 12,
                    timeout=60000)
    with qtbot.waitSignal(c.runEnded, timeout=30000) as ended:
        actions["run.stop"].trigger()
    stopped = ended.args[0]
    run_dir = c.run_dir
    assert stopped.reason == "stopped" and 12 <= stopped.step < 40
    assert actions["run.continue"].isEnabled()
    shown_before = len(c.plots.loss.main.loss)

    with qtbot.waitSignal(c.runEnded, timeout=120000) as ended:
        actions["run.continue"].trigger()
        assert c.live and c.run_dir == run_dir and window.document.locked
        # the run's history stays on the plots; the bar starts where the run stopped
        assert len(c.plots.loss.main.loss) == shown_before
        assert c.panel.progress.value() == stopped.step
    done = ended.args[0]
    assert done.reason == "completed" and done.step == 40 and done.run_dir == run_dir
    assert read_status(run_dir)["state"] == "finished"
    assert metrics_steps(run_dir) == list(range(5, 41, 5))  # one row per step: no repeat
    np.testing.assert_array_equal(c.plots.loss.main.loss.x, np.arange(5, 41, 5))
    # the trainer's time is this session's: the message says which steps it covers
    assert f"Finished step 40 (steps {stopped.step + 1}–40 in " in c.panel.status_text
    assert not actions["run.continue"].isEnabled()  # finished: nothing left to continue
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name]  # no new run


def test_runs_go_to_the_user_data_folder_unless_the_user_chose_one(
        qtbot, tmp_path, monkeypatch, fake_dialogs):
    """A preset's run landed in resources/presets/runs inside the installed package: runs go
    to the app's data folder (QStandardPaths), or where the user chose, and the panel says
    where."""
    from nlstudio.widgets.run_location import standard_runs_root

    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)

    def studio_window():
        window = MainWindow(settings)
        window.dialogs = fake_dialogs()
        qtbot.addWidget(window)
        return window, install_training(window)  # no runs_root: what the app does

    window, c = studio_window()
    root = standard_runs_root()
    assert root.is_relative_to(tmp_path / "data")
    assert c.panel.folder_label.path == root  # "new runs go to …" before any run
    assert "new runs go to" in c.panel.folder_label.shown_text()

    project = tmp_path / "projects" / "mine.nlproj"
    project.parent.mkdir()
    doc = core.project_to_dict(core.load_preset("nsam_kv_stream"))
    shrink(doc, 5)
    core.save_project(doc, project)
    for opened in (lambda: window.open_preset("nsam_kv_stream"),
                   lambda: window.open_project(str(project))):
        assert opened()
        window.document.edit("Shrink", lambda d: shrink(d, 5))  # the saved one is small
        with qtbot.waitSignal(c.runEnded, timeout=60000):
            assert c.start()
        assert c.run_dir.parent == root  # not beside the project, not in the cwd
        assert c.panel.folder_label.path == c.run_dir.resolve()
        assert all(b.isVisibleTo(c.panel) for b in (c.panel.open_button, c.panel.copy_button))
        window.document.undo_stack.setClean()
    assert not (work / "runs").exists() and not (project.parent / "runs").exists()

    chosen = tmp_path / "my runs"  # a new folder, typed in the chooser
    c.ask_directory = lambda title, start: str(chosen)
    window.actions["run.runs_folder"].trigger()
    with qtbot.waitSignal(c.runEnded, timeout=60000):
        assert c.start()
    assert c.run_dir.parent == chosen
    c.shutdown()
    window.close()
    window, c = studio_window()  # the choice is remembered
    assert c.runs.root() == chosen
    c.shutdown()


def test_another_project_clears_the_previous_projects_results(studio, qtbot):
    """After File → New from Preset the last project's plots (its levels' matrices, its
    sub-tasks) stayed beside the new graph. They are cleared; the run stays on disk."""
    window, c = studio
    set_steps(window, 15)
    with qtbot.waitSignal(c.runEnded, timeout=60000):
        assert c.start()
    previous = c.run_dir
    qtbot.waitUntil(lambda: c.plots.loss.has_data() and c.plots.forgetting.has_data()
                    and c.plots.matrices.has_data(), timeout=10000)
    assert window.open_preset("transformer")
    p = c.plots
    assert not any(d.has_data() for d in (p.loss, p.matrices, p.forgetting, p.ablation))
    assert not p.forgetting.main.task_items and not p.forgetting.task_legend.items
    assert "fast" not in {lid for lid, _ in p.matrices.cells}
    assert {lv["kind"] for lv in p.spectrum.levels} == {"attention", "mlp"}  # the new graph
    assert c.run_dir is None and c.panel.progress.text() == "no run"
    assert previous.name in c.panel.status_text and "Open Run" in c.panel.status_text
    assert c.panel.status.toolTip() == str(previous)
    assert not window.actions["run.export_model"].isEnabled()
    assert not window.actions["run.continue"].isEnabled()
    assert previous.is_dir()
    assert c.open_run(previous)  # and it comes back on request
    assert c.plots.loss.has_data()


@pytest.mark.parametrize("size", [(1280, 800), (1600, 1000)])
def test_memory_matrices_are_readable_squares_at_the_default_size(studio, qtbot, size):
    """They were thin strips at 1280×800 until the dock was resized, then ~55 px squares in
    a corner: in the default layout (a tab behind the spectrum at these sizes) every level's
    memory and latest write are squares of at least 64 px."""
    window, c = studio
    window.resize(*size)
    window.reset_layout()
    matrices = c.plots.matrices
    assert window.tabifiedDockWidgets(matrices) == [c.plots.spectrum]
    matrices.raise_()
    set_steps(window, 5)
    with qtbot.waitSignal(c.runEnded, timeout=60000):
        assert c.start()
    qtbot.waitUntil(lambda: matrices.has_data() and not matrices.dirty, timeout=10000)
    for lid in ("fast", "cms_mid", "cms_slow", "frozen"):  # 16×16 memories, 64×16 weights
        for which in ("memory", "write"):
            cell = matrices.cells[(lid, which)]
            if cell.data is None:  # the frozen level writes nothing: no image, a note
                continue
            rect = cell.image.mapRectToScene(cell.image.boundingRect())
            assert rect.width() == pytest.approx(rect.height(), rel=0.03), (lid, which, rect)
            assert rect.width() >= 64, (lid, which, rect)  # readable
    # the grid was chosen from the square the layout really gives (grid_side counts its
    # margins, spacing, titles and colour bars) ...
    _shown, side_by_side, per_row = matrices._arrangement
    estimate = grid_side(len(matrices.shown_levels), matrices.view.width(),
                         matrices.view.height(), side_by_side, per_row,
                         matrices.grid_metrics(False))
    views = [cell.view.mapRectToScene(cell.view.boundingRect())
             for cell in matrices.cells.values()]
    assert min(min(v.width(), v.height()) for v in views) == pytest.approx(estimate, abs=1.0)
    # ... and the titles are legible: each inside its cell, none over another
    titles = []
    for (lid, which), cell in matrices.cells.items():
        rect = cell.title.mapRectToScene(cell.title.boundingRect())
        for ink in cell.title.text_rects():
            assert cell.title.boundingRect().contains(ink), (lid, which, ink)
        assert all(not rect.intersects(other) for other in titles), (lid, which, rect)
        titles.append(rect)


def test_parameter_count_in_the_training_panel(studio, qtbot):
    from nlstudio.build import build_task, count_parameters

    window, c = studio

    def expected() -> str:
        project = core.parse_project(window.document.snapshot())
        return grouped(count_parameters(project, build_task(project)))

    qtbot.waitUntil(lambda: c.panel.params_label.text() == expected(), timeout=5000)
    before = c.panel.params_label.text()
    window.document.edit("wider", lambda d: d["model"].update(d_model=32))
    qtbot.waitUntil(lambda: c.panel.params_label.text() == expected(), timeout=5000)
    assert c.panel.params_label.text() != before
    window.document.edit("break", lambda d: d["model"].update(edges=[["input", "fast"]]))
    qtbot.waitUntil(lambda: c.panel.params_label.text() == "–", timeout=5000)


def test_export_into_a_new_folder_typed_in_the_chooser(studio, qtbot, tmp_path):
    """The export's folder chooser answered a typed new name with "Directory not found"."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QFileDialog, QLineEdit, QMessageBox

    window, c = studio
    set_steps(window, 5)
    with qtbot.waitSignal(c.runEnded, timeout=60000):
        assert c.start()
    refused = []

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, QMessageBox):  # "Directory not found": the name was refused
            refused.append(dialog.text())
            dialog.accept()
            QTimer.singleShot(0, lambda: QApplication.activeModalWidget().reject())
        elif isinstance(dialog, QFileDialog):
            dialog.setDirectory(str(tmp_path))
            dialog.findChild(QLineEdit, "fileNameEdit").setText("brand new")
            QTimer.singleShot(50, answer)  # first: a refusal's message box blocks accept()
            dialog.accept()
        else:
            QTimer.singleShot(20, answer)

    QTimer.singleShot(0, answer)
    written = c.export_model()  # asks for the folder
    assert not refused, refused
    assert written and all(p.parent == tmp_path / "brand new" for p in written)


def test_the_window_is_the_training_host_and_places_its_actions(studio):
    """One interface: MainWindow implements TrainingHost itself (no adapter), and the
    training side's actions sit where MenuPlace says, Continue on the toolbar after Stop."""
    window, c = studio
    assert isinstance(window, TrainingHost) and c.host is window and window.training is c
    a = window.actions
    assert window.menu("run").actions()[:4] == [a["run.start"], a["run.pause"], a["run.stop"],
                                                a["run.continue"]]
    bar = window.toolbar.actions()
    assert bar[bar.index(a["run.stop"]) + 1] is a["run.continue"]
    assert not a["run.continue"].icon().isNull()
    file_menu = window.menu("file").actions()
    assert file_menu[file_menu.index(a["file.open"]) + 1] is a["run.open_run"]
    quit_at = file_menu.index(a["file.quit"])
    assert file_menu[quit_at - 3:quit_at] == [a["run.export_model"], a["run.export_plots"],
                                               file_menu[quit_at - 1]]
    assert file_menu[quit_at - 1].isSeparator() and file_menu[quit_at - 4].isSeparator()
    toggles = [t for t in window.menu("panels").actions() if not t.isSeparator()]
    docks = [c.dock, *c.plots.docks]
    assert all(toggles.count(d.toggleViewAction()) == 1 for d in docks)
    assert all(window.panel_slot(d) is not None for d in docks)  # Reset Layout places them


def test_panels_menu_names_the_loss_dock_with_its_ampersand(studio):
    window, c = studio
    names = [a.iconText() for a in window.menu("panels").actions() if not a.isSeparator()]
    assert "Loss & metric" in names and "Training" in names
