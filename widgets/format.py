"""Numbers as the GUI shows them: thousands grouped with a thin space (U+2009), as in
"12 345 steps". One helper, applied to numbers only, never to prose (a comma in a sentence
stays a comma)."""
from __future__ import annotations

THIN_SPACE = "\u2009"


def grouped(value: float, decimals: int = 0) -> str:
    """``12345`` -> ``"12 345"``; ``1234.5, decimals=1`` -> ``"1 234.5"`` (thin spaces)."""
    return f"{value:,.{decimals}f}".replace(",", THIN_SPACE)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1, "token"`` -> ``"1 token"``; ``3, "token"`` -> ``"3 tokens"`` (count grouped)."""
    return f"{grouped(count)} {word if count == 1 else (many or word + 's')}"
