"""Lesson 1: a Transformer has two timescales, an NSAM a spectrum.

Each level of a preset sits at its designed update frequency (``probes.designed_frequency``:
∞ for attention, 1/C for a level written every C tokens, 0 for a frozen one). Beside it the
lesson MEASURES how fast what the level *returns* changes, with the code path a run's
evaluations use (``probes.content_rates``, definitions in ``nlstudio.probes``): held-out
streams of the preset's own task are fed one token per call, each level is read on 32 fixed
probe inputs after every token, and its content frequency ν = 1/τ is how fast that read-out is
replaced (τ: the turnover time, twice the lag after which half of it is replaced). A level that
replaced all it holds at every write would measure ν = 1/C; writes that replace only part of
it measure less; attention writes nothing and re-reads its context (∞); a frozen level never
changes (0). The model measured is the preset's *untrained* model (its initial weights, seed
0): what the architecture does before learning; a run's Spectrum dock shows the same
measurement of the trained model at every evaluation.

    m = measure("nsam")                 # a RateMeasurement of one batch of streams
    m.levels["cms_mid"].designed        # 0.0625 = 1/16
    m.levels["cms_mid"].content         # an events.ContentRate (.frequency, .bound, .drift)

    lesson = SpectrumLesson("nsam")     # the lesson's core: one batch of streams per step
    lesson.next(); lesson.next()        # batches 1 and 2
    lesson.pooled()                     # {level: ContentRate} over every batch measured
    lesson.select("transformer")        # another preset: its measurements start over
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from nlstudio import events as ev
from nlstudio import probes
from nlstudio.build import build_model, build_task
from nlstudio.models.registry import kind_info
from nlstudio.probes import frequency_text  # noqa: F401 (the lesson's texts use it)
from nlstudio.project import load_preset, project_to_dict

PRESETS = {"transformer": "Transformer", "nsam": "NSAM (HOPE)"}
SEQ_LEN = 512  # long enough for 8 writes of a level with C = 64
BATCH = 2  # held-out streams per step


@dataclass(frozen=True)
class LevelRate:
    """One level: its designed frequency and its measured content rate."""

    level_id: str
    kind: str
    period: int | None
    designed: float  # updates per token: inf, 1/C or 0
    content: ev.ContentRate

    @property
    def writes_per_token(self) -> float:
        return self.content.writes_per_token


@dataclass(frozen=True)
class RateMeasurement:
    preset: str
    batch_index: int
    tokens: int
    levels: dict[str, LevelRate]  # in model order


def levels_of(measurement: RateMeasurement) -> list[dict]:
    """``[{"id", "kind", "period"}, ...]`` in model order (what the spectrum plot takes)."""
    return [{"id": lv.level_id, "kind": lv.kind, "period": lv.period}
            for lv in measurement.levels.values()]


def measure(preset: str, batch_index: int = 0, seq_len: int = SEQ_LEN, batch_size: int = BATCH,
            seed: int = 0) -> RateMeasurement:
    """The content rates of the untrained ``preset`` model on held-out streams of its task
    (``seq_len`` tokens, examples ``batch_index·batch_size`` onwards)."""
    doc = project_to_dict(load_preset(preset))
    doc["train"]["seq_len"] = int(seq_len)
    task = build_task(doc)
    torch.manual_seed(int(seed))
    model = build_model(doc, task)
    rates = probes.content_rates(model, task, sequences=int(batch_size),
                                 max_tokens=int(seq_len),
                                 first=int(batch_index) * int(batch_size))
    levels = {lid: LevelRate(lid, rate.kind, rate.period, rate.designed, rate)
              for lid, rate in rates.items()}
    tokens = next(iter(rates.values())).tokens if rates else 0
    return RateMeasurement(preset, int(batch_index), tokens, levels)


def describe_level(level: LevelRate, content: ev.ContentRate | None = None) -> str:
    """One line: designed beside measured (``content``: pooled over batches, default the
    level's own)."""
    rate = content or level.content
    designed = frequency_text(level.designed)
    if not kind_info(level.kind).parametric:
        return (f"{level.level_id}: designed ∞; measured ∞: it writes nothing and re-reads "
                f"its context at every token")
    if rate.note:
        return f"{level.level_id}: designed {designed}; content not measured ({rate.note})"
    if rate.frequency <= 0:
        return (f"{level.level_id}: designed {designed}; content 0: what it returns never "
                f"changed ({_writes(rate)})")
    if rate.bound:
        return (f"{level.level_id}: designed {designed}; content {probes.content_text(rate)}: "
                f"{100 * float(rate.drift[-1]):.0f} % replaced after {int(rate.lags[-1])} "
                f"tokens ({_writes(rate)})")
    return (f"{level.level_id}: designed {designed}; content {probes.content_text(rate)}: "
            f"turned over in {rate.turnover:.0f} tokens ({_writes(rate)})")


def _writes(rate: ev.ContentRate) -> str:
    writes = rate.writes_per_token
    if writes <= 0:
        return "no writes"
    return f"writes {frequency_text(writes)} of tokens"


class SpectrumLesson:
    """Lesson 1's core (a :class:`nlstudio.lessons.LessonCore`): the measured batches of one
    preset. Each ``next()`` measures one more batch of held-out streams; the first batch is
    the lesson's start, so ``back()`` and ``reset()`` keep it.

    ``next()`` runs the measurement and may be called from a worker thread; a measurement
    that finishes after ``select()`` switched the preset is dropped, never mixed in."""

    def __init__(self, preset: str = "transformer") -> None:
        self._lock = threading.Lock()
        self.measurements: list[RateMeasurement] = []
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
    def current(self) -> RateMeasurement | None:
        measurements = self.measurements
        return measurements[-1] if measurements else None

    def pooled(self) -> dict[str, ev.ContentRate]:
        """Each level's content rate over every batch measured (``probes.pool_content``)."""
        measurements = list(self.measurements)
        if not measurements:
            return {}
        return {lid: probes.pool_content(m.levels[lid].content for m in measurements)
                for lid in measurements[0].levels}

    def next(self) -> RateMeasurement | None:
        """Measure the next batch; None if the preset changed while it was measured."""
        with self._lock:
            preset, index, measurements = self.preset, len(self.measurements), self.measurements
        result = measure(preset, index)
        with self._lock:
            if measurements is not self.measurements or len(measurements) != index:
                return None
            self.measurements = [*measurements, result]
            return result

    def back(self) -> RateMeasurement | None:
        with self._lock:
            if len(self.measurements) > 1:
                self.measurements = self.measurements[:-1]
        return self.current

    def reset(self) -> None:
        with self._lock:
            self.measurements = self.measurements[:1]


__all__ = ["SpectrumLesson", "PRESETS", "LevelRate", "RateMeasurement", "measure",
           "frequency_text", "describe_level", "levels_of"]
