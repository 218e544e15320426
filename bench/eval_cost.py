"""Seconds one evaluation costs per bundled preset, by part: the task's own evaluation, the
silence ablations, what the freeze ablations add and what the content rate adds
(``nlstudio.probes``). Untrained models, warm (one untimed round first), best of ``--repeats``.

    .venv/bin/python bench/eval_cost.py [--threads 1] [--repeats 2] [--only nsam_kv_stream ...]
"""
from __future__ import annotations

import argparse
import time


def seconds(action, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    import torch

    from nlstudio import probes
    from nlstudio.build import build_model, build_task
    from nlstudio.project import load_preset, preset_paths, project_to_dict
    from nlstudio.threads import configure_torch

    configure_torch(args.threads)  # as the app computes: subnormals flushed (nlstudio/threads.py)
    print(f"torch {torch.__version__}, {args.threads} thread(s); seconds per evaluation")
    for name in args.only or sorted(preset_paths()):
        doc = project_to_dict(load_preset(name))
        task = build_task(doc)
        torch.manual_seed(0)
        model = build_model(doc, task).eval()
        ids = list(model.order)
        task.evaluate(model, "cpu")
        probes.content_rates(model, task)  # warm-up
        evaluate = seconds(lambda: task.evaluate(model, "cpu"), args.repeats)
        silence = seconds(lambda: probes.recall_by_delay_ablations(
            task, model, "cpu", ids, ("silence",)), args.repeats)
        both = seconds(lambda: probes.recall_by_delay_ablations(task, model, "cpu", ids),
                       args.repeats)
        content = seconds(lambda: probes.content_rates(model, task), args.repeats)
        print(f"{name:<30} eval_every {doc['train']['eval_every']:>4}  task {evaluate:6.2f}  "
              f"silence {silence:6.2f}  +freeze {max(both - silence, 0.0):6.2f}  "
              f"+content {content:6.2f}")


if __name__ == "__main__":
    main()
