"""Does the NSAM preset beat a sliding-window Transformer on recall beyond the window?

Trains ``nsam_kv_stream`` and ``transformer_window_kv_stream`` with the same seed, steps and
data, then measures recall by delay since a fact was seen (the kv_stream task's held-out
probe) and the per-mapping forgetting rows. Prints a Markdown table for the README and one
machine-readable line per comparison::

    nsam vs transformer-window recall [delay>16, 50 steps]: 3.10x

Usage: .venv/bin/python bench/kv_stream_claim.py [--steps 50] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nlstudio.project import load_preset, project_to_dict
from nlstudio.trainer import Trainer

PRESETS = ("nsam_kv_stream", "transformer_window_kv_stream")


def window_of(doc: dict) -> int:
    windows = [lvl.get("window") for lvl in doc["model"]["levels"]
               if lvl["kind"] == "attention" and lvl.get("window")]
    return max(windows) if windows else 0


def train_and_probe(name: str, steps: int, seed: int, out: Path) -> dict:
    doc = project_to_dict(load_preset(name))
    doc["train"].update(steps=steps, seed=seed, device="cpu", eval_every=steps,
                        log_every=max(1, steps // 10))
    trainer = Trainer(doc, out=out / f"{name}-{seed}", snapshots=False, evaluate=False)
    t0 = time.perf_counter()
    result = trainer.run()
    seconds = time.perf_counter() - t0
    assert result.reason == "completed", result.message
    model, task = trainer.model.eval(), trainer.task
    recall = task.recall_by_delay(model, trainer.device)
    rows = {r.task: r.metric for r in task.evaluate(model, trainer.device, step=steps)}
    return {"recall": recall, "rows": rows, "loss": result.loss, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    window = window_of(project_to_dict(load_preset(PRESETS[1])))
    results: dict[str, list[dict]] = {p: [] for p in PRESETS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name in PRESETS:
                results[name].append(train_and_probe(name, args.steps, seed, Path(tmp)))
    delays = sorted(results[PRESETS[0]][0]["recall"])

    def mean_recall(name, pick):
        per_seed = [statistics.mean(r["recall"][d] for d in delays if pick(d))
                    for r in results[name]]
        return statistics.mean(per_seed), (statistics.pstdev(per_seed) if len(per_seed) > 1
                                           else 0.0)

    print(f"## kv_stream: recall by delay after {args.steps} steps "
          f"(seeds {args.seeds}, window {window})\n")
    print("| model | " + " | ".join(f"d={d}" for d in delays) + " | final loss | train s |")
    print("|---|" + "---|" * (len(delays) + 2))
    for name in PRESETS:
        cells = [statistics.mean(r["recall"][d] for r in results[name]) for d in delays]
        loss = statistics.mean(r["loss"] for r in results[name])
        secs = statistics.mean(r["seconds"] for r in results[name])
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells)
              + f" | {loss:.3f} | {secs:.0f} |")
    rows = sorted(results[PRESETS[0]][0]["rows"])
    print("\n| model | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for name in PRESETS:
        cells = [statistics.mean(r["rows"].get(k, float("nan")) for r in results[name])
                 for k in rows]
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    print()
    for label, pick in ((f"delay>{window}", lambda d: d > window),
                        (f"delay<={window}", lambda d: d <= window)):
        nsam, nsam_sd = mean_recall(PRESETS[0], pick)
        base, base_sd = mean_recall(PRESETS[1], pick)
        ratio = nsam / base if base > 0 else float("inf")
        print(f"nsam recall [{label}, {args.steps} steps]: {nsam:.3f} ± {nsam_sd:.3f}")
        print(f"transformer-window recall [{label}, {args.steps} steps]: {base:.3f} ± "
              f"{base_sd:.3f}")
        print(f"nsam vs transformer-window recall [{label}, {args.steps} steps]: {ratio:.2f}x")


if __name__ == "__main__":
    main()
