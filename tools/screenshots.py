"""Regenerates the README's screenshots from the real app (offscreen Qt).

    .venv/bin/python tools/screenshots.py            # all of them into docs/images/
    .venv/bin/python tools/screenshots.py editor     # only some: editor, scaled, live, lessons
    .venv/bin/python tools/screenshots.py --out /tmp/shots sizes   # elsewhere; `sizes`: the
                                                     # editor at 1280×800 and 1600×1000

Every picture is the real window: presets opened through the GUI, a real (short) training
run, the real lessons. Look at each PNG after regenerating it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NLSTUDIO_TESTING", "1")  # no recovery prompt, no welcome page
SCRATCH = tempfile.mkdtemp(prefix="nlstudio-shots-")
os.environ.setdefault("NLSTUDIO_RECOVERY_DIR", os.path.join(SCRATCH, "recovery"))
os.environ.setdefault("XDG_CONFIG_HOME", os.path.join(SCRATCH, "config"))

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("NLSTUDIO_SHOTS_OUT") or ROOT / "docs" / "images")
SIZE = (1440, 900)


def _app():
    from nlstudio.app import create_application

    return create_application()


def _window(size=SIZE):
    """A fresh window (no layout remembered from an earlier shot) in its default layout."""
    from PySide6.QtCore import QSettings

    from nlstudio.app import create_main_window

    QSettings().clear()
    window = create_main_window()
    window.resize(*size)
    window.reset_layout()
    window.show()
    return window


def _settle(ms: int = 400) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _wait_until(predicate, timeout_ms: int = 600_000) -> None:
    from PySide6.QtCore import QDeadlineTimer, QEventLoop, QTimer

    deadline = QDeadlineTimer(timeout_ms)
    while not predicate():
        if deadline.hasExpired():
            raise TimeoutError("the app did not reach the state to photograph")
        loop = QEventLoop()
        QTimer.singleShot(50, loop.quit)
        loop.exec()


def _save(window, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    window.grab().save(str(path))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def editor() -> None:
    _app()
    for preset, name in (("nsam_kv_stream", "editor_nsam.png"),
                         ("transformer", "editor_transformer.png")):
        window = _window()
        window.open_preset(preset)
        _settle()
        _save(window, name)
        window.document.undo_stack.setClean()
        window.close()


def scaled() -> None:
    """The NSAM editor at 150 % (a separate process: the scale factor is read at start-up)."""
    env = dict(os.environ, QT_SCALE_FACTOR="1.5", NLSTUDIO_SHOTS_OUT=str(OUT))
    code = ("import runpy; m = runpy.run_path(%r); m['_app'](); w = m['_window']((1200, 760)); "
            "w.open_preset('nsam_kv_stream'); m['_settle'](600); "
            "m['_save'](w, 'editor_nsam@150.png'); w.document.undo_stack.setClean(); w.close()"
            % str(Path(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def live() -> None:
    """A live run of the default project: every plot with data."""
    _app()
    from nlstudio.project import load_preset, project_to_dict

    window = _window()
    window.open_preset("nsam_kv_stream")
    doc = project_to_dict(load_preset("nsam_kv_stream"))
    steps = 40
    window.document.edit("Shorter run for the screenshot", lambda d: d["train"].update(
        steps=steps, eval_every=10, log_every=2))
    out = Path(SCRATCH) / "live"
    window.training.start(out=str(out))
    progress = lambda: (window.training.last_progress.step  # noqa: E731
                        if getattr(window.training, "last_progress", None) else 0)
    _wait_until(lambda: (out / "eval.csv").exists()
                and len((out / "eval.csv").read_text().splitlines()) > 20
                and progress() >= 0.75 * steps)
    _settle(800)
    _save(window, "live_run.png")
    window.training.stop()
    _wait_until(lambda: not window.training.live)
    window.document.undo_stack.setClean()
    window.close()
    del doc


def lessons() -> None:
    """Each lesson after a few steps (lesson 5 trains first: wait for it)."""
    _app()
    from PySide6.QtWidgets import QAbstractButton

    window = _window()
    for number in range(1, 6):
        lesson = window.lessons.open(number)
        lesson.resize(1280, 820)
        _wait_until(lambda: not lesson.busy())
        nxt = lesson.findChild(QAbstractButton, f"lesson{number}Next")
        for _ in {3: 90, 5: 2}.get(number, 3) * [None]:
            if nxt is not None and nxt.isEnabled():
                nxt.click()
                _wait_until(lambda: not lesson.busy())
        _settle(500)
        _save(lesson, f"lesson_{number}.png")
        lesson.close()
    window.lessons.show_welcome()
    _settle(300)
    welcome = window.lessons.welcome if hasattr(window.lessons, "welcome") else None
    if welcome is not None:
        _save(welcome, "welcome.png")
        welcome.close()
    window.document.undo_stack.setClean()
    window.close()


def sizes() -> None:
    """The default layout at the smallest size it is made for and a common larger one, with
    nothing and then a level selected (for checking the layout, not for the README)."""
    _app()
    for size in ((1280, 800), (1600, 1000)):
        window = _window(size)
        window.open_preset("nsam_kv_stream")
        _wait_until(lambda: not window.parameters.busy())
        _settle()
        _save(window, f"layout_{size[0]}x{size[1]}.png")
        window.scene.select_only(["fast"])
        _settle(200)
        _save(window, f"layout_{size[0]}x{size[1]}_level.png")
        window.document.undo_stack.setClean()
        window.close()


SHOTS = {"editor": editor, "scaled": scaled, "live": live, "lessons": lessons, "sizes": sizes}

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--out"] and len(args) > 1:
        OUT = Path(args[1]).absolute()
        args = args[2:]
    for key in args or [k for k in SHOTS if k != "sizes"]:
        SHOTS[key]()
