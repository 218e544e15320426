"""Help → Keyboard and Mouse (F1): every shortcut of the action registry, grouped by menu, and
the canvas gestures that are not actions. Built when shown, so the actions the training side
and the lessons add are listed too."""
from __future__ import annotations

import html

from PySide6.QtGui import QKeySequence

from nlstudio.widgets.actions import ActionRegistry

GROUPS = {"file": "File", "edit": "Edit", "view": "View", "run": "Run", "help": "Help",
          "lesson": "Lessons"}

#: (gesture, what it does): the canvas and panels' mouse and keys that are not actions.
GESTURES = (
    ("Drag from the Levels panel", "add a level; its height sets its period"),
    ("Double-click or Enter in the Levels panel", "add a level right of the graph"),
    ("Drag from a right port to a left port", "connect two levels"),
    ("Drag a level up or down", "make it learn faster or slower (its period)"),
    ("↑ / ↓", "the selected levels one octave faster / slower"),
    ("← / →", "move the selected levels sideways"),
    ("Drag on empty canvas, Ctrl+click", "select several levels"),
    ("Esc", "cancel a connection being drawn"),
    ("Ctrl+wheel", "zoom the canvas"),
    ("Middle-drag, or Space+drag", "pan the canvas"),
    ("Right-click", "the canvas's menu: add here, delete, disconnect"),
    ("Wheel over the Inspector", "scrolls it; click a field first to change it with the wheel"),
)


def plain(text: str) -> str:
    """An action's text without its mnemonic ("&Save" -> "Save", "&&" -> "&")."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").strip()


def shortcut_rows(actions: ActionRegistry) -> list[tuple[str, str, str]]:
    """(group, action text, its shortcuts) for every action that has a shortcut."""
    rows = []
    for action_id, action in actions.items():
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()]
        if keys:
            prefix = action_id.split(".", 1)[0]
            rows.append((GROUPS.get(prefix, prefix.capitalize()), plain(action.text()),
                         ", ".join(keys)))
    order = list(GROUPS.values())
    rows.sort(key=lambda r: order.index(r[0]) if r[0] in order else len(order))
    return rows


def shortcuts_html(actions: ActionRegistry) -> str:
    def table(title: str, rows: list[tuple[str, str]]) -> str:
        cells = "".join(f"<tr><td style='padding-right:18px'><b>{html.escape(a)}</b></td>"
                        f"<td>{html.escape(b)}</td></tr>" for a, b in rows)
        return f"<h4 style='margin-bottom:2px'>{html.escape(title)}</h4><table>{cells}</table>"

    parts, groups = [], {}
    for group, text, keys in shortcut_rows(actions):
        groups.setdefault(group, []).append((keys, text))
    for group, rows in groups.items():
        parts.append(table(group, rows))
    parts.append(table("Canvas and panels", list(GESTURES)))
    return "".join(parts)
