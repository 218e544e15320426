"""Faults of a project document: where (a JSON path) and what (plain English).

``ProjectError`` is the one exception type of invalid or unreadable project files;
:func:`translate` turns a pydantic error into a :class:`Fault` (``model.levels[1].period``,
"must be a positive integer or null": no pydantic wording, no URLs).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from nlstudio.printable import MAX_PART, printable
from nlstudio.schema import short_repr


@dataclass(frozen=True)
class Fault:
    path: str  # JSON path, "" for the document itself
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ProjectError(ValueError):
    """A project that cannot be read or is invalid: ``str(err)`` is ``"file: path: message"``,
    one printable line (``nlstudio.printable``: control characters escaped, long parts such
    as a 10 MB key elided), whatever the file held."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.message = (printable(source), printable(path),
                                                printable(message, 2 * MAX_PART))
        super().__init__(f"{self.source}: {Fault(self.path, self.message)}")

    @classmethod
    def from_fault(cls, source: str, fault: Fault) -> "ProjectError":
        return cls(source, fault.path, fault.message)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def json_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def fmt_number(value: Any) -> str:
    """A bound as people write it: 0 not 0.0, 1e-05, 0.999."""
    if isinstance(value, float):
        text = f"{value:g}"
        return text if float(text) == value else repr(value)
    return str(value)


def _got(err: dict) -> str:
    value = err.get("input")
    if isinstance(value, (int, float, str, bool)) or value is None:
        return f" (got {json.dumps(value) if not isinstance(value, str) else short_repr(value)})"
    return ""


def _length(n: Any, bound: str) -> str:
    if n == 2:
        return "must be a pair of two values"
    if n == 1 and bound == "at least":
        return "must not be empty"
    return f"must have {bound} {n} items"


_MESSAGES: dict[str, Callable[[dict, dict], str]] = {
    "missing": lambda e, c: "is required",
    "int_type": lambda e, c: "must be an integer" + _got(e),
    "int_from_float": lambda e, c: "must be an integer" + _got(e),
    "int_parsing": lambda e, c: "must be an integer" + _got(e),
    "float_type": lambda e, c: "must be a number" + _got(e),
    "float_parsing": lambda e, c: "must be a number" + _got(e),
    "finite_number": lambda e, c: "must be a finite number",
    "bool_type": lambda e, c: "must be true or false" + _got(e),
    "bool_parsing": lambda e, c: "must be true or false" + _got(e),
    "string_type": lambda e, c: "must be a string" + _got(e),
    "string_too_short": lambda e, c: ("must not be empty" if c.get("min_length") == 1
                                      else f"must have at least {c.get('min_length')} characters"),
    "string_too_long": lambda e, c: f"is too long (at most {c.get('max_length')} characters)",
    "too_short": lambda e, c: _length(c.get("min_length"), "at least"),
    "too_long": lambda e, c: _length(c.get("max_length"), "at most"),
    "list_type": lambda e, c: "must be a list",
    "dict_type": lambda e, c: "must be an object",
    "model_type": lambda e, c: "must be an object",
    "model_attributes_type": lambda e, c: "must be an object",
    "none_required": lambda e, c: "must be null",
    "literal_error": lambda e, c: f"must be {c.get('expected')}" + _got(e),
    "greater_than": lambda e, c: f"must be greater than {fmt_number(c.get('gt'))}" + _got(e),
    "less_than": lambda e, c: f"must be less than {fmt_number(c.get('lt'))}" + _got(e),
    "less_than_equal": lambda e, c: f"must be at most {fmt_number(c.get('le'))}" + _got(e),
    "greater_than_equal": lambda e, c: (
        "must be a positive integer" if c.get("ge") == 1 and isinstance(e.get("input"), int)
        else f"must be at least {fmt_number(c.get('ge'))}") + _got(e),
}


def translate(err: dict, prefix: tuple = (),
              extra: Callable[[tuple], str] | None = None) -> Fault:
    """One pydantic error as a Fault: the JSON path and a message without pydantic's words."""
    loc = tuple(err.get("loc", ()))
    error_type = err.get("type", "")
    ctx = err.get("ctx") or {}
    if error_type == "extra_forbidden":
        message = extra(loc) if extra else f"unknown field '{loc[-1] if loc else '?'}'"
    elif error_type in _MESSAGES:
        message = _MESSAGES[error_type](err, ctx)
    else:
        message = str(err.get("msg", "is invalid"))
        for noise in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(noise)
        message = message.replace("Input should be", "must be")
    return Fault(json_path(prefix + loc), message)


def faults_of(exc: ValidationError, prefix: tuple = (),
               extra: Callable[[tuple], str] | None = None) -> list[Fault]:
    return [translate(e, prefix, extra) for e in exc.errors(include_url=False)]
