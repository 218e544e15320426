"""Shifting key→value streams: the continual-memory task.

**A stream.** Each stream draws ``num_mappings`` fresh mappings: the key pool is shuffled and
cut into disjoint sets of ``pairs_per_mapping`` keys, and every key gets a random value (values
repeat freely). A key therefore belongs to one mapping only, and "the value of an old key" is
well defined. The stream is a run of segments of ``segment_len`` tokens; a segment shows one
mapping as ``key value`` token pairs, in passes: each pass is a fresh random order of all of the
mapping's pairs, repeated until the segment is full (the last pass may be cut). The stream is
cut at ``seq_len`` tokens (the last segment may be partial).

**The schedule** (which mapping each segment shows; mappings are numbered in order of first
appearance). With ``schedule`` unset: segment 0 shows mapping 0; each later segment, with
probability ``return_prob``, brings back an earlier mapping other than the current one (chosen
uniformly), otherwise introduces the next new mapping; once all ``num_mappings`` are out, every
segment is a return (a single mapping simply continues). With ``schedule`` set, e.g.
``"ABCADB"``, segment i shows mapping ``schedule[i mod len]`` (A = 0; letters must first appear in
alphabetical order).

**Targets.** At a key: its value (token id); at a value: ``IGNORE``. The first sight of a key in
a stream cannot be predicted: it stays a target (levels that learn from targets learn the fact
from it) but is not scored: ``ScoredBatch.score_targets`` keeps only keys seen before in the
stream, and the metric "recall" is accuracy on those.

**Evaluation** (held-out mappings, so it measures pure in-context memory):

- ``mapping j`` (j = 0 … m−2, m = min(num_mappings, seq_len // segment_len − 1)): streams that
  show mappings 0, 1, …, m−1 once each, then bring back mapping j in a last segment; recall on
  that segment's first pass. Mapping 0 is the oldest: a forgetting curve over the age of a memory.
  (The latest mapping, m−1, is not brought back: a segment never continues the mapping before it
  in training, so that would measure something the model never met.)
- ``return``: streams drawn with the task's own schedule; recall on the first pass of every
  segment that brings back a mapping (recovery on the training distribution). Absent when the
  schedule has no returns within ``seq_len``.
- ``recall_by_delay``: streams in which every tested fact is shown once and asked once, exactly
  d tokens later (d = key-to-key distance), for d on the grid 4, 8, 16, … Facts come in blocks of
  h = d/2: h facts shown, then the same h asked in the same order. When one block does not fit
  ``seq_len``, n = seq_len/2 − h facts are shown, h − n distractor pairs (never asked) follow,
  then the n are asked. Keys are never reused within a stream, so delays stop at 2·num_keys
  (raise ``num_keys`` for longer ones), and at ¾·seq_len (at least seq_len/8 facts per stream).
  The streams of all delays are padded after their last question to one length and measured in
  one model call.

Vocabulary (``vocab_size = num_keys + value_vocab``): keys ``0 … num_keys−1``, then the values.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from nlstudio.tasks import register
from nlstudio.tasks._util import BundledTask, ScoredBatch, TaskConfigError, long_tensor
from nlstudio.tasks.base import IGNORE, EvalRow, TaskParams

EVAL_PROBES = 32    # scored keys per mapping row, at least
EVAL_FACTS = 64     # tested facts per delay, at least
MAX_ROWS = 32


class KVStreamParams(TaskParams):
    num_keys: int = Field(128, ge=2, le=4096, description="key pool shared by the mappings")
    pairs_per_mapping: int = Field(8, ge=1, le=1024, description="keys of one mapping")
    num_mappings: int = Field(8, ge=2, le=26, description="distinct mappings in a stream")
    segment_len: int = Field(32, ge=2, le=65536,
                             description="tokens between two switches of the mapping (even)")
    value_vocab: int = Field(16, ge=2, le=4096, description="distinct value tokens")
    return_prob: float = Field(0.5, ge=0.0, le=1.0,
                               description="chance that a segment brings back an earlier "
                                           "mapping instead of a new one")
    schedule: str | None = Field(None, min_length=1, max_length=1024,
                                 description="fixed mapping order, e.g. ABCADB (repeats); "
                                             "overrides return_prob")

    @field_validator("num_mappings")
    @classmethod
    def _keys_suffice(cls, v: int, info: ValidationInfo) -> int:
        k, p = info.data.get("num_keys"), info.data.get("pairs_per_mapping")
        if k is not None and p is not None and v * p > k:
            raise ValueError(f"{v} mappings of {p} pairs need {v * p} keys, more than "
                             f"num_keys ({k})")
        return v

    @field_validator("segment_len")
    @classmethod
    def _segment_holds_mapping(cls, v: int, info: ValidationInfo) -> int:
        if v % 2:
            raise ValueError("must be even (a segment is made of key value pairs)")
        p = info.data.get("pairs_per_mapping")
        if p is not None and v < 2 * p:
            raise ValueError(f"must be at least 2 x pairs_per_mapping ({2 * p}) so that a "
                             "segment shows its whole mapping")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule_letters(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if not v.isascii() or not v.isalpha() or not v.isupper():
            raise ValueError("letters A-Z only, one per segment, e.g. ABCADB")
        m = info.data.get("num_mappings")
        if m is not None and max(ord(c) - 65 for c in v) >= m:
            raise ValueError(f"uses more mappings than num_mappings ({m})")
        first = list(dict.fromkeys(v))
        if first != [chr(65 + i) for i in range(len(first))]:
            raise ValueError("mappings must first appear in order A, B, C, ...")
        return v


@register
class KVStreamTask(BundledTask):
    name = "kv_stream"
    title = "Shifting key→value streams"
    summary = ("A stream whose key→value mapping switches every few tokens and whose old "
               "mappings come back: recall what was seen, after how long, and what returns.")
    Params = KVStreamParams
    metric_name = "recall"

    def _setup(self) -> None:
        p = self.params
        if self.seq_len < 3 * p.segment_len:
            raise TaskConfigError("segment_len", f"seq_len ({self.seq_len}) must hold at least "
                                                 f"three segments of {p.segment_len} tokens (two "
                                                 "mappings and a return)")
        self.vocab_size = p.num_keys + p.value_vocab
        self.n_outputs = self.vocab_size

    def token_label(self, token: int) -> str:
        """``k12`` for key 12, ``v3`` for value token 3."""
        k = self.params.num_keys
        return f"k{token}" if token < k else f"v{token - k}"

    # ---- stream construction --------------------------------------------------------------

    def mappings(self, rng: np.random.Generator, rows: int, count: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Keys and value tokens ``[rows, count, pairs_per_mapping]``: disjoint key sets."""
        p = self.params
        count = p.num_mappings if count is None else count
        n = count * p.pairs_per_mapping
        keys = np.argsort(rng.random((rows, p.num_keys)), axis=1)[:, :n]
        values = rng.integers(0, p.value_vocab, (rows, n)) + p.num_keys
        shape = (rows, count, p.pairs_per_mapping)
        return keys.reshape(shape), values.reshape(shape)

    def schedules(self, rng: np.random.Generator, rows: int, segments: int) -> np.ndarray:
        """The mapping shown by each segment, ``[rows, segments]`` (rules in the module doc)."""
        p = self.params
        if p.schedule is not None:
            order = np.array([ord(c) - 65 for c in p.schedule])
            return np.tile(order[np.arange(segments) % len(order)], (rows, 1))
        u_return, u_pick = rng.random((2, rows, segments))
        out = np.zeros((rows, segments), dtype=np.int64)
        for b in range(rows):
            introduced = 1
            for s in range(1, segments):
                current = out[b, s - 1]
                earlier = [m for m in range(introduced) if m != current]
                can_add = introduced < p.num_mappings
                if earlier and (not can_add or u_return[b, s] < p.return_prob):
                    out[b, s] = earlier[int(u_pick[b, s] * len(earlier))]
                elif can_add:
                    out[b, s] = introduced
                    introduced += 1
                else:
                    out[b, s] = current
        return out

    def streams(self, rng: np.random.Generator, keys: np.ndarray, values: np.ndarray,
                schedule: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token streams of ``length`` for the given mappings and schedules: inputs, targets and
        scored targets (keys seen before in the stream)."""
        p = self.params
        rows, segments = schedule.shape
        per_seg = p.segment_len // 2
        passes = math.ceil(per_seg / p.pairs_per_mapping)
        order = np.argsort(rng.random((rows, segments, passes, p.pairs_per_mapping)), axis=-1)
        order = order.reshape(rows, segments, -1)[:, :, :per_seg]
        b = np.arange(rows)[:, None, None]
        pair_keys = keys[b, schedule[:, :, None], order].reshape(rows, -1)
        pair_values = values[b, schedule[:, :, None], order].reshape(rows, -1)
        return self._tokens(pair_keys, pair_values, length)

    def _tokens(self, pair_keys: np.ndarray, pair_values: np.ndarray, length: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interleave pairs into ``key value`` tokens cut at ``length``; mark repeated keys."""
        rows, n = pair_keys.shape
        inputs = np.empty((rows, 2 * n), dtype=np.int64)
        inputs[:, 0::2], inputs[:, 1::2] = pair_keys, pair_values
        targets = np.full((rows, 2 * n), IGNORE, dtype=np.int64)
        targets[:, 0::2] = pair_values
        seen = pair_index_seen_before(pair_keys)
        scored = np.full((rows, 2 * n), IGNORE, dtype=np.int64)
        scored[:, 0::2] = np.where(seen, pair_values, IGNORE)
        return inputs[:, :length], targets[:, :length], scored[:, :length]

    # ---- the Task contract ----------------------------------------------------------------

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> ScoredBatch:
        self._note_step(step)
        rng = self.rng(step, rank)
        segments = math.ceil(self.seq_len / self.params.segment_len)
        keys, values = self.mappings(rng, batch_size)
        schedule = self.schedules(rng, batch_size, segments)
        inputs, targets, scored = self.streams(rng, keys, values, schedule, self.seq_len)
        return ScoredBatch(long_tensor(inputs), long_tensor(targets), long_tensor(scored))

    def evaluate(self, model, device, step: int | None = None) -> list[EvalRow]:
        rows = [EvalRow(f"mapping {j}", r) for j, r in enumerate(self.forgetting(model, device))]
        recovered = self.return_recall(model, device)
        if recovered is not None:
            rows.append(EvalRow("return", recovered))
        return rows

    def forgetting(self, model, device) -> list[float]:
        """Recall of mapping j when it comes back after mappings j+1 … m−1 (module doc)."""
        p = self.params
        m = min(p.num_mappings, self.seq_len // p.segment_len - 1)
        reps = min(MAX_ROWS, math.ceil(EVAL_PROBES / p.pairs_per_mapping))
        rng = self.eval_rng(1)
        rows = (m - 1) * reps
        keys, values = self.mappings(rng, rows, m)
        returning = np.repeat(np.arange(m - 1), reps)
        schedule = np.concatenate([np.tile(np.arange(m), (rows, 1)), returning[:, None]], 1)
        inputs, targets, scored = self.streams(rng, keys, values, schedule, (m + 1) * p.segment_len)
        first_pass = np.zeros_like(scored, dtype=bool)
        start = m * p.segment_len
        first_pass[:, start:start + 2 * p.pairs_per_mapping] = True
        logits = self.model_logits(model, long_tensor(inputs), long_tensor(targets), device)
        right, count = self._hits(logits, np.where(first_pass, scored, IGNORE))
        return [_ratio(right[returning == j], count[returning == j]) for j in range(m - 1)]

    def return_recall(self, model, device) -> float | None:
        """Recall on the first pass of returning mappings, streams drawn from the schedule."""
        p = self.params
        rows = 8
        rng = self.eval_rng(2)
        segments = math.ceil(self.seq_len / p.segment_len)
        keys, values = self.mappings(rng, rows)
        schedule = self.schedules(rng, rows, segments)
        inputs, targets, scored = self.streams(rng, keys, values, schedule, self.seq_len)
        returns = np.zeros_like(schedule, dtype=bool)
        for s in range(1, segments):
            before = (schedule[:, :s] == schedule[:, s:s + 1]).any(axis=1)
            returns[:, s] = before & (schedule[:, s] != schedule[:, s - 1])
        token_seg = np.arange(self.seq_len) // p.segment_len
        first_pass = (np.arange(self.seq_len) % p.segment_len) < 2 * p.pairs_per_mapping
        keep = returns[:, token_seg] & first_pass[None, :]
        if not (keep & (scored != IGNORE)).any():
            return None
        logits = self.model_logits(model, long_tensor(inputs), long_tensor(targets), device)
        return _ratio(*self._hits(logits, np.where(keep, scored, IGNORE)))

    def delays(self) -> list[int]:
        """The delay grid of :meth:`recall_by_delay` for this ``seq_len`` and key pool."""
        slots = self.seq_len // 2
        out, d = [], 4
        while d // 2 <= self.params.num_keys and 4 * (d // 2) <= 3 * slots:
            out.append(d)
            d *= 2
        return out

    def _facts_per_row(self, h: int) -> int:
        slots, k = self.seq_len // 2, self.params.num_keys
        if 2 * h <= slots:
            return h * min(slots // (2 * h), k // h)
        return max(0, slots - h)

    def delay_streams(self, rng: np.random.Generator, delay: int, rows: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Streams where each tested fact is asked exactly ``delay`` tokens after it was shown
        (layout in the module doc); scored targets mark the questions only."""
        p, h, slots = self.params, delay // 2, self.seq_len // 2
        if 2 * h <= slots:
            blocks = min(slots // (2 * h), p.num_keys // h)
            facts = np.arange(blocks * h).reshape(blocks, h)
            layout = np.concatenate([facts, facts], axis=1).reshape(-1)  # fact shown at each slot
            asked = np.tile(np.r_[np.zeros(h, bool), np.ones(h, bool)], blocks)
        else:
            n = slots - h
            layout = np.r_[np.arange(h), np.arange(n)]
            asked = np.r_[np.zeros(h, bool), np.ones(n, bool)]
        used = int(layout.max()) + 1
        keys = np.argsort(rng.random((rows, p.num_keys)), axis=1)[:, :used]
        values = rng.integers(0, p.value_vocab, (rows, used)) + p.num_keys
        inputs, targets, _ = self._tokens(keys[:, layout], values[:, layout], 2 * len(layout))
        scored = np.full_like(targets, IGNORE)
        question = np.repeat(asked, 2) & (np.arange(2 * len(layout)) % 2 == 0)
        scored[:, question] = targets[:, question]
        return inputs, targets, scored

    def recall_by_delay(self, model, device, silence: Iterable[str] = (),
                        freeze: Iterable[str] = ()) -> dict[int, float]:
        # One model call for the whole grid: each delay's streams are padded at the end to a
        # common length, which cannot change any earlier prediction (the model is causal).
        parts, delays = [], self.delays()
        for d in delays:
            rows = min(MAX_ROWS, math.ceil(EVAL_FACTS / self._facts_per_row(d // 2)))
            parts.append(self.delay_streams(self.eval_rng(3, d), d, rows))
        length = max(x.shape[1] for x, _, _ in parts)
        inputs = np.concatenate([_pad(x, length, self.params.num_keys) for x, _, _ in parts])
        targets = np.concatenate([_pad(y, length, IGNORE) for _, y, _ in parts])
        logits = self.model_logits(model, long_tensor(inputs), long_tensor(targets), device,
                                   silence, freeze)
        out, row = {}, 0
        for d, (x, _, scored) in zip(delays, parts):
            out[d] = _ratio(*self._hits(logits[row:row + len(x)], _pad(scored, length, IGNORE)))
            row += len(x)
        return out

    @staticmethod
    def _hits(logits, scored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: right answers and scored positions."""
        pred = logits.argmax(-1).cpu().numpy()
        mask = scored != IGNORE
        return ((pred == scored) & mask).sum(axis=1), mask.sum(axis=1)


def _pad(a: np.ndarray, length: int, fill: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, length - a.shape[1])), constant_values=fill)


def _ratio(right: np.ndarray, count: np.ndarray) -> float:
    total = int(count.sum())
    return float(right.sum()) / total if total else float("nan")


def pair_index_seen_before(pair_keys: np.ndarray) -> np.ndarray:
    """``[rows, n]`` bool: the key at pair i already appeared at an earlier pair of its row."""
    rows, n = pair_keys.shape
    first = np.full((rows, int(pair_keys.max()) + 1), n)
    r = np.repeat(np.arange(rows), n)
    np.minimum.at(first, (r, pair_keys.reshape(-1)), np.tile(np.arange(n), rows))
    return np.arange(n)[None, :] > first[np.arange(rows)[:, None], pair_keys]
