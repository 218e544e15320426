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


@pytest.mark.parametrize("name", sorted(preset_paths()))
def test_a_training_step_leaves_no_reference_cycle(name):
    """Dropping a model and its outputs after a step's forward and backward frees them by
    reference counting alone: no custom autograd node keeps a cycle through the graph (Python's
    gc can't see through autograd's C++ nodes, and the GUI collects rarely: such a cycle made
    its start/stop cycles grow by ~1 MB of resident memory per run)."""
    import gc
    import weakref

    project = load_preset(name)
    task = build_task(project)
    torch.manual_seed(0)
    model = build_model(project, task)
    batch = task.batch(0, 2)
    gc.collect()
    gc.disable()
    try:
        logits, _ = model(batch.inputs, None, targets=batch.targets)
        task.loss(logits, batch.targets).backward()
        refs = [weakref.ref(model), weakref.ref(logits)]
        del model, logits
        alive = [r() is not None for r in refs]
    finally:
        gc.enable()
    assert alive == [False, False], name


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


# -- baselines set up as practitioners set them up (bench/preset_check.py measures that each
#    preset learns its task within its default steps; these pin the set-up) -------------------
def _levels(name: str) -> list[dict]:
    from nlstudio.project import project_to_dict

    return project_to_dict(load_preset(name))["model"]["levels"]


@pytest.mark.parametrize("name", sorted(preset_paths()))
def test_every_level_that_has_the_short_convolution_uses_it(name):
    from nlstudio.models.registry import kind_info

    for level in _levels(name):
        names = {opt.name for opt in kind_info(level["kind"]).options}
        if "conv" in names:
            assert level["conv"] >= 3, f"{name}: level {level['id']} has conv {level['conv']}"


def _is_transformer(name: str) -> bool:
    """Only re-reading levels (attention) and frozen MLPs: the two ends of the axis."""
    from nlstudio.models.registry import kind_info

    return all(not kind_info(l["kind"]).parametric or l["period"] is None for l in _levels(name))


def test_a_transformer_preset_for_each_recall_setting():
    from nlstudio.models.registry import kind_info

    found = {}
    for name in preset_paths():
        if not _is_transformer(name):
            continue
        windows = {l.get("window") for l in _levels(name) if not kind_info(l["kind"]).parametric}
        found[(load_preset(name).task.name, windows == {None})] = name
    assert ("kv_stream", True) in found, found      # full attention on the default task
    assert ("kv_stream", False) in found, found     # the windowed baseline of nsam_kv_stream
    assert ("mqar", True) in found, found
