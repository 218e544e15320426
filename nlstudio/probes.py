"""Probes: what every level stores, how often it changes, what it forgets.

Computed here, once, for every consumer (the GUI's plots, the CLI, exports, tests):

1. memory matrices: each level's fast weights and latest write (``LevelSnapshot``);
2. spectrum: each level at its designed update frequency (1/C), and the measured power
   spectrum of its per-token write-norm series;
3. forgetting curves: the metric of every earlier sub-task against training step (eval.csv);
4. per-level ablation: recall by delay since a fact was seen, with each level silenced in
   turn (delay.csv): which level holds a memory at which delay.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

import numpy as np

from nlstudio.events import LevelSnapshot

MAX_MATRIX_SIDE = 128  # larger memories are shown by their top-left block


def designed_frequency(kind: str, period: int | None) -> float:
    """Updates per token: ∞ for attention (context re-read every token), 1/C, 0 if frozen."""
    if kind == "attention":
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
    a = t.detach().to("cpu", dtype=__import__("torch").float32).numpy()
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
    """Recall lost when each level is silenced (full model minus silenced), per delay:
    large where that level holds the memory."""
    if not names or names[0] != "none":
        return [], np.zeros((0, table.shape[1] if table.ndim == 2 else 0))
    return names[1:], table[0][None, :] - table[1:]


def recall_by_delay_with_ablation(task, model, device, level_ids: Iterable[str]
                                  ) -> tuple[tuple[int, ...], dict[str, tuple[float, ...]]]:
    """Recall by delay for the full model ("") and with each level silenced in turn."""
    full = task.recall_by_delay(model, device)
    if not full:
        return (), {}
    delays = tuple(sorted(full))
    recall = {"": tuple(float(full[d]) for d in delays)}
    for lid in level_ids:
        silenced = task.recall_by_delay(model, device, silence=(lid,))
        recall[lid] = tuple(float(silenced[d]) for d in delays)
    return delays, recall


def snapshot_from_run(run_dir, batch_size: int = 8):
    """The memory snapshot of a saved run: its model rebuilt from ``project.nlproj`` (after
    the resource check: a model too large for this machine is refused before it is built)
    with the weights of its checkpoint, run on one training batch at the saved step (the same
    probes the trainer publishes live)."""
    import torch

    from nlstudio.events import Snapshot
    from nlstudio.project import project_to_dict
    from nlstudio.runs import load_run, load_weights_into

    run = load_run(run_dir)
    model, task = run.build_model()
    step = load_weights_into(model, run.weights_file)
    step = step if step is not None else (run.checkpoint_step or 0)
    batch = task.batch(max(step - 1, 0), max(1, min(batch_size, run.project.train.batch_size)))
    model.train()
    with torch.no_grad():
        _, state = model(batch.inputs, None, targets=batch.targets)
    specs = {str(lv["id"]): lv for lv in project_to_dict(run.project)["model"]["levels"]}
    return Snapshot(f"run:{run.path}", step, level_snapshots(model, state, specs))
