"""Which in-context step size (the inner optimizer's η) does each recurrent baseline of the
recall comparison use? A short check before the comparison (bench/recall_comparison.py),
so that no memory enters it handicapped by a step size its own papers would not use.

Each candidate trains for ``--steps`` on the comparison's data (batch 8 × 256, warm-up and
outer learning rate of the comparison, seed 100: the validation seed) and is scored by the mean
validation recall over the delay grid. Results: ``bench/results/inner_eta_check.md``.

Usage: .venv/bin/python bench/inner_eta_check.py [--steps 400]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recall_comparison as cmp  # noqa: E402
import recall_lab as lab  # noqa: E402

CACHE = lab.RESULTS / "inner_eta_check"
#: model -> inner η values tried (the preset's first)
CANDIDATES = {"deltanet": (0.1, 1.0), "titans": (0.003, 0.03, 0.3)}


def run(model: str, eta: float, steps: int, lr: float) -> dict:
    doc = cmp.MODELS[model]()
    for lvl in doc["model"]["levels"]:
        if lvl.get("period") is not None:  # the memories (the frozen MLPs have none)
            lvl["optimizer"]["eta"] = eta
    doc = cmp.training_doc(doc, lr, cmp.VAL_SEED, steps)
    key = f"{model}-eta{eta:g}-" + lab.doc_hash(doc)
    hit = lab.cached(CACHE, key)
    if hit is not None:
        return hit
    out = lab.train(doc)
    result = {"model": model, "eta": eta, "steps": steps, "lr": lr,
              "diverged": out["diverged"], "final_loss": out["final_loss"]}
    if out["diverged"] is None:
        lab.use_validation_streams(out["task"])
        result["recall"] = lab.recall(out["task"], out["model"])
    return lab.store(CACHE, key, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    lab.one_thread()
    lines = [f"Inner η check: {args.steps} steps, outer lr {args.lr:g}, warm-up "
             f"{cmp.WARMUP}, seed {cmp.VAL_SEED}, validation streams\n",
             "| model | inner η | recall by delay | mean | final loss |", "|---|---|---|---|---|"]
    for model, etas in CANDIDATES.items():
        for eta in etas:
            r = run(model, eta, args.steps, args.lr)
            rec = r.get("recall")
            cells = (" ".join(f"{d}:{v:.2f}" for d, v in rec.items()) if rec else "diverged")
            mean = f"{sum(rec.values()) / len(rec):.3f}" if rec else "–"
            lines.append(f"| {model} | {eta:g} | {cells} | {mean} | {r['final_loss']:.3f} |")
            print(lines[-1], flush=True)
    (lab.RESULTS / "inner_eta_check.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
