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
from nlstudio.widgets.main_window import MainWindow
from nlstudio.widgets.training_controller import LOCK_REASON, install_training
from nlstudio.widgets.worker import running_threads


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
    window.resize(1280, 800)
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

    # ---- resume: it goes on --------------------------------------------------------------
    actions["run.pause"].trigger()
    assert c.state == "running"
    qtbot.waitUntil(lambda: c.last_progress.step > held + 2, timeout=30000)

    # ---- stop: prompt, resumable, editing unlocked -----------------------------------------
    with qtbot.waitSignal(c.runEnded, timeout=30000) as ended:
        actions["run.stop"].trigger()
    stopped = ended.args[0]
    assert stopped.reason == "stopped" and stopped.step < 3000
    assert read_status(run_dir)["state"] == "stopped"
    assert not running_threads()
    assert not window.document.locked and not c.panel.banner.isVisible()
    assert "Stopped at step" in c.panel.status_text
    assert actions["run.start"].isEnabled() and not actions["run.stop"].isEnabled()

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
