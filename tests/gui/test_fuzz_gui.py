"""The main window's open action under fuzz: more than 1000 malformed, hostile or merely odd
``.nlproj`` files, opened through File → Open (``open_project`` with the file dialog answered by
a recorder) and through ``open_path`` (``nlstudio PROJECT``, a recent file).

Every file ends in one of two ways, never a third:

- it is valid: the window shows exactly what ``load_project`` read (clean, titled, its path);
- it is not: exactly ONE error dialog whose text is the core's ``ProjectError`` message (the
  file name, then the JSON path of the first fault when there is one), and the window is
  exactly as it was before: the document dict, the title and its modified mark, the undo
  stack, the path, the canvas and the recovery file.

No exception escapes, and every case is bounded in time. The generators are those of
``tests/core/test_fuzz_projects.py`` (mutated presets, arbitrary JSON, truncated and corrupted
text, the hostile files: deep nesting, huge numbers, thousands of levels, duplicate ids, cycles,
unicode), plus a few valid-but-extreme files only the GUI cares about. One window serves every
example.

Run folders go through the same open action: a folder whose project file is hostile is refused
with one "Cannot open run" dialog naming the file; one whose status.json or CSV files are
damaged or fuzzed still opens and shows what can be read.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QCoreApplication, QEvent, QSettings

from nlstudio import project as core
from nlstudio.widgets.main_window import MainWindow
from nlstudio.widgets.recovery import RecoveryStore
from nlstudio.widgets.training_controller import install_training

pytestmark = pytest.mark.slow

CASE_LIMIT_S = 5.0  # CPU seconds of one open, valid or not (the slowest hostile file: ~0.3 s;
#                    CPU time, so that a loaded machine, or another test worker, cannot fail it)
HANG_LIMIT_S = 60.0  # wall seconds: an open that waits (a FIFO, a lock) instead of working
EXAMPLES = {"mutated": 500, "arbitrary": 250, "truncated": 250}  # + 26 hand-written files


def _core_fuzz_module():
    """The strategies of tests/core/test_fuzz_projects.py (tests/ is not a package: load the
    file by path, under a private name, without collecting its tests)."""
    name = "_nlstudio_core_fuzz_strategies"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "core" / "test_fuzz_projects.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


F = _core_fuzz_module()

FUZZ = dict(derandomize=True, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                   HealthCheck.function_scoped_fixture])


class Studio:
    """One window for the whole module, reset to an edited (dirty) document when a fuzz case
    replaced it, so a failed open always has unsaved work and undo history to destroy."""

    def __init__(self, window: MainWindow, folder: Path) -> None:
        self.window = window
        self.dialogs = window.dialogs
        self.folder = folder
        self.base = folder / "base.nlproj"
        core.save_project(core.load_preset("nsam_kv_stream"), self.base)
        self.counts = {"valid": 0, "refused": 0}  # project files
        self.run_counts = {"opened": 0, "refused": 0}  # run folders
        self.elapsed = 0.0
        self.slowest = (0.0, "")
        self.needs_reset = True
        self.case = 0

    def reset(self) -> None:
        w = self.window
        assert w.open_path(str(self.base)), self.dialogs.calls
        assert w.document.edit("Rename", lambda d: d.update(name="edited, not saved"))
        w.view.add_level("delta", 420.0)
        assert w.document.undo_stack.count() == 2 and not w.document.is_clean
        assert w.recovery.file.is_file()
        self.needs_reset = False

    def state(self) -> dict:
        w = self.window
        stack = w.document.undo_stack
        return {"data": w.document.snapshot(), "title": w.windowTitle(),
                "modified": w.isWindowModified(), "undo_count": stack.count(),
                "undo_index": stack.index(), "clean": stack.isClean(),
                "path": w.document.path, "nodes": sorted(w.scene.nodes),
                "edges": len(w.scene.edges), "locked": w.document.locked,
                "recovery": w.recovery.file.read_bytes() if w.recovery.file.exists() else None}

    def open(self, path: Path, label: str = "") -> str:
        """Open ``path`` through the window; returns "valid" or "refused" after checking the
        outcome against what the core says about the same file."""
        if self.needs_reset:
            self.reset()
        w, dialogs = self.window, self.dialogs
        try:
            expected, refusal = core.project_to_dict(core.load_project(path)), None
        except core.ProjectError as exc:
            expected, refusal = None, exc
        before = self.state()
        dialogs.clear()
        via_action = self.case % 2 == 0
        self.case += 1
        escaped: list = []  # exceptions raised in Qt slots reach sys.excepthook, not us
        hook, sys.excepthook = sys.excepthook, lambda *info: escaped.append(info)
        t0, cpu0 = time.perf_counter(), time.process_time()
        try:
            if via_action:  # File → Open: the unsaved-changes question, then the file dialog
                dialogs.open_path = str(path)
                ok = w.open_project()
            else:  # nlstudio PROJECT, a recent file
                ok = w.open_path(str(path))
        finally:
            took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            sys.excepthook = hook
        assert not escaped, f"{label}: {escaped[0][0].__name__}: {escaped[0][1]}"
        self.elapsed += took
        if took > self.slowest[0]:
            self.slowest = (took, label or path.name)
        assert cpu < CASE_LIMIT_S, f"opening {label or path} took {cpu:.1f} s of CPU"
        assert took < HANG_LIMIT_S, f"opening {label or path} took {took:.1f} s"
        assert not [c for c in dialogs.calls if c[0] in ("info", "question", "get_save_path")]
        assert [c[0] for c in dialogs.calls if c[0] == "ask_save_changes"] == \
            ["ask_save_changes"]  # the edited document's unsaved work was asked about, once
        if refusal is None:
            self.needs_reset = True
            assert ok is True and not dialogs.errors, dialogs.errors
            assert w.document.data == expected
            assert w.document.path == str(path.absolute())
            assert w.document.undo_stack.count() == 0 and w.document.is_clean
            assert not w.isWindowModified() and w.document.name in w.windowTitle()
            assert set(w.scene.nodes) == {lv["id"] for lv in expected["model"]["levels"]}
            assert not w.recovery.file.exists()
            self.counts["valid"] += 1
            return "valid"
        assert ok is False
        message = str(refusal)
        if not path.exists():  # a missing file is named by its full path (issue 16 item 11)
            message = str(core.ProjectError(str(path.absolute()), refusal.path, refusal.message))
        assert dialogs.errors == [("Could not open project", message)], dialogs.errors
        assert message.startswith(f"{path.name}: ") or not path.exists()
        if refusal.path:
            assert f": {refusal.path}: " in message  # names the field
        assert "Traceback" not in message and len(message) < 2000
        after = self.state()
        for key in before:
            assert after[key] == before[key], f"{key} changed by a refused open of {label}"
        self.counts["refused"] += 1
        return "refused"


@pytest.fixture(scope="module")
def studio(qapp, tmp_path_factory, fake_dialogs):
    folder = tmp_path_factory.mktemp("fuzz-gui")
    window = MainWindow(QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    window.recovery = RecoveryStore(folder / "recovery")
    window.dialogs = fake_dialogs(answer=False)
    install_training(window, runs_root=folder / "runs")
    window.show()
    s = Studio(window, folder)
    yield s
    total = sum(s.counts.values())
    print(f"\nGUI open fuzz: {total} project files ({s.counts['valid']} valid, "
          f"{s.counts['refused']} refused) in {s.elapsed:.1f} s of opening, slowest "
          f"{s.slowest[0] * 1000:.0f} ms ({s.slowest[1]}); {sum(s.run_counts.values())} run "
          f"folders ({s.run_counts['opened']} opened, {s.run_counts['refused']} refused)")
    window.training.shutdown()
    window.document.undo_stack.setClean()
    window.close()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _run_examples(strategy, examples: int, check) -> int:
    """Run ``check`` on ``examples`` generated values; returns how many ran."""
    ran = [0]

    @settings(max_examples=examples, **FUZZ)
    @given(value=strategy)
    def run(value):
        ran[0] += 1
        check(value)

    run()
    return ran[0]


def test_mutated_presets(studio):
    def check(doc):
        path = _write(studio.folder, "mutated.nlproj",
                      json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass"))
        studio.open(path, "a mutated preset")

    assert _run_examples(F.mutated_documents(), EXAMPLES["mutated"], check) \
        >= EXAMPLES["mutated"]


def test_arbitrary_json(studio):
    def check(value):
        path = _write(studio.folder, "arbitrary.nlproj",
                      json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass"))
        assert studio.open(path, "arbitrary JSON") == "refused"

    assert _run_examples(F.json_values, EXAMPLES["arbitrary"], check) >= EXAMPLES["arbitrary"]


def test_truncated_and_corrupted_text(studio):
    def check(args):
        cut, junk = args
        text = F.TEXT[:cut] + junk
        path = _write(studio.folder, "truncated.nlproj", text.encode("utf-8", "surrogatepass"))
        outcome = studio.open(path, f"text cut at {cut} + {junk!r}")
        assert outcome == "refused" or text.rstrip() == F.TEXT.rstrip()

    strategy = st.tuples(st.integers(0, len(F.TEXT) - 1),
                         st.text(alphabet=F.string.printable + "\x00é∞😀", max_size=5))
    assert _run_examples(strategy, EXAMPLES["truncated"], check) >= EXAMPLES["truncated"]


def _gui_extras() -> dict[str, bytes | None]:
    """Files only the window cares about: valid ones at the schema's limits (the canvas must
    draw them), and unreadable ones. None: the path does not exist."""
    base = copy.deepcopy(F.BASE)
    ids = [lv["id"] for lv in base["model"]["levels"]]
    far = copy.deepcopy(base)
    far["view"] = {"positions": {lid: [1e300 * (-1) ** i, -1e300] for i, lid in enumerate(ids)},
                   "zoom": [[[[{"free": "form"}]]]], "note": "\u202eevil\u202c 😀"}
    chain = copy.deepcopy(base)
    chain["model"]["levels"] = [{"id": f"l{i}", "kind": "mlp", "period": None}
                                for i in range(256)]
    chain["model"]["edges"] = ([["input", "l0"]] + [[f"l{i}", f"l{i + 1}"] for i in range(255)]
                               + [["l255", "output"]])
    chain["view"] = {"positions": {}}
    too_many = copy.deepcopy(chain)
    too_many["model"]["levels"].append({"id": "l256", "kind": "mlp", "period": None})
    named = copy.deepcopy(base)
    named["name"] = "名前 😀 \u202e" + "x" * 150
    long_id = copy.deepcopy(base)
    long_id["model"]["levels"][0]["id"] = "a" * 65
    big_period = copy.deepcopy(base)
    big_period["model"]["levels"][1]["period"] = 2 ** 64
    enc = lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8")  # noqa: E731
    return {
        "valid_far_positions": enc(far),
        "valid_256_levels": enc(chain),
        "valid_unicode_name": enc(named),
        "257_levels": enc(too_many),
        "long_id": enc(long_id),
        "period_2_64": enc(big_period),
        "utf16": json.dumps(base).encode("utf-16"),
        "latin1": "{\"name\": \"caf\xe9\"}".encode("latin-1"),
        "null": b"null",
        "whitespace": b" \n\t ",
        "nan": json.dumps(dict(base, name=float("nan")), allow_nan=True).encode(),
        "too_large": b" " * ((16 << 20) + 1),
        "missing": None,
    }


def test_hostile_and_extreme_files(studio):
    cases = {name: text.encode("utf-8", "surrogatepass") for name, text in F.HOSTILE.items()}
    cases.update(_gui_extras())
    outcomes = {}
    for name, data in cases.items():
        path = studio.folder / f"{name}.nlproj"
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)
        outcomes[name] = studio.open(path, name)
        if data is not None and len(data) > 1 << 20:
            path.unlink()
    assert {n for n, o in outcomes.items() if o == "valid"} == {
        "valid_far_positions", "valid_256_levels", "valid_unicode_name"}


# ---- run folders: File → Open with a damaged or hostile run folder --------------------------
TINY = {"format": "nlstudio.project", "version": 1, "name": "tiny",
        "model": {"d_model": 16, "heads": 2,
                  "levels": [{"id": "fast", "kind": "mlp", "period": 4},
                             {"id": "slow", "kind": "mlp", "period": None}],
                  "edges": [["input", "fast"], ["fast", "slow"], ["slow", "output"]]},
        "task": {"name": "mqar"},
        "train": {"steps": 6, "batch_size": 4, "seq_len": 32, "seed": 0, "device": "cpu",
                  "log_every": 2, "eval_every": 3}}
STATUS_KEYS = ["state", "step", "total_steps", "pid", "host", "updated", "message"]
CSV_TOKENS = ["1", "0", "-1", "nan", "inf", "-inf", "1e999", "1e308", "9" * 40, "", "x", "é",
              "\x00", '"', '""', "step", "fast.updates", "none", "mqar", "2.5"]


@pytest.fixture(scope="module")
def finished_run(studio):
    """A finished tiny run (metrics, eval, delay rows, weights, status) to damage."""
    from nlstudio.trainer import train

    path = studio.folder / "template-run"
    assert train(copy.deepcopy(TINY), out=path, snapshots=False).reason == "completed"
    return path


def open_run_folder(studio: Studio, folder: Path, label: str) -> str:
    """Open a run folder through the window: it opens (what can be read is shown), or exactly
    one "Cannot open run" dialog says why; nothing escapes and the document is never touched."""
    if studio.needs_reset:
        studio.reset()
    w, c, dialogs = studio.window, studio.window.training, studio.dialogs
    before = studio.state()
    dialogs.clear()
    escaped: list = []
    hook, sys.excepthook = sys.excepthook, lambda *info: escaped.append(info)
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        ok = w.open_path(str(folder))
        if c.view is not None and c.view.job is not None:
            assert c.view.job.wait(30000)  # the snapshot from the saved weights
            QCoreApplication.processEvents()
    finally:
        took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        sys.excepthook = hook
    assert not escaped, f"{label}: {escaped[0][0].__name__}: {escaped[0][1]}"
    assert cpu < CASE_LIMIT_S, f"opening {label} took {cpu:.1f} s of CPU"
    assert took < HANG_LIMIT_S, f"opening {label} took {took:.1f} s"
    assert not [call for call in dialogs.calls if call[0] != "error"], dialogs.calls
    assert studio.state() == before  # a run folder never replaces the edited document
    if ok:
        assert not dialogs.errors, dialogs.errors
        assert c.view is not None and c.view.path == folder and c.session is None
        text = c.panel.status_text
        assert text.startswith((f"Opened run {folder.name}", f"Following {folder.name}")), text
        studio.run_counts["opened"] += 1
        return "opened"
    assert len(dialogs.errors) == 1 and dialogs.errors[0][0] == "Cannot open run", dialogs.errors
    assert "Traceback" not in dialogs.errors[0][1]
    studio.run_counts["refused"] += 1
    return "refused"


def _damaged(template: Path, dest: Path, files: dict[str, bytes | None]) -> Path:
    import shutil

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(template, dest)
    for name, data in files.items():
        if data is None:
            (dest / name).unlink(missing_ok=True)
        else:
            (dest / name).write_bytes(data)
    return dest


def test_damaged_and_hostile_run_folders(studio, finished_run):
    folder = studio.folder / "damaged-run"
    cases: dict[str, dict[str, bytes | None]] = {
        f"project {name}": {"project.nlproj": text.encode("utf-8", "surrogatepass")}
        for name, text in F.HOSTILE.items()}
    cases.update({
        "no metrics": {"metrics.csv": None, "eval.csv": None, "delay.csv": None},
        "garbage weights": {"model.safetensors": b"\x00garbage" * 50},
        "garbage checkpoint": {"checkpoint.pt": b"not a pickle"},
        "no status": {"status.json": None},
        "status not json": {"status.json": b"{\"state\": "},
        "status a list": {"status.json": b"[1, 2, 3]"},
        "status lies": {"status.json": json.dumps({"state": "running", "step": 10**30,
                                                   "total_steps": -5, "pid": 2**40,
                                                   "host": 7, "updated": "soon"}).encode()},
        "binary metrics": {"metrics.csv": b"\xff\xfe\x00garbage\n1,2\n"},
    })
    refused = set()
    try:
        for name, files in cases.items():
            if open_run_folder(studio, _damaged(finished_run, folder, files), name) == "refused":
                refused.add(name)
                text = studio.dialogs.errors[0][1]
                assert text.startswith("project.nlproj: "), text  # names the broken file
    finally:
        studio.window.training._close_view()
    assert refused == {n for n in cases if n.startswith("project ")}


def test_run_folders_with_fuzzed_status_and_csv_files(studio, finished_run):
    """Whatever status.json and the CSVs hold, a run folder with a valid project opens."""
    template = studio.folder / "template-no-weights"
    if not template.exists():  # no weights: no snapshot thread per example
        _damaged(finished_run, template, {"model.safetensors": None})
    folder = studio.folder / "fuzzed-run"
    status_values = F.json_values | st.dictionaries(
        st.sampled_from(STATUS_KEYS),
        F.json_values | st.sampled_from(["running", "paused", "finished", "stopped",
                                         "failed"]), max_size=7)
    csv_text = st.lists(st.lists(st.sampled_from(CSV_TOKENS), max_size=12).map(",".join),
                        max_size=8).map("\n".join).map(lambda t: t.encode("utf-8"))
    damage = st.one_of(
        st.tuples(st.just("status.json"), status_values.map(
            lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass"))),
        st.tuples(st.sampled_from(["metrics.csv", "eval.csv", "delay.csv"]),
                  st.tuples(st.booleans(), csv_text | st.binary(max_size=200))))

    def check(value):
        name, data = value
        if isinstance(data, tuple):  # CSVs: appended to the real rows, or replacing them
            append, data = value[1]
            if append:
                data = (template / name).read_bytes() + data
        outcome = open_run_folder(studio, _damaged(template, folder, {name: data}),
                                  f"{name} = {data[:80]!r}")
        assert outcome == "opened"

    try:
        assert _run_examples(damage, 200, check) >= 200
    finally:
        studio.window.training._close_view()
