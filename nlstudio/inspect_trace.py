"""The memory inspector's data: a model run over one sequence, recorded token by token.

    seq = text_sequence(task, "def f(x):\\n")            # byte tasks: text, next byte = target
    seq = example_sequence(project, length=512, index=3)  # any task: a fresh example, its targets
    trace = compute_trace(model, seq, progress=cb, cancel=flag)

For every position t (after the model has read token t) the trace holds: the input, the
model's next-token logits (so the top-k probabilities), the target where there is one and the
loss there, and for every level: its memory at that moment as the live Memory dock shows it
(``nlstudio.probes.level_snapshots``, the same matrix extraction), whether it wrote at t (its
``updates`` count grew) with the write's norm and the write itself, and how much its read-out
on a fixed probe set moved (``level.read``; None for non-parametric levels).

How: the sequence is fed one token per model call with its targets, the state carried from
call to call. Streams do not depend on where they are cut, so the logits are those of one
call over the whole sequence (tests/core/test_inspect_trace.py checks it) and the state after
each call is the exact state at that position. The targets are explicit, so every write a
position completes is committed in its own call: a task example is read as the task's
evaluation reads it (its targets drive the ``task`` writes), a text as the model's own
streaming reads it (the next byte is the target; the last position has none).

Storage is float32 numpy and compact: a level's memory is stored once per distinct value (it
changes only when the level writes), with an index per position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nlstudio.build import build_task
from nlstudio.project import parse_project, project_to_dict

IGNORE = -100
TOP_K = 8               # next-token probabilities kept per position
PROBE_COUNT = 32        # fixed probe inputs of the read-out movement
PROBE_SEED = 1234       # they are the same for every trace of every model
MAX_TRACE_TOKENS = 16384


class TraceCancelled(Exception):
    """Raised by :func:`compute_trace` when its ``cancel`` callable answered True."""


# ---- sequences ------------------------------------------------------------------------------
@dataclass
class TraceInput:
    """What the inspector runs: inputs (token ids ``[T]`` or features ``[T, F]``) and targets
    ``[T]`` (IGNORE where none), with a line saying where they come from."""

    inputs: torch.Tensor
    targets: torch.Tensor
    source: str

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def token_sequence(ids, source: str = "tokens") -> TraceInput:
    """Token ids read as the model's own streaming reads them: the target at each position
    is the next token, none at the last."""
    inputs = torch.as_tensor(list(ids), dtype=torch.long)
    if inputs.numel() == 0:
        raise ValueError(f"{source} is empty")
    if inputs.numel() > MAX_TRACE_TOKENS:
        raise ValueError(f"{source} has {inputs.numel()} tokens; the inspector reads at most "
                         f"{MAX_TRACE_TOKENS}")
    targets = torch.full_like(inputs, IGNORE)
    targets[:-1] = inputs[1:]
    return TraceInput(inputs, targets, source)


def text_sequence(task, text: str | bytes, source: str = "text") -> TraceInput:
    """A byte-level task's text as its UTF-8 bytes (:func:`token_sequence`)."""
    if not getattr(task, "byte_level", False):
        raise ValueError(f"task {task.name!r} does not read text (its tokens are not bytes)")
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if not data:
        raise ValueError("the text is empty")
    return token_sequence(data, source)


def example_sequence(project, length: int | None = None, index: int = 0,
                     base_dir=None) -> TraceInput:
    """A fresh example of the project's task (:meth:`Task.example`) of ``length`` tokens
    (default: the project's ``train.seq_len``), with the task's own targets. A length the task
    cannot fill raises ``ProjectError`` naming the setting."""
    doc = project_to_dict(project)
    if length is not None:
        if not 1 <= int(length) <= MAX_TRACE_TOKENS:
            raise ValueError(f"the example length must be 1-{MAX_TRACE_TOKENS}, got {length}")
        doc["train"] = {**doc["train"], "seq_len": int(length)}
    task = build_task(parse_project(doc), base_dir)
    batch = task.example(int(index))
    n = task.seq_len
    inputs = batch.inputs[0]
    return TraceInput(inputs, batch.targets[0], f"{task.name} example {index} ({n} tokens)")


# ---- the trace ----------------------------------------------------------------------------------
@dataclass
class LevelTrace:
    """One level along the sequence (arrays indexed by position)."""

    level_id: str
    kind: str
    period: int | None
    parametric: bool
    wrote: np.ndarray           # bool [T]: its ``updates`` count grew at t
    write_norm: np.ndarray      # float32 [T]: the norm of the write at t as the level reports it
    readout_move: np.ndarray | None  # float32 [T] (module doc); None: non-parametric
    memories: list[np.ndarray] = field(default_factory=list)   # distinct memory matrices
    memory_index: np.ndarray | None = None   # int32 [T] into memories (-1: none shown)
    writes: list[np.ndarray] = field(default_factory=list)     # the writes made
    write_index: np.ndarray | None = None    # int32 [T] into writes (-1: no write at t)
    note: str = ""              # why something is missing (e.g. read() not implemented)
    _positions: np.ndarray | None = field(default=None, repr=False, compare=False)

    def memory_at(self, t: int) -> np.ndarray | None:
        """The memory after token ``t`` as the Memory dock shows it. A level whose probe is
        one row per query (attention: the weights of the call's queries over its last keys)
        recorded one row per position; they are assembled into the map of the last queries
        over the last keys, as the dock shows it after a call that ends at ``t``."""
        i = int(self.memory_index[t])
        if i < 0:
            return None
        return self._query_map(t) if self.row_memory else self.memories[i]

    @property
    def row_memory(self) -> bool:
        return bool(self.memories) and all(m.shape[0] == 1 for m in self.memories)

    def _query_map(self, t: int) -> np.ndarray:
        """Rows ``s`` = the last W queries, columns = keys ``t − W + 1 … t`` (W: the width of
        the row recorded at ``t``); row ``s`` covered the keys ending at ``s``."""
        width = self.memories[int(self.memory_index[t])].shape[1]
        out = np.zeros((width, width), np.float32)
        for r, s in enumerate(range(t - width + 1, t + 1)):
            i = int(self.memory_index[s]) if s >= 0 else -1
            if i < 0:
                continue
            row = self.memories[i][0]
            first_key = s - row.shape[0] + 1     # the key of the row's first column
            lo = max(first_key, t - width + 1)
            out[r, lo - (t - width + 1):s - (t - width + 1) + 1] = row[lo - first_key:]
        return out

    def write_at(self, t: int) -> np.ndarray | None:
        i = int(self.write_index[t])
        return None if i < 0 else self.writes[i]

    @property
    def write_positions(self) -> np.ndarray:
        if self._positions is None:
            self._positions = np.flatnonzero(self.wrote)
        return self._positions

    def last_write(self, t: int) -> int | None:
        """The position of the latest write at or before ``t`` (None: none yet)."""
        k = int(np.searchsorted(self.write_positions, t, side="right"))
        return None if k == 0 else int(self.write_positions[k - 1])


@dataclass
class Trace:
    """A model over one sequence, position by position (module docstring)."""

    inputs: np.ndarray          # int64 [T] token ids, or float32 [T, F] features
    targets: np.ndarray         # int64 [T], IGNORE where none
    logits: np.ndarray          # float32 [T, n_outputs]: the prediction made after reading t
    loss: np.ndarray            # float32 [T]: cross-entropy (nats) at t, NaN without target
    top_ids: np.ndarray         # int32 [T, k], most likely first
    top_probs: np.ndarray       # float32 [T, k]
    levels: dict[str, LevelTrace]   # in model order
    source: str = ""
    labels: list[str] | None = None  # a printable name per token id (None: feature inputs)
    byte_level: bool = False         # token ids are bytes of UTF-8 text

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def token_inputs(self) -> bool:
        return self.inputs.ndim == 1

    def label(self, token: int) -> str:
        if self.labels is None or not 0 <= int(token) < len(self.labels):
            return str(int(token))
        return self.labels[int(token)]

    def input_label(self, t: int) -> str:
        if self.token_inputs:
            return self.label(int(self.inputs[t]))
        return f"features #{t}"

    def target_label(self, t: int) -> str | None:
        y = int(self.targets[t])
        return None if y == IGNORE else self.label(y)

    def csv_table(self) -> tuple[list[str], list[list]]:
        """One row per position: input, target, loss, the most likely next token and its
        probability, and per level whether it wrote, the write's norm and the read-out's
        movement (empty where not measured)."""
        ids = list(self.levels)
        header = ["position", "input", "target", "loss", "top1", "p_top1"]
        for lid in ids:
            header += [f"{lid}.wrote", f"{lid}.write_norm", f"{lid}.readout_move"]
        rows = []
        for t in range(len(self)):
            loss = float(self.loss[t])
            row = [t, self.input_label(t), self.target_label(t) or "",
                   None if math.isnan(loss) else loss, self.label(int(self.top_ids[t, 0])),
                   float(self.top_probs[t, 0])]
            for lid in ids:
                lv = self.levels[lid]
                move = None if lv.readout_move is None else float(lv.readout_move[t])
                row += [int(lv.wrote[t]), float(lv.write_norm[t]), move]
            rows.append(row)
        return header, rows


def token_labels(task) -> list[str] | None:
    """``task.token_label`` of every token id (None for feature inputs)."""
    if task.vocab_size is None:
        return None
    return [task.token_label(i) for i in range(task.vocab_size)]


def probe_inputs(model, count: int = PROBE_COUNT, seed: int = PROBE_SEED
                 ) -> dict[str, torch.Tensor]:
    """The fixed probe set of each level, in the level's input space: Gaussian vectors (one
    seed for every model) through the level's own pre-norm, ``[1, count, d_model]``."""
    p = model.final_norm.weight
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(1, count, model.d_model, generator=g).to(p.device, p.dtype)
    with torch.no_grad():
        return {lid: model.norms[lid](raw) for lid in model.order}


class Readouts:
    """Each level's read-out on the fixed probes (``level.read``) for states of ``batch``
    sequences: ``[batch, count, d_model]`` float32, None for a non-parametric level (and for
    a kind whose ``read`` is not implemented: ``notes`` says why). Shared by the inspector's
    read-out movement and the content rate of ``nlstudio.probes``."""

    def __init__(self, model, batch: int = 1, probes: dict[str, torch.Tensor] | None = None):
        probes = probe_inputs(model) if probes is None else probes
        self.model = model
        self.probes = {lid: p.expand(batch, *p.shape[1:]) for lid, p in probes.items()}
        self.notes: dict[str, str] = {}

    def read(self, lid: str, level_state) -> torch.Tensor | None:
        level = self.model.levels[lid]
        if lid in self.notes or not level.info.parametric:
            return None
        try:
            out = level.read(level_state, self.probes[lid])
        except NotImplementedError as exc:
            self.notes[lid] = f"read-out not measured: {exc}"
            return None
        return None if out is None else out.detach().float()


class _Readout(Readouts):
    """Per level: the read-out on the probes after the previous position, and its movement
    ``‖R_t − R_{t−1}‖ / max(‖R_t‖, ‖R_{t−1}‖)`` (0 when the memory did not change; at most 2;
    1 when it starts from an empty memory)."""

    def __init__(self, model, probes: dict[str, torch.Tensor]):
        super().__init__(model, 1, probes)
        self.previous: dict[str, torch.Tensor | None] = {}

    def start(self, states: dict) -> None:
        self.previous = {lid: self.read(lid, states[lid]) for lid in self.model.order}

    def move(self, lid: str, level_state) -> float | None:
        before = self.previous.get(lid)
        now = self.read(lid, level_state)
        self.previous[lid] = now
        if before is None or now is None:
            return None
        scale = max(float(now.norm()), float(before.norm()))
        return 0.0 if scale == 0.0 else float((now - before).norm()) / scale


def compute_trace(model, sequence: TraceInput, *, labels: list[str] | None = None,
                  byte_level: bool = False, top_k: int = TOP_K, freeze: tuple[str, ...] = (),
                  progress: Callable[[int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> Trace:
    """Runs ``model`` over ``sequence`` one token per call (module docstring). ``freeze``:
    level ids whose in-context writes stop (the model's ``freeze``). ``progress(done, total)``
    is called after every position; ``cancel()`` returning True stops the work with
    :class:`TraceCancelled`. The model is put in eval mode; its parameters do not change."""
    from nlstudio.probes import level_snapshots  # lazy: a cycle (probes imports Readouts)

    T = len(sequence)
    if T < 1:
        raise ValueError("the sequence is empty")
    if T > MAX_TRACE_TOKENS:
        raise ValueError(f"the sequence has {T} tokens; the inspector reads at most "
                         f"{MAX_TRACE_TOKENS}")
    model.eval()
    p = model.final_norm.weight
    inputs = sequence.inputs.to(p.device)
    inputs = inputs.to(p.dtype) if inputs.is_floating_point() else inputs
    targets = sequence.targets.to(p.device)
    order = list(model.order)
    specs = {lid: model.levels[lid].spec for lid in order}
    k = min(top_k, model.n_outputs)

    logits_out = np.empty((T, model.n_outputs), np.float32)
    wrote = {lid: np.zeros(T, bool) for lid in order}
    norms = {lid: np.zeros(T, np.float32) for lid in order}
    moves = {lid: np.zeros(T, np.float32) for lid in order}
    measured = {lid: False for lid in order}
    store = {lid: _Distinct(T) for lid in order}
    write_store = {lid: _Distinct(T) for lid in order}

    with torch.no_grad():
        state = model.init_state(1)
        readout = _Readout(model, probe_inputs(model))
        readout.start(state["levels"])
        updates = {lid: 0 for lid in order}
        for t in range(T):
            if cancel is not None and cancel():
                raise TraceCancelled(f"stopped at position {t} of {T}")
            logits, state = model(inputs[None, t:t + 1], state, targets=targets[None, t:t + 1],
                                  freeze=freeze)
            logits_out[t] = logits[0, -1].float().cpu().numpy()
            snaps = level_snapshots(model, state, specs)
            for lid in order:
                snap = snaps[lid]
                if snap.updates > updates[lid]:
                    wrote[lid][t] = True
                    write_store[lid].put(t, snap.write)
                updates[lid] = snap.updates
                if snap.write_norms is not None and snap.write_norms.size:
                    norms[lid][t] = snap.write_norms[-1]
                store[lid].put(t, snap.memory)
                move = readout.move(lid, state["levels"][lid])
                if move is not None:
                    moves[lid][t] = move
                    measured[lid] = True
            if progress is not None:
                progress(t + 1, T)

    logits_t = torch.from_numpy(logits_out)
    y = targets.cpu()
    loss = torch.full((T,), float("nan"))
    has = y != IGNORE
    if bool(has.any()):
        loss[has] = F.cross_entropy(logits_t[has], y[has], reduction="none")
    probs = torch.softmax(logits_t, dim=-1)
    top = torch.topk(probs, k, dim=-1)
    levels = {}
    for lid in order:
        level = model.levels[lid]
        levels[lid] = LevelTrace(
            level_id=lid, kind=level.info.name, period=level.period,
            parametric=bool(level.info.parametric), wrote=wrote[lid], write_norm=norms[lid],
            readout_move=moves[lid] if measured[lid] else None,
            memories=store[lid].items, memory_index=store[lid].index,
            writes=write_store[lid].items, write_index=write_store[lid].index,
            note=readout.notes.get(lid, ""))
    return Trace(inputs=sequence.inputs.cpu().numpy(), targets=y.numpy().astype(np.int64),
                 logits=logits_out, loss=loss.numpy().astype(np.float32),
                 top_ids=top.indices.numpy().astype(np.int32),
                 top_probs=top.values.numpy().astype(np.float32), levels=levels,
                 source=sequence.source, labels=labels, byte_level=byte_level)


class _Distinct:
    """Matrices along the positions, each distinct value stored once: ``items`` and an int32
    index per position (-1 where there is none)."""

    def __init__(self, length: int):
        self.items: list[np.ndarray] = []
        self.index = np.full(length, -1, np.int32)

    def put(self, t: int, matrix: np.ndarray | None) -> None:
        if matrix is None:
            return
        if not (self.items and self.items[-1].shape == matrix.shape
                and np.array_equal(self.items[-1], matrix)):
            self.items.append(np.ascontiguousarray(matrix, dtype=np.float32))
        self.index[t] = len(self.items) - 1


__all__ = ["TraceInput", "token_sequence", "text_sequence", "example_sequence", "LevelTrace", "Trace",
           "compute_trace", "token_labels", "probe_inputs", "Readouts", "TraceCancelled", "IGNORE",
           "TOP_K", "MAX_TRACE_TOKENS"]
