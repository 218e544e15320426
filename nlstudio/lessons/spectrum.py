"""Lesson 1: a Transformer has two timescales, an NSAM a spectrum.

Each level of a preset sits at its designed update frequency (``probes.designed_frequency``:
∞ for attention, 1/C for a level written every C tokens, 0 for a frozen one). The lesson also
MEASURES it: one forward pass of the untrained preset model (its own task, a batch drawn by the
task) records every level's per-token write norms, and ``probes.power_spectrum`` turns them
into a power spectrum. A level written every C tokens peaks at 1/C (and its harmonics k/C);
a frozen level writes nothing; attention appends to its context at every token.

    m = measure("nsam")                 # a SpectrumMeasurement
    m.levels["cms_mid"].peak            # 0.0625 = 1/16
    m.snapshot                          # an events.Snapshot, what the spectrum plot draws
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nlstudio import events as ev
from nlstudio import probes

PRESETS = {"transformer": "Transformer", "nsam": "NSAM (HOPE)"}
SEQ_LEN = 512  # long enough for 8 writes of a level with C = 64
BATCH = 2
PEAK_SHARE = 0.9  # the fundamental: the lowest frequency within 90 % of the highest power


@dataclass(frozen=True)
class LevelSpectrum:
    level_id: str
    kind: str
    period: int | None
    designed: float  # updates per token: inf, 1/C or 0
    writes: int  # writes in the measured sequence
    tokens: int
    write_norms: np.ndarray  # [tokens]
    freqs: np.ndarray  # cycles per token (DC left out)
    power: np.ndarray
    peak: float | None  # the measured fundamental frequency; None when nothing was written

    @property
    def writes_per_token(self) -> float:
        return self.writes / self.tokens if self.tokens else 0.0


@dataclass(frozen=True)
class SpectrumMeasurement:
    preset: str
    batch_index: int
    tokens: int
    levels: dict[str, LevelSpectrum]  # in model order
    snapshot: ev.Snapshot


def fundamental(freqs: np.ndarray, power: np.ndarray, share: float = PEAK_SHARE
                ) -> float | None:
    """The lowest frequency whose power is within ``share`` of the maximum (a write every C
    tokens puts equal power at every k/C, so this is 1/C); None for a flat-zero spectrum."""
    freqs, power = np.asarray(freqs, float), np.asarray(power, float)
    if power.size == 0 or not np.isfinite(power).all() or power.max() <= 0:
        return None
    return float(freqs[np.argmax(power >= share * power.max())])


def levels_of(measurement: SpectrumMeasurement) -> list[dict]:
    """``[{"id", "kind", "period"}, ...]`` in model order (what the spectrum plot takes)."""
    return [{"id": lv.level_id, "kind": lv.kind, "period": lv.period}
            for lv in measurement.levels.values()]


def measure(preset: str, batch_index: int = 0, seq_len: int = SEQ_LEN, batch_size: int = BATCH,
            seed: int = 0) -> SpectrumMeasurement:
    """One forward pass of the untrained ``preset`` model on the task's batch ``batch_index``
    (sequences of ``seq_len``), and every level's measured spectrum."""
    from nlstudio.build import build_model, build_task
    from nlstudio.project import load_preset, project_to_dict

    doc = project_to_dict(load_preset(preset))
    doc["train"]["seq_len"] = int(seq_len)
    task = build_task(doc)
    torch.manual_seed(int(seed))
    model = build_model(doc, task)
    model.eval()
    batch = task.batch(int(batch_index), int(batch_size))
    with torch.no_grad():
        _, state = model(batch.inputs, None, targets=batch.targets)
    specs = {lv["id"]: lv for lv in doc["model"]["levels"]}
    snaps = probes.level_snapshots(model, state, specs)
    tokens = int(batch.inputs.shape[1])
    levels: dict[str, LevelSpectrum] = {}
    for lid, snap in snaps.items():
        norms = snap.write_norms if snap.write_norms is not None else np.zeros(tokens, np.float32)
        freqs, power = snap.spectrum if snap.spectrum is not None else (np.zeros(0), np.zeros(0))
        levels[lid] = LevelSpectrum(
            level_id=lid, kind=snap.kind, period=snap.period, designed=snap.frequency,
            writes=int(snap.updates), tokens=tokens, write_norms=np.asarray(norms),
            freqs=np.asarray(freqs), power=np.asarray(power),
            peak=fundamental(freqs, power) if int(np.count_nonzero(norms)) else None)
    snapshot = ev.Snapshot(f"lesson1:{preset}", int(batch_index), snaps)
    return SpectrumMeasurement(preset, int(batch_index), tokens, levels, snapshot)


def frequency_text(freq: float | None) -> str:
    """'∞', '0', '1/16' or '0.3' for a frequency in updates per token."""
    if freq is None:
        return "–"
    if math.isinf(freq):
        return "∞"
    if freq <= 0:
        return "0"
    inverse = 1.0 / freq
    if abs(inverse - round(inverse)) < 1e-6:
        return "1" if round(inverse) == 1 else f"1/{round(inverse)}"
    return f"{freq:.3g}"


def describe_level(level: LevelSpectrum) -> str:
    """One line: designed vs measured."""
    designed = frequency_text(level.designed)
    if level.kind == "attention":
        return (f"{level.level_id}: designed ∞ (re-reads its context); appended to its "
                f"context at all {level.tokens} tokens")
    if level.peak is None:
        return f"{level.level_id}: designed {designed}; measured: no writes (frozen)"
    return (f"{level.level_id}: designed {designed}; measured peak {frequency_text(level.peak)}, "
            f"{level.writes} writes in {level.tokens} tokens")


__all__ = ["PRESETS", "LevelSpectrum", "SpectrumMeasurement", "measure", "fundamental",
           "frequency_text", "describe_level", "levels_of"]
