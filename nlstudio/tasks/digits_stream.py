"""Online class-incremental classification of scikit-learn's bundled 8×8 digits.

The 1,797 images of ``sklearn.datasets.load_digits`` (shipped with scikit-learn) are split per
class, by the run's seed, into training and held-out images (a ``holdout`` share of each class).
Classes arrive in groups of ``classes_per_phase`` (default pairs: 0/1 → 2/3 → … → 8/9), each group
trained for an equal share of the run (``total_steps``, the constructor keyword the trainer fills
with ``train.steps``); ``classes_per_phase = 10`` is the joint, non-continual baseline.

A sequence is a stream of ``seq_len`` examples of the current group, one per time step. The
features at step t (``input_dim = 74``) are the image's 64 pixels scaled to [0, 1], then a
one-hot of the previous example's label (the stream's own labels are revealed after each
prediction; zeros at t = 0, and always zeros without ``label_feedback``). The target at t is the
label of example t (``n_outputs = 10``: every prediction is among all ten digits). Levels that
learn in context learn from these revealed labels.

Evaluation reports, for every group trained so far, the accuracy on that group's held-out images
presented as a stream of that group (random orders, repeated when the stream is longer than
the group's held-out set; only the first showing of each image is scored, so in-context recall
of an image's revealed label does not count). Row names: "pair 0/1", or "class 3",
"classes 0-4", "classes 0-9" for other group sizes.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from nlstudio.tasks import register
from nlstudio.tasks._util import BundledTask, PhaseSchedule, long_tensor
from nlstudio.tasks.base import IGNORE, Batch, EvalRow, TaskParams

N_CLASSES = 10
N_PIXELS = 64
SPLIT_SALT = 1797
EVAL_STREAMS = 8  # held-out streams per group


class DigitsStreamParams(TaskParams):
    classes_per_phase: Literal[1, 2, 5, 10] = Field(
        2, description="classes that arrive together (10: all at once, no continual phases)")
    holdout: float = Field(0.2, ge=0.05, le=0.5,
                           description="fraction of each class held out for evaluation")
    label_feedback: bool = Field(
        True, description="feed the previous example's label back as input (one-hot)")


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[1797, 64]`` float32 in [0, 1] and labels ``[1797]`` int64."""
    from sklearn.datasets import load_digits  # lazy: start-up time (scikit-learn, ~1 s)

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)


def group_name(classes: list[int] | range) -> str:
    classes = list(classes)
    if len(classes) == 1:
        return f"class {classes[0]}"
    if len(classes) == 2:
        return f"pair {classes[0]}/{classes[1]}"
    return f"classes {classes[0]}-{classes[-1]}"


@register
class DigitsStreamTask(BundledTask):
    name = "digits_stream"
    title = "Class-incremental digits"
    summary = ("8×8 digits whose classes arrive in pairs over training: accuracy on every "
               "pair seen so far, and how much of the first ones survives.")
    Params = DigitsStreamParams
    metric_name = "accuracy"

    def _setup(self) -> None:
        self.input_dim = N_PIXELS + N_CLASSES
        self.n_outputs = N_CLASSES
        c = self.params.classes_per_phase
        self.groups = [list(range(k, k + c)) for k in range(0, N_CLASSES, c)]
        self.schedule = PhaseSchedule(self.name, len(self.groups), self.total_steps)
        _, labels = digits()
        split = np.random.default_rng([self.seed, SPLIT_SALT])
        train, held = [], []
        for cls in range(N_CLASSES):
            idx = split.permutation(np.flatnonzero(labels == cls))
            n_held = max(1, round(self.params.holdout * len(idx)))
            held.append(idx[:n_held])
            train.append(idx[n_held:])
        self.train_index = [np.sort(np.concatenate([train[c] for c in g])) for g in self.groups]
        self.held_index = [np.sort(np.concatenate([held[c] for c in g])) for g in self.groups]

    def phase(self, step: int) -> str:
        return group_name(self.groups[self.schedule.index(step)])

    def features(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``[B, T, 74]`` and targets ``[B, T]`` for streams of image indices ``[B, T]``."""
        pixels, labels = digits()
        y = labels[index]
        feedback = np.zeros(index.shape + (N_CLASSES,), dtype=np.float32)
        if self.params.label_feedback:
            b, t = np.meshgrid(np.arange(index.shape[0]), np.arange(1, index.shape[1]),
                               indexing="ij")
            feedback[b, t, y[:, :-1]] = 1.0
        inputs = np.concatenate([pixels[index], feedback], axis=-1)
        return torch.from_numpy(inputs), long_tensor(y)

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        pool = self.train_index[self.schedule.index(step)]
        self._note_step(step)
        rng = self.rng(step, rank)
        return Batch(*self.features(rng.choice(pool, (batch_size, self.seq_len))))

    def eval_streams(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Held-out streams of group ``k``: image indices and which positions are scored (the
        first showing of each image in its stream)."""
        pool = self.held_index[k]
        rng = self.eval_rng(k)
        reps = -(-self.seq_len // len(pool))
        index = np.stack([np.concatenate([rng.permutation(pool) for _ in range(reps)])
                          for _ in range(EVAL_STREAMS)])[:, :self.seq_len]
        first = np.arange(self.seq_len) < len(pool)
        return index, np.broadcast_to(first, index.shape)

    def evaluate(self, model, device, step: int | None = None) -> list[EvalRow]:
        seen = self.schedule.seen(self.last_step if step is None else step)
        rows = []
        for k in range(seen):
            index, scored = self.eval_streams(k)
            inputs, targets = self.features(index)
            logits = self.model_logits(model, inputs, targets, device)
            score = torch.where(torch.from_numpy(scored.copy()), targets, IGNORE)
            rows.append(EvalRow(group_name(self.groups[k]),
                                self.metric(logits, score.to(logits.device))))
        return rows
