"""The ``nlstudio`` command line.

    nlstudio [PROJECT]            open the GUI (optionally on a project file)
    nlstudio train PROJECT ...    train headless (see ``nlstudio train --help``)
    nlstudio eval RUN_DIR         evaluate a saved run (or an exported model folder)
    nlstudio presets              list the bundled presets
    nlstudio generate RUN_DIR     sample text or tokens from a trained model

Exit codes (:class:`ExitCode`, the one list): 0 success; 1 a failure while running (a diverged
run, a full disk); 2 invalid input (one clear line on stderr, no traceback); 128 + N a run
stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), which stays resumable.

This module imports nothing heavy: ``nlstudio --version`` and argument errors answer without
``import torch`` (the subcommands live in ``nlstudio.commands``).
"""
from __future__ import annotations

import argparse
import sys
from enum import IntEnum

import nlstudio
from nlstudio.printable import printable

SUBCOMMANDS = ("train", "eval", "presets", "generate")


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    INVALID = 2

    @staticmethod
    def for_signal(signum: int) -> int:
        """The shell's code for a process ended by signal ``signum`` (130 for SIGINT)."""
        return 128 + int(signum)


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one printable line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(ExitCode.INVALID, f"{self.prog}: error: {printable(message)}\n")


def _gui_parser() -> argparse.ArgumentParser:
    p = Parser(prog="nlstudio", description="NL Studio: a desktop lab for nested memories.",
               epilog="Subcommands: train, eval, presets, generate (nlstudio <sub> --help).")
    p.add_argument("--version", action="version", version=f"nlstudio {nlstudio.__version__}")
    p.add_argument("project", nargs="?", help="a project file (*.nlproj) or run folder to open")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            from nlstudio import commands

            return commands.run(argv)
        args = _gui_parser().parse_args(argv)
        from nlstudio.app import main as gui_main

        return gui_main(args.project)
    except KeyboardInterrupt:  # Ctrl-C while starting up (imports): one line, no traceback
        try:
            print("nlstudio: interrupted", file=sys.stderr)
        except OSError:
            pass
        return 128 + 2  # SIGINT, as the shell reports it (commands.ExitCode.for_signal)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
