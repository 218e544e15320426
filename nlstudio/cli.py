"""The ``nlstudio`` command line.

    nlstudio [PROJECT]            open the GUI (optionally on a project file)
    nlstudio train PROJECT ...    train headless (see ``nlstudio train --help``)
    nlstudio eval RUN_DIR         evaluate a saved run
    nlstudio presets              list the bundled presets

Exit codes: 0 success, 2 invalid input (one clear line on stderr, no traceback), 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys

import nlstudio

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2
SUBCOMMANDS = ("train", "eval", "presets", "generate")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def _gui_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nlstudio", description="NL Studio: a desktop lab for nested memories.",
                epilog="Subcommands: train, eval, presets (nlstudio <sub> --help).")
    p.add_argument("--version", action="version", version=f"nlstudio {nlstudio.__version__}")
    p.add_argument("project", nargs="?", help="a project file (*.nlproj) or run folder to open")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        from nlstudio import commands

        return commands.run(argv)
    args = _gui_parser().parse_args(argv)
    from nlstudio.app import main as gui_main

    return gui_main(args.project)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
