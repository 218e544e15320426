"""Data-parallel training under torchrun on CPU (gloo): the same losses as one process with
the same global batch and seed, one run folder, and a 2-process run resumed by 1 process."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def losses(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_match_one_and_resume_with_one(tmp_path, tiny_project):
    project = tmp_path / "tiny.nlproj"
    project.write_text(json.dumps(tiny_project(steps=6, log_every=1, eval_every=1000)))
    single = run([sys.executable, "-m", "nlstudio", "train", str(project), "--out",
                  str(tmp_path / "single"), "--quiet"], tmp_path)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "nlstudio", "train", str(project), "--quiet"]
    multi = run([*torchrun, "--out", str(tmp_path / "multi"), "--steps", "4"], tmp_path)
    assert multi.returncode == 0, multi.stderr[-3000:]
    # only rank 0 wrote: exactly the one run folder we named, nothing under runs/
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["multi", "single"]
    assert len(losses(tmp_path / "multi")) == 4
    resumed = run([sys.executable, "-m", "nlstudio", "train", "--resume",
                   str(tmp_path / "multi"), "--steps", "6", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_allclose(losses(tmp_path / "multi"), losses(tmp_path / "single"),
                               rtol=1e-4, atol=1e-5)
