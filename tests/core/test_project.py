"""The project file format: validation messages, load/save, round trips, presets, resources."""
from __future__ import annotations

import copy
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

from nlstudio import project as P
from nlstudio import validate as V
from nlstudio.build import check_resources, estimate_memory
from nlstudio.faults import fmt_number
from nlstudio.models.inner_optim import OPTIMIZERS
from nlstudio.models.registry import KINDS
from nlstudio.project import (Fault, Project, ProjectError, check_document, default_level,
                              load_preset, load_project, new_project, parse_project,
                              preset_paths, project_to_dict, save_project)

SRC = "hope.nlproj"


def chain(*levels: dict, task: dict | None = None) -> dict:
    """A valid document whose levels run input → levels[0] → … → output."""
    doc = new_project()
    doc["model"]["levels"] = list(levels)
    ids = ["input", *(lv["id"] for lv in levels), "output"]
    doc["model"]["edges"] = [[a, b] for a, b in zip(ids, ids[1:])]
    doc["view"] = {"positions": {}}
    if task is not None:
        doc["task"] = task
    return doc


def two_levels() -> dict:
    return chain(default_level("attention", "attn"), default_level("mlp", "ffn"))


def error(doc, source: str = SRC) -> str:
    with pytest.raises(ProjectError) as info:
        parse_project(doc, source)
    return str(info.value)


def messages(doc) -> list[str]:
    return [str(f) for f in check_document(doc)]


def set_level(doc: dict, index: int, **fields) -> dict:
    doc = copy.deepcopy(doc)
    doc["model"]["levels"][index].update(fields)
    return doc


# ---- the valid baseline -------------------------------------------------------------------------
def test_new_project_is_valid_and_minimal():
    doc = new_project()
    assert check_document(doc) == []
    project = parse_project(doc)
    assert isinstance(project, Project)
    assert [lv.kind for lv in project.levels] == ["mlp"]
    assert project.model.edges == [["input", "mlp"], ["mlp", "output"]]
    assert project.task.name == P.DEFAULT_TASK


def test_accessors():
    doc = chain(default_level("attention", "a"), default_level("mlp", "b"),
                default_level("mlp", "c"))
    doc["model"]["edges"] = [["input", "a"], ["a", "c"], ["input", "b"], ["b", "c"],
                             ["c", "output"]]
    project = parse_project(doc)
    assert [lv.id for lv in project.levels] == ["a", "b", "c"]
    assert project.level("b").kind == "mlp"
    assert project.level("b").options() == {"expansion": 4}
    with pytest.raises(KeyError):
        project.level("zz")
    assert project.topological_order() == ["a", "b", "c"]
    spec = project.model_spec()
    assert spec["levels"][0] == {"id": "a", "kind": "attention", "period": None, "window": None,
                                 "conv": 4}


def test_error_attributes_and_shape():
    doc = set_level(two_levels(), 1, period=-3)
    with pytest.raises(ProjectError) as info:
        parse_project(doc, SRC)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.source, err.path) == (SRC, "model.levels[1].period")
    assert err.message == "must be a positive integer or null"
    assert str(err) == "hope.nlproj: model.levels[1].period: must be a positive integer or null"
    assert str(Fault("a.b", "m")) == "a.b: m"


# ---- header -------------------------------------------------------------------------------------
def test_not_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.nlproj"
    path.write_text('{\n  "format": "nlstudio.project",\n  "version": 1,,\n}', encoding="utf-8")
    with pytest.raises(ProjectError) as info:
        load_project(path)
    assert str(info.value).startswith("broken.nlproj: not valid JSON: ")
    assert "(line 3, column 16)" in str(info.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.nlproj"
    path.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(ProjectError, match=r"^latin\.nlproj: not UTF-8 text"):
        load_project(path)


def test_missing_file_is_a_project_error(tmp_path):
    with pytest.raises(ProjectError, match=r"^nope\.nlproj: cannot read the file: "):
        load_project(tmp_path / "nope.nlproj")


def test_not_an_object():
    assert error([1, 2]) == "hope.nlproj: a project must be a JSON object, found a list"
    assert error("text") == "hope.nlproj: a project must be a JSON object, found 'text'"


def test_wrong_or_missing_format():
    doc = new_project()
    doc["format"] = "other.thing"
    assert error(doc) == ("hope.nlproj: format: not an NL Studio project: format is "
                          "'other.thing', expected 'nlstudio.project'")
    del doc["format"]
    assert error(doc).startswith("hope.nlproj: format: is required")


def test_missing_or_wrong_version():
    doc = new_project()
    del doc["version"]
    assert error(doc) == "hope.nlproj: version: is required (this NL Studio reads version 3)"
    doc["version"] = "1"
    assert error(doc).startswith("hope.nlproj: version: must be an integer, found '1'")
    doc["version"] = 0
    assert error(doc) == "hope.nlproj: version: unknown version 0; this NL Studio reads version 3"


def test_newer_version_refused_and_never_half_loaded(tmp_path):
    doc = new_project()
    doc["version"] = 4
    doc["model"]["levels"][0]["period"] = -1  # would be a fault in version 3: never reached
    doc["surprise"] = {"future": True}
    expected = ("hope.nlproj: version: was written by a newer NL Studio (version 4); this one "
                "reads version 3")
    assert error(doc) == expected
    assert messages(doc) == [expected.removeprefix("hope.nlproj: ")]
    path = tmp_path / SRC
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ProjectError) as info:
        load_project(path)
    assert str(info.value) == expected


def test_migrations_upgrade_older_versions(monkeypatch):
    def from_zero(doc: dict) -> dict:
        doc["name"] = doc.pop("title")
        return doc

    monkeypatch.setitem(P.MIGRATIONS, 0, from_zero)
    doc = new_project()
    doc["version"] = 0
    doc["title"] = doc.pop("name") + " (old)"
    project = parse_project(doc)
    assert project.name == "Untitled (old)"
    assert project.version == 3


# ---- levels -------------------------------------------------------------------------------------
def test_unknown_kind_lists_valid_ones():
    msg = error(set_level(two_levels(), 1, kind="transformer"))
    assert msg == ("hope.nlproj: model.levels[1].kind: unknown level kind 'transformer'; "
                   "expected one of " + ", ".join(KINDS))


def test_unknown_optimizer():
    msg = error(set_level(two_levels(), 1, optimizer={"name": "lion"}))
    assert msg == ("hope.nlproj: model.levels[1].optimizer.name: unknown optimizer 'lion'; "
                   "expected one of " + ", ".join(OPTIMIZERS))


def test_optimizer_not_allowed_for_kind():
    doc = chain(default_level("titans", "mem"))
    assert "adam" not in KINDS["titans"].optimizers
    doc["model"]["levels"][0]["optimizer"] = {"name": "adam"}
    msg = error(doc)
    assert msg.startswith("hope.nlproj: model.levels[0].optimizer.name: optimizer 'adam' is "
                          "not allowed for kind 'titans' (allowed: ")


def test_attention_has_no_optimizer_or_objective():
    doc = set_level(two_levels(), 0, optimizer={"name": "sgd"}, objective="l2")
    found = messages(doc)
    assert any(m.startswith("model.levels[0].optimizer: this kind has no inner optimizer")
               for m in found)
    assert any(m.startswith("model.levels[0].objective: attention has no inner objective")
               for m in found)


def test_unknown_hyper_parameter():
    doc = set_level(two_levels(), 1, optimizer={"name": "sgd", "eta": 0.1, "beta": 0.9})
    assert error(doc) == ("hope.nlproj: model.levels[1].optimizer.beta: unknown hyper-parameter "
                          "'beta' for optimizer 'sgd' (expected: eta)")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_hyper_parameter_ranges_come_from_the_optimizer(name):
    doc = chain(default_level("mlp", "m"))
    for h in OPTIMIZERS[name].hyper:
        high = {"name": name, h.name: h.high * 2 + 1}
        doc["model"]["levels"][0]["optimizer"] = high
        assert error(doc).startswith(f"hope.nlproj: model.levels[0].optimizer.{h.name}: must be "
                                     f"at most {fmt_number(h.high)}")
        doc["model"]["levels"][0]["optimizer"] = {"name": name, h.name: h.low - 1}
        assert f"optimizer.{h.name}: must be at least" in error(doc) or \
            f"optimizer.{h.name}: must be a positive integer" in error(doc)
        if not h.integer:
            doc["model"]["levels"][0]["optimizer"] = {"name": name, h.name: "fast"}
            assert error(doc).endswith(f"optimizer.{h.name}: must be a number (got 'fast')")


def test_unknown_objective_and_objective_not_allowed():
    doc = set_level(two_levels(), 1, objective="cosine")
    assert error(doc) == ("hope.nlproj: model.levels[1].objective: unknown objective 'cosine'; "
                          "expected one of task, l2, dot")
    doc = chain(default_level("titans", "mem"))
    doc["model"]["levels"][0]["objective"] = "task"
    assert error(doc) == ("hope.nlproj: model.levels[0].objective: objective 'task' is not "
                          "allowed for kind 'titans' (allowed: l2, dot)")


@pytest.mark.parametrize("kind, period, message", [
    ("attention", 4, "must be null (this kind writes no weights: it re-reads the context "
                     "every token)"),
    ("linear_attention", 2, "must be 1 (this kind writes its memory at every token)"),
    ("delta", None, "must be 1 (this kind writes its memory at every token)"),
    ("titans", None, "must be a positive integer"),
    ("titans", 0, "must be a positive integer"),
    ("self_modifying", 2.5, "must be a positive integer"),
    ("self_modifying", "8", "must be a positive integer"),
    ("mlp", -1, "must be a positive integer or null"),
    ("mlp", True, "must be a positive integer or null"),
    ("mlp", 8.0, "must be a positive integer or null"),
])
def test_period_rules(kind, period, message):
    doc = chain(default_level(kind, "lvl"))
    doc["model"]["levels"][0]["period"] = period
    assert error(doc) == f"hope.nlproj: model.levels[0].period: {message}"


@pytest.mark.parametrize("kind, period", [("attention", None), ("linear_attention", 1),
                                          ("delta", 1), ("titans", 4), ("self_modifying", 1),
                                          ("mlp", None), ("mlp", 64)])
def test_valid_periods(kind, period):
    doc = chain(default_level(kind, "lvl"))
    doc["model"]["levels"][0]["period"] = period
    assert check_document(doc) == []


def test_unknown_option_wrong_type_out_of_range():
    doc = set_level(two_levels(), 1, width=3)
    assert error(doc) == ("hope.nlproj: model.levels[1].width: unknown option 'width' for kind "
                          "'mlp' (its options: expansion)")
    doc = set_level(two_levels(), 1, expansion="4")
    assert error(doc) == "hope.nlproj: model.levels[1].expansion: must be an integer (got '4')"
    doc = set_level(two_levels(), 1, expansion=9)
    assert error(doc) == "hope.nlproj: model.levels[1].expansion: must be at most 8 (got 9)"
    doc = set_level(two_levels(), 0, window=0)
    assert error(doc) == ("hope.nlproj: model.levels[0].window: must be a positive integer "
                          "(got 0)")
    doc = chain(default_level("linear_attention", "lin"))
    doc["model"]["levels"][0]["gate"] = "full"
    assert error(doc) == ("hope.nlproj: model.levels[0].gate: must be 'none', 'scalar' or "
                          "'vector' (got 'full')")
    doc = chain(default_level("delta", "d"))
    doc["model"]["levels"][0]["gate"] = 1
    assert error(doc) == "hope.nlproj: model.levels[0].gate: must be true or false (got 1)"


def test_level_must_be_an_object_with_a_kind():
    doc = two_levels()
    doc["model"]["levels"][1] = "mlp"
    assert error(doc) == "hope.nlproj: model.levels[1]: must be an object (a level)"
    doc["model"]["levels"][1] = {"id": "ffn"}
    assert error(doc).startswith("hope.nlproj: model.levels[1].kind: is required (one of ")


# ---- ids and graph ------------------------------------------------------------------------------
def test_duplicate_ids():
    doc = chain(default_level("mlp", "a"), default_level("mlp", "b"))
    doc["model"]["levels"][1]["id"] = "a"
    assert "model.levels[1].id: duplicate id 'a' (also model.levels[0])" in messages(doc)


@pytest.mark.parametrize("bad", ["1st", "my level", "a-b", "", "é", "x" * 65])
def test_ids_must_be_identifiers(bad):
    doc = set_level(two_levels(), 1, id=bad)
    assert error(doc).startswith("hope.nlproj: model.levels[1].id: must be an identifier")


@pytest.mark.parametrize("reserved", ["input", "output"])
def test_ids_must_not_be_endpoints(reserved):
    doc = set_level(two_levels(), 1, id=reserved)
    assert error(doc) == (f"hope.nlproj: model.levels[1].id: '{reserved}' is reserved for the "
                          f"graph's endpoint; choose another id")


def test_dangling_edges():
    doc = two_levels()
    doc["model"]["edges"].append(["attn", "ghost"])
    doc["model"]["edges"].append(["phantom", "ffn"])
    found = messages(doc)
    assert "model.edges[3][1]: unknown node 'ghost': not a level id, 'input' or 'output'" in found
    assert "model.edges[4][0]: unknown node 'phantom': not a level id, 'input' or 'output'" in found


def test_edges_into_input_or_out_of_output():
    doc = two_levels()
    doc["model"]["edges"] += [["ffn", "input"], ["output", "attn"]]
    found = messages(doc)
    assert "model.edges[3][1]: an edge cannot enter 'input'" in found
    assert "model.edges[4][0]: an edge cannot leave 'output'" in found


def test_edge_shape_and_duplicates():
    doc = two_levels()
    doc["model"]["edges"].append(["attn"])
    assert error(doc) == "hope.nlproj: model.edges[3]: must be a pair of two values"
    doc["model"]["edges"][3] = ["attn", "ffn"]
    assert error(doc) == ("hope.nlproj: model.edges[3]: duplicate edge attn → ffn (same as "
                          "model.edges[1])")
    doc["model"]["edges"][3] = ["input", "output"]
    assert error(doc) == ("hope.nlproj: model.edges[3]: an edge from input straight to output "
                          "bypasses every level")


def test_cycle_is_named():
    doc = chain(default_level("mlp", "a"), default_level("mlp", "b"), default_level("mlp", "c"))
    doc["model"]["edges"].append(["c", "a"])
    assert error(doc) == ("hope.nlproj: model.edges[4]: closes a cycle: a → b → c → a "
                          "(levels must form a DAG from input to output)")
    doc = chain(default_level("mlp", "a"))
    doc["model"]["edges"].append(["a", "a"])
    assert error(doc).startswith("hope.nlproj: model.edges[2]: closes a cycle: a → a")


def test_unreachable_and_dead_end_levels():
    doc = chain(default_level("mlp", "a"), default_level("mlp", "b"))
    doc["model"]["levels"].append(default_level("mlp", "island"))
    doc["model"]["levels"].append(default_level("mlp", "dead_end"))
    doc["model"]["edges"] += [["island", "b"], ["a", "dead_end"]]
    found = messages(doc)
    assert "model.levels[2]: level 'island' is not reachable from input (add an edge into it)" \
        in found
    assert "model.levels[3]: level 'dead_end' does not reach output (add an edge out of it)" \
        in found
    assert len(found) == 2


def test_no_path_from_input_to_output():
    doc = chain(default_level("mlp", "a"), default_level("mlp", "b"))
    doc["model"]["edges"] = [["input", "a"], ["b", "output"]]
    found = messages(doc)
    assert found[0] == "model.edges: no path from input to output"


def test_sizes():
    doc = two_levels()
    doc["model"]["d_model"] = 0
    assert error(doc) == "hope.nlproj: model.d_model: must be a positive integer (got 0)"
    doc["model"]["d_model"] = 64
    doc["model"]["heads"] = -2
    assert error(doc) == "hope.nlproj: model.heads: must be a positive integer (got -2)"
    doc["model"]["heads"] = 5
    assert error(doc) == ("hope.nlproj: model.heads: must divide d_model (64 is not divisible "
                          "by 5)")
    doc["model"]["heads"] = 4
    doc["model"]["levels"] = []
    doc["model"]["edges"] = []
    assert error(doc) == "hope.nlproj: model.levels: must not be empty"


# ---- task, train, paths -------------------------------------------------------------------------
def test_unknown_task():
    doc = two_levels()
    doc["task"] = {"name": "imagenet"}
    assert error(doc).startswith("hope.nlproj: task.name: unknown task 'imagenet'; expected "
                                 "one of ")
    assert "kv_stream" in error(doc)


def test_bad_task_params_delegate_to_the_task():
    doc = two_levels()
    doc["task"]["num_keys"] = 1
    assert error(doc) == "hope.nlproj: task.num_keys: must be at least 2 (got 1)"
    doc["task"]["num_keys"] = "many"
    assert error(doc) == "hope.nlproj: task.num_keys: must be an integer (got 'many')"
    doc["task"] = {"name": "kv_stream", "keys": 3}
    assert error(doc).startswith("hope.nlproj: task.keys: unknown setting 'keys' for task "
                                 "'kv_stream' (its settings: num_keys, ")
    doc["task"] = {"name": "kv_stream", "segment_len": 33}
    assert error(doc) == ("hope.nlproj: task.segment_len: must be even (a segment is made of "
                          "key value pairs)")


def test_task_settings_checked_against_train():
    doc = two_levels()
    doc["task"]["segment_len"] = 128
    doc["train"]["seq_len"] = 128
    assert error(doc).startswith("hope.nlproj: task.segment_len: seq_len (128) must hold")


def test_bad_train_values():
    doc = two_levels()
    cases = {
        ("steps", 0): "train.steps: must be a positive integer (got 0)",
        ("batch_size", 2.0): "train.batch_size: must be an integer (got 2.0)",
        ("device", "gpu"): "train.device: must be 'auto', 'cpu' or 'cuda' (got 'gpu')",
        ("grad_clip", 0): "train.grad_clip: must be greater than 0 (got 0)",
        ("log_every", -5): "train.log_every: must be a positive integer (got -5)",
        ("lr", 0.1): "train.lr: unknown field 'lr' (expected: steps, batch_size, seq_len, seed, "
                     "device, optimizer, grad_clip, warmup, log_every, eval_every, cuda_graphs, "
                     "precision)",
        ("precision", "fp16"): "train.precision: must be 'fp32' or 'bf16' (got 'fp16')",
    }
    for (key, value), message in cases.items():
        bad = copy.deepcopy(doc)
        bad["train"][key] = value
        assert error(bad) == f"hope.nlproj: {message}"
    bad = copy.deepcopy(doc)
    bad["train"]["optimizer"] = {"name": "lamb"}
    assert error(bad) == ("hope.nlproj: train.optimizer.name: must be 'adamw', 'adam' or 'sgd' "
                          "(got 'lamb')")
    bad["train"]["optimizer"] = {"name": "adam", "lr": -1}
    assert error(bad) == "hope.nlproj: train.optimizer.lr: must be greater than 0 (got -1)"


@pytest.mark.parametrize("value", ["/home/me/data.txt", "C:\\data\\x.txt", "c:/x", "~/x.txt",
                                   "\\\\server\\share", "file:///tmp/x"])
def test_absolute_paths_are_refused_anywhere(value):
    doc = two_levels()
    doc["task"] = {"name": "charlm", "text_file": value}
    assert messages(doc)[0].startswith("task.text_file: absolute paths are not allowed in a "
                                       "project file")
    assert len(messages(doc)) == 1
    doc = two_levels()
    doc["view"]["background"] = {"image": value}
    assert messages(doc) == [f"view.background.image: absolute paths are not allowed in a project "
                             f"file ({value!r}); give a path relative to the project's folder"]


def test_relative_paths_and_prose_are_fine():
    doc = two_levels()
    doc["task"] = {"name": "charlm", "text_file": "data/corpus.txt"}
    doc["description"] = "/ is the root; C:/ is a drive"
    assert check_document(doc) == []


def test_view_is_free_form_json_but_positions_are_pairs():
    doc = two_levels()
    doc["view"] = {"positions": {"attn": [0, 1.5]}, "zoom": 1.25, "notes": ["a", {"b": None}]}
    assert check_document(doc) == []
    doc["view"]["positions"]["attn"] = [0]
    assert messages(doc) == ["view.positions.attn: must be a pair of two values"]
    doc["view"]["positions"] = {"my level": ["x", 1]}
    assert messages(doc) == ['view.positions["my level"][0]: must be a number (got \'x\')']


def test_no_pydantic_boilerplate_in_messages():
    doc = two_levels()
    doc["unknown"] = 1
    doc["name"] = ""
    doc["model"]["levels"][0].update(period=3, window="x", optimizer=[])
    doc["model"]["levels"][1].update(period="x", objective=7, optimizer={"name": "sgd",
                                                                         "eta": "x"})
    doc["model"]["tie_embeddings"] = "yes"
    doc["train"] = {"steps": None, "optimizer": 5, "seed": -1}
    doc["task"] = {"name": "kv_stream", "return_prob": 7, "schedule": 5}
    doc["view"] = []
    found = messages(doc)
    assert len(found) >= 12
    for text in found:
        assert not re.search(r"Input should|pydantic|https?://|Value error|\[type=", text), text
        assert re.match(r"^[A-Za-z_][\w.\[\]\"]*: \S", text), text


# ---- several faults at once ---------------------------------------------------------------------
def test_check_document_reports_independent_faults():
    doc = chain(default_level("mlp", "a"), default_level("titans", "b"), default_level("mlp", "c"))
    doc["model"]["levels"][0]["period"] = 0
    doc["model"]["levels"][1]["optimizer"] = {"name": "nope"}
    doc["model"]["levels"][1]["depth"] = 99
    doc["model"]["levels"][2]["expansion"] = 0
    doc["model"]["edges"].append(["c", "ghost"])
    doc["train"]["steps"] = 0
    found = messages(doc)
    assert "model.levels[0].period: must be a positive integer or null" in found
    assert any(m.startswith("model.levels[1].optimizer.name: unknown optimizer 'nope'")
               for m in found)
    assert "model.levels[1].depth: must be at most 4 (got 99)" in found
    assert "model.levels[2].expansion: must be at least 1 (got 0)" in found or \
        "model.levels[2].expansion: must be a positive integer (got 0)" in found
    assert "train.steps: must be a positive integer (got 0)" in found
    assert "model.edges[4][1]: unknown node 'ghost': not a level id, 'input' or 'output'" in found
    # schema faults come before graph faults; parse_project raises the first one
    assert found.index("train.steps: must be a positive integer (got 0)") < \
        found.index("model.edges[4][1]: unknown node 'ghost': not a level id, 'input' or 'output'")
    assert error(doc) == f"hope.nlproj: {found[0]}"


# ---- pathological inputs ------------------------------------------------------------------------
def test_deeply_nested_json_text(tmp_path):
    path = tmp_path / "deep.nlproj"
    path.write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    with pytest.raises(ProjectError, match=r"^deep\.nlproj: "):
        load_project(path)
    nested = '{"format": "nlstudio.project", "version": 1, "view": ' + '{"a": ' * 100 + "1" + \
        "}" * 100 + "}"
    with pytest.raises(ProjectError, match=r"is nested too deeply"):
        P.parse_project(P.loads(nested, "x"), "x")


def test_deeply_nested_and_cyclic_documents():
    doc = two_levels()
    node = doc["view"]
    for _ in range(50_000):
        node["a"] = {}
        node = node["a"]
    assert "is nested too deeply" in messages(doc)[0]
    doc = two_levels()
    doc["view"]["self"] = doc["view"]
    assert "is nested too deeply" in messages(doc)[0]


def test_huge_and_non_finite_numbers(tmp_path):
    path = tmp_path / "big.nlproj"
    path.write_text('{"version": ' + "9" * 10_000 + "}", encoding="utf-8")
    with pytest.raises(ProjectError, match=r"^big\.nlproj: not valid JSON: a number has too many"):
        load_project(path)
    for literal in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ProjectError, match=rf"not valid JSON: {literal} is not a JSON number"):
            P.loads('{"a": ' + literal + "}", "x")
    doc = two_levels()
    doc["train"]["seed"] = 10**30
    assert messages(doc) == ["train.seed: is too large a number"]
    doc = P.loads(json.dumps(two_levels()).replace('"grad_clip": 1.0', '"grad_clip": 1e999'), "x")
    assert messages(doc) == ["train.grad_clip: must be a finite number (NaN and infinity are "
                             "not JSON)"]
    doc = two_levels()
    doc["model"]["d_model"] = 2**40
    assert messages(doc)[0].startswith("model.d_model: must be at most")


def test_non_json_values_and_duplicate_keys():
    doc = two_levels()
    doc["view"]["things"] = {1, 2}
    doc["view"][3] = "x"
    found = messages(doc)
    assert "view.things: is not a JSON value (set)" in found
    assert "view: has a key that is not a string (3)" in found
    with pytest.raises(ProjectError, match=r"duplicate key 'a' in an object"):
        P.loads('{"a": 1, "a": 2}', "x")


def test_thousands_of_levels_and_huge_strings_are_bounded():
    doc = two_levels()
    doc["model"]["levels"] = [default_level("mlp", f"l{i}") for i in range(5000)]
    start = time.perf_counter()
    assert messages(doc) == [f"model.levels: must have at most {V.schema.MAX_LEVELS} items"]
    doc = two_levels()
    doc["name"] = "x" * 5_000_000
    assert messages(doc) == [f"name: is too long (5000000 characters; at most {V.MAX_STRING})"]
    doc = two_levels()
    doc["view"]["many"] = list(range(V.MAX_VALUES + 10))
    assert messages(doc)[0].startswith("the document is too large")
    assert time.perf_counter() - start < 10


def test_too_large_file(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MAX_FILE_BYTES", 100)
    path = tmp_path / "big.nlproj"
    path.write_text(json.dumps(new_project()), encoding="utf-8")
    with pytest.raises(ProjectError, match=r"the file is too large"):
        load_project(path)


# ---- load / save / round trip -------------------------------------------------------------------
def test_round_trip_is_exact(tmp_path):
    doc = chain(default_level("attention", "attn"), default_level("titans", "mem"),
                default_level("mlp", "ffn"))
    doc["view"] = {"positions": {"attn": [0, 0], "mem": [180, 0]}, "zoom": 2}
    first = project_to_dict(parse_project(doc))
    path = tmp_path / "p.nlproj"
    save_project(doc, path)
    loaded = load_project(path)
    assert loaded.path == path.absolute()
    again = project_to_dict(loaded)
    assert again == first
    assert json.dumps(again) == json.dumps(first)  # same key order
    save_project(loaded, path)
    assert project_to_dict(load_project(path)) == first
    text = path.read_text(encoding="utf-8")
    assert text == P.dumps(loaded) and json.loads(text) == first
    assert '["input", "attn"]' in text  # short lists stay on one line


def test_to_dict_writes_defaults_explicitly():
    doc = {"format": "nlstudio.project", "version": 1,
           "model": {"levels": [{"id": "m", "kind": "mlp"}],
                     "edges": [["input", "m"], ["m", "output"]]},
           "task": {"name": "kv_stream"}}
    out = project_to_dict(parse_project(doc))
    assert list(out) == ["format", "version", "app_version", "name", "description", "model",
                         "task", "train", "view"]
    assert out["model"]["levels"][0] == default_level("mlp", "m")
    assert out["train"]["optimizer"]["name"] == "adamw"
    assert set(out["task"]) > {"name", "num_keys"}


def test_save_refuses_invalid_documents(tmp_path):
    path = tmp_path / "bad.nlproj"
    doc = set_level(two_levels(), 1, period=0)
    with pytest.raises(ProjectError, match=r"^bad\.nlproj: model\.levels\[1\]\.period: "):
        save_project(doc, path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fail_in", ["fsync", "replace", "write"])
def test_atomic_save_keeps_the_previous_file(tmp_path, monkeypatch, fail_in):
    path = tmp_path / "keep.nlproj"
    save_project(two_levels(), path)
    before = path.read_bytes()
    changed = two_levels()
    changed["name"] = "changed"

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fail_in == "write":
        monkeypatch.setattr(Path, "write_bytes", boom)
    else:
        monkeypatch.setattr(os, fail_in, boom)
    with pytest.raises(OSError) as info:
        save_project(changed, path)
    assert str(path) in str(info.value) and "No space left on device" in str(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nlproj"]


def test_save_into_a_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: refuse the temporary file as the OS would
        import tempfile

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", denied)
    else:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(PermissionError) as info:
            save_project(two_levels(), folder / "x.nlproj")
        assert str(info.value).endswith(f"cannot save {folder / 'x.nlproj'}: Permission denied")
    finally:
        folder.chmod(stat.S_IRWXU)
    assert list(folder.iterdir()) == []


# ---- building blocks ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
def test_default_level_for_every_kind_validates(kind):
    level = default_level(kind, "lvl")
    info = KINDS[kind]
    assert level["kind"] == kind and level["period"] == info.default_period
    for option in info.options:
        assert level[option.name] == option.default
    if info.parametric:
        assert level["optimizer"] == {"name": info.default_optimizer,
                                      **OPTIMIZERS[info.default_optimizer].defaults(),
                                      **info.optimizer_overrides(info.default_optimizer)}
        assert level["objective"] == info.default_objective
    else:
        assert "optimizer" not in level and "objective" not in level
    doc = chain(default_level("attention", "attn"), level)
    assert check_document(doc) == []


def test_default_level_refuses_bad_input():
    with pytest.raises(ProjectError, match="unknown level kind 'nope'"):
        default_level("nope", "x")
    with pytest.raises(ProjectError, match="must be an identifier"):
        default_level("mlp", "two words")


def test_presets_are_listed_and_load():
    paths = preset_paths()
    assert {"transformer", "nsam", "titans", "linear_attention", "deltanet", "mqar", "needle",
            "nsam_kv_stream", "transformer_window_kv_stream", "charlm",
            "digits_stream"} <= set(paths)
    for name, path in paths.items():
        project = load_preset(name)
        assert project.path == path.absolute()
        assert project.description, name
        assert set(project.view.positions) == {lv.id for lv in project.levels}, name
        # positions: x grows along the graph
        for src, dst in project.model.edges:
            if src != "input" and dst != "output":
                assert project.view.positions[src][0] < project.view.positions[dst][0], name
    assert load_preset("nsam.nlproj").name == load_preset("nsam").name
    with pytest.raises(ProjectError, match=r"^nope\.nlproj: no bundled preset named 'nope'"):
        load_preset("nope")


@pytest.mark.parametrize("name", sorted(preset_paths()))
def test_preset_files_are_canonical_and_cpu_sized(name, tmp_path):
    path = preset_paths()[name]
    project = load_project(path)
    written = json.loads(path.read_text(encoding="utf-8"))
    canonical = project_to_dict(project)
    written.pop("app_version", None)
    canonical.pop("app_version")
    assert written == canonical, f"{name}: not in canonical form (load and re-save it)"
    assert list(written) == list(canonical)
    assert project.model.d_model <= 64
    assert project.train.seq_len <= 256 and project.train.batch_size <= 16
    save_project(project, tmp_path / path.name)
    assert project_to_dict(load_project(tmp_path / path.name)) == project_to_dict(project)


# ---- resources ----------------------------------------------------------------------------------
def test_estimate_memory_grows_with_model_size():
    small = two_levels()
    small["model"]["d_model"] = 32
    big = copy.deepcopy(small)
    big["model"]["d_model"] = 128
    deeper = copy.deepcopy(small)
    deeper["model"]["levels"].append(default_level("mlp", "more"))
    deeper["model"]["edges"] = [["input", "attn"], ["attn", "ffn"], ["ffn", "more"],
                                ["more", "output"]]
    longer = copy.deepcopy(small)
    longer["train"]["seq_len"] = 256
    base = estimate_memory(small)
    assert 0 < base < estimate_memory(big)
    assert base < estimate_memory(deeper)
    assert base < estimate_memory(longer)
    cms = copy.deepcopy(small)
    cms["model"]["levels"][1]["period"] = 4  # fast weights per sequence and chunk
    assert base < estimate_memory(cms)


def test_check_resources_refuses_a_huge_model_before_allocating(monkeypatch):
    import torch

    import nlstudio.build as B

    real_assemble = B._assemble

    def meta_only(project, task):  # the estimate may build the model, but only on "meta"
        assert torch.empty(()).device.type == "meta", "a model was built with real memory"
        return real_assemble(project, task)

    monkeypatch.setattr(B, "_assemble", meta_only)
    doc = two_levels()
    doc["model"]["d_model"] = 65536
    start = time.perf_counter()
    with pytest.raises(ProjectError) as info:
        check_resources(doc)
    assert time.perf_counter() - start < 20
    err = info.value
    assert err.path == "model"
    assert re.search(r"needs about [\d.]+ (GiB|TiB) to train .* but only [\d.]+ \w+ is free",
                     err.message), err.message
    # an explicit budget: both numbers in the message
    with pytest.raises(ProjectError, match=r"but only 1\.0 KiB is free \(as given\)"):
        check_resources(two_levels(), available_bytes=1024)
    needed = check_resources(two_levels(), available_bytes=1 << 40)
    assert needed == estimate_memory(two_levels())


def _variants(kind: str) -> list[dict]:
    """A level of ``kind`` with its defaults, one per other value of each bool or choice option
    and per bound of each integer option (what changes which weights exist), and one per
    objective, written every 4 tokens where the kind may be frozen."""
    info = KINDS[kind]
    base = default_level(kind, "x")
    out = [base]
    for opt in info.options:
        values = ((True, False) if opt.type == "bool" else opt.choices if opt.type == "choice"
                  else (int(opt.low), int(opt.high)) if opt.type == "int" else ())
        out += [{**base, opt.name: v} for v in values if v != base.get(opt.name)]
    period = base["period"] if base["period"] is not None else 4
    out += [{**base, "period": period, "objective": o} for o in info.objectives]
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_builds_on_meta_with_the_exact_parameter_count(kind):
    """The estimate counts parameters on the meta device only (no analytic fallback): every
    kind, with every variant of its options, must build there."""
    import nlstudio.build as B

    for level in _variants(kind):
        project = parse_project(chain(level))
        task = B.build_task(project)
        real = B.build_model(project, task)
        assert B.count_parameters(project, task) == sum(p.numel() for p in real.parameters())
        meta = B._meta_model(project, task)
        assert all(p.device.type == "meta" for p in meta.parameters())
        lv = meta.levels["x"]
        assert lv.state_floats(3) == 3 * lv.state_floats(1)  # per sequence
        assert estimate_memory(project, task) > 0


def test_estimate_keeps_one_state_per_compute_chunk():
    """The memory check asks each level its compute chunk: the vector gate's smaller internal
    chunk keeps more memory copies than the scalar gate's (the copied MATRIX_CHUNK missed it)."""
    import nlstudio.build as B

    def floats(gate: str) -> tuple[int, int]:
        project = parse_project(chain({**default_level("linear_attention", "x"), "gate": gate}))
        level = B._meta_model(project, B.build_task(project)).levels["x"]
        return level.compute_chunk, level.state_floats(1)

    (c_vec, s_vec), (c_sca, s_sca) = floats("vector"), floats("scalar")
    assert c_vec < c_sca and s_vec == s_sca
    vec = parse_project(chain({**default_level("linear_attention", "x"), "gate": "vector"}))
    sca = parse_project(chain({**default_level("linear_attention", "x"), "gate": "scalar"}))
    t, b = vec.train.seq_len, vec.train.batch_size
    per_chunk_copies = 2 * b * s_vec * (-(-t // c_vec) - -(-t // c_sca)) * B.FLOAT_BYTES
    assert estimate_memory(vec) - estimate_memory(sca) >= per_chunk_copies > 0
