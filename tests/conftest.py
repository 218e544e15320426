"""Test-wide settings. Kept inside tests/ (never at the repository root) so that the bare
folders models/ and widgets/ are never importable under the wrong name."""
import os

# Before anything imports Qt: without a display and without this, Qt aborts the process.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NLSTUDIO_TESTING", "1")
# No test may write recovery files or settings into the user's real app-data folders.
import tempfile  # noqa: E402

_SCRATCH = tempfile.mkdtemp(prefix="nlstudio-tests-")
os.environ.setdefault("NLSTUDIO_RECOVERY_DIR", os.path.join(_SCRATCH, "recovery"))
os.environ.setdefault("XDG_CONFIG_HOME", os.path.join(_SCRATCH, "config"))
os.environ.setdefault("XDG_DATA_HOME", os.path.join(_SCRATCH, "data"))

import pytest  # noqa: E402
import torch  # noqa: E402

# Two torch threads collapse (10-50x slower) when anything else runs on a 2-core machine
# (measured in the team's environment notes; bench/README.md says the same for benchmarks).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_leaked_qthreads(request):
    """Fail any test that leaves a worker QThread of ours running."""
    yield
    import sys

    worker = sys.modules.get("nlstudio.widgets.worker")
    if worker is None or not hasattr(worker, "running_threads"):
        return
    alive = worker.running_threads()
    if alive:
        for thread in alive:
            thread.quit()
            thread.wait(5000)
        pytest.fail(f"test left {len(alive)} QThread(s) running")


def _tiny_project_doc(steps: int = 8, **train) -> dict:
    """A small valid project (two mlp levels on mqar) that trains in a fraction of a second."""
    cfg = {"steps": steps, "batch_size": 4, "seq_len": 32, "seed": 0, "device": "cpu",
           "log_every": 2, "eval_every": 4}
    cfg.update(train)
    return {
        "format": "nlstudio.project", "version": 1, "name": "tiny",
        "model": {"d_model": 16, "heads": 2,
                  "levels": [{"id": "fast", "kind": "mlp", "period": 4},
                             {"id": "slow", "kind": "mlp", "period": None}],
                  "edges": [["input", "fast"], ["fast", "slow"], ["slow", "output"]]},
        "task": {"name": "mqar"},
        "train": cfg,
    }


@pytest.fixture
def tiny_project():
    """Factory: ``tiny_project(steps=8, **train_overrides) -> dict``."""
    return _tiny_project_doc


def _float_tensors(obj, path: str = "state"):
    """Every floating-point tensor of a nested state (dicts, lists, tuples), with its path."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _float_tensors(value, f"{path}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _float_tensors(value, f"{path}[{i}]")


@pytest.fixture
def float_tensors():
    """``float_tensors(state) -> iterator of (path, tensor)``: a state's floating tensors."""
    return _float_tensors
