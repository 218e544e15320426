"""Headless subcommands: ``nlstudio train``, ``nlstudio eval``, ``nlstudio presets``.

Exit codes are :class:`nlstudio.cli.ExitCode`. Every message is one printable line naming
the file at fault (``nlstudio.printable``). SIGINT, SIGTERM and SIGHUP all stop a training run
at the next step boundary, checkpoint it, leave ``status.json`` "stopped" and exit with
128 + the signal (130, 143, 129); the same signal again ends the process at once.

Lazy imports (inside the subcommands): the trainer, the project, the runs and everything else
that imports torch or numpy are imported by the subcommand that needs them, so that ``--help``
and argument errors answer without them (docs/architecture.md, "Imports").
"""
from __future__ import annotations

import math
import os
import signal
import sys

from nlstudio import generate_command
from nlstudio.cli import ExitCode, Parser
from nlstudio.printable import printable
from nlstudio.threads import (configure_torch, default_torch_threads, denormals_restored,
                              flush_denormals, threads_problem)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


def _parser() -> Parser:
    p = Parser(prog="nlstudio")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="train a project headless")
    t.add_argument("project", nargs="?", help="project file (*.nlproj); optional with --resume")
    t.add_argument("--steps", type=int, help="total steps (default: the project's train.steps)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the project's")
    t.add_argument("--out", help="run folder (default runs/<name>-<timestamp>)")
    t.add_argument("--seed", type=int, help="override the project's seed")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run in its folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores "
                   "but one, which stays free for the system; two busy torch threads "
                   "collapse when anything else runs on a 2-core machine)")
    e = sub.add_parser("eval", help="evaluate a saved run (or an exported model folder)")
    e.add_argument("run_dir")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    sub.add_parser("presets", help="list the bundled presets")
    generate_command.add_parser(sub)
    return p


def _fail(message: str, code: int = ExitCode.INVALID) -> int:
    try:
        print(f"nlstudio: {printable(message, 2000)}", file=sys.stderr)
    except OSError:  # no terminal any more (SIGHUP)
        pass
    return int(code)


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    # the subcommands flush subnormals (configure_torch); called in-process, the caller's
    # thread gets its own mode back
    with denormals_restored():
        return _run(args)


def _run(args) -> int:
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "generate":
            return generate_command.run(args)
        return _presets()
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.for_signal(signal.SIGINT))


def _invalid_types():
    from nlstudio.project import ProjectError
    from nlstudio.runs import RunError
    from nlstudio.trainer import TrainError
    from nlstudio.untrusted import FileRefused

    return ProjectError, RunError, TrainError, FileRefused


def _train(args) -> int:
    if args.project is None and args.resume is None:
        return _fail("train: give a PROJECT file, or --resume RUN_DIR")
    if args.threads is not None and threads_problem(args.threads):
        return _fail(f"train: --threads {threads_problem(args.threads)}")
    if args.steps is not None and args.steps < 1:
        return _fail(f"train: --steps must be a positive integer, got {args.steps}")
    invalid = _invalid_types()
    from nlstudio.build import count_parameters
    from nlstudio.trainer import Trainer

    configure_torch(args.threads or default_torch_threads())
    # A stop signal is honoured from here on: before the run starts it ends the process with
    # nothing written by it; during the run, at the next step boundary (see the module doc).
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    trainer = None

    def on_signal(signum, frame):
        signal.signal(signum, previous[signum])  # the same signal again: end at once
        received.append(signum)
        if trainer is not None:
            if trainer.dist.is_main:  # os.write: a handler must not re-enter buffered print
                _write_now(f"\nnlstudio: {signal.Signals(signum).name}: stopping after this "
                           "step (send it again to end at once)...\n")
            trainer.stop()

    for s in STOP_SIGNALS:
        signal.signal(s, on_signal)
    try:
        try:
            trainer = Trainer(args.project, out=args.out, steps=args.steps, device=args.device,
                              seed=args.seed, resume=args.resume, snapshots=False)
            n_params = count_parameters(trainer.project, trainer.task)
        except invalid as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(f"{getattr(exc, 'filename', '') or ''}: "
                         f"{exc.strerror or exc}".lstrip(": "))
        if received:  # stopped before it began
            return _fail(f"{signal.Signals(received[0]).name} before the run started; "
                         "nothing was written", ExitCode.for_signal(received[0]))
        return _run_trainer(trainer, args, n_params, received)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run_trainer(trainer, args, n_params: int, received: list[int]) -> int:
    from nlstudio import distributed

    is_main = trainer.dist.is_main
    if is_main:
        _say(f"{trainer.project.name}: {n_params:,} parameters")
    bar = _ProgressBar(trainer) if is_main and not args.quiet else None
    if bar is not None:
        trainer.subscribe(bar.on_event)
    try:
        result = trainer.run()
    finally:
        if bar is not None:
            bar.close()
        distributed.shutdown()
    if result.reason == "failed":
        code = ExitCode.INVALID if result.invalid else ExitCode.FAILURE
        return _fail(f"{result.message} (run folder: {result.run_dir})", code) if is_main \
            else int(code)
    if not is_main:
        return ExitCode.for_signal(received[0]) if received and result.reason == "stopped" \
            else ExitCode.OK
    _say(f"run folder: {result.run_dir}")
    if result.reason == "stopped":
        _say(f"stopped at step {result.step}; resume with: nlstudio train --resume "
             f"{result.run_dir}", sys.stderr)
        return ExitCode.for_signal(received[0] if received else signal.SIGINT)
    if math.isnan(result.loss):  # a resume of a run already at its last step trains nothing
        _say(f"already at step {result.step}: nothing left to train (give --steps to go on)")
    else:
        _say(f"finished {result.step} steps, final loss {result.loss:.4f}")
    if trainer.cuda_graphs_note:
        _say(trainer.cuda_graphs_note)
    return ExitCode.OK


def _write_now(text: str) -> None:
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


def _say(text: str, stream=None) -> None:
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except OSError:  # the terminal went away (SIGHUP): the run folder says everything
        pass


class _ProgressBar:
    """Steps, loss, tokens/s and ETA on stderr (tqdm); silent once stderr fails."""

    def __init__(self, trainer):
        from tqdm import tqdm

        self._bar = tqdm(total=trainer.total_steps, initial=trainer.start_step, unit="step",
                         dynamic_ncols=True, mininterval=0.25, file=sys.stderr,
                         desc=printable(trainer.project.name, 40))
        self._broken = False

    def on_event(self, event) -> None:
        if self._broken:
            return
        try:
            self._show(event)
        except OSError:
            self._broken = True

    def _show(self, event) -> None:
        from nlstudio import events as ev

        if isinstance(event, ev.Progress):
            self._bar.n = event.step
            self._bar.set_postfix(loss=f"{event.loss:.4f}", metric=f"{event.metric:.3f}",
                                  tok_s=f"{event.tokens_per_s:,.0f}", refresh=False)
            self._bar.refresh() if event.step == event.total_steps else self._bar.update(0)
        elif isinstance(event, ev.Started):
            self._bar.write(f"device: {event.device_name}; run folder: {event.run_dir}",
                            file=sys.stderr)

    def close(self) -> None:
        try:
            self._bar.close()
        except OSError:
            pass


def _eval(args) -> int:
    invalid = _invalid_types()
    flush_denormals()  # undone by run() when called in-process
    from nlstudio import evaluation
    from nlstudio.runs import load_run, load_weights_into
    from nlstudio.trainer import resolve_device

    try:
        run = load_run(args.run_dir)
        device = resolve_device(args.device)
        model, task = run.build_model()  # after the resource check
        step = load_weights_into(model, run.weights_file)
    except invalid as exc:
        return _fail(str(exc))
    model.to(device).eval()
    if step is None:  # weights without a step in their metadata
        step = run.checkpoint_step
    measured = evaluation.evaluate(f"eval:{run.path}", task, model, device,
                                   list(getattr(model, "order", [])), step or None)
    label = f"step {step}" if step is not None else "step unknown"
    print(f"run: {printable(run.path)}  ({label})")
    print(f"{'task':<24} {measured.metric_name}")
    for name, metric in measured.rows:
        print(f"{printable(name, 24):<24} {metric:.4f}")
    _print_ablations(measured.delays, measured.ablations)
    _print_content(measured.content)
    return ExitCode.OK


def _print_ablations(delays, ablations: dict) -> None:
    """One table per ablation kind, freeze first, each headed by what it measures."""
    from nlstudio import probes

    for kind in probes.ABLATION_KINDS:
        by_level = ablations.get(kind)
        if not by_level:
            continue
        what = probes.ABLATION_VERB[kind]
        print(f"recall by delay (tokens since the fact was seen), each level {what} in turn "
              f"({kind}: {probes.ABLATION_MEANING[kind]})")
        print(f"{'level ' + what:<24} " + " ".join(f"{d:>6}" for d in delays))
        for name, values in by_level.items():
            label = "none (full model)" if not name else printable(name, 24)
            print(f"{label:<24} " + " ".join(f"{v:6.3f}" for v in values))


def _print_content(rates: dict) -> None:
    """Designed frequency beside the measured content frequency, per level."""
    from nlstudio import probes

    first = next(iter(rates.values()), None)
    if first is None:
        return
    print(f"content rate (how fast what each level returns changes; {first.sequences} held-out "
          f"streams of {first.tokens} tokens; nlstudio.probes defines it)")
    lag = max((int(r.lags[-1]) for r in rates.values() if len(r.lags)), default=0)
    print(f"{'level':<16} {'kind':<16} {'designed':>9} {'content':>26} {'turnover':>10} "
          f"{f'replaced@{lag}':>13} {'writes/token':>13}")
    for lid, rate in rates.items():
        turnover = ("–" if math.isnan(rate.turnover) else "never" if math.isinf(rate.turnover)
                    else f"{rate.turnover:.1f}")
        if rate.bound:
            turnover = f"> {2 * int(rate.lags[-1])}"
        writes = "–" if math.isnan(rate.writes_per_token) else f"{rate.writes_per_token:.4f}"
        share = f"{float(rate.drift[-1]):.3f}" if len(rate.lags) else "–"
        print(f"{printable(lid, 16):<16} {printable(rate.kind, 16):<16} "
              f"{probes.frequency_text(rate.designed):>9} {probes.content_text(rate):>26} "
              f"{turnover:>10} {share:>13} {writes:>13}")


def _presets() -> int:
    from nlstudio.project import load_preset, preset_paths

    for name, path in sorted(preset_paths().items()):
        try:
            project = load_preset(name)
            desc, task = project.description or project.name, project.task.name
        except Exception as exc:  # noqa: BLE001 - a broken bundled preset is a bug; list on
            desc, task = f"(cannot load: {printable(exc)})", ""
        print(f"{name:<32} {task:<14} {printable(desc)}")
    return ExitCode.OK
