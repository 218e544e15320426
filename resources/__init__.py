"""Bundled data of NL Studio: presets (*.nlproj), icons (SVG) and the stylesheet.

Reach files through :func:`path` (or ``importlib.resources.files("nlstudio.resources")``),
never through paths relative to the repository, so an installed copy finds them too.
"""
from importlib import resources as _resources
from pathlib import Path


def path(*parts: str) -> Path:
    """A bundled file, e.g. ``path("presets", "nsam.nlproj")``."""
    node = _resources.files(__name__)
    for part in parts:
        node = node.joinpath(part)
    return Path(str(node))
