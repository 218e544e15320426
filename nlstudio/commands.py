"""Headless subcommands: ``nlstudio train``, ``nlstudio eval``, ``nlstudio presets``.

Exit codes: 0 success; 2 invalid input (one clear line on stderr, no traceback); 1 any other
failure (a diverged run included); 130 a run stopped by Ctrl-C (it stays resumable).
"""
from __future__ import annotations

import argparse
import signal
import sys

from nlstudio import generate_command

EXIT_OK, EXIT_FAILURE, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nlstudio")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
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
    e = sub.add_parser("eval", help="evaluate a saved run and print its metrics")
    e.add_argument("run_dir")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    sub.add_parser("presets", help="list the bundled presets")
    generate_command.add_parser(sub)
    return p


def default_threads() -> int:
    """All cores but one (at least one): the spare core keeps the machine (or the GUI)
    responsive, and torch's 2-thread kernels collapse under contention on 2 cores."""
    import os

    return max(1, (os.cpu_count() or 2) - 1)


def _fail(message: str, code: int = EXIT_INVALID) -> int:
    print(f"nlstudio: {message}", file=sys.stderr)
    return code


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "generate":
            return generate_command.run(args)
        return _presets()
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _invalid_types():
    from nlstudio.project import ProjectError
    from nlstudio.runs import RunError
    from nlstudio.trainer import TrainError

    return ProjectError, RunError, TrainError


def _train(args) -> int:
    invalid = _invalid_types()
    from nlstudio import distributed
    from nlstudio.trainer import Trainer

    if args.project is None and args.resume is None:
        return _fail("train: give a PROJECT file, or --resume RUN_DIR")
    if args.threads is not None and args.threads < 1:
        return _fail("train: --threads must be at least 1")
    import torch

    torch.set_num_threads(args.threads or default_threads())
    try:
        trainer = Trainer(args.project, out=args.out, steps=args.steps, device=args.device,
                          seed=args.seed, resume=args.resume, snapshots=False)
    except invalid as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}".lstrip(": "))
    bar = None
    is_main = trainer.dist.is_main
    if is_main and not args.quiet:
        bar = _ProgressBar(trainer)
        trainer.subscribe(bar.on_event)
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts for real
        if is_main:
            print("\nnlstudio: stopping after this step (Ctrl-C again to abort)...",
                  file=sys.stderr)
        trainer.stop()

    signal.signal(signal.SIGINT, on_sigint)
    try:
        result = trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
        distributed.shutdown()
    if not is_main:
        return EXIT_OK if result.reason != "failed" else EXIT_FAILURE
    if result.reason == "failed":
        return _fail(result.message + f" (run folder: {result.run_dir})", EXIT_FAILURE)
    print(f"run folder: {result.run_dir}")
    if result.reason == "stopped":
        print(f"stopped at step {result.step}; resume with: nlstudio train --resume "
              f"{result.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"finished {result.step} steps, final loss {result.loss:.4f}")
    if trainer.cuda_graphs_note:
        print(trainer.cuda_graphs_note)
    return EXIT_OK


class _ProgressBar:
    """Steps, loss, tokens/s and ETA on stderr (tqdm)."""

    def __init__(self, trainer):
        from tqdm import tqdm

        self._bar = tqdm(total=trainer.total_steps, initial=trainer.start_step, unit="step",
                         dynamic_ncols=True, mininterval=0.25, file=sys.stderr,
                         desc=trainer.doc.get("name") or "train")

    def on_event(self, event) -> None:
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
        self._bar.close()


def _eval(args) -> int:
    invalid = _invalid_types()
    from nlstudio import probes
    from nlstudio.runs import load_run
    from nlstudio.build import build_task
    from nlstudio.trainer import resolve_device

    try:
        run = load_run(args.run_dir)
        device = resolve_device(args.device)
        model = run.load_model(device=str(device))
        task = build_task(run.project, run.base_dir)
    except invalid as exc:
        return _fail(str(exc))
    model.eval()
    rows = task.evaluate(model, device, step=run.checkpoint_step or run.steps or None)
    print(f"run: {run.path}  (step {run.checkpoint_step if run.checkpoint_step is not None else run.steps})")
    print(f"{'task':<24} {task.metric_name}")
    for row in rows:
        print(f"{row.task:<24} {row.metric:.4f}")
    level_ids = list(getattr(model, "order", []))
    delays, recall = probes.recall_by_delay_with_ablation(task, model, device, level_ids)
    if delays:
        print("recall by delay (tokens since the fact was seen); rows: level silenced")
        print(f"{'silenced':<24} " + " ".join(f"{d:>6}" for d in delays))
        for name, values in recall.items():
            print(f"{name or 'none':<24} " + " ".join(f"{v:6.3f}" for v in values))
    return EXIT_OK


def _presets() -> int:
    from nlstudio.project import load_preset, preset_paths

    for name, path in sorted(preset_paths().items()):
        try:
            project = load_preset(name)
            from nlstudio.project import project_to_dict

            doc = project_to_dict(project)
            desc = doc.get("description") or doc.get("name") or ""
            task = doc.get("task", {}).get("name", "")
        except Exception as exc:  # a broken bundled preset is a bug, but listing goes on
            desc, task = f"(cannot load: {exc})", ""
        print(f"{name:<32} {task:<14} {desc}")
    return EXIT_OK
