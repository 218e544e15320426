"""Regenerates the README's screenshots from the real app (offscreen Qt).

    .venv/bin/python tools/screenshots.py            # all of them into docs/images/
    .venv/bin/python tools/screenshots.py editor     # only some: editor, scaled, live,
                                                     # inspector, lessons
    .venv/bin/python tools/screenshots.py --out /tmp/shots sizes layout   # elsewhere; the
        # checks that are not README images: `sizes` (the editor at 1280×800 and 1600×1000),
        # `layout` (the same sizes during and after a short run, with Run → Inspect Model
        # open, and after a theme switch)
    .venv/bin/python tools/screenshots.py --help    # lists the shots

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
SIZE = (1440, 900)  # the editor shots
LIVE_SIZE = (1920, 1080)  # a live run: four plots side by side in the default layout


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
    """The editor with the NSAM preset, and with the Transformer preset."""
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
    """The NSAM editor at 150 % on a 1920×1200 screen, 1280×800 logical pixels (a separate
    process: the scale factor is read at start-up)."""
    env = dict(os.environ, QT_SCALE_FACTOR="1.5", NLSTUDIO_SHOTS_OUT=str(OUT))
    code = ("import runpy; m = runpy.run_path(%r); m['_app'](); w = m['_window']((1280, 800)); "
            "w.open_preset('nsam_kv_stream'); m['_settle'](600); "
            "m['_save'](w, 'editor_nsam@150.png'); w.document.undo_stack.setClean(); w.close()"
            % str(Path(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def _short_run(window, name: str, steps: int = 40) -> Path:
    """Starts a short run of the window's project; returns once it is 3/4 done with a few
    evaluations written (every plot has data)."""
    training = window.training
    window.document.edit("Shorter run for the screenshot", lambda d: d["train"].update(
        steps=steps, eval_every=10, log_every=2))
    out = Path(SCRATCH) / name
    training.start(out=str(out))
    progress = lambda: training.last_progress.step if training.last_progress else 0  # noqa
    _wait_until(lambda: (out / "eval.csv").exists()
                and len((out / "eval.csv").read_text().splitlines()) > 20
                and progress() >= 0.75 * steps)
    _settle(800)
    return out


def _finish(window) -> None:
    _wait_until(lambda: not window.training.live)
    _settle(600)


def live() -> None:
    """A live run of the default project: every plot with data (the ablation is the tab
    behind the forgetting curves at this size)."""
    _app()
    window = _window(LIVE_SIZE)
    window.open_preset("nsam_kv_stream")
    _short_run(window, "live")
    _save(window, "live_run.png")
    window.training.stop()
    _finish(window)
    window.document.undo_stack.setClean()
    window.close()


def _inspect_current(window, length: int = 96):
    """Run → Inspect Model on the run the window shows, a fresh example of its task traced,
    the scrubber at a fact the model recalls (the most confident right prediction in the
    second half; two thirds along if there is none), the inspector at the size it opens at."""
    import numpy as np

    window.actions["run.inspect"].trigger()
    inspector = window.inspectors.windows[-1]
    inspector.length.setValue(length)
    inspector.new_example()
    _wait_until(lambda: inspector.trace is not None and not inspector.busy)
    trace = inspector.trace
    half = len(trace) // 2
    right = trace.top_ids[half:, 0] == trace.targets[half:]
    confidence = np.where(right, trace.top_probs[half:, 0], -1.0)
    inspector.set_position(half + int(np.argmax(confidence)) if right.any()
                           else 2 * len(trace) // 3)
    _settle(500)
    return inspector


def inspector() -> None:
    """The memory inspector on a briefly trained run of the default project."""
    _app()
    window = _window()
    window.open_preset("nsam_kv_stream")
    _short_run(window, "inspected", steps=60)
    _finish(window)
    shown = _inspect_current(window)
    _save(shown, "inspector.png")
    shown.close()
    window.document.undo_stack.setClean()
    window.close()


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
        # lesson 5 opens on its first stage: step it to its last (until Next is disabled)
        for _ in {3: 90, 5: 100}.get(number, 3) * [None]:
            if nxt is None or not nxt.isEnabled():
                break
            nxt.click()
            _wait_until(lambda: not lesson.busy())
        _settle(500)
        _save(lesson, f"lesson_{number}.png")
        lesson.close()
    welcome = window.lessons.show_welcome()
    _settle(300)
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


def layout() -> None:
    """The default layout at both sizes: the project alone, during a short run, after it
    (with the plots behind tabs raised, and a level selected), with Run → Inspect Model
    open, and after a switch to the dark theme and back to light (for checking the layout,
    not for the README)."""
    _app()
    for size in ((1280, 800), (1600, 1000)):
        tag = f"{size[0]}x{size[1]}"
        window = _window(size)
        window.open_preset("nsam_kv_stream")
        _wait_until(lambda: not window.parameters.busy())
        _settle()
        _save(window, f"layout_{tag}_1_project.png")
        _short_run(window, f"layout-{tag}")
        _save(window, f"layout_{tag}_2_live.png")
        _finish(window)
        _save(window, f"layout_{tag}_3_done.png")
        plots = window.training.plots
        for tab in (plots.matrices, plots.ablation):  # the plots behind tabs, shown
            tab.raise_()
        _settle(800)
        _save(window, f"layout_{tag}_3_tabs.png")
        window.scene.select_only(["fast"])
        _settle(300)
        _save(window, f"layout_{tag}_3_level.png")
        window.scene.clearSelection()
        shown = _inspect_current(window)
        _save(shown, f"layout_{tag}_4_inspector.png")
        shown.close()
        window.set_theme("dark")
        _settle(600)
        _save(window, f"layout_{tag}_5_dark.png")
        window.set_theme("light")
        _settle(600)
        _save(window, f"layout_{tag}_6_light.png")
        window.document.undo_stack.setClean()
        window.close()


SHOTS = {"editor": editor, "scaled": scaled, "live": live, "inspector": inspector,
         "lessons": lessons, "sizes": sizes, "layout": layout}
CHECKS = ("sizes", "layout")  # not README images: only when named



def usage() -> str:
    """The module's docstring and every shot, with the first sentence of its own."""
    lines = [__doc__.strip(), "", "Shots (README images unless marked as a check):"]
    for key, shot in SHOTS.items():
        summary = " ".join((shot.__doc__ or "").split()).split(". ")[0].rstrip(".")
        lines.append(f"  {key:<10}{'(check) ' if key in CHECKS else ''}{summary}")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args):
        print(usage())
        sys.exit(0)
    if args[:1] == ["--out"] and len(args) > 1:
        OUT = Path(args[1]).absolute()
        args = args[2:]
    unknown = [a for a in args if a not in SHOTS]
    if unknown:
        sys.exit(f"screenshots.py: unknown shot {', '.join(unknown)} (one of: "
                 f"{', '.join(SHOTS)}; --help lists them)")
    for key in args or [k for k in SHOTS if k not in CHECKS]:
        SHOTS[key]()
