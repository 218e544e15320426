"""The contract every task keeps.

A task generates its data (nothing is downloaded), defines the loss and metric, and evaluates
a model on every sub-task seen so far (forgetting curves). Batches are a pure function of
``(seed, step, rank)``: resuming a run or sharding it over processes needs no RNG state.

The model is called as ``logits, state = model(inputs, state, targets=targets, silence=())``:
``inputs`` are token ids ``[B, T]`` (``vocab_size`` set) or features ``[B, T, input_dim]``;
``targets`` ``[B, T]`` hold class ids with ``IGNORE`` where no loss is taken. In-context levels
learn from the targets of tokens already seen, at training and at evaluation time alike.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

IGNORE = -100
#: The rank under which :meth:`Task.example` draws: no run has this many processes.
EXAMPLE_RANK = 999_983


class TaskParams(BaseModel):
    """Base of every task's settings (the ``task`` section of a project, minus ``name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Batch:
    """``targets`` train the loss; ``score_targets`` (same shape, or None for "score every
    target") mark what the metric may score: a task can train on positions whose answer
    could not be known yet (the first sight of a fact) without counting them as recall."""

    inputs: Tensor
    targets: Tensor
    score_targets: Tensor | None = None

    @property
    def metric_targets(self) -> Tensor:
        return self.targets if self.score_targets is None else self.score_targets

    def map(self, fn) -> "Batch":
        """The batch with ``fn`` applied to every tensor (device moves, shards)."""
        return Batch(fn(self.inputs), fn(self.targets),
                     None if self.score_targets is None else fn(self.score_targets))

    def to(self, device) -> "Batch":
        return self.map(lambda t: t.to(device, non_blocking=True))


@dataclass
class EvalRow:
    task: str  # the sub-task measured (e.g. "pair 0/1", "mapping 3", "corpus A")
    metric: float


class Task(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]  # one sentence for tooltips and the CLI
    Params: ClassVar[type[TaskParams]]
    metric_name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True

    vocab_size: int | None = None
    input_dim: int | None = None
    n_outputs: int
    #: Token ids are the bytes of UTF-8 text: prompts are text, generated tokens decode to
    #: text (generation, the memory inspector). Asked of the task, never of its name.
    byte_level: ClassVar[bool] = False

    def __init__(self, params: TaskParams | dict | None, seq_len: int, seed: int):
        if params is None or isinstance(params, dict):
            params = self.Params(**(params or {}))
        self.params = params
        self.seq_len = int(seq_len)
        self.seed = int(seed)

    def rng(self, *salt: int):
        """A numpy Generator determined only by the task seed and ``salt``."""
        return np.random.default_rng([self.seed, *[int(s) for s in salt]])

    @abstractmethod
    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        """The training batch of ``step`` for process ``rank`` of ``world_size``."""

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               targets.reshape(-1), ignore_index=IGNORE)

    def metric(self, logits: Tensor, targets: Tensor) -> float:
        """Accuracy on the positions that carry a target (override for other metrics)."""
        mask = targets != IGNORE
        if not bool(mask.any()):
            return float("nan")
        return float((logits.argmax(-1)[mask] == targets[mask]).float().mean())

    def example(self, index: int) -> Batch:
        """Example ``index``: one fresh stream of ``seq_len`` (a batch of 1) from the task's own
        generator, for displays such as the memory inspector. The training distribution (a
        continual task: the phase of a step drawn from ``index``), drawn under a rank no
        training run uses, so it is not a sequence the model was trained on. A pure function
        of ``(seed, index)``."""
        total = getattr(self, "total_steps", None) or 1
        step = int(self.rng(EXAMPLE_RANK, index).integers(total))
        return self.batch(step, 1, rank=EXAMPLE_RANK, world_size=1)

    def token_label(self, token: int) -> str:
        """A short, printable name of a token id for displays (the inspector, the CLI): the
        character of a byte-level task's byte, else what the task calls it (default: the id)."""
        token = int(token)
        if self.byte_level:
            return byte_label(token)
        return str(token)

    def phase(self, step: int) -> str:
        """The sub-task trained at ``step`` (continual variants change it over training)."""
        return self.name

    @abstractmethod
    def evaluate(self, model, device, step: int | None = None) -> list[EvalRow]:
        """The metric on held-out data of every sub-task begun by training ``step`` (fixed
        data: comparable across evaluations)."""

    def recall_by_delay(self, model, device, silence: Iterable[str] = (),
                        freeze: Iterable[str] = ()) -> dict[int, float] | None:
        """Recall as a function of tokens since a fact was last seen, with the levels in
        ``silence`` switched off (outputs zeroed) and those in ``freeze`` making no in-context
        write (outputs kept); ``None`` where the task has no such notion."""
        return None

    @staticmethod
    def _no_grad_model_call(model, inputs, targets, silence=(), freeze=()):
        with torch.no_grad():
            kw = {"freeze": tuple(freeze)} if freeze else {}
            logits, _ = model(inputs, None, targets=targets, silence=tuple(silence), **kw)
        return logits


def byte_label(byte: int) -> str:
    """A printable label of one byte: the ASCII character, or an escape (``\\n``, ``␣``
    for a space, ``0xE2`` for a byte of a longer UTF-8 sequence)."""
    named = {9: "\\t", 10: "\\n", 13: "\\r", 32: "␣"}
    if byte in named:
        return named[byte]
    if 33 <= byte < 127:
        return chr(byte)
    return f"0x{byte:02X}"
