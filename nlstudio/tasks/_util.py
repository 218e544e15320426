"""What the bundled tasks share: the constructor keywords the trainer passes, fixed evaluation
data, batches that mark which targets the metric scores, and the continual phase schedule.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from nlstudio.tasks.base import Batch, Task, TaskParams

#: First salt of every evaluation generator. Training generators are seeded with
#: ``[seed, step, rank]``; no run reaches this many steps, so held-out data never coincides
#: with a training batch. Evaluation data ignores the run's seed: runs trained with different
#: seeds are measured on the very same streams.
EVAL_SALT = 4_000_000_000


class TaskConfigError(ValueError):
    """A task setting that does not fit the rest of the project (``seq_len``, a missing file).
    ``field`` is the task setting at fault (``task.<field>`` in the project file)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


#: Kept as a name: every Batch may carry ``score_targets`` (see nlstudio.tasks.base.Batch).
ScoredBatch = Batch


class BundledTask(Task):
    """A task that accepts the keywords the trainer passes when a constructor names them.

    ``total_steps`` is the run's length (``train.steps``, or ``--steps``): continual tasks
    spread their phases over it. ``base_dir`` is the project file's folder, against which
    relative data paths resolve (default: the working directory).
    """

    def __init__(self, params: TaskParams | dict | None, seq_len: int, seed: int, *,
                 total_steps: int | None = None, base_dir: str | Path | None = None):
        super().__init__(params, seq_len, seed)
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len}")
        if total_steps is not None and int(total_steps) < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps}")
        self.total_steps = None if total_steps is None else int(total_steps)
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        # Highest step a training batch was drawn for: the default "seen so far" of evaluate().
        self.last_step: int | None = None
        self._setup()

    def _setup(self) -> None:
        """Derive sizes from the validated params (``vocab_size`` or ``input_dim``,
        ``n_outputs``) and check that they fit ``seq_len``: raise :class:`TaskConfigError`."""

    def _note_step(self, step: int) -> None:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.last_step = step if self.last_step is None else max(self.last_step, step)

    def eval_rng(self, *salt: int) -> np.random.Generator:
        """A generator for held-out data: fixed per task name and ``salt``, independent of the
        run's seed and of every training batch."""
        return np.random.default_rng([EVAL_SALT, zlib.crc32(self.name.encode()), *map(int, salt)])

    def model_logits(self, model, inputs: Tensor, targets: Tensor, device,
                     silence: Iterable[str] = (), freeze: Iterable[str] = ()) -> Tensor:
        """Logits of one fresh stream (no state carried in), without gradients, on ``device``.
        The model sees the stream's targets: its in-context levels learn from the answers of
        positions already read, exactly as during training."""
        return self._no_grad_model_call(model, inputs.to(device), targets.to(device), silence,
                                        freeze)


class PhaseSchedule:
    """``n`` phases of equal length over ``total_steps`` training steps (phase ``k`` covers
    steps ``[ceil(k·total/n), ceil((k+1)·total/n))``); steps past the end stay in the last."""

    def __init__(self, task_name: str, n: int, total_steps: int | None):
        self.task_name = task_name
        self.n = int(n)
        self.total_steps = total_steps

    def index(self, step: int) -> int:
        if self.n == 1:
            return 0
        if self.total_steps is None:
            raise ValueError(
                f"{self.task_name}: total_steps is needed to schedule its {self.n} phases; "
                f"construct the task with total_steps=<the run's train.steps>")
        return min(self.n - 1, int(step) * self.n // self.total_steps)

    def start(self, k: int) -> int:
        """First step of phase ``k``."""
        if k == 0 or self.total_steps is None:
            return 0
        return -(-k * self.total_steps // self.n)

    def seen(self, step: int | None) -> int:
        """How many phases have begun by ``step`` (all of them when ``step`` is None)."""
        if step is None or self.total_steps is None:
            return self.n
        return self.index(step) + 1


def long_tensor(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
