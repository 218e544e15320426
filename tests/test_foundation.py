"""The ground everything stands on: the package imports, the core needs no Qt, the window opens."""
import os
import subprocess
import sys
import textwrap

import nlstudio


def _run_python(code: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_imports_from_outside_the_repository(tmp_path):
    result = _run_python("""
        import nlstudio, nlstudio.models, nlstudio.widgets, nlstudio.resources
        import importlib.util
        assert importlib.util.find_spec("models") is None, "a bare 'models' package is importable"
        assert nlstudio.resources.path("presets").is_dir()
        print(nlstudio.__version__)
        """, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == nlstudio.__version__


def test_core_and_models_need_no_qt(tmp_path):
    result = _run_python("""
        import sys
        class BlockQt:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph"):
                    raise ImportError(f"Qt is blocked in this test: {name}")
        sys.meta_path.insert(0, BlockQt())
        import nlstudio, nlstudio.models, nlstudio.cli
        import pkgutil, importlib
        for pkg in (nlstudio, nlstudio.models):
            for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                if info.name.startswith(("nlstudio.widgets", "nlstudio.app", "nlstudio.__main__")):
                    continue
                importlib.import_module(info.name)
        loaded = [m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph")]
        assert not loaded, loaded
        print("ok")
        """, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_version_flag(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nlstudio", "--version"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"nlstudio {nlstudio.__version__}"


def test_main_window_opens(qtbot):
    from nlstudio.widgets.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle().startswith("NL Studio")
    assert window.isVisible()


def test_the_app_really_opens_on_the_default_project(tmp_path):
    shot = tmp_path / "window.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", NLSTUDIO_SCREENSHOT=str(shot))
    result = subprocess.run([sys.executable, "-m", "nlstudio"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    from PySide6.QtGui import QImage

    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500


def test_full_window_has_editor_and_training(qtbot):
    from nlstudio.app import DEFAULT_PRESET, create_main_window

    window = create_main_window()
    qtbot.addWidget(window)
    assert window.open_preset(DEFAULT_PRESET)
    window.show()
    qtbot.waitExposed(window)
    assert "NSAM" in window.windowTitle()
    assert window.training is not None
    assert window.actions.get("run.start").isEnabled()
    window.document.undo_stack.setClean()
