"""bench/gpu.py: its quick run works on the CPU (fla skipped with a note) and prints its ratio
lines; the Transformer it compares NSAM with is the one nearest NSAM's parameter count."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.py"
RATIO = r"\[d=32 H=2 T=64 B=2 fp32\]: \d+\.\d\dx"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_on_the_cpu_prints_the_ratio_lines():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "(skipped: flash-linear-attention's kernels need a CUDA device" in out
    for line in ("nsam vs transformer", "nsam vs fp32 gemm peak",
                 "transformer vs fp32 gemm peak"):
        assert re.search(rf"^{line} {RATIO}$", out, re.M), (line, out)
    counts = re.search(r"parameters: nsam ([\d,]+), transformer \(SDPA, (\d+) blocks\) ([\d,]+)",
                       out)
    assert counts, out
    assert "Traceback" not in proc.stderr


def test_matched_blocks_is_the_nearest_parameter_count():
    import torch

    gpu = _bench()
    d, heads = 64, 4
    with torch.device("meta"):
        sizes = {n: gpu.param_count(gpu.SDPAStack(d, heads, blocks=n, vocab=gpu.VOCAB))
                 for n in range(1, 9)}
    for target in (1, sizes[1], sizes[3] + 10, (sizes[4] + sizes[5]) // 2 + 1, sizes[8]):
        blocks, count = gpu.matched_blocks(target, d, heads)
        assert count == sizes[blocks]
        assert all(abs(count - target) <= abs(s - target) for s in sizes.values())
