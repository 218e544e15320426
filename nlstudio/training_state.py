"""What a checkpoint restores beyond the weights, checked before use: the outer optimizer's
state and the random number generators; and the clock of training time (pauses excluded).

A checkpoint's state file is untrusted: an optimizer state whose tensors do not fit the
model's parameters, or an RNG state of the wrong size, is a RunError naming the file, not a
traceback at the first step.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from nlstudio.runs import RunError


class StepClock:
    """Training time: wall-clock time of this process, less its pauses, plus the time the
    checkpoint it resumed from had already trained (``before``)."""

    def __init__(self, before: float = 0.0):
        self.before = float(before)
        self._start = time.perf_counter()
        self._paused = 0.0

    def elapsed(self) -> float:
        """This process's training time so far (pauses excluded)."""
        return time.perf_counter() - self._start - self._paused

    def total(self) -> float:
        return self.before + self.elapsed()

    @contextlib.contextmanager
    def paused(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - t0


def capture_rng() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, source: Path) -> None:
    try:
        if "torch" in state:
            torch.set_rng_state(_byte_tensor(state["torch"]))
        if "cuda" in state and torch.cuda.is_available():
            cuda = state["cuda"]
            if not isinstance(cuda, list):
                raise TypeError("cuda: a list of states")
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([_byte_tensor(t) for t in cuda])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise RunError(source, f"rng: not a random number generator state ({exc})") from None


def _byte_tensor(value) -> torch.Tensor:
    if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1):
        raise TypeError("expected a 1-D uint8 tensor")
    return value


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict, source: Path) -> None:
    """Loads ``state`` into ``optimizer`` after checking that every state tensor that is not a
    scalar has its parameter's shape (torch itself would only fail at the first step)."""
    if not state:
        return
    try:
        optimizer.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - torch raises KeyError/ValueError/TypeError/...
        raise RunError(source, f"optimizer: does not fit the project's model "
                               f"({type(exc).__name__}: {exc})") from None
    for group in optimizer.param_groups:
        for key, value in group.items():
            if key != "params" and not _plain_setting(value):
                raise RunError(source, f"optimizer: setting {key!r} is not a number")
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and (
                        value.shape != p.shape or not value.is_floating_point()):
                    raise RunError(source, f"optimizer: state {key!r} has shape "
                                           f"{tuple(value.shape)} for a parameter of shape "
                                           f"{tuple(p.shape)}")
                if not isinstance(value, (torch.Tensor, int, float)):
                    raise RunError(source, f"optimizer: state {key!r} is a "
                                           f"{type(value).__name__}")


def _plain_setting(value) -> bool:
    """An optimizer setting as torch stores it: a finite number, a flag, None, or a tuple of
    numbers (Adam's betas)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and bool(torch.isfinite(value).all())
    if isinstance(value, tuple):
        return all(_plain_setting(v) and not isinstance(v, tuple) for v in value)
    return isinstance(value, str) and len(value) < 64


def dedupe_shared(state: dict) -> dict:
    """safetensors refuses tensors that share memory (tied embedding/head): keep one name."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride()) if tensor.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = name
        out[name] = tensor.clone() if tensor.numel() else tensor
    return out


def mean_nonzero(norms) -> float:
    """The mean of the non-zero write norms of a level (0 if it never wrote): metrics.csv's
    ``<id>.update_norm``."""
    if norms is None:
        return 0.0
    nz = norms[norms != 0]
    return float(nz.mean()) if nz.numel() else 0.0
