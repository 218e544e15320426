"""Text from files made safe to print: one line, no terminal control, bounded length.

Every message that quotes a file (a project's key, a CSV cell, a path, an exception's text)
goes through :func:`printable` where it is formed (``ProjectError``, ``RunError``), so the
terminal and the GUI's dialogs both get text that cannot clear a screen, set a window title,
forge a second line ("Traceback (most recent call last):") or flood 20 MB of stderr.
"""
from __future__ import annotations

import unicodedata

#: Longest message part kept whole; longer ones keep their head and tail around an ellipsis.
MAX_PART = 300

# Categories escaped: controls (C0, C1, DEL), format characters (bidi overrides, zero-width),
# line/paragraph separators and lone surrogates (which UTF-8 cannot even encode).
_ESCAPED = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else (f"\\u{code:04x}" if code < 0x10000
                                                  else f"\\U{code:08x}")


def printable(value: object, limit: int = MAX_PART) -> str:
    """``str(value)`` on one line with every control character escaped (``\\x1b``, ``\\n``,
    ``\\u202e``) and, past ``limit`` characters, its middle elided (``… (12345 characters)``).
    Idempotent on text that is already printable and short."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        keep = max(8, limit // 2 - 20)
        text = f"{text[:keep]}… ({len(text)} characters) …{text[-keep:]}"
    if text.isprintable():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in _ESCAPED else ch for ch in text)


def one_line(*parts: object, limit: int = MAX_PART) -> str:
    """Parts joined by ``": "``, each made :func:`printable`; empty parts left out."""
    return ": ".join(printable(p, limit) for p in parts if p not in ("", None))
