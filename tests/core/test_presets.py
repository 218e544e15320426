"""Every bundled preset builds through nlstudio.build and takes real training steps."""
from __future__ import annotations

import math

import pytest
import torch

from nlstudio.build import build_model, build_task, check_resources, estimate_memory
from nlstudio.project import load_preset, preset_paths

BATCH = 2
STEPS = 3  # a diverging in-context write shows up within the first few steps


@pytest.mark.parametrize("name", sorted(preset_paths()))
def test_preset_builds_and_trains(name):
    project = load_preset(name)
    task = build_task(project)
    torch.manual_seed(project.train.seed)
    model = build_model(project, task)
    assert check_resources(project, task=task) == estimate_memory(project, task)
    opt = project.train.optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for step in range(STEPS):
        batch = task.batch(step, BATCH)
        logits, state = model(batch.inputs, None, targets=batch.targets)
        assert logits.shape[:2] == batch.targets.shape
        assert logits.shape[-1] == task.n_outputs
        loss = task.loss(logits, batch.targets)
        assert math.isfinite(loss.item()), f"{name}: loss {loss.item()} at step {step}"
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), project.train.grad_clip or 1e9)
        assert math.isfinite(norm.item()), f"{name}: gradient norm {norm.item()} at step {step}"
        optimizer.step()
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), name
    assert set(model.probe(state)) == {lv.id for lv in project.levels}


def test_build_model_accepts_a_document_and_reports_task_faults(tmp_path):
    from nlstudio.project import ProjectError, project_to_dict, save_project

    doc = project_to_dict(load_preset("charlm"))
    doc["task"]["text_file"] = "corpus.txt"
    path = tmp_path / "charlm.nlproj"
    save_project(doc, path)
    with pytest.raises(ProjectError) as info:
        build_model(path)
    assert info.value.path == "task.text_file"
    assert str(info.value).startswith("charlm.nlproj: task.text_file: cannot read ")
    (tmp_path / "corpus.txt").write_text("hello, nested world. " * 400, encoding="utf-8")
    model = build_model(path)  # resolved beside the project file, not the working directory
    assert isinstance(model, torch.nn.Module)
