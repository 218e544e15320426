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

    lesson = SpectrumLesson("nsam")     # the lesson's core: one measured batch per step
    lesson.next(); lesson.next()        # batches 1 and 2 (the view shows their mean)
    lesson.select("transformer")        # another preset: its measurements start over
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from nlstudio import events as ev
from nlstudio import probes
from nlstudio.build import build_model, build_task
from nlstudio.models.registry import kind_info
from nlstudio.project import load_preset, project_to_dict

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
    if not kind_info(level.kind).parametric:
        return (f"{level.level_id}: designed ∞ (re-reads its context); appended to its "
                f"context at all {level.tokens} tokens")
    if level.peak is None:
        return f"{level.level_id}: designed {designed}; measured: no writes (frozen)"
    return (f"{level.level_id}: designed {designed}; measured peak {frequency_text(level.peak)}, "
            f"{level.writes} writes in {level.tokens} tokens")


class SpectrumLesson:
    """Lesson 1's core (a :class:`nlstudio.lessons.LessonCore`): the measured batches of one
    preset. Each ``next()`` measures one more task batch; the first batch is the lesson's
    start, so ``back()`` and ``reset()`` keep it.

    ``next()`` runs one forward pass and may be called from a worker thread; a measurement
    that finishes after ``select()`` switched the preset is dropped, never mixed in."""

    def __init__(self, preset: str = "transformer") -> None:
        self._lock = threading.Lock()
        self.measurements: list[SpectrumMeasurement] = []
        self.select(preset)

    def select(self, preset: str) -> None:
        """Show ``preset`` from now on; nothing of it is measured until ``next()``."""
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        with self._lock:
            self.preset = preset
            self.measurements = []

    @property
    def step_count(self) -> int:
        """Batches measured."""
        return len(self.measurements)

    @property
    def done(self) -> bool:
        return False  # there is always another batch

    @property
    def current(self) -> SpectrumMeasurement | None:
        measurements = self.measurements
        return measurements[-1] if measurements else None

    def next(self) -> SpectrumMeasurement | None:
        """Measure the next batch; None if the preset changed while it was measured."""
        with self._lock:
            preset, index, measurements = self.preset, len(self.measurements), self.measurements
        result = measure(preset, index)
        with self._lock:
            if measurements is not self.measurements or len(measurements) != index:
                return None
            self.measurements = [*measurements, result]
            return result

    def back(self) -> SpectrumMeasurement | None:
        with self._lock:
            if len(self.measurements) > 1:
                self.measurements = self.measurements[:-1]
        return self.current

    def reset(self) -> None:
        with self._lock:
            self.measurements = self.measurements[:1]


__all__ = ["SpectrumLesson", "PRESETS", "LevelSpectrum", "SpectrumMeasurement", "measure",
           "fundamental", "frequency_text", "describe_level", "levels_of"]
