"""Reliability of the core: a run killed with SIGKILL resumes, a crafted pickle never runs,
a full disk or a failing write loses nothing, a diverging run keeps its last good step."""
import csv
import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch

from nlstudio.runs import RunError, load_run, read_checkpoint, read_status
from nlstudio.trainer import Trainer, TrainError, train

pytestmark = pytest.mark.slow


def metric_steps(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return [int(float(r["step"])) for r in csv.DictReader(fh)]


def test_sigkill_at_a_random_step_leaves_a_resumable_run(tmp_path, tiny_project):
    log_every = 3
    path = tmp_path / "p.nlproj"
    path.write_text(json.dumps(tiny_project(steps=100000, log_every=log_every,
                                            eval_every=100000)))
    out = tmp_path / "run"
    kill_after_rows = random.Random(os.getpid()).randint(1, 4)
    proc = subprocess.Popen([sys.executable, "-m", "nlstudio", "train", str(path), "--out",
                             str(out)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        # tqdm redraws the bar on stderr after each step: read it (blocking, no sleeps) until
        # enough rows have been logged, then kill without warning.
        while True:
            char = proc.stderr.read(1)
            assert char, "the run ended early"
            rows = metric_steps(out) if (out / "metrics.csv").exists() else []
            if len(rows) >= kill_after_rows:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logged = metric_steps(out)
    ckpt_step = read_checkpoint(out).step
    assert logged and logged[-1] - ckpt_step <= log_every  # at most one interval lost
    assert read_status(out)["state"] == "running"  # the killed process never said otherwise
    run = load_run(out)  # opens like any run
    assert run.steps == logged[-1]
    model = run.load_model()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    result = Trainer(resume=out, steps=ckpt_step + 4, snapshots=False).run()
    assert result.reason == "completed"
    steps = metric_steps(out)
    assert steps == sorted(set(steps))  # no duplicated or reordered rows after the resume
    assert steps[-1] == ckpt_step + 4


def test_resuming_a_run_that_is_still_being_written_is_refused(tmp_path, tiny_project):
    result = train(tiny_project(steps=2), out=tmp_path / "run")
    status = read_status(tmp_path / "run")
    writer = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    try:
        status.update(state="running", pid=writer.pid)  # a live process "is writing it"
        (tmp_path / "run" / "status.json").write_text(json.dumps(status))
        with pytest.raises(TrainError, match="still being written"):
            Trainer(resume=tmp_path / "run", steps=4)
    finally:
        writer.communicate(b"")
    # once that process is gone (killed without a last status), the run resumes
    assert Trainer(resume=tmp_path / "run", steps=4, snapshots=False).run().reason == "completed"
    # and a status naming this very process is live only while this process writes the run
    status.update(state="running", pid=os.getpid())
    (tmp_path / "run" / "status.json").write_text(json.dumps(status))
    assert Trainer(resume=tmp_path / "run", steps=5, snapshots=False).run().step == 5
    assert result.reason == "completed"


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['NLSTUDIO_PWNED']}",))


def test_a_crafted_pickle_checkpoint_is_refused_without_running_code(tmp_path, tiny_project,
                                                                     monkeypatch):
    train(tiny_project(steps=2), out=tmp_path / "run")
    marker = tmp_path / "pwned"
    monkeypatch.setenv("NLSTUDIO_PWNED", str(marker))
    ckpt = read_checkpoint(tmp_path / "run")
    crafted = ckpt.state_path  # checkpoints/step-…/state.pt, its size in checkpoint.json
    torch.save({"optimizer": _Exploit(), "rng": {}}, crafted)
    manifest = json.loads((ckpt.path / "checkpoint.json").read_text())
    manifest["files"]["state.pt"] = crafted.stat().st_size
    (ckpt.path / "checkpoint.json").write_text(json.dumps(manifest))
    legacy = tmp_path / "legacy"  # an older run folder's checkpoint.pt
    legacy.mkdir()
    (legacy / "model.safetensors").write_bytes((tmp_path / "run/model.safetensors").read_bytes())
    torch.save({"format": 1, "step": 2, "optimizer": _Exploit()}, legacy / "checkpoint.pt")
    with open(tmp_path / "control.pt", "wb") as fh:  # the same payload, loaded unsafely, runs
        fh.write(crafted.read_bytes())
    assert not marker.exists()
    with pytest.raises(RunError, match="refused"):
        read_checkpoint(tmp_path / "run").load_state()
    with pytest.raises(RunError, match="refused"):
        read_checkpoint(legacy)
    result = Trainer(resume=tmp_path / "run", steps=4).run()
    assert result.reason == "failed" and result.invalid and "refused" in result.message
    assert not marker.exists()
    torch.load(tmp_path / "control.pt", weights_only=False)  # what an unsafe loader would do
    assert marker.exists()


def test_corrupt_weights_are_a_clear_error(tmp_path, tiny_project):
    train(tiny_project(steps=2), out=tmp_path / "run")
    weights = read_checkpoint(tmp_path / "run").weights
    (tmp_path / "run" / "model.safetensors").unlink()  # the top-level link
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(RunError, match="model.safetensors"):
        load_run(tmp_path / "run").load_model()


@pytest.mark.parametrize("point", ["checkpoint.weights", "csv.append", "status.write",
                                   "checkpoint.link"])
def test_a_full_disk_fails_the_run_clearly_and_keeps_the_last_checkpoint(
        tmp_path, tiny_project, monkeypatch, point):
    """Disk full (ENOSPC at a write point): the run fails with one line, status.json says
    failed, the last good checkpoint loads, and once there is space a resume continues to
    exactly the rows of an uninterrupted run (issue 14 #15)."""
    straight = train(tiny_project(steps=12, log_every=2), out=tmp_path / "straight")
    from nlstudio import crashpoints

    crashpoints.reset()
    monkeypatch.setenv("NLSTUDIO_CRASH_AT", f"{point}:4:enospc")
    result = train(tiny_project(steps=12, log_every=2), out=tmp_path / "run")
    monkeypatch.delenv("NLSTUDIO_CRASH_AT")
    assert result.reason == "failed" and not result.invalid
    assert "No space left on device" in result.message and "\n" not in result.message
    run = load_run(tmp_path / "run")
    assert run.checkpoint is not None and run.checkpoint.step < 12
    assert all(torch.isfinite(p).all() for p in run.load_model().parameters())
    assert read_status(tmp_path / "run")["state"] == "failed"
    assert Trainer(resume=tmp_path / "run", snapshots=False).run().reason == "completed"
    assert straight.reason == "completed"
    for name in ("eval.csv", "delay.csv"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "straight" / name
                                                          ).read_bytes()
    drop_timing = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_s",  # noqa
                                                                         "tokens_per_s")}
                                for r in rows]
    with open(tmp_path / "run" / "metrics.csv") as a, open(tmp_path / "straight/metrics.csv") as b:
        assert drop_timing(csv.DictReader(a)) == drop_timing(csv.DictReader(b))
    assert not [p for p in (tmp_path / "run").rglob(".*")]  # no temporaries left


def test_an_unstable_configuration_stops_with_a_clear_message(tmp_path, tiny_project):
    doc = tiny_project(steps=200, log_every=1, grad_clip=None)
    doc["train"]["optimizer"] = {"name": "sgd", "lr": 10.0, "momentum": 0.99}
    doc["model"]["levels"][0]["optimizer"] = {"name": "sgd", "eta": 10.0}
    result = train(doc, out=tmp_path / "run")
    assert result.reason == "failed"
    assert "diverged" in result.message
    last_good = read_checkpoint(tmp_path / "run").step
    assert last_good == result.step
    model = load_run(tmp_path / "run").load_model()
    assert all(torch.isfinite(p).all() for p in model.parameters())
