"""The command line through real subprocesses: outputs and exit codes."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch


NLSTUDIO = [sys.executable, "-m", "nlstudio"]


def run_cli(*args, cwd, timeout=180):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([*NLSTUDIO, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def project_file(tmp_path, tiny_project):
    path = tmp_path / "tiny.nlproj"
    path.write_text(json.dumps(tiny_project(steps=6)))
    return path


def assert_one_clean_line(stderr: str, *needles: str):
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_presets_lists_every_bundled_preset(tmp_path):
    from nlstudio.project import preset_paths

    result = run_cli("presets", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in preset_paths():
        assert name in result.stdout


def test_train_then_eval(tmp_path, project_file):
    out = tmp_path / "run"
    result = run_cli("train", project_file, "--out", out, "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_the_cli_honours_precision(tmp_path, project_file, out)
    assert f"run folder: {out}" in result.stdout
    assert (out / "model.safetensors").is_file()
    result = run_cli("eval", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mqar" in result.stdout and "recall" in result.stdout
    # the content rate of every level, designed beside measured
    assert "content rate (how fast what each level returns changes" in result.stdout
    slow = next(ln for ln in result.stdout.splitlines() if ln.startswith("slow "))
    assert "0 (never changes)" in slow  # frozen by design: its content never changes


def _assert_the_cli_honours_precision(tmp_path, project_file, fp32_run):
    """``train.precision: bf16`` in the file: the CLI's losses are the in-process bf16
    trainer's (one thread each: the same reductions), not the float32 run's."""
    import csv

    from nlstudio.trainer import Trainer

    def losses(run_dir):
        with open(run_dir / "metrics.csv") as fh:
            return [float(r["loss"]) for r in csv.DictReader(fh)]

    doc = json.loads(project_file.read_text())
    doc["train"]["precision"] = "bf16"
    path = tmp_path / "bf16.nlproj"
    path.write_text(json.dumps(doc))
    out = tmp_path / "bf16-run"
    result = run_cli("train", path, "--out", out, "--threads", 1, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    Trainer(doc, out=tmp_path / "bf16-here", evaluate=False).run()
    assert losses(out) == pytest.approx(losses(tmp_path / "bf16-here"), rel=1e-6)
    assert losses(out) != losses(fp32_run)


def test_invalid_project_exits_2_with_one_line_naming_the_field(tmp_path, tiny_project):
    doc = tiny_project()
    doc["model"]["levels"][0]["period"] = -3
    path = tmp_path / "bad.nlproj"
    path.write_text(json.dumps(doc))
    result = run_cli("train", path, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, "bad.nlproj", "model.levels[0].period")


@pytest.mark.parametrize("args, needle", [
    (["train", "missing.nlproj"], "missing.nlproj"),
    (["eval", "no-such-run"], "no-such-run"),
    (["train", "--steps", "abc", "x.nlproj"], "--steps"),
])
def test_bad_input_exits_2(tmp_path, args, needle):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_exits_2(tmp_path, project_file):
    result = run_cli("train", project_file, "--device", "cuda", "--out", tmp_path / "r",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, "cuda")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                           (signal.SIGHUP, 129)])
def test_stop_signals_stop_cleanly_and_the_run_resumes(tmp_path, tiny_project, signum, code):
    """Ctrl-C, SIGTERM and SIGHUP: stop at a step boundary, checkpoint, status "stopped",
    exit 128 + the signal; the run resumes (issue 14 row 3)."""
    path = tmp_path / "long.nlproj"
    path.write_text(json.dumps(tiny_project(steps=100000, log_every=5, eval_every=100000)))
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([*NLSTUDIO, "train", str(path), "--out", str(out)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while "device:" not in seen:  # blocks on the child's output, no sleeping
            char = proc.stderr.read(1)
            assert char, f"process ended early: {seen}"
            seen += char
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    assert "parameters" in stdout.splitlines()[0]  # the model's size, at the start
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "stopped"
    stopped_at = status["step"]
    result = run_cli("train", "--resume", out, "--steps", stopped_at + 3, "--quiet",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "status.json").read_text())["step"] == stopped_at + 3


def test_a_folder_killed_before_its_first_checkpoint_resumes_or_is_reused(tmp_path,
                                                                         tiny_project):
    """Row 4: --resume starts it over from step 0; a new run may reuse the same --out."""
    path = tmp_path / "p.nlproj"
    path.write_text(json.dumps(tiny_project(steps=4)))
    out = tmp_path / "run"
    for attempt in ("resume", "reuse"):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        (out / "project.nlproj").write_text(path.read_text())
        (out / "metrics.csv").write_text("step,wall_s,loss\n2,0.1,")  # torn, uncounted
        (out / "status.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 7}))
        (out / "plots").mkdir(exist_ok=True)
        (out / ".status.json.k1ll3d.tmp").write_text('{"sta')  # killed inside a write
        args = ("--resume", out) if attempt == "resume" else (path, "--out", out)
        result = run_cli("train", *args, "--quiet", cwd=tmp_path)
        assert result.returncode == 0, (attempt, result.stderr)
        steps = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()]
        assert steps == ["step", "2", "4"], (attempt, steps)
        assert not list(out.glob(".*")), attempt  # what the killed writer left is gone
    # a run that trained is never overwritten
    result = run_cli("train", path, "--out", out, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, "not an empty folder")


def test_hostile_arguments_and_projects_exit_2_with_one_line(tmp_path, tiny_project):
    """Rows 16, 17: a lone surrogate in a project is refused at load (and leaves no folder
    behind); --threads out of range is refused."""
    doc = tiny_project(steps=2)
    text = json.dumps(doc)[:-1] + ', "view": {"note": "\\ud800"}}'
    path = tmp_path / "surrogate.nlproj"
    path.write_text(text)
    result = run_cli("train", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, "surrogate.nlproj", "view.note", "surrogate")
    assert not (tmp_path / "run").exists()
    good = tmp_path / "good.nlproj"
    good.write_text(json.dumps(doc))
    for threads in ("0", "99999999999", "10000", "-3"):
        result = run_cli("train", good, "--threads", threads, "--out", tmp_path / "r",
                         cwd=tmp_path)
        assert result.returncode == 2, threads
        assert_one_clean_line(result.stderr, "--threads", "between 1 and")
    assert not (tmp_path / "r").exists()


def test_resume_and_eval_agree_on_bad_weights_exit_2(tmp_path, project_file):
    """Row 19: weights that do not fit the project are invalid input for both."""
    out = tmp_path / "run"
    assert run_cli("train", project_file, "--out", out, "--quiet", cwd=tmp_path).returncode == 0
    weights = next(out.glob("checkpoints/step-*/model.safetensors"))
    (out / "model.safetensors").unlink()
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = torch.zeros(3, 3)
    data_size = weights.stat().st_size
    weights.unlink()
    save_file(tensors, weights, metadata={"step": "6"})
    manifest = json.loads((weights.parent / "checkpoint.json").read_text())
    manifest["files"]["model.safetensors"] = weights.stat().st_size
    (weights.parent / "checkpoint.json").write_text(json.dumps(manifest))
    assert data_size != weights.stat().st_size
    for args in (("eval", out), ("train", "--resume", out, "--steps", 8, "--quiet")):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert_one_clean_line(result.stderr, "model.safetensors", "do not")


def test_eval_of_an_exported_model_reports_the_weights_step(tmp_path, tiny_project):
    """Issue 16 #3: an exported folder (model.safetensors + project.nlproj) is evaluated at
    the step stored in the weights, not at step 0; delay tables, one per ablation kind."""
    path = tmp_path / "kv.nlproj"
    doc = tiny_project(steps=6)
    doc["task"] = {"name": "kv_stream", "num_keys": 16, "pairs_per_mapping": 4,
                   "num_mappings": 2, "segment_len": 8, "value_vocab": 8}
    path.write_text(json.dumps(doc))
    out = tmp_path / "run"
    assert run_cli("train", path, "--out", out, "--steps", 4, "--quiet",
                   cwd=tmp_path).returncode == 0
    exported = tmp_path / "exported"
    exported.mkdir()
    for name in ("model.safetensors", "project.nlproj"):
        (exported / name).write_bytes((out / name).read_bytes())
    result = run_cli("eval", exported, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(step 4)" in result.stdout.splitlines()[0]
    text = result.stdout
    assert text.count("recall by delay") == 2  # both ablations, each with its meaning
    freeze = text.index("each level frozen in turn (freeze: writes stopped, output kept")
    silence = text.index("each level silenced in turn (silence: output zeroed")
    assert freeze < silence  # what each level stores first
    for start in (freeze, silence):
        rows = text[start:].splitlines()[2:5]
        assert [r.split()[0] for r in rows] == ["none", "fast", "slow"]
    header = (out / "delay.csv").read_text().splitlines()[0]
    assert header == "step,ablation,level,delay,recall"


def test_a_run_whose_end_cannot_be_recorded_fails_in_one_line_and_resumes(tmp_path,
                                                                          tiny_project):
    """A full disk at the very last write (status.json saying "finished") must not pass for a
    clean end: exit 1 with one line; the folder then resumes to its end (nothing to train)."""
    from nlstudio.crashpoints import ENV

    doc = tiny_project(steps=6)  # status writes: start, steps 2, 4, 6, then the final one
    path = tmp_path / "tiny.nlproj"
    path.write_text(json.dumps(doc))
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{ENV: "status.write:5:enospc"})
    result = subprocess.run([*NLSTUDIO, "train", str(path), "--out", str(out), "--quiet"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert_one_clean_line(result.stderr, "status.json", "No space left on device")
    assert json.loads((out / "status.json").read_text())["state"] == "running"
    result = run_cli("train", "--resume", out, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nothing left to train" in result.stdout
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_a_kill_between_the_last_checkpoint_and_its_link_is_settled_by_a_resume(tmp_path,
                                                                             tiny_project):
    """Killed after the last checkpoint folder was renamed into place but before the top-level
    model.safetensors pointed at it: the resume has nothing left to train, and must still
    leave the folder as an uninterrupted run does (newest weights on top, one checkpoint)."""
    from nlstudio.crashpoints import ENV
    from nlstudio.runs import CHECKPOINTS_DIR, weights_step

    path = tmp_path / "tiny.nlproj"
    path.write_text(json.dumps(tiny_project(steps=6)))  # checkpoints at steps 0, 2, 4, 6
    out = tmp_path / "run"
    env = dict(os.environ, **{ENV: "checkpoint.link:4:kill"})
    result = subprocess.run([*NLSTUDIO, "train", str(path), "--out", str(out), "--quiet"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == -signal.SIGKILL, (result.stdout, result.stderr)
    assert weights_step(out / "model.safetensors") == 4
    result = run_cli("train", "--resume", out, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert weights_step(out / "model.safetensors") == 6
    assert [p.name for p in (out / CHECKPOINTS_DIR).iterdir()] == ["step-000000000006"]


def test_ctrl_c_while_starting_up_is_one_line_and_exit_130(monkeypatch, capsys):
    """A SIGINT that lands before a command installs its handlers (while the GUI or a command
    module is still being imported) ends with the shell's 130 and one line, no traceback."""
    from nlstudio import cli

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_gui_parser", interrupted)
    assert cli.main(["some.nlproj"]) == 130
    err = capsys.readouterr().err
    assert err == "nlstudio: interrupted\n"
