"""``nlstudio generate RUN_DIR``: sample from a trained model on the command line.

    nlstudio generate runs/charlm-… --prompt "def " --tokens 200 --temperature 0.8 --seed 1

Prints only what the model generates (not the prompt), as it is produced: decoded text for a
byte-level task (a character split across tokens appears with its last byte; invalid bytes
print as U+FFFD), token ids separated by spaces for other token tasks. Exit codes: 0 done,
2 invalid input (one line on stderr naming the file or the option), 130 Ctrl-C.

The parser lives here and the subcommand is added to the CLI's parser by :func:`add_parser`,
so ``nlstudio/commands.py`` needs two lines to offer it. Like ``nlstudio.commands``, it
imports torch and the generator inside :func:`_generate` only (CLI start-up time).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from nlstudio.cli import ExitCode
from nlstudio.printable import printable
from nlstudio.threads import configure_torch, default_torch_threads, threads_problem


def add_parser(sub) -> argparse.ArgumentParser:
    """Adds ``generate`` to the CLI's subparsers; returns its parser."""
    g = sub.add_parser("generate", help="sample text or tokens from a trained model",
                       description="Read a prompt as a stream, then sample tokens one at a "
                                   "time (the in-context levels keep learning). Byte-level "
                                   "tasks print text, other token tasks token ids.")
    g.add_argument("run_dir", metavar="RUN_DIR", help="a run folder or an exported model folder")
    source = g.add_mutually_exclusive_group()
    source.add_argument("--prompt", metavar="TEXT",
                        help="the prompt: text for a byte-level task, token ids such as "
                             "'3 17 5' otherwise")
    source.add_argument("--prompt-file", metavar="F", help="read the prompt from a file")
    g.add_argument("--tokens", type=int, default=200, metavar="N",
                   help="tokens to generate (default 200)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="sampling temperature; 0 picks the most likely token (default 1.0)")
    g.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="sample among the K most likely tokens only (default: all)")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the sampler: the same seed gives the same tokens (default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores "
                   "but one)")
    return g


def _fail(message: str, code: int = ExitCode.INVALID) -> int:
    print(f"nlstudio: generate: {printable(message, 2000)}", file=sys.stderr)
    return int(code)


def run(args: argparse.Namespace) -> int:
    """Runs ``nlstudio generate`` for parsed ``args``; returns the exit code."""
    try:
        return _generate(args)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.for_signal(signal.SIGINT))


def _generate(args: argparse.Namespace) -> int:
    # Cheap checks first: a wrong option answers before torch is imported.
    if args.tokens < 1:
        return _fail(f"--tokens must be at least 1, got {args.tokens}")
    if not args.temperature >= 0 or args.temperature == float("inf"):
        return _fail(f"--temperature must be 0 or positive, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        return _fail(f"--top-k must be at least 1, got {args.top_k}")
    if args.threads is not None and threads_problem(args.threads):
        return _fail(f"--threads {threads_problem(args.threads)}")
    if not os.path.isdir(args.run_dir):
        return _fail(f"{args.run_dir}: not a run folder or an exported model folder")

    from nlstudio import generation as gen

    prompt: str | bytes | None = args.prompt
    source = "--prompt"
    try:
        if args.prompt_file is not None:
            prompt, source = gen.read_prompt_file(args.prompt_file), args.prompt_file
        if prompt is None:
            return _fail("give a prompt with --prompt TEXT or --prompt-file F (the models "
                         "have no start-of-text token to begin from)")
        from nlstudio.trainer import TrainError, resolve_device

        configure_torch(args.threads or default_torch_threads())
        try:
            device = resolve_device(args.device)
        except TrainError as exc:  # no CUDA here
            return _fail(str(exc))
        loaded = gen.load_model(args.run_dir, device)
        ids = gen.encode_prompt(loaded.task, prompt, source)
        steps = gen.stream_steps(loaded.model, ids, tokens=args.tokens,
                                 temperature=args.temperature, top_k=args.top_k,
                                 seed=args.seed)
    except gen.GenerationError as exc:
        return _fail(str(exc))
    return _print_stream(steps, loaded.byte_level)


def _print_stream(steps, byte_level: bool) -> int:
    from nlstudio.generation import Utf8Stream

    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # a terminal that cannot show a character: "?"
    decoder = Utf8Stream() if byte_level else None
    wrote = False
    try:
        try:
            for step in steps:
                if decoder is not None:
                    text = decoder.feed(step.token)
                else:
                    text = f"{' ' if wrote else ''}{step.token}"
                if text:
                    out.write(text)
                    out.flush()
                    wrote = True
        finally:  # also on Ctrl-C: what was decoded so far ends with a newline
            tail = decoder.flush() if decoder is not None else ""
            out.write(tail + ("\n" if wrote or tail else ""))
            out.flush()
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, without Python's complaint about
        # flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return int(ExitCode.OK)
    return int(ExitCode.OK)
