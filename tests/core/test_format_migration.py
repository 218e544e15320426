"""Project format versions. 2: the ``conv`` option of attention, linear attention, delta and
titans levels. A version-1 file had no convolution there and keeps that meaning (``conv: 0``); a
later file uses what it says, or the kind's default (4). 3: ``train.snapshot_every`` (never
used) is gone; a version-2 file that has it loads without it."""
from __future__ import annotations

import json

import pytest

from nlstudio.models.registry import CONV, KINDS
from nlstudio.project import ProjectError, load_project, parse_project, project_to_dict, save_project
from nlstudio.schema import VERSION

CONV_KINDS = [k for k, info in KINDS.items() if CONV in info.options]


def _doc(version: int, **extra) -> dict:
    levels = [{"id": f"l{i}", "kind": kind, **extra} for i, kind in enumerate(CONV_KINDS)]
    levels.append({"id": "hope", "kind": "self_modifying", "period": 8})
    for level in levels:
        if KINDS[level["kind"]].period_rule == "positive":
            level.setdefault("period", 8)
    ids = [lv["id"] for lv in levels]
    edges = [["input", ids[0]], *([a, b] for a, b in zip(ids, ids[1:])), [ids[-1], "output"]]
    return {"format": "nlstudio.project", "version": version, "name": "old",
            "model": {"d_model": 16, "heads": 2, "levels": levels, "edges": edges},
            "task": {"name": "mqar"}}


def test_the_conv_kinds_are_the_four_that_gained_it():
    assert VERSION == 3
    assert sorted(CONV_KINDS) == ["attention", "delta", "linear_attention", "titans"]
    assert CONV.default == 4 and CONV.legacy == 0 and CONV.introduced == 2


def test_version_1_file_loads_without_convolution_and_round_trips(tmp_path):
    path = tmp_path / "old.nlproj"
    path.write_text(json.dumps(_doc(1)), encoding="utf-8")
    project = load_project(path)
    assert project.version == VERSION
    convs = {lv.id: lv.options()["conv"] for lv in project.levels}
    assert convs == {**{f"l{i}": 0 for i in range(len(CONV_KINDS))}, "hope": 4}
    save_project(project, path)  # saving writes the current version, with the key spelled out
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["version"] == VERSION
    assert [lv["conv"] for lv in written["model"]["levels"]] == [0] * len(CONV_KINDS) + [4]
    again = load_project(path)
    assert project_to_dict(again) == project_to_dict(project)


def test_version_2_file_uses_the_default_or_what_it_says():
    project = parse_project(_doc(2))
    assert all(lv.options()["conv"] == 4 for lv in project.levels)
    project = parse_project(_doc(2, conv=2))
    assert [lv.options()["conv"] for lv in project.levels] == [2] * len(CONV_KINDS) + [4]


def test_version_1_file_that_names_a_conv_keeps_it():
    project = parse_project(_doc(1, conv=3))
    assert [lv.options()["conv"] for lv in project.levels] == [3] * len(CONV_KINDS) + [4]


def test_a_version_1_model_is_built_without_convolution_parameters():
    from nlstudio.models import build_model

    model = build_model(parse_project(_doc(1)).model_spec(), vocab_size=11)
    for lid in (f"l{i}" for i in range(len(CONV_KINDS))):
        assert model.levels[lid].conv.weight is None
    model = build_model(parse_project(_doc(2)).model_spec(), vocab_size=11)
    for lid in (f"l{i}" for i in range(len(CONV_KINDS))):
        assert model.levels[lid].conv.weight.shape[-1] == 4


@pytest.mark.parametrize("levels", [None, "x", [1, None, {"kind": ["list"]}, {"kind": "nope"}]])
def test_migration_leaves_malformed_levels_to_validation(levels):
    doc = _doc(1)
    doc["model"]["levels"] = levels
    with pytest.raises(ProjectError) as info:
        parse_project(doc)
    assert "cannot upgrade" not in str(info.value)


# ---- version 3: train.snapshot_every retired ---------------------------------------------------
def test_version_2_file_with_snapshot_every_loads_and_saves_without_it(tmp_path):
    doc = _doc(2)
    doc["train"] = {"steps": 7, "snapshot_every": 25}
    path = tmp_path / "v2.nlproj"
    path.write_text(json.dumps(doc), encoding="utf-8")
    project = load_project(path)
    assert project.version == 3 and project.train.steps == 7
    assert "snapshot_every" not in project_to_dict(project)["train"]
    save_project(project, path)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["version"] == 3 and "snapshot_every" not in written["train"]
    assert project_to_dict(load_project(path)) == project_to_dict(project)


def test_version_3_file_with_snapshot_every_is_refused():
    doc = _doc(3)
    doc["train"] = {"snapshot_every": 25}
    with pytest.raises(ProjectError) as info:
        parse_project(doc)
    assert info.value.path == "train.snapshot_every"
    assert "unknown field 'snapshot_every'" in str(info.value)


def test_every_bundled_preset_loads_at_the_current_version():
    from nlstudio.project import load_preset, preset_paths

    for name, path in preset_paths().items():
        project = load_preset(name)
        assert project.version == VERSION, name
        assert "snapshot_every" not in project_to_dict(project)["train"], name
