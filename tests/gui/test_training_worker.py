"""The worker thread on its own: the real trainer in a QThread, coalesced deliveries, every
rare event delivered in order, torch threads leaving a core to the GUI, prompt shutdown."""
from __future__ import annotations

import time

import pytest

from nlstudio import events as ev
from nlstudio import project as core
from nlstudio.runs import read_status
from nlstudio.trainer import Trainer
from nlstudio.widgets.worker import (DELIVERY_INTERVAL_MS, TrainingSession, running_threads,
                                     worker_torch_threads)


def tiny_trainer(tmp_path, steps: int) -> Trainer:
    doc = core.project_to_dict(core.load_preset("nsam_kv_stream"))
    doc["model"]["d_model"] = 16
    doc["task"].update(num_keys=32, pairs_per_mapping=4, num_mappings=4, segment_len=16,
                       value_vocab=8)
    doc["train"].update(steps=steps, batch_size=4, seq_len=64, log_every=5, eval_every=20,
                        device="cpu")
    return Trainer(doc, out=tmp_path / "run", snapshot_interval_s=0.0)


def test_a_run_is_delivered_coalesced_and_complete(qtbot, tmp_path):
    session = TrainingSession(tiny_trainer(tmp_path, 40))
    deliveries = []
    session.delivered.connect(deliveries.append)
    t0 = time.monotonic()
    with qtbot.waitSignal(session.ended, timeout=120000) as ended:
        session.start()
        assert len(running_threads()) == 1
    elapsed = time.monotonic() - t0
    result = ended.args[0]
    assert result.reason == "completed" and result.step == 40
    assert not running_threads()
    # one delivery per timer tick at most: never one per step or per snapshot
    assert len(deliveries) <= elapsed * 1000 / DELIVERY_INTERVAL_MS + 3
    events = [e for d in deliveries for e in d.events]
    assert isinstance(events[0], ev.Started) and isinstance(events[-1], ev.Finished)
    assert [e.row["step"] for e in events if isinstance(e, ev.MetricsRow)] == list(
        range(5, 41, 5))
    assert [e.step for e in events if isinstance(e, ev.Evaluation)] == [20, 40]
    steps = [d.progress.step for d in deliveries if d.progress is not None]
    assert steps == sorted(steps) and steps[-1] == 40
    snaps = [d.snapshot for d in deliveries if d.snapshot is not None]
    assert snaps and all(isinstance(s.levels["fast"].memory, type(snaps[0].levels["fast"].memory))
                         for s in snaps)
    # the training thread left a core to the GUI
    started = events[0]
    assert started.device_name == f"CPU ({worker_torch_threads()} threads)"


def test_shutdown_mid_run_joins_the_thread_promptly(qtbot, tmp_path):
    trainer = tiny_trainer(tmp_path, 100000)
    session = TrainingSession(trainer)
    progressed = []
    session.delivered.connect(lambda d: d.progress and progressed.append(d.progress.step))
    session.start()
    try:
        qtbot.waitUntil(lambda: bool(progressed) and progressed[-1] >= 3, timeout=60000)
    finally:
        t0 = time.monotonic()
        assert session.shutdown()
    assert time.monotonic() - t0 < 30
    assert not running_threads()
    assert read_status(tmp_path / "run")["state"] == "stopped"


@pytest.mark.parametrize("cores,expected", [(1, 1), (2, 1), (16, 15)])
def test_worker_threads_leave_one_core(monkeypatch, cores, expected):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert worker_torch_threads() == expected
