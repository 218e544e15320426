"""The rows of a run's three CSV files, typed, and their one text format.

``StepMetrics`` is one row of metrics.csv: what the trainer logs, what a reader returns, what
the loss plot draws (``as_dict()`` gives the flat ``{"step": .., "fast.updates": ..}`` mapping of
the CSV's columns). ``EvalRecord`` and ``DelayRow`` are rows of eval.csv and delay.csv.

Format: UTF-8, ``\\n`` line ends, a header line, cells joined by ``,`` (text cells quoted as
CSV only when they hold ``,`` or ``"``). Floats are written by ``repr`` (exact round trip).
Reading never fails on a row: a row that does not parse (wrong number of cells, a step that is
not a non-negative integer, bytes that are not UTF-8, a stray ``\\r``) is skipped and counted.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from typing import NamedTuple

BASE_METRIC_COLUMNS = ("step", "wall_s", "loss", "metric", "tokens_per_s")
LEVEL_COLUMNS = ("updates", "update_norm")
EVAL_COLUMNS = ("step", "task", "metric")
DELAY_COLUMNS = ("step", "ablation", "level", "delay", "recall")
#: delay.csv of run folders written before freeze ablations: every row a silence ablation.
LEGACY_DELAY_COLUMNS = ("step", "silenced", "delay", "recall")

#: What an ablation does to a level during the recall-by-delay probe: "none" (the full model),
#: "silence" (its output zeroed), "freeze" (its in-context writes stopped, its output kept).
ABLATIONS = ("none", "silence", "freeze")
FULL_MODEL = "none"  # the level name of the full model's rows (as probes.delay_table shows it)
MAX_STEP = 2**53  # larger "steps" in a file are damage, not steps


def metric_columns(level_ids) -> list[str]:
    cols = list(BASE_METRIC_COLUMNS)
    for lid in level_ids:
        cols += [f"{lid}.{c}" for c in LEVEL_COLUMNS]
    return cols


@dataclass(frozen=True)
class LevelMetrics:
    updates: int | None  # in-context writes so far (cumulative); None where unreadable
    update_norm: float  # mean non-zero write norm of the step's last sequence


@dataclass(frozen=True)
class StepMetrics:
    """One row of metrics.csv."""

    step: int
    wall_s: float  # training time so far, pauses excluded
    loss: float
    metric: float
    tokens_per_s: float
    levels: dict[str, LevelMetrics] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """The flat mapping of the CSV's columns (what ``MetricsRow.row`` carries)."""
        out: dict[str, float] = {"step": self.step, "wall_s": self.wall_s, "loss": self.loss,
                                 "metric": self.metric, "tokens_per_s": self.tokens_per_s}
        for lid, lv in self.levels.items():
            out[f"{lid}.updates"] = math.nan if lv.updates is None else lv.updates
            out[f"{lid}.update_norm"] = lv.update_norm
        return out

    @classmethod
    def from_dict(cls, row: dict) -> "StepMetrics":
        levels: dict[str, LevelMetrics] = {}
        for key in row:
            if key.endswith(".updates"):
                lid = key[: -len(".updates")]
                updates = row[key]
                levels[lid] = LevelMetrics(
                    int(updates) if _finite(updates) else None,
                    float(row.get(f"{lid}.update_norm", math.nan)))
        return cls(int(row["step"]), *(float(row.get(c, math.nan))
                                       for c in BASE_METRIC_COLUMNS[1:]), levels=levels)

    def cells(self, columns) -> list[str]:
        values = self.as_dict()
        return [format_cell(values.get(c, "")) for c in columns]


class EvalRecord(NamedTuple):
    """One row of eval.csv: the metric of one sub-task at one step."""

    step: int
    task: str
    metric: float


class DelayRow(NamedTuple):
    """One row of delay.csv. ``level`` is ``"none"`` for the full model's rows, whose
    ``ablation`` is ``"none"`` too. (The first four fields are what older readers took.)"""

    step: int
    level: str
    delay: int
    recall: float
    ablation: str = "silence"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if abs(value) >= 1e-4 or value == 0 else f"{value:.6e}"
    if isinstance(value, str):
        value = value.replace("\r", " ").replace("\n", " ")
        return f'"{value.replace(chr(34), chr(34) * 2)}"' if ("," in value or '"' in value) \
            else value
    return str(value)


def format_line(cells) -> bytes:
    return (",".join(cells) + "\n").encode("utf-8", "backslashreplace")


# ---- parsing ---------------------------------------------------------------------------------
def split_line(line: bytes) -> list[str] | None:
    """The cells of one line (without its ``\\n``), or None if it is not a clean CSV line."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\r" in text or "\x00" in text:
        return None
    try:
        return next(csv.reader([text]), [])
    except csv.Error:
        return None


def parse_step(text: str) -> int | None:
    """A step cell: a non-negative integer (``"10"`` or ``"10.0"``), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or value > MAX_STEP or value != int(value):
        return None
    return int(value)


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def parse_metrics(header: list[str], cells: list[str]) -> StepMetrics | None:
    if len(cells) != len(header):
        return None
    row = dict(zip(header, cells))
    step = parse_step(row.get("step", ""))
    if step is None:
        return None
    levels = {}
    for name in header:
        if name.endswith(".updates"):
            lid = name[: -len(".updates")]
            updates = parse_float(row[name])
            levels[lid] = LevelMetrics(int(updates) if math.isfinite(updates) else None,
                                       parse_float(row.get(f"{lid}.update_norm", "")))
    return StepMetrics(step, *(parse_float(row.get(c, "")) for c in BASE_METRIC_COLUMNS[1:]),
                       levels=levels)


def parse_eval(header: list[str], cells: list[str]) -> EvalRecord | None:
    if len(cells) != len(EVAL_COLUMNS) or list(header) != list(EVAL_COLUMNS):
        return None
    step = parse_step(cells[0])
    return None if step is None else EvalRecord(step, cells[1], parse_float(cells[2]))


def parse_delay(header: list[str], cells: list[str]) -> DelayRow | None:
    """A delay.csv row in either format (the older ``step,silenced,delay,recall`` rows are
    silence ablations, ``none`` the full model)."""
    if len(cells) != len(header):
        return None
    if tuple(header) == DELAY_COLUMNS:
        step, ablation, level, delay, recall = cells
        if ablation not in ABLATIONS or (ablation == "none") != (level == ""):
            return None
        level = level or FULL_MODEL
    elif tuple(header) == LEGACY_DELAY_COLUMNS:
        step, level, delay, recall = cells
        ablation = "none" if level == FULL_MODEL else "silence"
    else:
        return None
    step_n, delay_n = parse_step(step), parse_step(delay)
    if step_n is None or delay_n is None or not level:
        return None
    return DelayRow(step_n, level, delay_n, parse_float(recall), ablation)


def delay_cells(row: DelayRow) -> list[str]:
    level = "" if row.ablation == "none" else row.level
    return [format_cell(row.step), row.ablation, format_cell(level), format_cell(row.delay),
            format_cell(float(row.recall))]
