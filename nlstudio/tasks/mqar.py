"""Multi-query associative recall (MQAR, as in Zoology): key→value pairs, then queries.

A sequence of ``seq_len`` tokens is ``k1 v1 k2 v2 … kn vn`` (n = ``num_pairs`` distinct keys,
values drawn with replacement) followed by a query region: ``num_queries`` of those keys, each
asked once, at random positions, in random order; every other position of the region holds
the blank token. The target at a query is the key's value; the answer is never shown after
the query, so only memory of the context can produce it. Chance is 1 / ``value_vocab``.

Vocabulary (``vocab_size = 1 + key_vocab + value_vocab``): ``0`` blank, ``1 … key_vocab``
keys, then the ``value_vocab`` value tokens. Targets are value token ids.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from nlstudio.tasks import register
from nlstudio.tasks._util import BundledTask, ScoredBatch, TaskConfigError, long_tensor
from nlstudio.tasks.base import IGNORE, EvalRow, TaskParams

BLANK = 0
EVAL_QUERIES = 256  # queries scored by evaluate(), at least


class MQARParams(TaskParams):
    num_pairs: int = Field(8, gt=0, le=1024, description="key→value pairs in the context")
    num_queries: int | None = Field(
        None, gt=0, le=1024,
        description="keys asked after the context, each at most once (empty: all of them)")
    key_vocab: int = Field(64, gt=0, le=8192, description="distinct key tokens")
    value_vocab: int = Field(64, ge=2, le=8192, description="distinct value tokens")
    context_targets: bool = Field(
        False, description="also train (never score) on the value at each context key, so "
                           "levels that learn from targets see the pairs")

    @field_validator("num_queries")
    @classmethod
    def _queries_fit(cls, v: int | None, info: ValidationInfo) -> int | None:
        n = info.data.get("num_pairs")
        if v is not None and n is not None and v > n:
            raise ValueError(f"at most num_pairs ({n}): each key is asked once")
        return v

    @field_validator("key_vocab")
    @classmethod
    def _keys_distinct(cls, v: int, info: ValidationInfo) -> int:
        n = info.data.get("num_pairs")
        if n is not None and v < n:
            raise ValueError(f"must be at least num_pairs ({n}): the keys of a sequence "
                             "are distinct")
        return v


@register
class MQARTask(BundledTask):
    name = "mqar"
    title = "Multi-query associative recall"
    summary = ("Key→value pairs, then queries of those keys: recall every value from one "
               "reading of the context.")
    Params = MQARParams
    metric_name = "recall"

    def _setup(self) -> None:
        p = self.params
        self.num_queries = p.num_queries or p.num_pairs
        need = 2 * p.num_pairs + self.num_queries
        if need > self.seq_len:
            raise TaskConfigError(
                "num_pairs", f"{p.num_pairs} pairs and {self.num_queries} queries need "
                             f"seq_len >= {need}, got {self.seq_len}")
        self.value_offset = 1 + p.key_vocab
        self.vocab_size = 1 + p.key_vocab + p.value_vocab
        self.n_outputs = self.vocab_size

    def token_label(self, token: int) -> str:
        """``_`` for the blank, ``k5`` for key 5, ``v3`` for value token 3."""
        if token == BLANK:
            return "_"
        return f"k{token}" if token < self.value_offset else f"v{token - self.value_offset}"

    def sequences(self, rng: np.random.Generator, rows: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rows`` sequences: inputs, training targets and scored targets (queries only)."""
        p, n, q, T = self.params, self.params.num_pairs, self.num_queries, self.seq_len
        r = np.arange(rows)[:, None]
        keys = np.argsort(rng.random((rows, p.key_vocab)), axis=1)[:, :n] + 1
        values = rng.integers(0, p.value_vocab, (rows, n)) + self.value_offset
        inputs = np.full((rows, T), BLANK, dtype=np.int64)
        inputs[:, 0:2 * n:2] = keys
        inputs[:, 1:2 * n:2] = values
        asked = np.argsort(rng.random((rows, n)), axis=1)[:, :q]  # which pairs, in asking order
        slots = np.sort(np.argsort(rng.random((rows, T - 2 * n)), axis=1)[:, :q], axis=1) + 2 * n
        inputs[r, slots] = keys[r, asked]
        scored = np.full((rows, T), IGNORE, dtype=np.int64)
        scored[r, slots] = values[r, asked]
        targets = scored.copy()
        if p.context_targets:
            targets[:, 0:2 * n:2] = values
        return inputs, targets, scored

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> ScoredBatch:
        self._note_step(step)
        inputs, targets, scored = self.sequences(self.rng(step, rank), batch_size)
        return ScoredBatch(long_tensor(inputs), long_tensor(targets), long_tensor(scored))

    def evaluate(self, model, device, step: int | None = None) -> list[EvalRow]:
        rows = min(64, max(4, math.ceil(EVAL_QUERIES / self.num_queries)))
        inputs, targets, scored = self.sequences(self.eval_rng(0), rows)
        logits = self.model_logits(model, long_tensor(inputs), long_tensor(targets), device)
        return [EvalRow("mqar", self.metric(logits, long_tensor(scored).to(logits.device)))]
