"""Malformed and hostile project files: every one ends in ProjectError naming a field (or loads,
if it happens to be valid); never another exception, never a hang.

More than 1000 generated files in all (marked slow; .ci/run still runs them)."""
import copy
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlstudio.project import ProjectError, load_preset, load_project, project_to_dict

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=350, deadline=3000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

BASE = project_to_dict(load_preset("nsam_kv_stream"))

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
                | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
                | st.sampled_from(["/etc/passwd", "C:\\\\x", "../..", "", "∞", "input",
                                   "output", "mlp", "attention", "sgd", "-1", "1e309"]))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=5)
                           | st.dictionaries(st.text(max_size=8), children, max_size=5),
                           max_leaves=20)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


ALL_PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated_documents(draw):
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
            if action == "replace":
                parent[path[-1]] = draw(json_values)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, list):
                parent.append(copy.deepcopy(parent[path[-1]]))
            else:
                parent[draw(st.text(max_size=6))] = copy.deepcopy(parent[path[-1]])
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    return doc


def _check_loads_or_project_error(path):
    try:
        project = load_project(path)
    except ProjectError as exc:
        message = str(exc)
        assert message.startswith(f"{path.name}: "), message
        assert "Traceback" not in message and "pydantic" not in message.lower()
        assert len(message) < 2000
        return None
    return project


@FUZZ
@given(doc=mutated_documents())
def test_mutated_presets(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fuzz") / "m.nlproj"
    path.write_text(json.dumps(doc, allow_nan=True), encoding="utf-8")
    _check_loads_or_project_error(path)


@FUZZ
@given(value=json_values)
def test_arbitrary_json(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("fuzz") / "a.nlproj"
    path.write_text(json.dumps(value, allow_nan=True), encoding="utf-8")
    with pytest.raises(ProjectError):
        load_project(path)


TEXT = json.dumps(BASE, indent=1)


@FUZZ
@given(cut=st.integers(0, len(TEXT) - 1),
       junk=st.text(alphabet=string.printable + "\x00é∞😀", max_size=5))
def test_truncated_and_corrupted_text(tmp_path_factory, cut, junk):
    path = tmp_path_factory.mktemp("fuzz") / "t.nlproj"
    text = TEXT[:cut] + junk
    path.write_text(text, encoding="utf-8")
    if text.rstrip() == TEXT.rstrip():  # the cut removed exactly what the junk put back
        assert load_project(path) is not None
        return
    with pytest.raises(ProjectError):
        load_project(path)


def _doc_with(**changes):
    doc = copy.deepcopy(BASE)
    doc["model"].update(changes)
    return doc


HOSTILE = {
    "deep_nesting": "[" * 100000 + "]" * 100000,
    "deep_object": '{"a":' * 50000 + "1" + "}" * 50000,
    "huge_int": TEXT.replace('"d_model": 64', '"d_model": ' + "9" * 5000),
    "huge_float": TEXT.replace('"d_model": 64', '"d_model": 1e400'),
    "binary": "\x00\x01\x02\xff",
    "empty": "",
    "bom_and_garbage": "\ufeff{,}",
    "thousands_of_levels": json.dumps(_doc_with(
        levels=[{"id": f"l{i}", "kind": "mlp", "period": None} for i in range(5000)],
        edges=[["input", "l0"]] + [[f"l{i}", f"l{i + 1}"] for i in range(4999)]
        + [["l4999", "output"]])),
    "duplicate_ids": json.dumps(_doc_with(levels=BASE["model"]["levels"]
                                          + BASE["model"]["levels"][:1])),
    "cycle": json.dumps(_doc_with(edges=BASE["model"]["edges"]
                                  + [[BASE["model"]["levels"][-1]["id"],
                                      BASE["model"]["levels"][0]["id"]]])),
    "unicode_ids": json.dumps(_doc_with(levels=[dict(lvl, id="ωμέγα")
                                                for lvl in BASE["model"]["levels"]])),
    "newer_version": json.dumps(dict(BASE, version=99)),
    "absolute_path": json.dumps(dict(BASE, task={"name": "charlm", "text_file": "/etc/passwd"})),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_quickly(tmp_path, name):
    path = tmp_path / f"{name}.nlproj"
    path.write_bytes(HOSTILE[name].encode("utf-8", "surrogatepass"))
    with pytest.raises(ProjectError) as info:
        load_project(path)
    assert str(info.value).startswith(f"{name}.nlproj: ")


@pytest.mark.parametrize("name", ["deep_nesting", "cycle", "huge_float", "binary",
                                  "thousands_of_levels"])
def test_the_cli_reports_hostile_files_in_one_line(tmp_path, capsys, name):
    from nlstudio.cli import main

    path = tmp_path / f"{name}.nlproj"
    path.write_bytes(HOSTILE[name].encode("utf-8", "surrogatepass"))
    code = main(["train", str(path), "--steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{name}.nlproj" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "run").exists()
