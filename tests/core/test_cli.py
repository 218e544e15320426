"""The command line through real subprocesses: outputs and exit codes."""
import json
import os
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
    assert f"run folder: {out}" in result.stdout
    assert (out / "model.safetensors").is_file()
    result = run_cli("eval", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mqar" in result.stdout and "recall" in result.stdout


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


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path, tiny_project):
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
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "stopped"
    stopped_at = status["step"]
    result = run_cli("train", "--resume", out, "--steps", stopped_at + 3, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "status.json").read_text())["step"] == stopped_at + 3
