"""What the GUI tests share."""
from __future__ import annotations

import pytest


class FakeDialogs:
    """Stands in for ``MainWindow.dialogs``: every call is recorded in ``calls`` and answered
    from attributes a test sets: ``answer`` (questions), ``save_answer`` (unsaved changes),
    ``open_path`` / ``save_path`` (file choosers). ``strict``: an error dialog fails the test."""

    def __init__(self, answer: bool = True, strict: bool = False) -> None:
        self.calls: list[tuple] = []
        self.answer = answer
        self.strict = strict
        self.save_answer = "discard"
        self.open_path: str | None = None
        self.save_path: str | None = None

    def clear(self) -> None:
        self.calls.clear()

    def _said(self, kind: str) -> list[tuple]:
        return [c[1:] for c in self.calls if c[0] == kind]

    @property
    def errors(self) -> list[tuple[str, str]]:
        return self._said("error")

    @property
    def infos(self) -> list[tuple[str, str]]:
        return self._said("info")

    @property
    def asked_to_save(self) -> list[str]:
        return [name for (name,) in self._said("ask_save_changes")]

    def error(self, title, text):
        self.calls.append(("error", title, text))
        if self.strict:
            raise AssertionError(f"unexpected error dialog: {title}: {text}")

    def info(self, title, text):
        self.calls.append(("info", title, text))

    def question(self, title, text):
        self.calls.append(("question", title, text))
        return self.answer

    def ask_save_changes(self, name):
        self.calls.append(("ask_save_changes", name))
        return self.save_answer

    def get_open_path(self, directory=""):
        self.calls.append(("get_open_path", directory))
        return self.open_path

    def get_save_path(self, suggested=""):
        self.calls.append(("get_save_path", suggested))
        return self.save_path


@pytest.fixture(scope="session")
def fake_dialogs() -> type[FakeDialogs]:
    """The :class:`FakeDialogs` class (tests construct it with their own answers)."""
    return FakeDialogs
