"""Headless subcommands (train, eval, presets). Filled in by the core trainer issue."""
from __future__ import annotations

import sys


def run(argv: list[str]) -> int:
    print(f"nlstudio: '{argv[0]}' is not available yet", file=sys.stderr)
    return 1
