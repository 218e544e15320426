"""Every file of a run folder is untrusted (issue 14): a fuzz corpus of damaged and hostile run
folders, seeded by the cases of the issue's table, each put through every reader the same way.

Oracles, for every folder of the corpus:

- ``load_run`` gives a Run or one RunError/ProjectError; the follower and ``read_status`` never
  raise; nothing hangs (a FIFO) or reads without bound (/dev/zero, a 3 GB sparse CSV);
- ``nlstudio eval`` exits 0, or 2 with one printable line naming a file of the folder;
- ``--resume`` is refused with one such line and **every logged row left byte-identical**, or
  (for the seeds, run to the end) continues to a run whose steps strictly increase.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import shutil
import signal
import unicodedata
from pathlib import Path

import pytest
import torch

from nlstudio import cli
from nlstudio.faults import ProjectError
from nlstudio.runs import (CSV_FILES, RunError, RunFollower, latest_checkpoint, load_run,
                           read_status)
from nlstudio.trainer import TrainError, Trainer, train
from nlstudio.untrusted import FileRefused

pytestmark = pytest.mark.slow

PROJECT = {
    "format": "nlstudio.project", "version": 1, "name": "hostile",
    "model": {"d_model": 16, "heads": 2,
              "levels": [{"id": "fast", "kind": "mlp", "period": 4},
                         {"id": "slow", "kind": "mlp", "period": None}],
              "edges": [["input", "fast"], ["fast", "slow"], ["slow", "output"]]},
    "task": {"name": "kv_stream", "num_keys": 16, "pairs_per_mapping": 4, "num_mappings": 2,
             "segment_len": 8, "value_vocab": 8},
    "train": {"steps": 8, "batch_size": 4, "seq_len": 32, "seed": 0, "device": "cpu",
              "log_every": 2, "eval_every": 4},
}
NAMES = ("project.nlproj", "metrics.csv", "eval.csv", "delay.csv", "model.safetensors",
         "status.json", "checkpoint.json", "state.pt", "checkpoint.pt", "checkpoints")
HOSTILE_VALUES = [-5, 10**12, "abc", float("inf"), 1e308, [], {}, None, True, 2**63,
                  "x" * 10000, "\x1b[2J\nTraceback (most recent call last):", 0, 1, 8, 8.5]


# ---- the two templates: a finished run, and the same run in the older two-file layout -------
@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    root = tmp_path_factory.mktemp("templates")
    new = root / "new"
    assert train(copy.deepcopy(PROJECT), out=new, snapshots=False).reason == "completed"
    return {"new": new, "legacy": to_legacy(new, root / "legacy")}


def to_legacy(src: Path, dest: Path) -> Path:
    """The folder as NL Studio wrote it before checkpoint folders: checkpoint.pt and
    model.safetensors at the top, delay.csv as step,silenced,delay,recall."""
    shutil.copytree(src, dest)
    ckpt = latest_checkpoint(dest)
    state = ckpt.load_state()
    (dest / "model.safetensors").unlink()
    shutil.copyfile(ckpt.weights, dest / "model.safetensors")
    torch.save({"format": 1, "step": ckpt.step, "world_size": 1,
                "optimizer": state["optimizer"],
                "extra": {"wall_s": ckpt.wall_s, "updates": ckpt.updates,
                          "base_dir": ckpt.base_dir}}, dest / "checkpoint.pt")
    shutil.rmtree(dest / "checkpoints")
    lines = (dest / "delay.csv").read_text().splitlines()
    old = ["step,silenced,delay,recall"]
    for line in lines[1:]:
        step, ablation, level, delay, recall = line.split(",")
        if ablation != "freeze":  # the older layout measured silence only
            old.append(",".join([step, level or "none", delay, recall]))
    (dest / "delay.csv").write_text("\n".join(old) + "\n")
    return dest


def ckpt_file(folder: Path, name: str) -> Path:
    return next((folder / "checkpoints").glob(f"step-*/{name}"))


# ---- damage: each takes a folder copy and damages it ----------------------------------------
def put(name, data):
    def damage(folder: Path):
        path = ckpt_file(folder, name) if name in ("checkpoint.json", "state.pt") else folder / name
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8",
                                                                          "surrogatepass"))
    return damage


def special(name, kind):
    def damage(folder: Path):
        path = ckpt_file(folder, name) if name in ("checkpoint.json", "state.pt") else folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "zero":
            path.symlink_to("/dev/zero")
        elif kind == "sparse":
            with open(path, "wb") as fh:
                fh.truncate(3 << 30)  # 3 GB of zeros, no disk
        elif kind == "dir":
            path.mkdir()
    return damage


def manifest(**changes):
    def damage(folder: Path):
        path = ckpt_file(folder, "checkpoint.json")
        doc = json.loads(path.read_text())
        for key, value in changes.items():
            if key.startswith("rows."):
                doc["rows"][key[5:]] = value
            else:
                doc[key] = value
        path.write_text(json.dumps(doc, allow_nan=True))
    return damage


def legacy_checkpoint(**changes):
    def damage(folder: Path):
        ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
        for key, value in changes.items():
            if value is KeyError:
                ckpt.pop(key, None)
            else:
                ckpt[key] = value
        torch.save(ckpt, folder / "checkpoint.pt")
    return damage


def weights_step_metadata(step):
    def damage(folder: Path):
        from safetensors.torch import load_file, save_file

        path = folder / "model.safetensors"
        tensors = load_file(path)
        path.unlink()
        save_file(tensors, path, metadata={"step": str(step), "format": "nlstudio.weights"})
    return damage


def rename_checkpoint(step):
    def damage(folder: Path):
        old = next((folder / "checkpoints").glob("step-*"))
        doc = json.loads((old / "checkpoint.json").read_text())
        doc["step"] = step
        (old / "checkpoint.json").write_text(json.dumps(doc))
        old.rename(old.parent / f"step-{step:012d}")
    return damage


def killed_before_first_checkpoint(folder: Path):
    shutil.rmtree(folder / "checkpoints")
    (folder / "model.safetensors").unlink()
    (folder / "metrics.csv").write_bytes((folder / "metrics.csv").read_bytes()[:150])
    (folder / "status.json").write_text(json.dumps({"state": "running", "step": 0, "pid": 2**22 + 7,
                                                    "host": os.uname().nodename}))


def project_with(**model):
    def damage(folder: Path):
        doc = json.loads((folder / "project.nlproj").read_text())
        doc["model"].update(model)
        (folder / "project.nlproj").write_text(json.dumps(doc))
    return damage


def project_key(key):
    def damage(folder: Path):
        doc = json.loads((folder / "project.nlproj").read_text())
        doc["train"][key] = 1
        (folder / "project.nlproj").write_text(json.dumps(doc))
    return damage


def append(name, data: bytes):
    def damage(folder: Path):
        with open(folder / name, "ab") as fh:
            fh.write(data)
    return damage


# The table's rows, as damage to the new layout ("new") or to the older one ("legacy").
SEEDS = {
    "1 legacy weights of a later step": ("legacy", weights_step_metadata(13)),
    "4 killed before the first checkpoint": ("new", killed_before_first_checkpoint),
    "5 manifest format 1": ("new", manifest(format=1)),
    "5 manifest step abc": ("new", manifest(step="abc")),
    "5 manifest step inf": ("new", manifest(step=float("inf"))),
    "5 manifest updates a list": ("new", manifest(updates=[1, 2])),
    "5 manifest rows missing": ("new", manifest(**{"rows.metrics.csv": None})),
    "5 manifest not JSON": ("new", put("checkpoint.json", b"{\"format\": ")),
    "5 legacy empty file": ("legacy", put("checkpoint.pt", b"")),
    "5 legacy {format: 1}": ("legacy", legacy_checkpoint(step=KeyError, extra=KeyError,
                                                         optimizer=KeyError,
                                                         world_size=KeyError)),
    "5 legacy step abc": ("legacy", legacy_checkpoint(step="abc")),
    "5 legacy step inf": ("legacy", legacy_checkpoint(step=float("inf"))),
    "5 legacy extra a list": ("legacy", legacy_checkpoint(extra=[1, 2])),
    "5 legacy optimizer garbage": ("legacy", legacy_checkpoint(optimizer={"state": 3})),
    "5 state.pt garbage": ("new", put("state.pt", b"not a pickle")),
    "6 manifest step -5": ("new", manifest(step=-5)),
    "6 legacy step -5": ("legacy", legacy_checkpoint(step=-5)),
    "7 manifest step 1e12": ("new", rename_checkpoint(10**12)),
    "7 legacy step 1e12": ("legacy", legacy_checkpoint(step=10**12)),
    "8 a CR inside a metrics row": ("new", append("metrics.csv", b"9,0.1,\r2.0,0.5,1,0,0,0,0\n")),
    "8 a step of inf": ("new", append("metrics.csv", b"inf,0.1,2,0.5,1,0,0,0,0\n")),
    "8 a step of 1e999": ("legacy", append("metrics.csv", b"1e999,0.1,2,0.5,1,0,0,0,0\n")),
    "8 invalid UTF-8": ("new", append("eval.csv", b"\xff\xfe,\x00\x80\n")),
    "8 NUL bytes": ("legacy", append("delay.csv", b"\x00" * 64 + b"\n")),
    "9 d_model 16384": ("new", project_with(d_model=16384, heads=16)),
    "9 d_model 2**20": ("new", project_with(d_model=1 << 20, heads=16)),
    "10 FIFO status.json": ("new", special("status.json", "fifo")),
    "10 FIFO project.nlproj": ("new", special("project.nlproj", "fifo")),
    "10 FIFO checkpoint.json": ("new", special("checkpoint.json", "fifo")),
    "10 FIFO state.pt": ("new", special("state.pt", "fifo")),
    "10 FIFO weights": ("legacy", special("model.safetensors", "fifo")),
    "10 FIFO checkpoint.pt": ("legacy", special("checkpoint.pt", "fifo")),
    "10 FIFO metrics.csv": ("new", special("metrics.csv", "fifo")),
    "10 a folder as eval.csv": ("new", special("eval.csv", "dir")),
    "11 status.json is /dev/zero": ("new", special("status.json", "zero")),
    "11 checkpoint.json is /dev/zero": ("new", special("checkpoint.json", "zero")),
    "11 a 3 GB sparse metrics.csv": ("new", special("metrics.csv", "sparse")),
    "11 a 3 GB sparse state.pt": ("new", special("state.pt", "sparse")),
    "13 a 10 MB key": ("new", project_key("k" * 10_000_000)),
    "14 ANSI escape and newline in a key": ("new", project_key("\x1b]0;pwned\x07\x1b[2J\n"
                                                               "Traceback (most recent call")),
}


def random_damage(rng: random.Random):
    """A random damage of a random file: cut, bit flips, garbage, deletion, a hostile value in
    a JSON field, hostile tokens in a CSV, or a special file."""
    name = rng.choice(["project.nlproj", "metrics.csv", "eval.csv", "delay.csv",
                       "model.safetensors", "status.json", "checkpoint.json", "state.pt"])
    kind = rng.choice(["cut", "flip", "garbage", "delete", "value", "tokens", "special"])
    layout = "legacy" if name in ("model.safetensors",) and rng.random() < 0.5 else "new"
    if name in ("checkpoint.json", "state.pt") and rng.random() < 0.3:
        name, layout = "checkpoint.pt", "legacy"
    seed = rng.randrange(2**32)

    def damage(folder: Path):
        r = random.Random(seed)
        path = (ckpt_file(folder, name) if name in ("checkpoint.json", "state.pt")
                else folder / name)
        data = path.read_bytes() if path.is_file() else b""
        if kind == "cut":
            data = data[:r.randrange(len(data) + 1)]
        elif kind == "flip":
            data = bytearray(data)
            for _ in range(r.randint(1, 8)):
                if data:
                    data[r.randrange(len(data))] ^= 1 << r.randrange(8)
            data = bytes(data)
        elif kind == "garbage":
            data = bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))
        elif kind == "delete":
            path.unlink(missing_ok=True)
            return
        elif kind == "value" and name in ("checkpoint.json", "status.json"):
            try:
                doc = json.loads(data)
            except ValueError:
                doc = {}
            if isinstance(doc, dict) and doc:
                doc[r.choice(sorted(doc))] = r.choice(HOSTILE_VALUES)
                if "state" in doc and r.random() < 0.3:
                    doc["state"] = r.choice(HOSTILE_VALUES)
            data = json.dumps(doc, allow_nan=True).encode()
        elif kind in ("tokens", "value"):
            tokens = ["1", "-1", "nan", "inf", "1e999", "9" * 40, "", "x", "\r", "\x00", '"',
                      "step", "none", "silence", "freeze", "fast", "2.5", "\xe9"]
            lines = [",".join(r.choice(tokens) for _ in range(r.randrange(1, 10)))
                     for _ in range(r.randrange(1, 6))]
            data = data + "\n".join(lines).encode("utf-8", "surrogatepass")
        else:
            special(name, r.choice(["fifo", "zero", "dir"]))(folder)
            return
        if path.is_symlink():
            path.unlink()
        path.write_bytes(data)
    return f"random {kind} {name} ({layout})", layout, damage


# ---- the oracles ----------------------------------------------------------------------------
_UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def assert_one_clean_line(message: str, folder: Path, label: str) -> None:
    assert message and len(message) < 4000, (label, len(message))
    assert not any(unicodedata.category(c) in _UNSAFE for c in message), (label, message)
    assert "Traceback" not in message or "\\n" in message or "call" in message, label
    assert any(n in message for n in NAMES) or str(folder) in message, (label, message)


@contextlib.contextmanager
def deadline(seconds: int, label: str):
    def hang(signum, frame):
        raise AssertionError(f"{label}: still running after {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def csv_bytes(folder: Path) -> dict:
    out = {}
    for name in CSV_FILES:
        path = folder / name
        out[name] = path.read_bytes() if path.is_file() and path.stat().st_size < 1 << 20 \
            else path.exists()
    return out


def check_folder(folder: Path, label: str, resume_to_end: bool) -> str:
    """Every reader on one damaged folder; returns how the resume went."""
    with deadline(60, label):
        try:
            run = load_run(folder)
            assert isinstance(run.metrics, dict) and run.steps >= 0
        except (RunError, ProjectError) as exc:
            assert_one_clean_line(str(exc), folder, label)
        RunFollower(folder).poll()
        assert isinstance(read_status(folder), dict)

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["eval", str(folder)])
        assert code in (0, 2), (label, code, err.getvalue())
        if code == 2:
            lines = err.getvalue().splitlines()
            assert len(lines) == 1, (label, lines)
            assert_one_clean_line(lines[0], folder, label)
        else:
            assert "(step " in out.getvalue(), (label, out.getvalue())

        before = csv_bytes(folder)
        try:
            ckpt = latest_checkpoint(folder)
        except (RunError, FileRefused):
            ckpt = None
        steps = (ckpt.step if ckpt else 0) + 2
        try:
            trainer = Trainer(resume=folder, steps=max(steps, 2), snapshots=False)
        except (TrainError, RunError, ProjectError) as exc:
            assert_one_clean_line(str(exc), folder, label)
            assert csv_bytes(folder) == before, f"{label}: a refused resume changed rows"
            return "refused"
        if not resume_to_end:
            return "accepted"
        result = trainer.run()
        if result.reason == "failed":
            assert result.invalid, (label, result.message)
            assert_one_clean_line(result.message, folder, label)
            assert csv_bytes(folder) == before, f"{label}: a refused resume changed rows"
            return "refused"
        assert result.reason == "completed", (label, result)
        steps_logged = [int(s) for s in load_run(folder).metrics["step"]]
        assert steps_logged == sorted(set(steps_logged)), (label, steps_logged)
        return "resumed"


def damaged_copy(templates, layout: str, damage, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(templates[layout], dest, symlinks=True)
    damage(dest)
    return dest


def test_the_table_s_cases(templates, tmp_path):
    outcomes = {}
    for label, (layout, damage) in SEEDS.items():
        folder = damaged_copy(templates, layout, damage, tmp_path / "case")
        outcomes[label] = check_folder(folder, label, resume_to_end=True)
    # what the issue asks of each row (beyond "no traceback, no hang, one line")
    must_refuse = [k for k in SEEDS if k.split()[0] in ("1", "6", "7", "9", "13", "14")
                   or k.startswith(("5 ", "10 FIFO project", "10 FIFO checkpoint",
                                    "10 FIFO state", "10 FIFO weights", "11 checkpoint",
                                    "11 a 3 GB sparse state",
                                    # rows a checkpoint counted are gone: never cut
                                    "10 FIFO metrics", "11 a 3 GB sparse metrics"))]
    assert {k: outcomes[k] for k in must_refuse} == {k: "refused" for k in must_refuse}
    must_resume = ["4 killed before the first checkpoint", "8 a CR inside a metrics row",
                   "8 a step of inf", "8 a step of 1e999", "8 invalid UTF-8", "8 NUL bytes",
                   "10 FIFO status.json", "11 status.json is /dev/zero"]
    assert {k: outcomes[k] for k in must_resume} == {k: "resumed" for k in must_resume}


def test_random_damage_of_every_file(templates, tmp_path):
    rng = random.Random(1414)
    seen = set()
    for i in range(120):
        label, layout, damage = random_damage(rng)
        folder = damaged_copy(templates, layout, damage, tmp_path / "case")
        seen.add(check_folder(folder, f"{i}: {label}", resume_to_end=i % 8 == 0))
    assert seen >= {"refused", "accepted"}


def test_skipped_rows_are_counted_never_fatal(templates, tmp_path):
    folder = damaged_copy(templates, "new", append("metrics.csv", b"\xff\n1e999,1\n"
                                                   b"2,\r3\n" + b"\x00" * 50 + b"\n"),
                          tmp_path / "r")
    run = load_run(folder)
    assert run.skipped_rows == {"metrics.csv": 4}
    assert [int(s) for s in run.metrics["step"]] == [2, 4, 6, 8]


def test_legacy_folders_load_evaluate_and_resume_exactly(templates, tmp_path):
    """A run folder of the older layout opens, evaluates and resumes; the resumed rows are
    those of one uninterrupted run (old delay.csv rows read as silence rows), less the freeze
    rows of the steps the older run had evaluated before freeze was measured."""
    straight = tmp_path / "straight"
    train(copy.deepcopy(PROJECT), out=straight, steps=12, snapshots=False)
    folder = shutil.copytree(templates["legacy"], tmp_path / "legacy")
    run = load_run(folder)
    assert run.checkpoint.legacy and run.checkpoint_step == 8
    assert {r.ablation for r in run.delay_rows} == {"none", "silence"}
    assert Trainer(resume=folder, steps=12, snapshots=False).run().reason == "completed"
    assert (folder / "eval.csv").read_text() == (straight / "eval.csv").read_text()
    expected_delay = [line for line in (straight / "delay.csv").read_text().splitlines()
                      if not (",freeze," in line and int(line.split(",")[0]) <= 8)]
    assert (folder / "delay.csv").read_text().splitlines() == expected_delay
    assert {r.ablation for r in load_run(folder).delay_rows if r.step == 12} == {
        "none", "silence", "freeze"}
    resumed, expected = load_run(folder), load_run(straight)
    for column in ("step", "loss", "metric", "fast.updates"):
        assert list(resumed.metrics[column]) == list(expected.metrics[column]), column
    assert not (folder / "checkpoint.pt").exists()  # superseded by its checkpoint folder


def test_weights_and_every_run_file_share_one_mode(templates):
    modes = {p.relative_to(templates["new"]): p.stat().st_mode & 0o777
             for p in templates["new"].rglob("*") if p.is_file()}
    assert len(set(modes.values())) == 1, modes
    assert set(modes.values()) == {0o666 & ~_umask()}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_eval_labels_weights_by_their_own_step_and_resource_errors_name_the_file(templates,
                                                                                tmp_path):
    """Row 1: weights of a later step than the checkpoint are labelled by their own step and
    never resumed with the other step's optimizer; rows 9 and 19: the resource check runs
    before eval or a snapshot builds a model, and names project.nlproj."""
    from nlstudio.probes import snapshot_from_run

    folder = damaged_copy(templates, "legacy", weights_step_metadata(13), tmp_path / "a")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["eval", str(folder)]) == 0
    assert "(step 13)" in out.getvalue()
    with pytest.raises(RunError, match="of step 8 but model.safetensors of step 13"):
        Trainer(resume=folder, steps=20)
    big = damaged_copy(templates, "new", project_with(d_model=1 << 20, heads=16), tmp_path / "b")
    with pytest.raises(ProjectError, match=r"^project\.nlproj: model: needs about"):
        snapshot_from_run(big)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["eval", str(big)]) == 2
    assert err.getvalue().startswith("nlstudio: project.nlproj: model: needs about")


@pytest.mark.parametrize("text_file, why", [
    ("../outside.txt", "outside"), ("sub/../../outside.txt", "outside"),
    ("link-out", "outside"), ("../../../../../../dev/zero", "outside"),
    ("../../../../../../etc/passwd", "outside"), ("../../../../../proc/self/environ", "outside"),
    ("fifo", "FIFO"), ("zero", "outside"), ("folder", "folder"), ("missing.txt", "cannot read"),
    ("big.txt", "too large")])
def test_paths_a_project_names_stay_inside_its_folder(tmp_path, text_file, why, monkeypatch):
    """Row 12: a charlm text_file is resolved ('..', symlinks) and must stay inside the
    project's folder; only a regular file of bounded size is read."""
    from nlstudio import untrusted
    from nlstudio.build import build_task

    project_dir = tmp_path / "project"
    (project_dir / "sub").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("secret " * 100)
    (project_dir / "link-out").symlink_to(tmp_path / "outside.txt")
    os.mkfifo(project_dir / "fifo")
    (project_dir / "zero").symlink_to("/dev/zero")
    (project_dir / "folder").mkdir()
    (project_dir / "big.txt").write_bytes(b"x" * 4096)
    (project_dir / "ok.txt").write_text("fine text " * 100)
    monkeypatch.setattr(untrusted, "DATA_FILE_CAP", 2048)
    monkeypatch.setattr("nlstudio.tasks.charlm.DATA_FILE_CAP", 2048)
    doc = {"format": "nlstudio.project", "version": 1, "name": "c",
           "model": {"d_model": 16, "heads": 2, "levels": [{"id": "a", "kind": "mlp"}],
                     "edges": [["input", "a"], ["a", "output"]]},
           "task": {"name": "charlm", "text_file": text_file},
           "train": {"seq_len": 16, "device": "cpu"}}
    path = project_dir / "p.nlproj"
    path.write_text(json.dumps(doc))
    with deadline(20, text_file):
        with pytest.raises(ProjectError) as err:
            build_task(path)
    message = str(err.value)
    assert message.startswith("p.nlproj: task.text_file: ") and why in message, message
    assert "\n" not in message
    doc["task"]["text_file"] = "sub/../ok.txt"  # '..' that stays inside is fine
    path.write_text(json.dumps(doc))
    assert build_task(path).vocab_size == 256
