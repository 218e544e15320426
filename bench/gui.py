"""Does the GUI cost training anything? Tokens/s of the NSAM kv_stream preset (default size)
trained headless vs trained from the main window with every plot live, the largest event-loop
stall while it trains, and the redraw rate the plots achieve.

Run ``.venv/bin/python bench/gui.py`` (``--steps``, ``--repeats``; ``--quick`` for a smoke
run). Headless and GUI runs are interleaved in one process after a warm-up run; medians.

- tokens/s: the ratio is taken within each repeat (the load of a shared machine drifts),
  then the median over repeats. Per run, from metrics.csv, (tokens trained between the first and last logged rows) / (wall
  time between them): the same measure for both sides, evaluations and checkpoints included.
  Headless = the core Trainer in the main thread, no snapshots (as ``nlstudio train``), with
  the same torch threads as the GUI's worker (every core but one).
- GUI: MainWindow + install_training at 2400×900 (:data:`SIZE`), the size whose default
  layout puts all five plot docks side by side, so that all five draw: narrower windows fold
  some plots into tabs, and a plot behind a tab skips its redraws (at 1280×800 only the loss
  and the spectrum are in front, at 1600×1000 three plots). The bench refuses to run if a plot
  is not visible. The run is started from the Run action. "live" mode draws what the run
  sends (here ~1-2 steps/s, so ~1-2 snapshots/s); "stress" mode also re-feeds the newest snapshot on a 45 Hz timer, as a run of
  ≥ 45 steps/s (a GPU) would send them, so the plots redraw at their rate caps for the whole
  run: memory matrices 30 Hz, spectrum 10 Hz.
- stall: the largest gap between ticks of a 10 ms PreciseTimer on the GUI thread, minus its
  10 ms period.
- redraw rate: redraws per second of the memory matrices, the plot that shows every snapshot
  (the others are capped at 10 Hz: curves and averaged spectra gain nothing from more).

The three required lines are those of the stress mode (every plot live at the bounded rate:
the worst case); the live mode's numbers follow on their own lines.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NLSTUDIO_TESTING", "1")  # no crash-recovery prompt

SIZE = (2400, 900)  # px: the default layout shows every plot dock (the tests' EVERY_PLOT_SHOWN)


def tokens_per_s(run_dir: Path) -> float:
    from nlstudio.runs import load_run

    run = load_run(run_dir)
    steps, wall = run.metrics["step"], run.metrics["wall_s"]
    train = run.project.train
    if len(steps) < 2:
        raise SystemExit(f"{run_dir}: too few logged rows to time ({len(steps)})")
    return (steps[-1] - steps[0]) * train.batch_size * train.seq_len / (wall[-1] - wall[0])


def headless(doc: dict, out: Path, threads: int) -> float:
    import torch

    from nlstudio.trainer import Trainer

    torch.set_num_threads(threads)
    result = Trainer(doc, out=out, snapshots=False).run()
    if result.reason != "completed":
        raise SystemExit(f"headless run {result.reason}: {result.message}")
    return tokens_per_s(out)


class GuiBench:
    def __init__(self, doc: dict, root: Path) -> None:
        from PySide6.QtCore import QSettings

        from nlstudio.app import create_application
        from nlstudio.widgets.main_window import MainWindow
        from nlstudio.widgets.training_controller import install_training

        self.app = create_application()
        self.root = root
        settings = QSettings(str(root / "settings.ini"), QSettings.Format.IniFormat)
        self.window = MainWindow(settings)
        self.controller = install_training(self.window, runs_root=root / "gui-runs")
        self.window.resize(*SIZE)
        self.window.reset_layout()  # the default layout for this size
        self.window.show()
        self.window.document.load(doc)
        for _ in range(5):
            self.app.processEvents()
        hidden = [d.key for d in self.controller.plots.docks if not d.is_shown()]
        if hidden:
            raise SystemExit(f"plots not visible at {SIZE[0]}×{SIZE[1]}: {hidden}")

    def run(self, out: Path, stress: bool, screenshot: Path | None = None) -> dict:
        from PySide6.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer

        c = self.controller
        plots = c.plots
        scheduler = plots.scheduler
        gaps: list[float] = []
        clock = QElapsedTimer()
        probe = QTimer()
        probe.setTimerType(Qt.TimerType.PreciseTimer)
        probe.setInterval(10)

        def tick() -> None:
            gaps.append(clock.nsecsElapsed() / 1e6)
            clock.restart()

        probe.timeout.connect(tick)
        feeder = QTimer()
        feeder.setTimerType(Qt.TimerType.PreciseTimer)
        feeder.setInterval(22)  # the controller's trainer sends ≤ 45 snapshots/s

        def refeed() -> None:
            # As if snapshots arrived at the trainer's ≤ 45/s (a run of ≥ 45 steps/s): the memory
            # matrices and the spectrum redraw at their own rate caps; the curves, forgetting
            # and ablation redraw when their real rows arrive.
            snap = plots.matrices._last_snapshot or plots.matrices._pending
            if snap is not None:
                plots.matrices.show_snapshot(snap)
                plots.spectrum.show_snapshot(snap)

        feeder.timeout.connect(refeed)
        shooter = QTimer()
        shooter.setInterval(250)

        ready = []

        def shoot() -> None:
            p = c.last_progress
            if (screenshot is not None and p is not None and p.step >= 0.6 * p.total_steps
                    and plots.forgetting.has_data() and plots.ablation.has_data()
                    and not plots.ablation.dirty and not plots.forgetting.dirty):
                ready.append(True)
            if len(ready) >= 2:  # one more tick: axes sized to their new labels
                shooter.stop()
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                self.window.grab().save(str(screenshot))
                print(f"screenshot of the live run at step {p.step}: {screenshot}", flush=True)

        shooter.timeout.connect(shoot)
        loop = QEventLoop()
        c.runEnded.connect(loop.quit)
        scheduler.frame_times.clear()
        scheduler.record = True
        redraws0 = {d.key: d.redraws for d in plots.docks}
        if not c.start(out=out):
            raise SystemExit("the GUI run did not start")
        clock.start()
        probe.start()
        if stress:
            feeder.start()
        if screenshot is not None:
            shooter.start()
        t0 = time.monotonic()
        cpu0 = time.thread_time()
        loop.exec()
        gui_cpu = time.thread_time() - cpu0
        duration = time.monotonic() - t0
        probe.stop()
        feeder.stop()
        shooter.stop()
        scheduler.record = False
        c.runEnded.disconnect(loop.quit)
        result = c.last_result
        if isinstance(result, str) or result.reason != "completed":
            raise SystemExit(f"GUI run ended: {result}")
        frames = scheduler.frame_times
        span = frames[-1] - frames[0] if len(frames) > 1 else duration
        per_dock = {d.key: (d.redraws - redraws0[d.key]) / span for d in plots.docks}
        stall = max(gaps[1:], default=0.0) - 10.0
        return {"tps": tokens_per_s(out), "stall_ms": stall,
                "redraw_hz": per_dock["matrices"], "per_dock": per_dock,
                "frames": len(frames), "duration": duration, "gui_cpu": gui_cpu / duration,
                "p99_gap_ms": statistics.quantiles(gaps, n=100)[98] if len(gaps) > 100 else 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per run (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--quick", action="store_true", help="12 steps, 1 repeat")
    parser.add_argument("--screenshot", type=Path, metavar="PNG",
                        help="save the window during the first live run (at 60%% of it, "
                             "after its first evaluation)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 12, 1

    from nlstudio.project import load_preset, project_to_dict
    from nlstudio.widgets.worker import warm_up_torch, worker_torch_threads

    doc = project_to_dict(load_preset("nsam_kv_stream"))  # its default size
    log_every = max(1, min(10, args.steps // 4))
    doc["train"].update(steps=args.steps, log_every=log_every, device="cpu")
    threads = worker_torch_threads()
    root = Path(tempfile.mkdtemp(prefix="nlstudio-bench-gui-"))
    train = doc["train"]
    print(f"preset nsam_kv_stream: d_model {doc['model']['d_model']}, batch "
          f"{train['batch_size']} × seq_len {train['seq_len']}, {args.steps} steps per run, "
          f"eval every {train['eval_every']}, torch threads {threads}, "
          f"{os.cpu_count()} cores, Qt {os.environ['QT_QPA_PLATFORM']}", flush=True)

    warm_up_torch()
    bench = GuiBench(doc, root)
    headless(dict(doc, train=dict(train, steps=max(4, log_every * 2))), root / "warmup",
             threads)
    h, live, stress = [], [], []
    for i in range(args.repeats):
        # ABBA order (headless, live, stress, then stress, live, headless): the machine's
        # load drifts, and each ratio is taken within its repeat.
        order = ("h", "live", "stress") if i % 2 == 0 else ("stress", "live", "h")
        for kind in order:
            if kind == "h":
                h.append(headless(doc, root / f"headless-{i}", threads))
            elif kind == "live":
                live.append(bench.run(root / f"gui-live-{i}", stress=False,
                                      screenshot=args.screenshot if i == 0 else None))
            else:
                stress.append(bench.run(root / f"gui-stress-{i}", stress=True))
        print(f"repeat {i + 1}: headless {h[-1]:,.0f} tok/s | live {live[-1]['tps']:,.0f} "
              f"tok/s, stall {live[-1]['stall_ms']:.0f} ms, {live[-1]['redraw_hz']:.1f} Hz | "
              f"stress {stress[-1]['tps']:,.0f} tok/s, stall {stress[-1]['stall_ms']:.0f} ms, "
              f"{stress[-1]['redraw_hz']:.1f} Hz; GUI thread CPU live "
              f"{live[-1]['gui_cpu']:.0%}, stress {stress[-1]['gui_cpu']:.0%}", flush=True)
    bench.controller.shutdown()
    med = statistics.median
    base = med(h)
    print(f"gui vs headless tokens/s: {med(r['tps'] / b for r, b in zip(stress, h)):.2f}x")
    print(f"max event-loop stall: {med(r['stall_ms'] for r in stress):.0f} ms")
    print(f"redraw rate: {med(r['redraw_hz'] for r in stress):.0f} Hz")
    print(f"live mode (redraw on new data only): gui vs headless tokens/s "
          f"{med(r['tps'] / b for r, b in zip(live, h)):.2f}x, max stall "
          f"{med(r['stall_ms'] for r in live):.0f} ms, redraw rate "
          f"{med(r['redraw_hz'] for r in live):.1f} Hz (one snapshot per step at most: "
          f"{base / (train['batch_size'] * train['seq_len']):.1f} steps/s headless)")
    print("stress redraws per second per plot: " + ", ".join(
        f"{k} {med(r['per_dock'][k] for r in stress):.0f}" for k in stress[0]["per_dock"]))
    print(f"worst stall over all GUI runs: "
          f"{max(r['stall_ms'] for r in live + stress):.0f} ms; run folders in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
