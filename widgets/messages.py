"""One line for the user from an exception: the training side's dialogs never show a
traceback. Unexpected errors also go to stderr with their traceback (for a bug report)."""
from __future__ import annotations

import sys
import traceback

from nlstudio.project import ProjectError
from nlstudio.runs import RunError
from nlstudio.trainer import TrainError
from nlstudio.widgets.export import ExportError


def _known_errors() -> tuple[type[BaseException], ...]:
    return ProjectError, RunError, ExportError, TrainError, OSError, ValueError


def user_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    if not isinstance(exc, _known_errors()):
        traceback.print_exception(exc, file=sys.stderr)
        return f"{type(exc).__name__}: {exc}"
    return str(exc)
