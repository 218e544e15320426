"""Run folders in the GUI: open a finished run (curves from its CSVs, the memory snapshot
computed from its weights), follow a run while another thread writes it, compare runs."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt

from nlstudio import project as core
from nlstudio.runs import RunFollower, load_run, read_status
from nlstudio.trainer import Trainer
from nlstudio.widgets.main_window import MainWindow
from nlstudio.widgets.training_controller import install_training
from nlstudio.widgets.worker import running_threads

EVERY_PLOT_SHOWN = (2400, 900)  # px: the window size whose default layout shows every plot


def tiny_doc(steps: int, fast_optimizer: dict | None = None) -> dict:
    doc = core.project_to_dict(core.load_preset("nsam_kv_stream"))
    doc["model"]["d_model"] = 16
    doc["task"].update(num_keys=32, pairs_per_mapping=4, num_mappings=4, segment_len=16,
                       value_vocab=8)
    doc["train"].update(steps=steps, batch_size=4, seq_len=64, log_every=5, eval_every=10,
                        device="cpu")
    if fast_optimizer is not None:
        doc["model"]["levels"][0]["optimizer"] = fast_optimizer
    return doc


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two finished runs of one model with different inner optimizers on its fast level."""
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for name, opt in (("dgd", {"name": "dgd", "eta": 0.01}),
                      ("sgd", {"name": "sgd", "eta": 0.01})):
        path = root / f"nsam-{name}"
        result = Trainer(tiny_doc(20, opt), out=path, snapshots=False).run()
        assert result.reason == "completed", result.message
        paths.append(path)
    return paths


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
    yield window, controller
    controller.shutdown()
    assert not running_threads()


def test_open_a_finished_run_shows_its_csvs_and_a_computed_snapshot(studio, qtbot,
                                                                    finished_runs):
    window, c = studio
    path = finished_runs[0]
    assert window.open_path(str(path))  # the window's open dispatch claims run folders
    assert c.view is not None and c.view.path == path and not c.view.following
    run = load_run(path)
    np.testing.assert_allclose(c.plots.loss.main.loss.y, run.metrics["loss"])
    np.testing.assert_allclose(c.plots.loss.main.loss.x, run.metrics["step"])
    assert c.plots.loss.metric_name == "recall"
    assert set(c.plots.forgetting.main.task_items) or c.plots.forgetting.main.eval_rows
    assert c.plots.ablation.names == ["fast", "cms_mid", "cms_slow", "frozen"]
    with qtbot.waitSignal(c.view.snapshotReady, timeout=60000) as got:
        pass
    snap = got.args[0]
    assert snap.step == 20 and set(snap.levels) == {"fast", "cms_mid", "cms_slow", "frozen"}
    qtbot.waitUntil(lambda: c.plots.matrices.has_data() and c.plots.spectrum.has_data(),
                    timeout=5000)
    cell = c.plots.matrices.cells[("cms_mid", "memory")]
    np.testing.assert_allclose(cell.image.image, snap.levels["cms_mid"].memory)
    assert "saved weights" in c.plots.matrices.message.text()
    assert "finished" in c.panel.status_text
    assert c.panel.progress.value() == 20
    assert not running_threads()


def test_follow_a_run_while_another_thread_writes_it(studio, qtbot, tmp_path):
    window, c = studio
    path = tmp_path / "live-run"
    trainer = Trainer(tiny_doc(5000), out=path, snapshots=False)
    thread = threading.Thread(target=trainer.run, name="writer", daemon=True)
    thread.start()
    try:
        qtbot.waitUntil(lambda: read_status(path).get("state") == "running"
                        and len(RunFollower(path).poll().metrics_rows) >= 2, timeout=60000)
        assert c.open_run(path)
        assert c.view.following and "Following" in c.panel.status_text
        rows = len(c.plots.loss.main.loss)
        qtbot.waitUntil(lambda: len(c.plots.loss.main.loss) >= rows + 3, timeout=60000)
        qtbot.waitUntil(lambda: c.plots.forgetting.has_data(), timeout=60000)
        qtbot.waitUntil(lambda: c.panel.progress.value() > 0, timeout=10000)
        trainer.stop()  # the writer ends: following stops, the snapshot is computed
        qtbot.waitUntil(lambda: not c.view.following, timeout=60000)
        thread.join(60)
        assert not thread.is_alive()
        c.view.poll()
        run = load_run(path)
        np.testing.assert_allclose(c.plots.loss.main.loss.x, run.metrics["step"])
        qtbot.waitUntil(lambda: c.view.snapshot is not None, timeout=60000)
        assert "stopped" in c.panel.status_text
    finally:
        trainer.stop()
        thread.join(60)


def test_compare_runs_overlays_curves_with_a_legend(studio, qtbot, finished_runs):
    window, c = studio
    c.open_run(finished_runs[0])
    qtbot.waitUntil(lambda: c.view.job is None or c.view.job.done, timeout=60000)
    assert c.compare_runs(finished_runs)
    loss = c.plots.loss
    assert len(loss.overlays) == 2
    styles = {t.style for t in loss.overlays.values()}
    assert len(styles) == 2 and Qt.PenStyle.SolidLine not in styles
    labels = [t.label for t in loss.overlays.values()]
    assert "dgd" in labels[0] and "nsam-sgd" in labels[1]
    qtbot.waitUntil(lambda: not loss.dirty and not c.plots.forgetting.dirty, timeout=5000)
    assert loss.legend.isVisible()
    legend_names = [label.text for _, label in loss.legend.items]
    assert all(any(lbl in name for name in legend_names) for lbl in labels)
    # the forgetting plot's dashed lines are named too, and no legend lies over a plot
    forgetting = c.plots.forgetting
    assert forgetting.run_legend.isVisible()
    run_names = [label.text for _, label in forgetting.run_legend.items]
    assert all(any(lbl in name for name in run_names) for lbl in labels)
    for legend, plots in ((loss.legend, (loss.loss_plot, loss.metric_plot)),
                          (forgetting.run_legend, (forgetting.tasks_plot, forgetting.recall_plot)),
                          (forgetting.task_legend, (forgetting.tasks_plot, forgetting.recall_plot))):
        for plot in plots:
            assert not legend.sceneBoundingRect().intersects(plot.vb.sceneBoundingRect())
    for trace, path in zip(loss.overlays.values(), finished_runs):
        np.testing.assert_allclose(trace.items["loss"][1].getData()[1],
                                   load_run(path).metrics["loss"])
    assert len(c.plots.forgetting.overlays) == 2
    some = next(iter(c.plots.forgetting.overlays.values()))
    assert some.task_items and some.recall is not None
    assert window.actions["run.clear_compare"].isEnabled()
    window.actions["run.clear_compare"].trigger()
    assert not loss.overlays and not c.plots.forgetting.overlays
    assert not loss.legend.isVisible() and not c.plots.forgetting.run_legend.isVisible()


def test_a_compared_transformer_is_named_without_an_inner_optimizer(studio, qtbot, tmp_path,
                                                                     finished_runs):
    """A Transformer's frozen MLPs keep an optimizer setting that never runs: the compared
    run was labelled "(sgd)". Only levels that write in context name their optimizer."""
    window, c = studio
    doc = core.project_to_dict(core.load_preset("transformer"))
    doc["model"]["d_model"] = 16
    doc["task"] = tiny_doc(5)["task"]
    doc["train"].update(steps=5, batch_size=4, seq_len=64, log_every=5, eval_every=5,
                        device="cpu")
    path = tmp_path / "transformer-run"
    assert Trainer(doc, out=path, snapshots=False).run().reason == "completed"
    c.open_run(finished_runs[1])
    qtbot.waitUntil(lambda: c.view.job is None or c.view.job.done, timeout=60000)
    assert c.compare_runs([path, finished_runs[0]])
    labels = [t.label for t in c.plots.loss.overlays.values()]
    assert labels == ["transformer-run", "nsam-dgd (dgd/sgd)"]


def test_bad_run_folders_are_refused_with_a_message(studio, tmp_path):
    window, c = studio
    assert not c.open_run(tmp_path / "missing")
    assert window.dialogs.errors and "not a run folder" in window.dialogs.errors[-1][1]
    (tmp_path / "empty").mkdir()
    assert not c.compare_runs([tmp_path / "empty"])
    assert "Traceback" not in window.dialogs.errors[-1][1]
    assert not running_threads()
