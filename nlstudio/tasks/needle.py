"""Needle in a haystack: a passkey hidden at a chosen depth of a long filler sequence.

Layout of a sequence of ``seq_len`` tokens (L = ``passkey_len``)::

    filler … NEEDLE d1 d2 … dL filler …  QUERY d1 … d(L-1)
    \\_______________ haystack _________/  \\_____ tail _____/

The tail asks for the passkey: the target at ``QUERY`` is ``d1``, at ``d1`` it is ``d2``, …
(teacher forcing: each digit is revealed as the next input); every other target is ``IGNORE``.
The needle (marker + L digits) starts at ``round(depth · (H − L − 1))`` where H = seq_len − L is
the haystack's length: depth 0 puts it first, depth 1 right before the query. Training draws
the depth uniformly from [0, 1]; evaluation measures each of the configured ``depths``.

Filler (never a digit or a marker): ``"pattern"`` repeats the cycle of all ``filler_vocab``
filler tokens in order from a random phase (the classic "the grass is green…" haystack, fully
predictable); ``"random"`` draws each filler token uniformly (incompressible noise).

Vocabulary (``vocab_size = 12 + filler_vocab``): ``0–9`` digits, ``10`` NEEDLE ("the pass key
is"), ``11`` QUERY ("what is the pass key?"), then the filler tokens. The metric is per-digit
accuracy on the tail (chance 0.1).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from nlstudio.tasks import register
from nlstudio.tasks._util import BundledTask, TaskConfigError, long_tensor
from nlstudio.tasks.base import IGNORE, Batch, EvalRow, TaskParams

NEEDLE, QUERY, FILLER0 = 10, 11, 12
EVAL_ROWS = 16  # sequences per evaluated depth


class NeedleParams(TaskParams):
    passkey_len: int = Field(5, gt=0, le=64, description="digits of the passkey")
    depths: tuple[float, ...] = Field(
        (0.1, 0.5, 0.9), min_length=1, max_length=16,
        description="where evaluation hides the needle, as fractions of the haystack "
                    "(0 = first token, 1 = just before the query)")
    filler: Literal["pattern", "random"] = Field(
        "pattern", description="haystack: a repeated pattern or uniformly random tokens")
    filler_vocab: int = Field(16, gt=0, le=4096, description="distinct filler tokens")

    @field_validator("depths")
    @classmethod
    def _depths_in_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 <= d <= 1.0 for d in v):
            raise ValueError("every depth must lie in [0, 1]")
        if len(set(v)) != len(v):
            raise ValueError("depths must be distinct")
        return v


@register
class NeedleTask(BundledTask):
    name = "needle"
    title = "Needle in a haystack"
    summary = ("A passkey hidden at some depth of a long filler sequence: repeat it when "
               "asked at the end.")
    Params = NeedleParams
    metric_name = "retrieval"

    def _setup(self) -> None:
        p = self.params
        need = 2 * p.passkey_len + 1
        if need > self.seq_len:
            raise TaskConfigError("passkey_len", f"a passkey of {p.passkey_len} digits needs "
                                                 f"seq_len >= {need}, got {self.seq_len}")
        self.vocab_size = FILLER0 + p.filler_vocab
        self.n_outputs = self.vocab_size
        self.haystack_len = self.seq_len - p.passkey_len

    def token_label(self, token: int) -> str:
        """The digit, ``NEEDLE``, ``QUERY``, or ``f3`` for filler token 3."""
        names = {NEEDLE: "NEEDLE", QUERY: "QUERY"}
        return str(token) if token < 10 else names.get(token, f"f{token - FILLER0}")

    def needle_start(self, depth: np.ndarray | float) -> np.ndarray:
        """Position of the NEEDLE marker for ``depth`` (a fraction of the haystack)."""
        room = self.haystack_len - self.params.passkey_len - 1
        return np.rint(np.asarray(depth, dtype=np.float64) * room).astype(np.int64)

    def sequences(self, rng: np.random.Generator, depths: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """One sequence per entry of ``depths``: inputs and targets."""
        p, T, L = self.params, self.seq_len, self.params.passkey_len
        rows = len(depths)
        r = np.arange(rows)[:, None]
        if p.filler == "pattern":
            phase = rng.integers(0, p.filler_vocab, (rows, 1))
            inputs = FILLER0 + (np.arange(T)[None, :] + phase) % p.filler_vocab
        else:
            inputs = FILLER0 + rng.integers(0, p.filler_vocab, (rows, T))
        key = rng.integers(0, 10, (rows, L))
        start = self.needle_start(depths)[:, None]
        inputs[r, start] = NEEDLE
        inputs[r, start + 1 + np.arange(L)] = key
        tail = self.haystack_len
        inputs[:, tail] = QUERY
        inputs[:, tail + 1:] = key[:, :-1]
        targets = np.full((rows, T), IGNORE, dtype=np.int64)
        targets[:, tail:] = key
        return inputs, targets

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        self._note_step(step)
        rng = self.rng(step, rank)
        inputs, targets = self.sequences(rng, rng.random(batch_size))
        return Batch(long_tensor(inputs), long_tensor(targets))

    def evaluate(self, model, device, step: int | None = None) -> list[EvalRow]:
        depths = np.repeat(np.asarray(self.params.depths, dtype=np.float64), EVAL_ROWS)
        inputs, targets = self.sequences(self.eval_rng(0), depths)
        logits = self.model_logits(model, long_tensor(inputs), long_tensor(targets), device)
        targets_t = long_tensor(targets).to(logits.device)
        rows = []
        for i, depth in enumerate(self.params.depths):
            sl = slice(i * EVAL_ROWS, (i + 1) * EVAL_ROWS)
            rows.append(EvalRow(f"depth {depth:g}", self.metric(logits[sl], targets_t[sl])))
        return rows
