"""Reliability of the GUI: many start/stop cycles leak no thread and no memory, a crashed
session's unsaved edits come back exactly, closing the window during a run joins the worker
(the real app in a subprocess: no "QThread: Destroyed while thread is still running"), a run
folder whose writer was killed opens as a dead run, and a save that fails on a full disk or a
read-only folder leaves the file on disk and the unsaved document as they were."""
from __future__ import annotations

import csv
import errno
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtCore import QCoreApplication, QEvent, QSettings, QThread

from nlstudio import project as core
from nlstudio.runs import RunFollower, load_run, read_status
from nlstudio.widgets.main_window import MainWindow
from nlstudio.widgets.training_controller import install_training
from nlstudio.widgets.worker import running_threads

pytestmark = pytest.mark.slow

# Qt 6 names the thread: "QThread: Destroyed while thread 'trainingThread-…' is still running"
QTHREAD_DESTROYED = re.compile(r"QThread: Destroyed while thread\b.*\bis still running")


def make_studio(qtbot, tmp_path, dialogs) -> MainWindow:
    """What ``nlstudio.app.create_main_window()`` builds, with settings and runs in tmp."""
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window.dialogs = dialogs
    qtbot.addWidget(window)
    install_training(window, runs_root=tmp_path / "runs")
    window.show()
    qtbot.waitExposed(window)
    return window


@pytest.fixture
def studio(qtbot, tmp_path, monkeypatch, fake_dialogs):
    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    window = make_studio(qtbot, tmp_path, fake_dialogs())
    yield window
    window.training.shutdown()
    assert not running_threads()


def subprocess_env(tmp_path: Path) -> dict:
    """The real app: offscreen, scratch settings and recovery folder, and without the test
    switch (so it offers recovery on start-up like a user's session would)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1",
               NLSTUDIO_RECOVERY_DIR=str(tmp_path / "recovery"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    env.pop("NLSTUDIO_TESTING", None)
    return env


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def qthread_objects() -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), QThread))


# ---- 1. start/stop endurance ------------------------------------------------------------------
CYCLES, WARM_UP = 200, 10


def test_two_hundred_start_stop_cycles_leak_no_thread_and_no_memory(studio, qtbot, tmp_path,
                                                                    tiny_project):
    window, c = studio, studio.training
    window.document.load(tiny_project(steps=100000, log_every=50, eval_every=100000))
    assert window.document.is_valid, window.document.faults
    trainers: list[weakref.ref] = []
    frozen: list[int] = []

    def cycle(i: int) -> None:
        seen: list[str] = []
        assert c.start(out=tmp_path / "runs" / f"r{i:03d}"), window.dialogs.errors
        session = c.session
        trainers.append(weakref.ref(session.trainer))
        session.delivered.connect(
            lambda d: seen.extend([type(e).__name__ for e in d.events]
                                  + (["Progress"] if d.progress is not None else [])))
        # stop right after Started, after the first progress, while still starting, or paused
        wanted = ("Started", "Progress", None, "Progress")[i % 4]
        if wanted:
            qtbot.waitUntil(lambda: wanted in seen, timeout=30000)
        if i % 4 == 3:
            c.pause()
            qtbot.waitUntil(lambda: "StateChanged" in seen, timeout=30000)  # it holds
            assert c.state == "paused"
        with qtbot.waitSignal(c.runEnded, timeout=30000) as ended:
            c.stop()
        assert ended.args[0].reason == "stopped", ended.args[0]
        assert c.session is None and c.state == "idle" and not window.document.locked
        frozen.append(gc.get_freeze_count())

    def settle() -> None:
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        gc.collect()

    t0 = time.perf_counter()
    for i in range(WARM_UP):
        cycle(i)
    settle()
    rss0, threads0 = rss_mb(), qthread_objects()
    t1 = time.perf_counter()
    for i in range(WARM_UP, CYCLES):
        cycle(i)
    t2 = time.perf_counter()
    settle()
    rss1, threads1 = rss_mb(), qthread_objects()
    growth = rss1 - rss0
    per_cycle_ms = (t2 - t1) / (CYCLES - WARM_UP) * 1000
    print(f"\n{CYCLES} start/stop cycles in {t2 - t0:.1f} s ({per_cycle_ms:.0f} ms per cycle "
          f"after warm-up); RSS {rss0:.1f} MB after {WARM_UP} cycles -> "
          f"{rss1:.1f} MB after {CYCLES} (growth {growth:+.1f} MB); QThread objects alive "
          f"{threads0} -> {threads1}; gc frozen objects {gc.get_freeze_count()}")
    assert not running_threads()
    assert threads1 <= threads0
    assert growth < 50, f"resident memory grew by {growth:.1f} MB over {CYCLES - WARM_UP} runs"
    alive = [r for r in trainers if r() is not None]
    assert not alive, f"{len(alive)} stopped runs' trainers (and models) are still in memory"
    # no run is live: the heap is back with the cyclic collector after every run
    assert not any(frozen), f"heap left frozen after {sum(map(bool, frozen))} of {CYCLES} runs"
    assert len(list((tmp_path / "runs").iterdir())) == CYCLES
    for name in ("r000", f"r{CYCLES - 1:03d}"):
        assert read_status(tmp_path / "runs" / name)["state"] == "stopped"
    assert not window.dialogs.errors


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stopping_a_gpu_run_gives_its_device_memory_back(studio, qtbot, tmp_path, tiny_project):
    window, c = studio, studio.training
    window.document.load(tiny_project(steps=100000, log_every=50, eval_every=100000,
                                      device="cuda"))
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    during, after = [], []
    for i in range(4):
        assert c.start(out=tmp_path / "runs" / f"gpu{i}"), window.dialogs.errors
        qtbot.waitUntil(lambda: c.last_progress is not None, timeout=60000)
        during.append(torch.cuda.memory_allocated())
        with qtbot.waitSignal(c.runEnded, timeout=60000):
            c.stop()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        gc.collect()
        torch.cuda.synchronize()
        after.append(torch.cuda.memory_allocated())
    print(f"\nCUDA memory allocated: {base} B before, {during} during, {after} after each stop")
    assert all(d > base for d in during)  # the runs did use the GPU
    assert all(a - base < 16 << 20 for a in after), after  # small constant caches at most
    assert after[-1] <= after[0]  # nothing piles up run after run


# ---- 2. recovery after a crash ------------------------------------------------------------------
EDIT_AND_CRASH = r"""
import json, os, signal, sys, traceback
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from nlstudio.app import create_application

project, expected_file = sys.argv[1], sys.argv[2]
app = create_application()


def edit_then_crash():
    try:
        from nlstudio.widgets.canvas import commands
        from nlstudio.widgets.main_window import MainWindow

        window = next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))
        doc = window.document
        assert doc.path == os.path.abspath(project) and doc.is_clean, doc.path
        new = window.view.add_level("delta", 520.0, 1)
        assert commands.connect(doc, "fast", new) is None
        assert commands.connect(doc, new, "output") is None
        assert commands.set_level_field(doc, "cms_mid", ("period",), 48)
        assert commands.rename_level(doc, "cms_slow", "slow_memory") is None
        assert doc.edit("Rename project", lambda d: d.update(name="edited, then crashed"))
        removed = commands.add_level(doc, "titans", 700.0)
        assert doc.undo()  # an undone edit is not part of the unsaved work
        assert removed not in doc.level_ids()
        with open(expected_file, "w", encoding="utf-8") as fh:
            json.dump({"document": doc.snapshot(), "undo_count": doc.undo_stack.count()}, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        traceback.print_exc()
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)  # no close event, no cleanup: a crash


QTimer.singleShot(0, edit_then_crash)
QTimer.singleShot(120000, lambda: os._exit(4))
from nlstudio.cli import main

sys.exit(main([project]))
"""


def test_unsaved_edits_survive_a_crash_exactly(qtbot, tmp_path, monkeypatch, fake_dialogs):
    project = tmp_path / "hope.nlproj"
    core.save_project(core.load_preset("nsam_kv_stream"), project)
    original = project.read_bytes()
    expected_file = tmp_path / "expected.json"
    proc = subprocess.run([sys.executable, "-c", EDIT_AND_CRASH, str(project),
                           str(expected_file)], cwd=tmp_path, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    recovery = tmp_path / "recovery" / "recovery.nlrecover"
    assert recovery.is_file() and project.read_bytes() == original
    crashed = json.loads(expected_file.read_text(encoding="utf-8"))
    expected = crashed["document"]

    monkeypatch.setenv("NLSTUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    window = make_studio(qtbot, tmp_path, fake_dialogs())
    asked: list[str] = []
    try:
        assert window.check_recovery(ask=lambda text: asked.append(text) or True)
        assert len(asked) == 1 and "hope.nlproj" in asked[0]
        assert "did not close normally" in asked[0]
        doc = window.document
        assert doc.data == expected  # the exact edited document
        assert doc.path == str(project.absolute())
        assert not doc.is_clean and window.isWindowModified()
        assert "edited, then crashed" in window.windowTitle()
        assert set(window.scene.nodes) == {lv["id"] for lv in expected["model"]["levels"]}
        assert doc.is_valid and window.actions["run.start"].isEnabled()
        assert recovery.is_file()  # still unsaved: still protected

        window.actions["file.save"].trigger()
        assert not window.dialogs.errors
        assert not recovery.exists()
        assert doc.is_clean and not window.isWindowModified()
        assert core.project_to_dict(core.load_project(project)) == core.project_to_dict(expected)
    finally:
        window.training.shutdown()


# ---- 3. closing the window during a run (the real app, in a subprocess) -------------------------
CLOSE_DURING_RUN = r"""
import json, os, sys, traceback
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from nlstudio.app import create_application

project, report_file, moment = sys.argv[1], sys.argv[2], sys.argv[3]
app = create_application()
report = {"asked": []}


def window():
    from nlstudio.widgets.main_window import MainWindow

    return next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))


def guarded(fn):
    def call():
        try:
            fn()
        except BaseException:
            traceback.print_exc()
            os._exit(3)
    return call


@guarded
def start():
    w = window()

    def question(title, text):
        report["asked"].append([title, text])
        return True  # "Stop it and close?" Yes

    w.dialogs.question = question
    assert w.training.start()
    report["run_dir"] = str(w.training.run_dir)
    if moment == "starting":  # the worker is still building the model
        close()
    else:
        poll.start()


@guarded
def close():
    w = window()
    c = w.training
    if moment == "training" and c.last_progress is None:
        return
    poll.stop()
    report["step_seen"] = c.last_progress.step if c.last_progress else None
    report["closed"] = w.close()
    from nlstudio.widgets.worker import running_threads

    report["threads_after_close"] = len(running_threads())


poll = QTimer()
poll.setInterval(10)
poll.timeout.connect(close)
QTimer.singleShot(0, start)
QTimer.singleShot(120000, lambda: os._exit(4))
from nlstudio.cli import main

code = main([project])
report["exit"] = code
with open(report_file, "w") as fh:
    json.dump(report, fh)
sys.exit(code)
"""


@pytest.mark.parametrize("moment", ["training", "starting"])
def test_closing_the_app_during_a_run_joins_the_worker(tmp_path, tiny_project, moment):
    project = tmp_path / "tiny.nlproj"
    project.write_text(json.dumps(tiny_project(steps=100000, log_every=20, eval_every=100000)))
    report_file = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-c", CLOSE_DURING_RUN, str(project),
                           str(report_file), moment], cwd=tmp_path,
                          env=subprocess_env(tmp_path), capture_output=True, text=True,
                          timeout=180)
    assert not QTHREAD_DESTROYED.search(proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_file.read_text())
    assert report["closed"] is True and report["exit"] == 0
    assert len(report["asked"]) == 1 and report["asked"][0][0] == "Training is running"
    assert report["threads_after_close"] == 0
    if moment == "training":
        assert report["step_seen"] >= 1
    run_dir = Path(report["run_dir"])
    # in the app's data folder (XDG_DATA_HOME/<organisation>/<application>), not beside the
    # project (issue 16: a bundled preset's runs landed inside the installed package)
    assert run_dir.parent == tmp_path / "data" / "NL Studio" / "NL Studio" / "runs"
    status = read_status(run_dir)
    assert status["state"] == "stopped"  # a clean, resumable end
    assert not RunFollower(run_dir).is_live()


# ---- 4. a run folder whose writer was killed -----------------------------------------------------
def _metric_rows(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics.csv") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except OSError:
        return 0


def test_a_run_killed_mid_run_opens_as_a_dead_run(studio, qtbot, tmp_path, tiny_project):
    window, c = studio, studio.training
    project = tmp_path / "p.nlproj"
    project.write_text(json.dumps(tiny_project(steps=100000, log_every=3, eval_every=6)))
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nlstudio", "train", str(project), "--out",
                             str(run_dir)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        while _metric_rows(run_dir) < 3:  # the progress bar redraws after every step
            assert proc.stderr.read(1), "the run ended early"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status = read_status(run_dir)
    assert status["state"] == "running" and status["pid"] == proc.pid  # it never said otherwise
    assert not RunFollower(run_dir).is_live()

    assert window.open_path(str(run_dir))  # File → Open / Open Run with a run folder
    assert not window.dialogs.errors
    view = c.view
    assert view is not None and view.path == run_dir
    assert not view.following and c.session is None and c.state == "idle"
    assert not window.actions["run.stop"].isEnabled() and not window.document.locked
    run = load_run(run_dir)
    np.testing.assert_allclose(c.plots.loss.main.loss.y, run.metrics["loss"])
    np.testing.assert_allclose(c.plots.loss.main.loss.x, run.metrics["step"])
    assert len(c.plots.loss.main.loss) >= 3
    assert c.plots.forgetting.main.eval_rows or c.plots.forgetting.main.task_items
    text = c.panel.status_text
    assert "Following" not in text and "running" not in text, text
    assert "interrupted" in text and f"--resume {run_dir}" in text, text
    with qtbot.waitSignal(view.snapshotReady, timeout=60000):
        pass  # not live: the memory snapshot is computed from its last saved weights
    assert "not live" in c.plots.matrices.message.text()
    assert not view.following and not view._timer.isActive()  # nobody polls a dead writer


# ---- 5. a save that fails: full disk, read-only folder -------------------------------------------
def test_a_failing_save_keeps_the_file_and_the_unsaved_document(studio, tmp_path, monkeypatch):
    import nlstudio.fileio as fileio
    from nlstudio.widgets.canvas import commands

    window = studio
    dialogs = window.dialogs
    path = tmp_path / "work" / "p.nlproj"
    path.parent.mkdir()
    core.save_project(core.load_preset("nsam_kv_stream"), path)
    assert window.open_path(str(path))
    original = path.read_bytes()
    doc = window.document
    assert doc.edit("Rename", lambda d: d.update(name="unsaved work"))
    assert commands.set_level_field(doc, "cms_mid", ("period",), 48)
    before = (doc.snapshot(), doc.undo_stack.count(), doc.path)
    recovery = tmp_path / "recovery" / "recovery.nlrecover"
    assert recovery.is_file()
    real_atomic_path = fileio.atomic_path

    def disk_fills_during_write(target, text):
        with real_atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(text.encode("utf-8")[:100])  # the first bytes fit, then none do
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    def read_only_folder(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path.parent))

    failures = [("atomic_write_text", disk_fills_during_write, "No space left on device"),
                ("read_only", read_only_folder, "Read-only file system")]
    for name, failure, words in failures:
        with monkeypatch.context() as m:
            if name == "read_only":  # the temporary file cannot even be created
                m.setattr(fileio.tempfile, "mkstemp", failure)
            else:
                m.setattr(fileio, name, failure)
            for attempt in ("save", "save_as", "close"):
                dialogs.calls.clear()
                if attempt == "save":
                    window.actions["file.save"].trigger()
                elif attempt == "save_as":
                    dialogs.save_path = str(tmp_path / "work" / "copy.nlproj")
                    assert not window.save_as()
                else:  # Close → "Save changes?" → Save, which fails: the window stays open
                    dialogs.save_answer = "save"
                    assert not window.close()
                    assert window.isVisible()
                    dialogs.save_answer = "discard"
                errors = dialogs.errors
                assert len(errors) == 1, (name, attempt, dialogs.calls)
                title, text = errors[0]
                assert title == "Could not save project" and words in text, text
                target = "copy.nlproj" if attempt == "save_as" else "p.nlproj"
                assert text.startswith(f"{target}: ") and "Traceback" not in text
                assert path.read_bytes() == original  # byte-identical
                assert not (tmp_path / "work" / "copy.nlproj").exists()
                assert sorted(p.name for p in path.parent.iterdir()) == ["p.nlproj"]  # no .tmp
                assert (doc.snapshot(), doc.undo_stack.count(), doc.path) == before
                assert not doc.is_clean and window.isWindowModified()
                assert recovery.is_file()  # the unsaved work stays protected
    # space again: the same Save now works
    dialogs.calls.clear()
    window.actions["file.save"].trigger()
    assert not dialogs.errors and doc.is_clean and not recovery.exists()
    assert core.project_to_dict(core.load_project(path)) == core.project_to_dict(before[0])
