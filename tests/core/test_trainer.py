"""The Qt-free trainer: run folders, pause/resume/stop from another thread, NaN stop, resume
equivalence."""
import csv
import threading

import numpy as np
import pytest
import torch

from nlstudio import events as ev
from nlstudio.runs import load_run, read_checkpoint, read_status
from nlstudio.trainer import Trainer, TrainError, train


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_train_writes_a_complete_run_folder(tmp_path, tiny_project):
    seen = []
    result = train(tiny_project(), out=tmp_path / "run", on_event=seen.append)
    assert result.reason == "completed" and result.step == 8
    run_dir = tmp_path / "run"
    for name in ("project.nlproj", "metrics.csv", "eval.csv", "delay.csv", "model.safetensors",
                 "status.json", "checkpoints/step-000000000008/model.safetensors",
                 "checkpoints/step-000000000008/state.pt",
                 "checkpoints/step-000000000008/checkpoint.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "plots").is_dir()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-000000000008"]  # older checkpoints are pruned, no temporaries are left
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]
    # the top-level weights are the checkpoint's, for export
    assert (run_dir / "model.safetensors").read_bytes() == (
        run_dir / "checkpoints/step-000000000008/model.safetensors").read_bytes()
    rows = read_metrics(run_dir)
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    # fast (period 4) writes 32/4 = 8 times per sequence, every step; slow never
    assert [int(r["fast.updates"]) for r in rows] == [16, 32, 48, 64]
    assert all(int(r["slow.updates"]) == 0 for r in rows)
    assert float(rows[-1]["fast.update_norm"]) > 0
    assert read_checkpoint(run_dir).step == 8
    assert read_status(run_dir)["state"] == "finished"
    kinds = {type(e) for e in seen}
    assert {ev.Started, ev.Progress, ev.MetricsRow, ev.Snapshot, ev.Evaluation,
            ev.Finished} <= kinds
    snap = next(e for e in seen if isinstance(e, ev.Snapshot))
    assert snap.levels["fast"].memory.dtype == np.float32
    assert snap.levels["fast"].frequency == 0.25 and snap.levels["slow"].frequency == 0
    run = load_run(run_dir)
    assert run.steps == 8 and run.checkpoint_step == 8
    assert {t for _, t, _ in run.eval_rows} == {"mqar"}
    model = run.load_model()
    tokens = torch.zeros(1, 8, dtype=torch.long)
    logits, _ = model(tokens)
    assert torch.isfinite(logits).all()


def test_pause_resume_and_stop_from_another_thread(tmp_path, tiny_project):
    first_progress = threading.Event()
    steps_seen = []

    paused = threading.Event()

    def on_event(event):
        if isinstance(event, ev.Progress):
            steps_seen.append(event.step)
            first_progress.set()
        elif isinstance(event, ev.StateChanged) and event.state == "paused":
            paused.set()

    trainer = Trainer(tiny_project(steps=100000, log_every=1000, eval_every=100000),
                      out=tmp_path / "run", on_event=on_event, snapshots=False)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        assert first_progress.wait(60)
        trainer.pause()
        assert paused.wait(30)
        assert read_status(tmp_path / "run").get("state") == "paused"
        paused_at = len(steps_seen)
        assert not _wait(lambda: len(steps_seen) > paused_at, timeout=0.5)
        trainer.resume()
        assert _wait(lambda: len(steps_seen) > paused_at + 2)
        stop_requested_at = len(steps_seen)
        trainer.stop()
        thread.join(30)
        assert not thread.is_alive()
        assert len(steps_seen) <= stop_requested_at + 1  # stops within one step
    finally:
        trainer.stop()
        thread.join(30)
    assert read_status(tmp_path / "run")["state"] == "stopped"
    assert read_checkpoint(tmp_path / "run").step == steps_seen[-1]


def _wait(predicate, timeout=20.0):
    """Polls a condition of another thread (an Event-free check with a deadline)."""
    done = threading.Event()
    deadline = timeout
    step = 0.01
    while deadline > 0:
        if predicate():
            return True
        done.wait(step)
        deadline -= step
    return predicate()


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_step(
        tmp_path, monkeypatch, tiny_project):
    from nlstudio.tasks.mqar import MQARTask

    real_loss = MQARTask.loss
    calls = {"n": 0}

    def loss(self, logits, targets):
        calls["n"] += 1
        value = real_loss(self, logits, targets)
        return value * float("nan") if calls["n"] == 5 else value

    monkeypatch.setattr(MQARTask, "loss", loss)
    result = train(tiny_project(steps=10, log_every=2), out=tmp_path / "run")
    assert result.reason == "failed"
    assert "diverged" in result.message and "step 5" in result.message
    assert result.step == 4
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and "diverged" in status["message"]
    assert read_checkpoint(tmp_path / "run").step == 4
    model = load_run(tmp_path / "run").load_model()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_gives_the_same_losses_as_one_straight_run(tmp_path, tiny_project):
    straight = train(tiny_project(steps=8, log_every=1), out=tmp_path / "a")
    half = train(tiny_project(steps=8, log_every=1), out=tmp_path / "b", steps=4)
    assert half.step == 4
    resumed = Trainer(resume=tmp_path / "b", steps=8).run()
    assert straight.reason == resumed.reason == "completed"
    a = [float(r["loss"]) for r in read_metrics(tmp_path / "a")]
    b = [float(r["loss"]) for r in read_metrics(tmp_path / "b")]
    assert len(a) == len(b) == 8
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    updates = [int(r["fast.updates"]) for r in read_metrics(tmp_path / "b")]
    assert updates == sorted(updates) and updates[-1] == 8 * 8  # 8 writes per sequence per step


def test_existing_nonempty_folder_is_refused(tmp_path, tiny_project):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(TrainError, match="not an empty folder"):
        Trainer(tiny_project(steps=2), out=out)


def test_paused_time_is_not_training_time(tmp_path, tiny_project, monkeypatch):
    """wall_s in metrics.csv and Progress.elapsed_s/eta_s exclude a pause (issue 16 #2). The
    trainer's clock reads a fake time that jumps by a day while the run is paused, so the test
    does not depend on how fast this machine trains: a day leaves no trace in any number."""
    import time as real_time
    from types import SimpleNamespace

    import nlstudio.training_state as training_state

    day = 86400.0
    jump = [0.0]
    monkeypatch.setattr(training_state, "time",
                        SimpleNamespace(perf_counter=lambda: real_time.perf_counter() + jump[0]))
    progress, paused = [], threading.Event()

    def on_event(event):
        if isinstance(event, ev.Progress):
            progress.append(event)
            if event.step == 10:
                trainer.pause()
        elif isinstance(event, ev.StateChanged) and event.state == "paused":
            paused.set()

    trainer = Trainer(tiny_project(steps=20, log_every=2, eval_every=1000), out=tmp_path / "r",
                      on_event=on_event, snapshots=False)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        assert paused.wait(60)
        jump[0] += day  # the pause being measured
        trainer.resume()
        thread.join(60)
    finally:
        trainer.stop()
        thread.join(60)
    wall = [float(r["wall_s"]) for r in read_metrics(tmp_path / "r")]
    steps = [int(r["step"]) for r in read_metrics(tmp_path / "r")]
    assert steps[-1] == 20 and wall == sorted(wall)
    assert wall[-1] < day / 100, wall  # the day paused is not in any wall_s
    after = next(p for p in progress if p.step == 11)
    assert after.elapsed_s < day / 100 and after.eta_s < day / 100
