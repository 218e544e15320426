"""Probes: what every level stores, how often it changes, what it forgets.

Computed here, once, for every consumer (the GUI's plots, the CLI, exports, tests):

1. memory matrices: each level's fast weights and latest write (``LevelSnapshot``);
2. spectrum: each level at its designed update frequency (1/C: ∞ for attention, 0 for a
   frozen level), its measured *content* rate (below), and its write *schedule* (the
   per-token write norms and their power spectrum, which peaks at 1/C for a level written
   every C tokens whatever it writes: it says when a level writes, not what changes);
3. forgetting curves: the metric of every earlier sub-task against training step (eval.csv);
4. per-level ablations (delay.csv): recall by delay since a fact was seen, with each level in
   turn *silenced* (its output zeroed: what the rest of the model depends on) or *frozen* (its
   in-context writes stopped, its output kept: what the level stores; parametric levels only).
   Only the freeze ablation answers "which level holds this memory": silencing a level also
   removes everything later levels compute from it.

Content rate: how fast what a level returns changes
---------------------------------------------------
A held-out stream (``task.example``, a few sequences) is fed one token per call (streams are
cut-invariant, so the state after each call is the exact state at that position); after every
token t each parametric level is read on a fixed set of probe inputs X (32 Gaussian vectors
through the level's own pre-norm, ``inspect_trace.probe_inputs``) with ``level.read``, which
reads the memory without writing and without context:

    R_t = read(S_t, X)            what the level returns after token t   [probes × d_model]
    R_∅ = read(S_fresh, X)        what its initial memory returns (learned, not in context)
    C_t = R_t − R_∅               its in-context content

The drift after a lag Δ, summed over positions t (and streams), energy-weighted:

    D(Δ) = Σ_t ‖C_{t+Δ} − C_t‖² / Σ_t (‖C_t‖² + ‖C_{t+Δ}‖²)          (0 when there is no content)

over the positions t from the level's first write on (before it there is no content to
replace) with t + Δ in the stream.

If ``C_{t+Δ} = a·C_t + N`` with ``N ⟂ C_t`` and equal energy, ``D = 1 − a``: the share of the
content replaced (0: unchanged; 1: replaced by unrelated content, or erased; up to 2 for a
sign flip). Energy weighting keeps the first tokens, where there is hardly any content yet,
from dominating. The half-replacement lag τ½ is where D first reaches ½ (linear interpolation
between integer lags, D(0) = 0); the content turnover time is ``τ = 2·τ½`` and the measured
content frequency ``ν = 1/τ`` (per token). Why the factor 2: a level that replaces all its
content at every write, every C tokens, has ``D(Δ) = Δ/C`` for Δ ≤ C (the share of positions
t with a write in (t, t+Δ]), so τ½ = C/2 and ν = 1/C: a wholesale overwrite measures exactly
its designed frequency. Writes that replace only part of the content at the same times
measure ν < 1/C (it takes several writes to turn the content over); a memory that decays by
α per token has ``D = 1 − α^Δ`` and ``τ = 2 ln 2 / ln(1/α)``, 1.39× its e-folding time.

Reported values: ν = 0 when the content never changes (D ≤ ``NEVER_CHANGES`` at every lag: a
frozen level, or writes that change nothing); an upper bound ``ν < 1/(2·Δ_max)`` (``bound``)
when D never reaches ½ within the longest lag measured (Δ_max = half the stream); ν = ∞ for a
non-parametric level (attention writes nothing: it re-reads its context at every token, so no
series is made up for it). The schedule (writes per token on the same stream) is reported
beside it and never mixed in. Nulls (tests/core/test_content_rate.py): frozen writes measure
0; random write amplitudes at the same times change ν while the schedule's spectrum stays the
same; a wholesale overwrite turns over faster than small additive writes at the same period.

One file on purpose: every measurement the views show sits beside its definition.

Cost: the stream is cut at every position where some level can write (the gcd of the writing
levels' periods; 1 as soon as one level writes every token), since between writes no memory
changes, and a level is read again only when its ``updates`` count grew.
"""
from __future__ import annotations

import math
from collections import defaultdict
from functools import reduce
from typing import Iterable

import numpy as np
import torch

from nlstudio.events import ContentRate, LevelSnapshot, Snapshot
from nlstudio.inspect_trace import Readouts
from nlstudio.models.registry import kind_info
from nlstudio.project import project_to_dict
from nlstudio.runs import load_run, load_weights_into

MAX_MATRIX_SIDE = 128  # larger memories are shown by their top-left block

# ---- ablations -------------------------------------------------------------------------------
#: The two per-level ablations of the recall-by-delay probe, and what each one measures.
ABLATION_KINDS = ("freeze", "silence")
ABLATION_MEANING = {
    "freeze": "writes stopped, output kept: what each level stores",
    "silence": "output zeroed: what the model depends on",
}
ABLATION_VERB = {"freeze": "frozen", "silence": "silenced"}

# ---- content rate (module docstring) ---------------------------------------------------------
CONTENT_SEQUENCES = 4  # held-out streams measured at once (one batch)
CONTENT_MAX_TOKENS = 256  # tokens per stream (the task's seq_len when shorter)
HALF = 0.5  # D(τ½) = ½: half of the content replaced
NEVER_CHANGES = 1e-9  # D at or below this at every lag: the content never changed


def _parametric(kind: str) -> bool:
    """Whether a level kind writes a memory (the registry says); an unknown kind counts as
    parametric."""
    try:
        return kind_info(kind).parametric
    except KeyError:
        return True


def designed_frequency(kind: str, period: int | None) -> float:
    """Updates per token: ∞ for a non-parametric level (attention: its context is re-read at
    every token), 1/C, 0 if frozen."""
    if not _parametric(kind):
        return math.inf
    if period is None:
        return 0.0
    return 1.0 / float(period)


def power_spectrum(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectrum of a per-token series (mean removed), frequencies in
    cycles/token. A level written every C tokens shows peaks at k/C."""
    x = np.asarray(series, dtype=np.float64).ravel()
    if x.size < 4 or not np.all(np.isfinite(x)):
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x)) ** 2 / x.size
    freqs = np.fft.rfftfreq(x.size, d=1.0)
    return freqs[1:].astype(np.float32), spec[1:].astype(np.float32)


def _matrix(t) -> np.ndarray | None:
    if t is None:
        return None
    a = t.detach().to("cpu", dtype=torch.float32).numpy()
    if a.ndim == 1:
        a = a[None, :]
    elif a.ndim > 2:
        a = a.reshape(-1, a.shape[-1])
    return np.ascontiguousarray(a[:MAX_MATRIX_SIDE, :MAX_MATRIX_SIDE])


def level_snapshots(model, state, level_specs: dict[str, dict]) -> dict[str, LevelSnapshot]:
    """Detached CPU float32 copies of what each level holds after the last forward."""
    probes = model.probe(state)
    out: dict[str, LevelSnapshot] = {}
    for lid, probe in probes.items():
        spec = level_specs.get(lid, {})
        kind = spec.get("kind", "")
        period = spec.get("period")
        norms = None
        spectrum = None
        if probe.write_norms is not None:
            norms = probe.write_norms.detach().to("cpu").float().numpy().ravel()
            spectrum = power_spectrum(norms)
        out[lid] = LevelSnapshot(
            kind=kind, period=period, frequency=designed_frequency(kind, period),
            memory=_matrix(probe.memory), write=_matrix(probe.write), write_norms=norms,
            updates=int(probe.updates), spectrum=spectrum)
    return out


def forgetting_curves(eval_rows: Iterable[tuple[int, str, float]]
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{task: (steps, metric)}`` from eval.csv rows, each sorted by step."""
    acc: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for step, task, metric in eval_rows:
        acc[task].append((int(step), float(metric)))
    return {task: (np.array([s for s, _ in sorted(v)], dtype=np.float64),
                   np.array([m for _, m in sorted(v)], dtype=np.float64))
            for task, v in acc.items()}


def delay_table(delay_rows: Iterable[tuple], step: int | None = None,
                ablation: str = "silence") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Recall by delay at ``step`` (default: the latest evaluation): ``(rows, delays, R)``
    where rows[0] == "none" is the full model and ``R[i, j]`` the recall with level
    ``rows[i]`` ablated (``ablation``: "silence" or "freeze") at delay ``delays[j]``.
    Rows are ``nlstudio.runs.DelayRow`` (``step, level, delay, recall, ablation``); plain
    4-tuples count as silence rows."""
    rows = [r for r in delay_rows
            if (r[4] if len(r) > 4 else ("none" if r[1] == "none" else "silence"))
            in ("none", ablation)]
    if not rows:
        return [], np.zeros(0), np.zeros((0, 0))
    if step is None:
        step = max(r[0] for r in rows)
    rows = [r for r in rows if r[0] == step]
    names = sorted({r[1] for r in rows}, key=lambda n: (n != "none", n))
    delays = np.array(sorted({r[2] for r in rows}), dtype=np.int64)
    table = np.full((len(names), len(delays)), np.nan)
    index = {d: j for j, d in enumerate(delays.tolist())}
    for r in rows:
        table[names.index(r[1]), index[r[2]]] = r[3]
    return names, delays, table


def ablation_drop(names: list[str], table: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Recall lost when each level is ablated (full model minus ablated), per delay: under
    freeze, large where that level's writes hold the memory."""
    if not names or names[0] != "none":
        return [], np.zeros((0, table.shape[1] if table.ndim == 2 else 0))
    return names[1:], table[0][None, :] - table[1:]


def ablations_measured(delay_rows: Iterable[tuple]) -> set[str]:
    """The ablation kinds delay.csv rows hold ("silence" only in runs written before freeze
    was measured)."""
    return {(r[4] if len(r) > 4 else "silence") for r in delay_rows
            if r[1] != "none"} & set(ABLATION_KINDS)


def recall_by_delay_ablations(task, model, device, level_ids: Iterable[str],
                              kinds: Iterable[str] = ABLATION_KINDS
                              ) -> tuple[tuple[int, ...], dict[str, dict[str, tuple[float, ...]]]]:
    """Recall by delay for the full model and with each level ablated in turn, per kind:
    ``(delays, {"silence": {"": full, level: recall, ...}, "freeze": {"": full, ...}})``.
    Freeze covers the parametric levels only (attention writes nothing to stop); ``()`` and
    ``{}`` for a task without delays."""
    full = task.recall_by_delay(model, device)
    if not full:
        return (), {}
    delays = tuple(sorted(full))
    base = tuple(float(full[d]) for d in delays)
    out: dict[str, dict[str, tuple[float, ...]]] = {}
    for ablation in kinds:
        if ablation not in ABLATION_KINDS:
            raise ValueError(f"unknown ablation {ablation!r}; one of {', '.join(ABLATION_KINDS)}")
        table = {"": base}
        for lid in level_ids:
            if ablation == "freeze" and not model.levels[lid].info.parametric:
                continue  # only a level that writes can have its writes stopped
            recall = task.recall_by_delay(model, device, **{ablation: (lid,)})
            table[lid] = tuple(float(recall[d]) for d in delays)
        out[ablation] = table
    return delays, out


def recall_by_delay_with_ablation(task, model, device, level_ids: Iterable[str]
                                  ) -> tuple[tuple[int, ...], dict[str, tuple[float, ...]]]:
    """Recall by delay for the full model ("") and with each level silenced in turn."""
    delays, tables = recall_by_delay_ablations(task, model, device, level_ids, ("silence",))
    return delays, tables.get("silence", {})


# ---- content rate ------------------------------------------------------------------------------
def drift_sums(contents: np.ndarray, index: np.ndarray, max_lag: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """The sums behind D(Δ) for Δ = 1 … ``max_lag`` (module docstring): ``(replaced,
    energy)``, float64. ``contents [n, B, F]``: the distinct contents C (flattened per
    stream), ``contents[0]`` the empty one (before the first write); ``index [T]``: which of
    them holds after each token (the same for every stream: writes happen at the same
    positions in all of them). Reference positions t start at the first write: before it
    there is no content to replace."""
    x = np.asarray(contents, dtype=np.float64)
    n = x.shape[0]
    index = np.asarray(index, dtype=np.int64)
    gram = np.zeros((n, n))
    for b in range(x.shape[1]):  # Σ_b of each stream's Gram matrix
        gram += x[:, b] @ x[:, b].T
    full = gram[np.ix_(index, index)]
    sq = np.diagonal(full)
    written = index > 0
    replaced, energy = np.zeros(max_lag), np.zeros(max_lag)
    for lag in range(1, min(max_lag, len(index) - 1) + 1):
        keep = written[:-lag]
        pairs = (sq[:-lag] + sq[lag:])[keep]
        energy[lag - 1] = pairs.sum()
        cross = np.diagonal(full, lag)[keep]
        replaced[lag - 1] = max(0.0, float((pairs - 2.0 * cross).sum()))
    return replaced, energy


def half_lag(lags: np.ndarray, drift: np.ndarray, half: float = HALF) -> float | None:
    """τ½: the first lag where the drift reaches ``half``, interpolated linearly between
    integer lags (D(0) = 0); None when it never does."""
    lags, drift = np.asarray(lags, dtype=np.float64), np.asarray(drift, dtype=np.float64)
    above = np.flatnonzero(drift >= half)
    if not above.size:
        return None
    k = int(above[0])
    lag0, d0 = (0.0, 0.0) if k == 0 else (lags[k - 1], drift[k - 1])
    return float(lag0 + (half - d0) / (drift[k] - d0) * (lags[k] - lag0))


def content_rate(kind: str, period: int | None, lags, replaced, energy, *,
                 writes_per_token: float, tokens: int, sequences: int) -> ContentRate:
    """A parametric level's :class:`ContentRate` from its drift sums (module docstring)."""
    lags = np.asarray(lags, dtype=np.int64)
    replaced = np.asarray(replaced, dtype=np.float64)
    energy = np.asarray(energy, dtype=np.float64)
    drift = ContentRate.drift_of(replaced, energy)
    tau_half = half_lag(lags, drift)
    if tau_half is not None:
        turnover, bound = 2.0 * tau_half, False
        frequency = 1.0 / turnover if turnover > 0 else math.inf
    elif not drift.size or float(drift.max()) <= NEVER_CHANGES:
        turnover, frequency, bound = math.inf, 0.0, False
    else:  # changing, but not half replaced within the longest lag
        turnover, bound = math.inf, True
        frequency = 1.0 / (2.0 * float(lags[-1]))
    return ContentRate(kind=kind, period=period, designed=designed_frequency(kind, period),
                       frequency=frequency, turnover=turnover, bound=bound, lags=lags,
                       replaced=replaced, energy=energy,
                       writes_per_token=float(writes_per_token), tokens=int(tokens),
                       sequences=int(sequences))


def rereading_rate(kind: str, period: int | None, tokens: int, sequences: int,
                   writes_per_token: float, note: str = "") -> ContentRate:
    """A level with no memory to read (attention: ν = ∞, it re-reads its context), or, with
    ``note``, a parametric level whose read-out could not be measured (ν unknown: NaN)."""
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
    return ContentRate(kind=kind, period=period, designed=designed_frequency(kind, period),
                       frequency=math.nan if note else math.inf, turnover=math.nan,
                       bound=False, lags=empty_i, replaced=empty_f, energy=empty_f,
                       writes_per_token=float(writes_per_token), tokens=int(tokens),
                       sequences=int(sequences), note=note)


def pool_content(rates: Iterable[ContentRate]) -> ContentRate | None:
    """One level's rates measured on several batches of streams, pooled: the drift sums add
    (the same energy-weighted D as one measurement over all the streams)."""
    rates = [r for r in rates if r is not None]
    if not rates:
        return None
    first = rates[0]
    if len(rates) == 1 or not len(first.lags) or any(
            not np.array_equal(r.lags, first.lags) for r in rates):
        return rates[-1]
    sequences = sum(r.sequences for r in rates)
    return content_rate(
        first.kind, first.period, first.lags, sum(r.replaced for r in rates),
        sum(r.energy for r in rates), tokens=first.tokens, sequences=sequences,
        writes_per_token=sum(r.writes_per_token * r.sequences for r in rates) / sequences)


def write_grid(model, tokens: int) -> int:
    """Tokens per call that still give every level's state at every position where it can
    change: the gcd of the writing levels' periods (1 if one writes every token; the whole
    stream if none writes)."""
    periods = [int(model.levels[lid].period) for lid in model.order
               if model.levels[lid].info.parametric and model.levels[lid].period is not None]
    return max(1, reduce(math.gcd, periods)) if periods else max(1, int(tokens))


def content_stream(task, sequences: int = CONTENT_SEQUENCES,
                   max_tokens: int = CONTENT_MAX_TOKENS, first: int = 0):
    """``(inputs, targets)`` of held-out streams: the task's examples ``first …
    first + sequences − 1`` (never trained on; the same at every evaluation), cut to
    ``max_tokens``."""
    examples = [task.example(first + i) for i in range(int(sequences))]
    inputs = torch.cat([e.inputs for e in examples])[:, :max_tokens]
    targets = torch.cat([e.targets for e in examples])[:, :max_tokens]
    return inputs, targets


def measure_content(model, inputs, targets, freeze: Iterable[str] = (),
                    grid: int | None = None) -> dict[str, ContentRate]:
    """Every level's :class:`ContentRate` on the streams ``inputs [B, T]`` (or features
    ``[B, T, F]``) with their ``targets [B, T]``, in model order (module docstring).
    ``freeze``: levels whose writes stop (the model's freeze ablation); ``grid``: tokens per
    call (default :func:`write_grid`; 1 reads after every token). The model is put in eval
    mode; its parameters do not change."""
    model.eval()
    p = model.final_norm.weight
    inputs = inputs.to(p.device)
    inputs = inputs.to(p.dtype) if inputs.is_floating_point() else inputs
    targets = targets.to(p.device)
    batch, tokens = int(inputs.shape[0]), int(inputs.shape[1])
    order = list(model.order)
    grid = write_grid(model, tokens) if grid is None else max(1, int(grid))
    freeze = tuple(freeze)
    with torch.no_grad():
        state = model.init_state(batch)
        readouts = Readouts(model, batch)
        initial = {lid: readouts.read(lid, state["levels"][lid]) for lid in order}
        measured = [lid for lid in order if initial[lid] is not None]
        contents = {lid: [np.zeros((batch, initial[lid][0].numel()))] for lid in measured}
        index = {lid: np.zeros(tokens, np.int64) for lid in measured}
        updates = {lid: int(state["levels"][lid]["updates"]) for lid in order}
        start_updates = dict(updates)
        for start in range(0, tokens, grid):
            end = min(start + grid, tokens)
            _, state = model(inputs[:, start:end], state, targets=targets[:, start:end],
                             freeze=freeze)
            for lid in measured:
                now = int(state["levels"][lid]["updates"])
                if now != updates[lid]:  # only a write changes the memory
                    out = readouts.read(lid, state["levels"][lid]) - initial[lid]
                    contents[lid].append(out.reshape(batch, -1).double().cpu().numpy())
                index[lid][start:end - 1] = index[lid][start - 1] if start else 0
                index[lid][end - 1] = len(contents[lid]) - 1
            updates = {lid: int(state["levels"][lid]["updates"]) for lid in order}
    max_lag = max(1, tokens // 2)
    lags = np.arange(1, max_lag + 1)
    out: dict[str, ContentRate] = {}
    for lid in order:
        level = model.levels[lid]
        kind, period = level.info.name, level.period
        schedule = (updates[lid] - start_updates[lid]) / tokens  # writes per token
        if lid not in measured:
            out[lid] = rereading_rate(kind, period, tokens, batch, schedule,
                                      readouts.notes.get(lid, ""))
            continue
        replaced, energy = drift_sums(np.stack(contents[lid]), index[lid], max_lag)
        out[lid] = content_rate(kind, period, lags, replaced, energy, writes_per_token=schedule,
                                tokens=tokens, sequences=batch)
    return out


def content_rates(model, task, device=None, sequences: int = CONTENT_SEQUENCES,
                  max_tokens: int = CONTENT_MAX_TOKENS, first: int = 0
                  ) -> dict[str, ContentRate]:
    """:func:`measure_content` on the task's held-out streams (:func:`content_stream`)."""
    inputs, targets = content_stream(task, sequences, max_tokens, first)
    if device is not None:
        inputs, targets = inputs.to(device), targets.to(device)
    return measure_content(model, inputs, targets)


def frequency_text(freq: float | None, bound: bool = False) -> str:
    """'∞', '0', '1/16', '< 1/128' or '0.3' for a frequency per token ('–': unknown)."""
    if freq is None or (isinstance(freq, float) and math.isnan(freq)):
        return "–"
    if math.isinf(freq):
        return "∞"
    if freq <= 0:
        return "0"
    prefix = "< " if bound else ""
    inverse = 1.0 / freq
    if inverse >= 1.5 or abs(inverse - round(inverse)) < 1e-6:
        return prefix + ("1" if round(inverse) == 1 else f"1/{round(inverse):d}")
    return prefix + f"{freq:.3g}"


def content_text(rate: ContentRate) -> str:
    """The measured content frequency in words: '∞ (re-reads its context)', '0 (never
    changes)', '1/37', '< 1/256' (not half replaced within the stream)."""
    if rate.note:
        return "not measured"
    if rate.rereads:
        return "∞ (re-reads its context)"
    if rate.frequency <= 0:
        return "0 (never changes)"
    return frequency_text(rate.frequency, rate.bound)


def snapshot_from_run(run_dir, batch_size: int = 8):
    """The memory snapshot of a saved run: its model rebuilt from ``project.nlproj`` (after
    the resource check: a model too large for this machine is refused before it is built)
    with the weights of its checkpoint, run on one training batch at the saved step (the same
    probes the trainer publishes live), with its content rates (what an evaluation at that
    step measures)."""
    run = load_run(run_dir)
    model, task = run.build_model()
    step = load_weights_into(model, run.weights_file)
    step = step if step is not None else (run.checkpoint_step or 0)
    batch = task.batch(max(step - 1, 0), max(1, min(batch_size, run.project.train.batch_size)))
    model.train()
    with torch.no_grad():
        _, state = model(batch.inputs, None, targets=batch.targets)
    specs = {str(lv["id"]): lv for lv in project_to_dict(run.project)["model"]["levels"]}
    snaps = level_snapshots(model, state, specs)
    return Snapshot(f"run:{run.path}", step, snaps, content_rates(model, task))
