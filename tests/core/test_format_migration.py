"""Project format version 2: the ``conv`` option of attention, linear attention, delta and titans
levels. A version-1 file had no convolution there and keeps that meaning (``conv: 0``); a
version-2 file uses what it says, or the kind's default (4)."""
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
    assert VERSION == 2
    assert sorted(CONV_KINDS) == ["attention", "delta", "linear_attention", "titans"]
    assert CONV.default == 4 and CONV.legacy == 0 and CONV.introduced == 2


def test_version_1_file_loads_without_convolution_and_round_trips(tmp_path):
    path = tmp_path / "old.nlproj"
    path.write_text(json.dumps(_doc(1)), encoding="utf-8")
    project = load_project(path)
    assert project.version == 2
    convs = {lv.id: lv.options()["conv"] for lv in project.levels}
    assert convs == {**{f"l{i}": 0 for i in range(len(CONV_KINDS))}, "hope": 4}
    save_project(project, path)  # saving writes version 2, with the key spelled out
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["version"] == 2
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
