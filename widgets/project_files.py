"""The File menu's half of the main window: new, open, save, presets, recent files and crash
recovery. :class:`ProjectFiles` is a mixin of ``MainWindow``: it uses the window's
``document``, ``dialogs``, ``settings``, ``recovery``, ``scene``, ``_path_openers``,
``recent_menu`` and ``presets_menu``, and ``statusBar()``.
"""
from __future__ import annotations

import html
import sys
import traceback
from pathlib import Path
from typing import Callable

from nlstudio import project as core

SUFFIX = ".nlproj"
MAX_RECENT = 10


class ProjectFiles:
    # ---- files -------------------------------------------------------------------------------
    def _may_replace(self) -> bool:
        if self.document.locked:
            self.statusBar().showMessage(
                f"{self.document.lock_reason or 'Editing is locked'}: stop it first", 6000)
            return False
        return self.maybe_save()

    def maybe_save(self) -> bool:
        """Ask to save unsaved changes; False if the user cancelled (or saving failed)."""
        if self.document.is_clean:
            return True
        answer = self.dialogs.ask_save_changes(self.document.name)
        if answer == "save":
            return self.save()
        return answer == "discard"

    def new_project(self) -> bool:
        if not self._may_replace():
            return False
        self.document.load(core.new_project(), None)
        self.recovery.clear()
        self.statusBar().showMessage("New project", 4000)
        return True

    def open_project(self, path: str | None = None) -> bool:
        """File → Open: ask for unsaved changes, then for a path."""
        if path is None:
            if not self._may_replace():
                return False
            start = str(Path(self.document.path).parent) if self.document.path else ""
            path = self.dialogs.get_open_path(start)
            if not path:
                return False
            return self._open_project_file(path)
        return self.open_path(path)

    def open_path(self, path: str) -> bool:
        """Open a project file (``nlstudio PROJECT``); the window's path openers
        (``add_path_opener``) may claim other paths first (e.g. run folders)."""
        path = str(path)
        for accepts, handler in self._path_openers:
            if accepts(path):
                return bool(handler(path))
        if Path(path).is_dir():
            self.dialogs.error("Cannot open folder",
                               f"{path} is a folder, not a project file (*{SUFFIX}).")
            return False
        if not self._may_replace():
            return False
        return self._open_project_file(path)

    def _open_project_file(self, path: str) -> bool:
        """A file that cannot be read is named by its full path (a path typed on the command
        line may be relative to a folder the user no longer thinks of); a file that is read
        but invalid shows the core's message."""
        name, full = Path(path).name, str(Path(path).absolute())
        try:
            data = core.project_to_dict(core.load_project(path))
        except core.ProjectError as exc:
            message = str(exc)
            if not Path(path).exists():
                self._forget_recent(path)
                message = str(core.ProjectError(full, exc.path, exc.message))
            self.dialogs.error("Could not open project", message)
            return False
        except OSError as exc:
            self.dialogs.error("Could not open project", f"{full}: {exc.strerror or exc}")
            self._forget_recent(path)
            return False
        except Exception as exc:  # never a traceback in front of the user
            traceback.print_exc(file=sys.stderr)
            self.dialogs.error("Could not open project", f"{full}: {exc}")
            return False
        self.document.load(data, str(Path(path).absolute()))
        self.recovery.clear()
        self._remember_recent(str(Path(path).absolute()))
        self.scene.clearSelection()
        self.statusBar().showMessage(f"Opened {name}", 4000)
        return True

    def open_preset(self, name: str) -> bool:
        """An untitled copy of a bundled preset (Save asks where to put it)."""
        if not self._may_replace():
            return False
        try:
            data = core.project_to_dict(core.load_preset(name))
        except Exception as exc:
            self.dialogs.error("Could not open preset", str(exc))
            return False
        self.document.load(data, None)
        self.recovery.clear()
        self.scene.clearSelection()
        self.statusBar().showMessage(f"New project from the preset “{name}”", 4000)
        return True

    def save(self) -> bool:
        if not self.document.path:
            return self.save_as()
        return self._save_to(self.document.path)

    def save_as(self) -> bool:
        if self.document.path:
            suggested = self.document.path
        else:
            stem = "".join(c if c.isalnum() or c in "-_ " else "_" for c in self.document.name)
            last = self.settings.value("lastDirectory", "")
            suggested = str(Path(str(last or Path.home())) / f"{stem.strip() or 'untitled'}{SUFFIX}")
        path = self.dialogs.get_save_path(suggested)
        if not path:
            return False
        if not Path(path).suffix:
            path += SUFFIX
        return self._save_to(path)

    def _save_to(self, path: str) -> bool:
        name = Path(path).name
        try:
            core.save_project(self.document.snapshot(), path)
        except core.ProjectError as exc:
            self.dialogs.error("Could not save project",
                               f"{exc}\n\nFix the problems shown on the canvas, then save again.")
            return False
        except OSError as exc:
            self.dialogs.error("Could not save project", f"{name}: {exc.strerror or exc}")
            return False
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.dialogs.error("Could not save project", f"{name}: {exc}")
            return False
        absolute = str(Path(path).absolute())
        self.document.mark_saved(absolute)
        self.recovery.clear()
        self._remember_recent(absolute)
        self.settings.setValue("lastDirectory", str(Path(absolute).parent))
        self.statusBar().showMessage(f"Saved {name}", 4000)
        return True

    # ---- recent files and presets -----------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.settings.value("recentFiles", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember_recent(self, path: str) -> None:
        files = [path] + [f for f in self.recent_files() if f != path]
        self.settings.setValue("recentFiles", files[:MAX_RECENT])

    def _forget_recent(self, path: str) -> None:
        absolute = str(Path(path).absolute())
        self.settings.setValue("recentFiles", [f for f in self.recent_files() if f != absolute])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        for i, path in enumerate(files):
            label = f"&{i + 1}  {Path(path).name}" if i < 9 else Path(path).name
            action = self.recent_menu.addAction(label)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _c=False, p=path: self.open_project(p))
        if not files:
            self.recent_menu.addAction("No recent projects").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear Recent", lambda: self.settings.setValue(
                "recentFiles", []))

    def _fill_presets_menu(self) -> None:
        """One entry per bundled preset: its title, with its description as the status tip
        and the tooltip (and its file name, the name ``nlstudio`` and the lessons use)."""
        self.presets_menu.clear()
        try:
            names = sorted(core.preset_paths())
        except Exception:
            names = []
        entries = []
        for name in names:
            try:
                preset = core.load_preset(name)
                title, about = preset.name, preset.description
            except Exception as exc:  # a broken preset is listed, and says why
                title, about = name, f"cannot be read: {exc}"
            entries.append((title.casefold(), title, about, name))
        for _key, title, about, name in sorted(entries):
            action = self.presets_menu.addAction(title.replace("&", "&&"))
            action.setObjectName(f"action_preset_{name}")
            action.setStatusTip(about)
            action.setToolTip(f"<p><b>{html.escape(title)}</b> ({name}{SUFFIX})</p>"
                              f"<p>{html.escape(about)}</p>")
            action.triggered.connect(lambda _c=False, n=name: self.open_preset(n))
        if not names:
            self.presets_menu.addAction("No presets installed").setEnabled(False)

    # ---- recovery ---------------------------------------------------------------------------
    def _write_recovery(self, *_args: object) -> None:
        if self.document.is_clean:
            self.recovery.clear()
        else:
            self.recovery.write(self.document.data, self.document.path)

    def check_recovery(self, ask: Callable[[str], bool] | None = None) -> bool:
        """Offer to restore unsaved work left by a session that did not close normally.

        ``ask(text) -> bool`` decides (default: a Yes/No dialog). Returns True if restored.
        """
        found = self.recovery.read()
        if found is None:
            return False
        ask = ask or (lambda text: self.dialogs.question("Restore unsaved changes?", text))
        if not ask(found.describe()):
            self.recovery.clear()
            return False
        self.document.load(found.document, found.path, clean=False)
        self._write_recovery()
        self.statusBar().showMessage("Restored unsaved changes: save them to keep them", 8000)
        return True
