"""Does every bundled preset learn its task within its default step budget?

Trains each preset exactly as saved (its steps, batch, learning rate and seed; CPU, one
thread; bench/recall_lab.py's training step, the Trainer's) and prints its held-out metric
next to the task's chance level, the recall by delay where the task has one, and the training
seconds. Results go to ``bench/results/preset_check.json`` / ``.md`` (cached per preset file
content: an unchanged preset is not retrained).

Usage: .venv/bin/python bench/preset_check.py [--presets transformer_mqar mqar] [--seeds 0]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recall_lab as lab  # noqa: E402
from nlstudio.project import preset_paths  # noqa: E402

CACHE = lab.RESULTS / "preset_check"


def chance(doc: dict, task) -> float | None:
    """The metric of a model that guesses (uniform over the answers the task scores)."""
    p, name = doc["task"], doc["task"]["name"]
    if name in ("kv_stream", "mqar"):
        return 1.0 / p["value_vocab"]
    if name == "digits_stream":
        return 1.0 / 10
    if name == "needle":
        return 0.1  # nlstudio/tasks/needle.py: digits of the passkey
    if name == "charlm":
        return 8.0  # bits per byte of a uniform guess over 256 bytes (lower is better)
    return None


def check(name: str, seed: int | None) -> dict:
    doc = lab.preset_doc(name)
    if seed is not None:
        doc = lab.with_training(doc, seed=seed)
    doc["train"]["device"] = "cpu"
    key = f"{name}-" + lab.doc_hash(doc)
    hit = lab.cached(CACHE, key)
    if hit is not None:
        return hit
    t0 = time.time()
    out = lab.train(doc)
    net, task = out["model"], out["task"]
    result = {"preset": name, "seed": doc["train"]["seed"], "steps": doc["train"]["steps"],
              "batch": [doc["train"]["batch_size"], doc["train"]["seq_len"]],
              "lr": doc["train"]["optimizer"]["lr"], "diverged": out["diverged"],
              "train_seconds": out["seconds"], "final_loss": out["final_loss"],
              "metric_name": task.metric_name, "higher_is_better": task.higher_is_better,
              "chance": chance(doc, task)}
    if out["diverged"] is None:
        rows = lab.forgetting_rows(task, net)
        result["rows"] = rows
        result["metric"] = statistics.fmean(v for v in rows.values() if v == v)
        by_delay = task.recall_by_delay(net, "cpu")
        result["recall_by_delay"] = by_delay
    result["wall_seconds"] = time.time() - t0
    return lab.store(CACHE, key, result)


def line(r: dict) -> str:
    metric = r.get("metric", math.nan)
    delay = r.get("recall_by_delay") or {}
    by_delay = " ".join(f"{d}:{v:.2f}" for d, v in delay.items()) if delay else "–"
    return (f"| {r['preset']} | {r['steps']} | {r['batch'][0]}×{r['batch'][1]} | {r['lr']:g} | "
            f"{r['metric_name']} {metric:.2f} (chance {r['chance']:.2f}) | {by_delay} | "
            f"{r['train_seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=sorted(preset_paths()))
    parser.add_argument("--seeds", type=int, nargs="+", default=[None])
    args = parser.parse_args()
    lab.one_thread()
    lines = ["| preset | steps | batch | lr | held-out metric (mean of the task's rows) | "
             "recall by delay | train s |", "|---|---|---|---|---|---|---|"]
    for name in args.presets:
        for seed in args.seeds:
            r = check(name, seed)
            lines.append(line(r))
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.presets == sorted(preset_paths()):
        (lab.RESULTS / "preset_check.md").write_text(text)


if __name__ == "__main__":
    main()
