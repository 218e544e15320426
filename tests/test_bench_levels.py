"""bench/levels.py's FLOP count: what the "vs GEMM peak" ratios divide by."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _levels():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_levels", ROOT / "bench" / "levels.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_in_place_matmuls_count_as_their_out_of_place_forms():
    """torch's FlopCounterMode has no formula for baddbmm_ / addmm_ / addbmm_; the chunk nodes
    write with them, so the bench adds them: the same work counts the same either way."""
    count = _levels().count_flops
    a, b, c = torch.randn(3, 4, 5), torch.randn(3, 5, 6), torch.randn(3, 4, 6)
    x, y, z = torch.randn(4, 5), torch.randn(5, 6), torch.randn(4, 6)
    expected_bmm, expected_mm = 2 * 3 * 4 * 5 * 6, 2 * 4 * 5 * 6
    assert count(lambda: torch.baddbmm(c, a, b)) == expected_bmm
    assert count(lambda: c.clone().baddbmm_(a, b)) == expected_bmm
    assert count(lambda: z.clone().addmm_(x, y)) == expected_mm
    assert count(lambda: z.clone().addbmm_(a, b)) == expected_bmm
    assert count(lambda: torch.relu(c)) == 0  # elementwise work is not a matmul FLOP
