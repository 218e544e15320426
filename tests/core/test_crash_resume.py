"""Kill a real ``nlstudio train`` at random instants and inside every write; after each kill the
folder holds a valid checkpoint whose counted rows are a prefix of an uninterrupted run's, and
``--resume`` ends with exactly the uninterrupted run's rows and weights (issue 14).

The processes are forked from ``cli_forkserver.py``, which imports the CLI once, so each one
costs milliseconds to start instead of two seconds of imports; each is still a separate
process running ``nlstudio.cli.main`` with its own signal handlers, files and exit code.
Compared: every CSV cell except the two timing columns (``wall_s``, ``tokens_per_s``, which no
two runs share), and the final weights byte for byte.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlstudio.crashpoints import ENV, POINTS
from nlstudio.runs import CHECKPOINTS_DIR, latest_checkpoint, read_status, weights_step

pytestmark = pytest.mark.slow

SERVER = Path(__file__).with_name("cli_forkserver.py")
TIMING = ("wall_s", "tokens_per_s")
STEPS = 24
PROJECT = {  # ~0.5 s of training; delay.csv rows (kv_stream); eval steps that are not log steps
    "format": "nlstudio.project", "version": 1, "name": "crash",
    "model": {"d_model": 16, "heads": 2,
              "levels": [{"id": "fast", "kind": "mlp", "period": 4},
                         {"id": "slow", "kind": "mlp", "period": None}],
              "edges": [["input", "fast"], ["fast", "slow"], ["slow", "output"]]},
    "task": {"name": "kv_stream", "num_keys": 16, "pairs_per_mapping": 4, "num_mappings": 2,
             "segment_len": 8, "value_vocab": 8},
    "train": {"steps": STEPS, "batch_size": 4, "seq_len": 32, "seed": 3, "device": "cpu",
              "log_every": 2, "eval_every": 5, "warmup": 4},
}
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "hup": signal.SIGHUP,
           "int": signal.SIGINT}


class ForkServer:
    def __init__(self, cwd: Path, warm_up: Path):
        self.cwd = cwd
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env.pop(ENV, None)
        self.proc = subprocess.Popen([sys.executable, str(SERVER), str(warm_up)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)

    def run(self, argv, *, env=None, kill_after=None, sig=signal.SIGKILL) -> tuple[int, str]:
        log = self.cwd / "child.log"
        request = {"argv": [str(a) for a in argv], "cwd": str(self.cwd), "env": env or {},
                   "log": str(log), "kill_after": kill_after, "signal": int(sig)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        assert "pid" in json.loads(self.proc.stdout.readline())
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)["code"], log.read_text(errors="replace")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def logged_rows(folder: Path, counts: dict | None = None) -> dict[str, list]:
    """Each CSV's rows (metrics without its timing columns); with ``counts`` only the bytes a
    checkpoint counted."""
    out = {}
    for name in ("metrics.csv", "eval.csv", "delay.csv"):
        path = folder / name
        data = path.read_bytes() if path.exists() else b""
        if counts is not None:
            data = data[:counts[name][0]]
        rows = list(csv.reader(io.StringIO(data.decode())))
        if rows and name == "metrics.csv":
            keep = [i for i, h in enumerate(rows[0]) if h not in TIMING]
            rows = [[r[i] for i in keep] for r in rows]
        out[name] = rows
    return out


def weights(folder: Path) -> dict:
    """The final weights and their metadata (safetensors orders its metadata differently in
    every process, so files are compared by content, not bytes)."""
    from safetensors.torch import load

    path = folder / "model.safetensors"
    return {"step": weights_step(path), **{k: v.numpy().tobytes() for k, v in
                                           load(path.read_bytes()).items()}}


def check_after_kill(folder: Path, reference: dict, what: str) -> None:
    """A killed run's folder: its newest checkpoint is valid, the rows it counted are the
    uninterrupted run's first rows, its weights carry its step; nothing half-visible."""
    if not (folder / "project.nlproj").exists():
        return  # killed before the run folder existed: reused by the next start
    ckpt = latest_checkpoint(folder)  # raises if a kill left it invalid
    if ckpt is None:
        return  # killed before its step-0 checkpoint: resumes from step 0
    assert weights_step(ckpt.weights) == ckpt.step, what
    counted = logged_rows(folder, ckpt.rows)
    for name, rows in counted.items():
        assert len(rows) == ckpt.rows[name][1] + 1 or (not rows and ckpt.rows[name][1] == 0), \
            (what, name)
        assert rows == reference[name][:len(rows)], (what, name)


KILLS = 60  # random kills go on until this many kills in all (at least 50 are required)


def plans(rng: random.Random, kills: list[int]):
    """Deterministic kills inside every write point (killed, signalled, disk full), then
    SIGKILL/SIGTERM/SIGHUP/SIGINT at random instants of a run until ``kills[0]`` reaches
    :data:`KILLS` (at most 100 of them)."""
    fixed = []
    for point in POINTS:
        for action in ("kill", "term", "enospc"):
            fixed.append((f"{point}:{action}", {"env": {ENV: f"{point}:{rng.randint(1, 3)}:"
                                                               f"{action}"}}))
    rng.shuffle(fixed)
    yield from fixed
    kinds = ["kill"] * 5 + ["term"] * 3 + ["hup", "int"]
    for _ in range(100):
        if kills[0] >= KILLS:
            return
        kind = rng.choice(kinds)
        # a random instant of what is left of the run (scaled when the plan runs)
        yield f"{kind}@random", {"kill_at": rng.random(), "sig": SIGNALS[kind]}


def remaining_s(folder: Path, duration: float) -> float:
    """How long a start or resume of ``folder`` should take, from the reference run's."""
    try:
        ckpt = latest_checkpoint(folder) if (folder / "project.nlproj").exists() else None
    except Exception:  # noqa: BLE001 - a damaged folder is the test's own failure, later
        ckpt = None
    return duration * (STEPS - (ckpt.step if ckpt else 0)) / STEPS


def test_kills_at_random_instants_and_inside_every_write_resume_exactly(tmp_path):
    seed = int(os.environ.get("NLSTUDIO_CRASH_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    project = tmp_path / "crash.nlproj"
    project.write_text(json.dumps(PROJECT))
    server = ForkServer(tmp_path, project)
    train = ["train", "--quiet", "--threads", "1"]
    try:
        durations = []
        for name in ("reference", "reference-2"):  # two uninterrupted runs agree exactly
            t0 = time.perf_counter()
            code, log = server.run([*train, project, "--out", tmp_path / name])
            durations.append(time.perf_counter() - t0)
            assert code == 0, log
        duration = min(durations)  # the random instants fall within a run (a busy machine
        # slows one run down, never speeds one up)
        assert logged_rows(tmp_path / "reference-2") == logged_rows(tmp_path / "reference")
        reference = logged_rows(tmp_path / "reference")
        assert len(reference["metrics.csv"]) == STEPS // 2 + 1 and reference["delay.csv"]
        reference_weights = weights(tmp_path / "reference")

        folder, kills, finished, n, outcomes = tmp_path / "run-0", [0], 0, 0, []
        for what, plan in plans(rng, kills):
            what = f"{what} (seed {seed})"
            start = ([*train, "--resume", folder] if (folder / "project.nlproj").exists()
                     else [*train, project, "--out", folder])
            kill_after = None
            if "kill_at" in plan:
                kill_after = plan["kill_at"] * remaining_s(folder, duration)
            code, log = server.run(start, env=plan.get("env"), kill_after=kill_after,
                                   sig=plan.get("sig", signal.SIGKILL))
            outcomes.append((what, code))
            assert "Traceback" not in log, (what, log)
            if code == 0:  # the run ended before the planned kill: it must be the reference
                assert logged_rows(folder) == reference, what
                assert weights(folder) == reference_weights, what
                finished += 1
                n += 1
                folder = tmp_path / f"run-{n}"
                continue
            kills[0] += 1
            if code in (143, 129, 130) and "resume with" in log:  # a handled stop signal
                assert read_status(folder)["state"] == "stopped", (what, log)
            elif code == 1:  # a full disk: one line, the run failed, nothing else
                lines = [ln for ln in log.splitlines() if ln.strip()]
                assert "No space left on device" in lines[-1] and len(lines) <= 2, (what, log)
            else:
                assert code in (137, 143, 129, 130), (what, code, log)
            check_after_kill(folder, reference, what)
        # finish the last folder: its resume reproduces the uninterrupted run
        if (folder / "project.nlproj").exists():
            code, log = server.run([*train, "--resume", folder])
            assert code == 0, log
            assert logged_rows(folder) == reference
            assert weights(folder) == reference_weights
            finished += 1
        for done in tmp_path.glob("run-*"):
            if (done / "project.nlproj").exists() and done != folder:
                assert read_status(done)["state"] == "finished"
                assert not [p for p in done.rglob(".*")], "temporary files left behind"
                assert len(list((done / CHECKPOINTS_DIR).iterdir())) == 1
    finally:
        server.close()
    assert kills[0] >= 50, (kills, seed, sorted(set(outcomes)))
    assert finished >= 3, (finished, seed)
