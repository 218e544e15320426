"""The memory inspector at 4,096 tokens: how long a trace takes, and how long scrubbing takes.

    .venv/bin/python bench/inspector.py                      # nsam_kv_stream and charlm presets
    .venv/bin/python bench/inspector.py --presets charlm --tokens 1024 --moves 100

For each preset (untrained, at its own size; the cost does not depend on the weights) on one
CPU thread:

1. **trace**: ``compute_trace`` over a fresh example of ``--tokens`` tokens (one model call per
   token, probes and read-outs at every position): seconds and ms per token, and the memory
   the trace keeps.
2. **scrub**: the inspector window at 1280×800 (offscreen), ``--moves`` jumps to random
   positions, each timed from the slider change to the end of a synchronous repaint of the
   view (``set_position`` + ``repaint``): median, 95th percentile and max in ms. Target ≤ 50.

Not a test: timings depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def trace_bytes(trace) -> int:
    total = trace.logits.nbytes + trace.loss.nbytes + trace.top_ids.nbytes + \
        trace.top_probs.nbytes + trace.inputs.nbytes + trace.targets.nbytes
    for lv in trace.levels.values():
        total += sum(m.nbytes for m in lv.memories) + sum(m.nbytes for m in lv.writes)
        total += lv.wrote.nbytes + lv.write_norm.nbytes + lv.memory_index.nbytes
        total += lv.write_index.nbytes + (lv.readout_move.nbytes if lv.readout_move is not None
                                          else 0)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["nsam_kv_stream", "charlm"])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--moves", type=int, default=200)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from nlstudio.app import create_application

    app = create_application()
    from nlstudio import inspect_trace as it
    from nlstudio.build import build_model, build_task
    from nlstudio.generation import LoadedModel
    from nlstudio.project import load_preset
    from nlstudio.widgets.trace_window import InspectorWindow

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, "
          f"{os.cpu_count()} cores visible", flush=True)
    for name in args.presets:
        project = load_preset(name)
        task = build_task(project)
        model = build_model(project, task).eval()
        seq = it.example_sequence(project, args.tokens, 0)
        start = time.perf_counter()
        trace = it.compute_trace(model, seq, labels=it.token_labels(task),
                                 byte_level=task.byte_level)
        took = time.perf_counter() - start
        print(f"{name}: trace of {len(trace)} tokens: {took:.1f} s "
              f"({1000 * took / len(trace):.2f} ms/token), keeps "
              f"{trace_bytes(trace) / 2**20:.1f} MiB", flush=True)

        loaded = LoadedModel(model, task, project.path or name, None, project, None)
        window = InspectorWindow(loaded)
        window.resize(1280, 800)
        window.show()
        app.processEvents()
        window.show_trace(trace)
        app.processEvents()
        rng = random.Random(0)
        times = []
        for _ in range(args.moves):
            t = rng.randrange(len(trace))
            begin = time.perf_counter()
            window.set_position(t)
            window.view.view.repaint()
            times.append(1000 * (time.perf_counter() - begin))
            app.processEvents()
        times.sort()
        p95 = times[int(0.95 * (len(times) - 1))]
        print(f"{name}: scrub at 1280x800, {args.moves} random positions: median "
              f"{statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms "
              f"(target <= 50)", flush=True)
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
