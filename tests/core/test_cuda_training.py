"""Training, run folders and the command line on a CUDA device.

Skipped without a GPU (CI has none); part of the device check on a lent GPU machine.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nlstudio.events import Evaluation, Snapshot, Started
from nlstudio.project import preset_paths
from nlstudio.runs import load_run
from nlstudio.trainer import Trainer, resolve_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_auto_resolves_to_cuda():
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("name", sorted(preset_paths()))
def test_every_preset_trains_on_cuda(tmp_path, name):
    events = []
    trainer = Trainer(preset_paths()[name], out=tmp_path / name, steps=3, device="auto",
                      on_event=events.append, snapshot_interval_s=0.0)
    result = trainer.run()
    assert result.reason == "completed"
    assert trainer.cuda_graphs_note == "CUDA graphs on", trainer.cuda_graphs_note
    started = next(e for e in events if isinstance(e, Started))
    assert started.device.startswith("cuda")
    assert started.device_name == torch.cuda.get_device_name(0)
    # Snapshots reach consumers as CPU numpy arrays, never device tensors.
    snaps = [e for e in events if isinstance(e, Snapshot)]
    assert snaps
    for level in snaps[-1].levels.values():
        for arr in (level.memory, level.write, level.write_norms):
            assert arr is None or isinstance(arr, np.ndarray)
    # A run trained on the GPU loads back on the CPU and evaluates there.
    run = load_run(tmp_path / name)
    model = run.load_model(device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_resume_on_cuda_matches_one_straight_run(tmp_path, tiny_project):
    import csv

    def losses(run_dir):
        with open(run_dir / "metrics.csv") as f:
            return [float(r["loss"]) for r in csv.DictReader(f)]

    Trainer(tiny_project(steps=8, log_every=1, device="cuda"), out=tmp_path / "a").run()
    Trainer(tiny_project(steps=8, log_every=1, device="cuda"), out=tmp_path / "b", steps=4).run()
    Trainer(resume=tmp_path / "b", steps=8).run()
    np.testing.assert_allclose(losses(tmp_path / "a"), losses(tmp_path / "b"),
                               rtol=1e-4, atol=1e-5)


def test_evaluation_on_cuda_reports_recall(tmp_path):
    events = []
    Trainer(preset_paths()["nsam_kv_stream"], out=tmp_path / "r", steps=2, device="cuda",
            on_event=events.append).run()
    evals = [e for e in events if isinstance(e, Evaluation)]
    assert evals and all(np.isfinite(v) for _, v in evals[-1].rows)


def test_cli_trains_on_cuda_and_evaluates(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "nlstudio"]
    res = subprocess.run([*cmd, "train", str(preset_paths()["nsam_kv_stream"]), "--steps", "5",
                          "--device", "cuda", "--out", str(out)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert torch.cuda.get_device_name(0) in res.stdout + res.stderr
    assert "CUDA graphs on" in res.stdout
    res = subprocess.run([*cmd, "eval", str(out), "--device", "cuda"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "recall" in res.stdout


@pytest.mark.parametrize("name", ["nsam_kv_stream", "titans", "transformer", "digits_stream"])
def test_cuda_graph_steps_match_eager_steps(tmp_path, name):
    import csv
    import json

    doc = json.loads(preset_paths()[name].read_text())
    doc["train"].update(steps=6, log_every=1, eval_every=1000, device="cuda")
    losses = {}
    for graphs in (True, False):
        doc["train"]["cuda_graphs"] = graphs
        trainer = Trainer(doc, out=tmp_path / str(graphs), base_dir=preset_paths()[name].parent,
                          evaluate=False)
        assert trainer.run().reason == "completed"
        assert (trainer.cuda_graphs_note == "CUDA graphs on") == graphs
        with open(tmp_path / str(graphs) / "metrics.csv") as f:
            losses[graphs] = [float(r["loss"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=2e-3, atol=1e-4)


def test_cuda_graph_run_stops_on_nan_before_the_update(tmp_path, tiny_project):
    from nlstudio.events import Progress

    trainer = Trainer(tiny_project(steps=8, log_every=1, device="cuda"), out=tmp_path / "nan")

    def poison(event):  # weights become NaN after step 3: step 4's loss is NaN
        if isinstance(event, Progress) and event.step == 3:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(float("nan"))

    trainer.subscribe(poison)
    result = trainer.run()
    assert trainer.cuda_graphs_note == "CUDA graphs on"
    assert result.reason == "failed" and "diverged" in result.message
    assert "step 4" in result.message and result.step == 3


@pytest.mark.parametrize("name", ["nsam_kv_stream", "titans", "deltanet", "transformer",
                                  "digits_stream"])
def test_bf16_trains_with_and_without_cuda_graphs(tmp_path, name):
    """``train.precision: bf16`` on the GPU: the captured step (autocast inside the graph,
    its weight cache off) equals the eager one, both stay close to float32, and every level's
    state stays float32 (tests/core/test_precision.py pins the same on the CPU)."""
    import csv
    import json

    doc = json.loads(preset_paths()[name].read_text())
    doc["train"].update(steps=6, log_every=1, eval_every=1000, device="cuda")
    losses = {}
    for precision, graphs in (("bf16", True), ("bf16", False), ("fp32", False)):
        doc["train"].update(precision=precision, cuda_graphs=graphs)
        folder = tmp_path / f"{precision}-{graphs}"
        trainer = Trainer(doc, out=folder, base_dir=preset_paths()[name].parent,
                          evaluate=False)
        assert trainer.run().reason == "completed"
        assert (trainer.cuda_graphs_note == "CUDA graphs on") == graphs, trainer.cuda_graphs_note
        with open(folder / "metrics.csv") as f:
            losses[precision, graphs] = [float(r["loss"]) for r in csv.DictReader(f)]
        if precision == "bf16":
            batch = trainer.task.batch(0, 2)
            with trainer.forward_backward.autocast(torch.device("cuda")), torch.no_grad():
                _, state = trainer.model(batch.inputs.cuda(), None,
                                         targets=batch.targets.cuda())
            stack = [state["levels"]]
            while stack:
                obj = stack.pop()
                if isinstance(obj, dict):
                    stack.extend(obj.values())
                elif isinstance(obj, (list, tuple)):
                    stack.extend(obj)
                elif isinstance(obj, torch.Tensor) and obj.is_floating_point():
                    assert obj.dtype == torch.float32, (name, obj.dtype)
    assert all(np.isfinite(losses["bf16", True]))
    np.testing.assert_allclose(losses["bf16", True], losses["bf16", False], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(losses["bf16", False], losses["fp32", False], rtol=2e-2,
                               atol=1e-2)
    assert losses["bf16", False] != losses["fp32", False]
