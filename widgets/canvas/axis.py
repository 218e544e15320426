"""The canvas's vertical axis: update frequency on a log scale.

Top: frequency ∞ (attention re-reads its context at every token, nothing is written); then
period 1 (written every token), 2, 4, … (one row per octave); bottom: frequency 0 (frozen in
context, learned only by pre-training). A level's height on the canvas *is* its timescale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from nlstudio.catalog import KINDS
from nlstudio.widgets.format import grouped

ROW = 48.0              # scene units per octave of the period
Y_INF = 0.0             # centre of the "∞" band
Y_ONE = 90.0            # period 1
FROZEN_GAP = 90.0       # from the longest period row to the centre of the "frozen" band
BAND_HALF = 40.0        # half height of the ∞ and frozen bands
MIN_MAX_LOG = 8         # the axis always reaches period 256 (longer ones grow it)
MAX_LOG = 20            # and never beyond ~1M tokens


def period_text(period: int | None, kind: str | None = None) -> str:
    """'every token', 'every 16 tokens', 'frozen' or '∞' (for attention)."""
    rule = KINDS[kind].period_rule if kind in KINDS else None
    if rule == "inf":
        return "∞ · re-reads the context"
    if period is None:
        return "frozen"
    if period == 1:
        return "every token"
    return f"every {grouped(period)} tokens"


@dataclass(frozen=True)
class Row:
    y: float
    label: str        # "∞", "16", "0"
    caption: str      # "re-read every token", "every 16 tokens", "frozen"
    major: bool


class FrequencyAxis:
    def __init__(self, max_log: int = MIN_MAX_LOG) -> None:
        self.max_log = max(MIN_MAX_LOG, min(MAX_LOG, int(max_log)))

    @classmethod
    def for_levels(cls, levels: list[dict]) -> "FrequencyAxis":
        longest = max((lv.get("period") for lv in levels
                       if isinstance(lv.get("period"), (int, float)) and lv.get("period") >= 1),
                      default=1)
        return cls(math.ceil(math.log2(longest)) if longest > 1 else MIN_MAX_LOG)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrequencyAxis) and other.max_log == self.max_log

    # ---- geometry ----------------------------------------------------------------------
    @property
    def max_period(self) -> int:
        return 2 ** self.max_log

    @property
    def y_inf(self) -> float:
        return Y_INF

    @property
    def y_frozen(self) -> float:
        return self.y_for_period(self.max_period) + FROZEN_GAP

    @property
    def top(self) -> float:
        return Y_INF - BAND_HALF

    @property
    def bottom(self) -> float:
        return self.y_frozen + BAND_HALF

    @property
    def continuum(self) -> tuple[float, float]:
        """The band of finite periods (in-context learning), top and bottom."""
        return self.y_for_period(1) - ROW / 2, self.y_for_period(self.max_period) + ROW / 2

    @property
    def y_middle(self) -> float:
        return (self.continuum[0] + self.continuum[1]) / 2

    def y_for_period(self, period: float) -> float:
        return Y_ONE + ROW * math.log2(max(1.0, float(period)))

    def y_for(self, kind: str, period: int | None) -> float:
        rule = KINDS[kind].period_rule if kind in KINDS else "positive_or_null"
        if rule == "inf":
            return self.y_inf
        if period is None or not isinstance(period, (int, float)) or period < 1:
            return self.y_frozen
        return self.y_for_period(min(period, 2 ** MAX_LOG))

    # ---- snapping -------------------------------------------------------------------------
    def allowed(self, kind: str) -> list[tuple[int | None, float]]:
        """Every (period, y) a level of this kind may take on this axis."""
        rule = KINDS[kind].period_rule if kind in KINDS else "positive_or_null"
        if rule == "inf":
            return [(None, self.y_inf)]
        if rule == "one":
            return [(1, self.y_for_period(1))]
        rows = [(2 ** k, self.y_for_period(2 ** k)) for k in range(self.max_log + 1)]
        if rule == "positive_or_null":
            rows.append((None, self.y_frozen))
        return rows

    def snap(self, kind: str, y: float) -> tuple[int | None, float]:
        """The allowed period nearest to height ``y`` (powers of two), and its height."""
        return min(self.allowed(kind), key=lambda row: abs(row[1] - y))

    # ---- labels -----------------------------------------------------------------------------
    def rows(self) -> list[Row]:
        rows = [Row(self.y_inf, "∞", "re-read at each token", True)]
        for k in range(self.max_log + 1):
            p = 2 ** k
            rows.append(Row(self.y_for_period(p), grouped(p), period_text(p), k % 2 == 0))
        rows.append(Row(self.y_frozen, "0", "frozen", True))
        return rows
