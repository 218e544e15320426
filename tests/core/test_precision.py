"""``train.precision``: bf16 autocast in the training step, on the CPU for real.

bf16 is meant for CUDA GPUs; it is allowed on the CPU too (usually slower there), which is what
lets these tests run its real code path without a GPU: every bundled preset's training step
(nlstudio/cuda_graphs.py's GraphedStep, what the trainer runs), the project field's round trip
and the trainer. The CUDA side is in tests/core/test_cuda_training.py.
"""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from nlstudio.build import build_model, build_task
from nlstudio.cuda_graphs import GraphedStep
from nlstudio.project import (ProjectError, load_preset, load_project, parse_project,
                              preset_paths, project_to_dict, save_project)
from nlstudio.trainer import Trainer

BATCH, STEPS = 2, 2
#: bf16 keeps 8 bits of mantissa (relative rounding 2⁻⁹ ≈ 0.2 %). The logits, and after the
#: first update the weights, carry a few such roundings; the loss (a mean over the batch) moves
#: by less. 1 % of max(loss, 1 nat) is ~5 roundings: measured differences are ≤ 0.12 %.
TOLERANCE = 0.01


def _steps(project, precision: str) -> tuple[list[float], dict]:
    """STEPS real training steps (forward + loss + backward + AdamW) from the same start."""
    task = build_task(project)
    torch.manual_seed(project.train.seed)
    model = build_model(project, task)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=project.train.optimizer.lr)
    step = GraphedStep(model, task.loss, params, graphs=False, precision=precision)
    losses = []
    for i in range(STEPS):
        batch = task.batch(i, BATCH)
        logits, state, loss = step(batch.inputs, batch.targets)
        assert logits.dtype == torch.float32  # what the metric reads
        losses.append(float(loss.detach()))
        optimizer.step()
    return losses, state


@pytest.mark.parametrize("name", sorted(preset_paths()))
def test_every_preset_trains_in_bf16_close_to_fp32_with_float32_state(name, float_tensors):
    project = load_preset(name)
    fp32, _ = _steps(project, "fp32")
    bf16, state = _steps(project, "bf16")
    assert all(math.isfinite(v) for v in bf16), bf16
    assert bf16 != fp32  # autocast took effect (an ignored setting gives fp32's losses)
    for a, b in zip(fp32, bf16):
        assert abs(a - b) <= TOLERANCE * max(a, 1.0), (name, fp32, bf16)
    # every level's in-context state (fast weights, momenta, sums, caches) stays float32
    for path, t in float_tensors(state["levels"]):
        assert t.dtype == torch.float32, f"{name}: {path} is {t.dtype}"


def test_precision_defaults_to_fp32_and_round_trips(tmp_path, tiny_project):
    doc = tiny_project()
    assert "precision" not in doc["train"]  # a file from before the field
    assert parse_project(doc).train.precision == "fp32"
    doc["train"]["precision"] = "bf16"
    path = tmp_path / "p.nlproj"
    save_project(doc, path)
    assert json.loads(path.read_text())["train"]["precision"] == "bf16"
    loaded = load_project(path)
    assert loaded.train.precision == "bf16"
    assert project_to_dict(loaded)["train"]["precision"] == "bf16"


def test_an_unknown_precision_is_one_line_naming_the_field(tmp_path, tiny_project):
    doc = tiny_project()
    doc["train"]["precision"] = "fp16"
    path = tmp_path / "p.nlproj"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProjectError) as info:
        load_project(path)
    assert info.value.path == "train.precision"
    message = str(info.value)
    assert message.startswith("p.nlproj: train.precision: ") and "\n" not in message


def _losses(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def test_the_trainer_honours_precision(tmp_path, tiny_project):
    runs = {}
    for precision in ("fp32", "bf16"):
        doc = tiny_project(steps=4, log_every=1, precision=precision)
        trainer = Trainer(doc, out=tmp_path / precision, evaluate=False)
        assert trainer.run().reason == "completed"
        assert trainer.forward_backward.precision == precision
        runs[precision] = _losses(tmp_path / precision)
    assert runs["bf16"] != runs["fp32"]
    for a, b in zip(runs["fp32"], runs["bf16"]):
        assert abs(a - b) <= TOLERANCE * max(a, 1.0), runs
    # parameters and the optimizer's state stayed float32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    for group in trainer.optimizer.state.values():
        assert all(v.dtype == torch.float32 for v in group.values()
                   if isinstance(v, torch.Tensor) and v.is_floating_point())
