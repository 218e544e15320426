"""Training steps on a GPU: forward+backward replayed as a CUDA graph vs run eagerly.

    python bench/cuda_graphs.py [--steps 20] [--presets nsam_kv_stream titans ...]

Each preset at its own size (batch, sequence length, model) from its project file; both sides
run the same outer step (AdamW, gradient clipping) on the same batches, interleaved in rounds,
medians kept. Prints one ``graphed vs eager tokens/s [preset]: N.NNx`` line per preset, then
the table of README.md's GPU section (markdown, paste as it is).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--presets", nargs="*",
                   default=["nsam_kv_stream", "nsam", "titans", "transformer", "deltanet"])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/cuda_graphs.py needs a CUDA GPU; none here")
        return 0

    from nlstudio.build import build_model, build_task
    from nlstudio.cuda_graphs import GraphedStep
    from nlstudio.project import load_project, preset_paths, project_to_dict
    from nlstudio.trainer import make_outer_optimizer

    device = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    rows = []
    for name in args.presets:
        path = preset_paths()[name]
        project = load_project(path)
        doc = project_to_dict(project)
        task = build_task(project, path.parent, 1000)
        train = project.train
        sides = {}
        for graphed in (True, False):
            torch.manual_seed(0)
            model = build_model(project, task).to(device)
            params = [q for q in model.parameters() if q.requires_grad]
            opt = make_outer_optimizer(doc, params)
            step = GraphedStep(model, task.loss, params, graphs=graphed)
            sides[graphed] = (model, params, opt, step)
        batches = [task.batch(i, train.batch_size).to(device) for i in range(args.steps)]

        def run(side, batches=batches) -> float:
            model, params, opt, step = side
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for b in batches:
                step(b.inputs, b.targets)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            torch.cuda.synchronize()
            return time.perf_counter() - t0

        for side in sides.values():  # warm-up (and capture)
            run(side)
        secs = {True: [], False: []}
        for _ in range(args.rounds):
            for graphed, side in sides.items():
                secs[graphed].append(run(side))
        tokens = args.steps * train.batch_size * train.seq_len
        g, e = statistics.median(secs[True]), statistics.median(secs[False])
        note = sides[True][3].disabled
        print(f"  {name}: batch {train.batch_size} x {train.seq_len} tokens, d_model "
              f"{project.model.d_model}: graphed {tokens / g / 1e3:.1f}k tok/s, eager "
              f"{tokens / e / 1e3:.1f}k tok/s" + (f" (capture failed: {note})" if note else ""))
        print(f"graphed vs eager tokens/s [{name}]: {e / g:.2f}x")
        rows.append((name, train.batch_size, train.seq_len, project.model.d_model,
                     tokens / e, tokens / g))
        del sides, batches
        torch.cuda.empty_cache()
    print_table(rows)
    return 0


def print_table(rows: list[tuple[str, int, int, int, float, float]]) -> None:
    """README.md's table: ``(preset, batch, tokens, d_model, eager tok/s, graph tok/s)`` rows."""
    if not rows:
        return
    dims = sorted({r[3] for r in rows})
    head = f"batch × tokens, d_model {dims[0]}" if len(dims) == 1 else "batch × tokens, d_model"
    print(f"\n| preset ({head}) | eager | CUDA graph | graph vs eager |")
    print("|---|---:|---:|---:|")
    for name, batch, seq, d, eager, graph in rows:
        size = f"{batch} × {seq}" + ("" if len(dims) == 1 else f", {d}")
        print(f"| `{name}` ({size}) | {eager / 1e3:.1f}k tok/s | {graph / 1e3:.1f}k tok/s | "
              f"{graph / eager:.2f}× |")


if __name__ == "__main__":
    sys.exit(main())
