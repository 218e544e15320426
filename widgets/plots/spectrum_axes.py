"""The spectrum's axes: where a frequency sits on the log axis ("0" and "∞" at the edges),
the decade and lag ticks, the levels' names, and which tick labels fit a strip's width."""
from __future__ import annotations

import math
from typing import Callable

from PySide6.QtGui import QFont

from nlstudio.widgets.format import grouped

EDGE = 0.7  # decades between the last finite decade and the "0" / "∞" edge positions
INF_POS = EDGE  # log10(1) = 0 is the fastest finite frequency (a write every token)
LABEL_POINT_SIZE = 8.0
NAME_CHARS = 12  # a level's name on the strip's axis (longer ones elided; full in the tooltip)


def label_font() -> QFont:
    font = QFont()
    font.setPointSizeF(LABEL_POINT_SIZE)
    return font


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def freq_position(freq: float, low_decade: int) -> float:
    """x position (decades) of a frequency on the axis: ∞ right, 0 left, log10 between."""
    if math.isinf(freq):
        return INF_POS
    if freq <= 0:
        return low_decade - EDGE
    return math.log10(freq)


def frequency_range(low_decade: int) -> tuple[float, float]:
    """The strip's x range (decades): "0" and "∞" with room for their bands."""
    return low_decade - EDGE - 0.35, INF_POS + 0.35


def frequency_ticks(low_decade: int) -> list[list[tuple[float, str]]]:
    major = [(float(low_decade - EDGE), "0")]
    for d in range(low_decade, 1):
        major.append((float(d), "1" if d == 0 else f"1/{grouped(10 ** -d)}"))
    major.append((INF_POS, "∞"))
    minor = [(d + math.log10(k), "") for d in range(low_decade, 0) for k in range(2, 10)]
    return [major, minor]


def legible_ticks(major: list[tuple[float, str]], left: float, scale: float,
                  text_width: Callable[[str], float], gap: float = 6.0
                  ) -> list[tuple[float, str]]:
    """``major`` with the labels that would overlap a neighbour's left out (their tick marks
    stay), for an axis starting at ``left`` drawn at ``scale`` px per unit: the two edge
    labels ("0" and "∞") first, then from the right end down."""
    kept: list[tuple[float, float]] = []
    labels = [""] * len(major)
    for i in [len(major) - 1, 0, *range(len(major) - 2, 0, -1)]:
        x, text = major[i]
        half = text_width(text) / 2 + gap / 2
        span = ((x - left) * scale - half, (x - left) * scale + half)
        if scale > 0 and all(span[1] <= a or span[0] >= b for a, b in kept):
            kept.append(span)
            labels[i] = text
    return [(x, label) for (x, _text), label in zip(major, labels)]


def lag_ticks(max_lag: int) -> list[list[tuple[float, str]]]:
    """Lags 1, 2, 4, … on the log axis of the drift plot."""
    lags, lag = [], 1
    while lag <= max(1, max_lag):
        lags.append(lag)
        lag *= 2
    return [[(math.log10(v), grouped(v)) for v in lags], []]
