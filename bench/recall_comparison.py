"""Recall on shifting key→value streams, measured fairly (README "Recall: NSAM against the
baselines"; the protocol is bench/README.md's).

Six models of about the same size (parameters printed), all trained on the same kv_stream data
(batch 8 × 256 tokens, the same step budget), each with its OWN learning rate: a sweep of
``--lrs`` on a validation seed, scored on validation streams that the reported numbers never
use; the best learning rate is then trained on ``--seeds`` and reported as mean ± sd:

- recall by delay (key-to-key distance d) on held-out streams, and the forgetting rows
  (recall of mapping j when it returns, and on returns of the training schedule);
- steps to reach recall 0.9 at d = 16 (inside every model's reach) and d = 64 (beyond a
  16-token window), from evaluations every ``--eval-every`` steps;
- state per sequence after T = 256 and T = 4096 tokens (every level's ``state_floats`` plus the
  KV cache attention keeps), parameters, training seconds (1 thread; a shared machine: noisy).

Every finished run is cached under ``bench/results/recall_comparison/`` (bench/recall_lab.py):
rerunning resumes. ``--jobs 2`` runs two single-threaded processes.

Usage::

    .venv/bin/python bench/recall_comparison.py --jobs 2            # the whole sweep
    .venv/bin/python bench/recall_comparison.py --models transformer deltanet
    .venv/bin/python bench/recall_comparison.py --report             # tables from the cache
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recall_lab as lab  # noqa: E402

import os  # noqa: E402

#: one JSON per finished run; RECALL_CACHE moves it (e.g. for a smoke test)
CACHE = Path(os.environ.get("RECALL_CACHE", lab.RESULTS / "recall_comparison"))
TASK_FROM = "nsam_kv_stream"  # task and batch shape shared by every model
VAL_SEED = 100
#: linear learning-rate warm-up, the same for every model (without it the windowed Transformer
#: stays in a positional shortcut for thousands of steps: bench/README.md)
WARMUP = 200
THRESHOLD = 0.9
PROBE_DELAYS = (16, 64)


def _kv_stream(doc: dict) -> dict:
    """``doc``'s model with the task and training shape of ``TASK_FROM``."""
    base = lab.preset_doc(TASK_FROM)
    doc["task"] = base["task"]
    for key in ("batch_size", "seq_len", "grad_clip", "warmup"):
        doc["train"][key] = base["train"][key]
    doc["train"]["optimizer"] = dict(base["train"]["optimizer"])
    return doc


def _transformer() -> dict:
    doc = _kv_stream(lab.preset_doc("transformer_kv_stream"))
    # display settings only (they do not change training); kept at the values the first runs
    # of this comparison were cached under, so that their cache stays valid
    doc["train"].update(log_every=10, eval_every=25)
    return doc


def _windowed(window: int | None) -> dict:
    """``transformer_window_kv_stream`` on the comparison's task, with the given window (None:
    the preset's own)."""
    doc = _kv_stream(lab.preset_doc("transformer_window_kv_stream"))
    if window is not None:
        for lvl in doc["model"]["levels"]:
            if "window" in lvl:
                lvl["window"] = window
    return doc


def _titans_blocks() -> dict:
    """Titans as a memory-only model (the paper's LMM): two blocks of [titans memory written
    every 8 tokens (NSAM's fastest chunk), frozen MLP], from the ``titans`` preset's level."""
    doc = lab.preset_doc("deltanet")
    titans = next(l for l in lab.preset_doc("titans")["model"]["levels"] if l["kind"] == "titans")
    for lvl in doc["model"]["levels"]:
        if lvl["kind"] == "delta":
            lvl.clear()
            lvl.update({**titans, "period": 8})
    doc["model"]["levels"][0]["id"], doc["model"]["levels"][2]["id"] = "mem1", "mem2"
    doc["model"]["edges"] = [["input", "mem1"], ["mem1", "ffn1"], ["ffn1", "mem2"],
                             ["mem2", "ffn2"], ["ffn2", "output"]]
    doc["view"]["positions"] = {}
    return doc


def _hybrid() -> dict:
    """NSAM with windowed attention, as the paper's HOPE-Attention: the NSAM preset with its
    self-modifying level replaced by the windowed baseline's attention (window 32, conv 4); the
    CMS levels (16, 64) and the frozen MLP stay."""
    doc = lab.preset_doc("nsam_kv_stream")
    swa = next(l for l in lab.preset_doc("transformer_window_kv_stream")["model"]["levels"]
               if l["kind"] == "attention")
    levels = doc["model"]["levels"]
    i = next(i for i, l in enumerate(levels) if l["kind"] == "self_modifying")
    old = levels[i]["id"]
    levels[i] = {**swa, "id": "swa"}
    doc["model"]["edges"] = [[("swa" if a == old else a), ("swa" if b == old else b)]
                             for a, b in doc["model"]["edges"]]
    doc["view"]["positions"] = {}
    return doc


#: How each model is built from the presets (``--pin-models`` runs these and writes the result).
BUILDERS = {
    "nsam": lambda: lab.preset_doc("nsam_kv_stream"),
    "transformer": _transformer,
    "transformer_w16": lambda: _windowed(16),
    "transformer_w32": lambda: _windowed(None),
    "deltanet": lambda: _kv_stream(lab.preset_doc("deltanet")),
    "titans": lambda: _kv_stream(_titans_blocks()),
    "hybrid": lambda: _hybrid(),
}

#: The models compared, pinned: the project documents of the runs reported, kept beside the
#: script so that later edits of a preset (its description, its own task or training) neither
#: change what the comparison measures nor invalidate its cache. ``--pin-models`` rebuilds them
#: from the presets (then rerun the sweep).
PINNED = Path(__file__).resolve().parent / "recall_models.json"


def _pinned(model: str):
    def build() -> dict:
        return copy.deepcopy(json.loads(PINNED.read_text())[model])
    return build


MODELS = {m: _pinned(m) for m in BUILDERS}
TITLES = {
    "nsam": "NSAM (HOPE: self-modifying C=8, CMS 16/64, frozen MLP)",
    "transformer": "Transformer, full attention (conv 4)",
    "transformer_w16": "Transformer, window 16 (conv 4)",
    "transformer_w32": "Transformer, window 32 (conv 4; the transformer_window_kv_stream preset)",
    "deltanet": "DeltaNet (2 blocks, conv 4)",
    "titans": "Titans LMM (2 blocks, C=8, conv 4)",
    "hybrid": "HOPE-Attention: window-32 attention (conv 4), CMS 16/64, frozen MLP",
}


# ---- one run ----------------------------------------------------------------------------------
def training_doc(doc: dict, lr: float, seed: int, steps: int) -> dict:
    """The comparison's training recipe on ``doc``: same batches, steps and warm-up for all."""
    doc = lab.with_training(doc, lr=lr, seed=seed, steps=steps)
    doc["train"]["warmup"] = WARMUP
    return doc


def run_key(model: str, lr: float, seed: int, steps: int, eval_every: int,
            validation: bool) -> str:
    doc = training_doc(MODELS[model](), lr, seed, steps)
    return f"{model}-lr{lr:g}-s{seed}-{steps}-" + lab.doc_hash(doc, eval_every, validation)


def one_run(model: str, lr: float, seed: int, steps: int, eval_every: int,
            validation: bool) -> dict:
    lab.one_thread()
    key = run_key(model, lr, seed, steps, eval_every, validation)
    hit = lab.cached(CACHE, key)
    if hit is not None:
        return hit
    doc = training_doc(MODELS[model](), lr, seed, steps)

    def on_eval(step, net, task):
        if validation:
            lab.use_validation_streams(task)
        return {"recall": lab.recall(task, net)}

    t0 = time.time()
    out = lab.train(doc, eval_every=eval_every, on_eval=on_eval)
    net, task = out["model"], out["task"]
    result = {"model": model, "lr": lr, "seed": seed, "steps": steps, "validation": validation,
              "diverged": out["diverged"], "steps_done": out["steps_done"],
              "final_loss": out["final_loss"], "train_seconds": out["seconds"],
              "wall_seconds": time.time() - t0, "curve": out["curve"],
              "params": lab.parameter_count(net),
              "state_floats": {str(t): lab.state_floats(net, t) for t in (256, 4096)},
              "doc": doc}
    if out["diverged"] is None:
        if validation:
            lab.use_validation_streams(task)
        result["recall"] = lab.recall(task, net)
        if not validation:
            result["rows"] = lab.forgetting_rows(task, net)
            # which memory level stores (freeze) and which the model depends on (silence)
            result["ablations"] = lab.ablations(task, net, lab.memory_levels(net))
    result = lab.store(CACHE, key, result)
    print(f"done {model} lr={lr:g} seed={seed}{' (validation)' if validation else ''}: "
          f"{_mean_recall(result):.3f} in {result['wall_seconds']:.0f} s", flush=True)
    return result


def _mean_recall(result: dict) -> float:
    r = result.get("recall")
    return math.nan if not r else sum(r.values()) / len(r)


def _run(args) -> dict:
    return one_run(*args)


# ---- the sweep -------------------------------------------------------------------------------
def sweep(models: list[str], lrs: list[float], seeds: list[int], steps: int, eval_every: int,
          jobs: int) -> dict:
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        val = list(pool.map(_run, [(m, lr, VAL_SEED, steps, eval_every, True)
                                   for m in models for lr in lrs]))
        best = {m: choose_lr([r for r in val if r["model"] == m]) for m in models}
        print("chosen learning rates: " + ", ".join(f"{m} {lr:g}" for m, lr in best.items()),
              flush=True)
        test = list(pool.map(_run, [(m, best[m], s, steps, eval_every, False)
                                    for m in models for s in seeds if best[m] is not None]))
    return {"validation": val, "test": test, "best": best}


def choose_lr(runs: list[dict]) -> float | None:
    """The learning rate with the highest mean validation recall over the delay grid (ties:
    the lower final training loss); diverged runs are out."""
    ok = [r for r in runs if r.get("recall")]
    if not ok:
        return None
    return max(ok, key=lambda r: (round(_mean_recall(r), 3), -r["final_loss"]))["lr"]


# ---- the report -------------------------------------------------------------------------------
def steps_to(result: dict, delay: int, threshold: float = THRESHOLD) -> int | None:
    for row in result["curve"]:
        value = row["recall"].get(str(delay), row["recall"].get(delay))
        if value is not None and value >= threshold:
            return row["step"]
    return None


def report(models: list[str], lrs: list[float], seeds: list[int], steps: int,
           eval_every: int) -> str:
    val = {m: [lab.cached(CACHE, run_key(m, lr, VAL_SEED, steps, eval_every, True))
               for lr in lrs] for m in models}
    lines = [f"## kv_stream recall, {steps} steps (batch 8 × 256), seeds {seeds}, "
             f"lr chosen on seed {VAL_SEED} from {lrs}\n"]
    summary = {"steps": steps, "lrs": lrs, "seeds": seeds, "val_seed": VAL_SEED, "models": {}}
    tables = {"recall": [], "rows": [], "cost": [], "val": []}
    delays = None
    for m in models:
        runs_v = [r for r in val[m] if r is not None]
        best = choose_lr(runs_v) if len(runs_v) == len(lrs) else None
        tables["val"].append(f"| {m} | " + " | ".join(
            _val_cell(next((r for r in runs_v if r["lr"] == lr), None)) + ("*" if lr == best
                                                                           else "")
            for lr in lrs) + " |")
        if best is None:
            continue
        runs = [lab.cached(CACHE, run_key(m, best, s, steps, eval_every, False))
                for s in seeds]
        runs = [r for r in runs if r is not None and r.get("recall")]
        if not runs:
            continue
        delays = delays or sorted(int(d) for d in runs[0]["recall"])
        cells = {d: lab.mean_sd([r["recall"][str(d)] for r in runs]) for d in delays}
        mean_all = lab.mean_sd([_mean_recall(r) for r in runs])
        row_names = list(runs[0]["rows"])
        rows = {k: lab.mean_sd([r["rows"][k] for r in runs]) for k in row_names}
        to = {d: [steps_to(r, d) for r in runs] for d in PROBE_DELAYS}
        secs = lab.mean_sd([r["train_seconds"] for r in runs])
        loss = lab.mean_sd([r["final_loss"] for r in runs])
        tables["recall"].append(
            f"| {m} | {best:g} | " + " | ".join(_pm(*cells[d]) for d in delays)
            + f" | {_pm(*mean_all)} | {loss[0]:.2f} |")
        tables["rows"].append(f"| {m} | " + " | ".join(_pm(*rows[k]) for k in row_names) + " |")
        tables["cost"].append(
            f"| {m} | {runs[0]['params']:,} | {runs[0]['state_floats']['256']:,} | "
            f"{runs[0]['state_floats']['4096']:,} | "
            + " | ".join(_steps_cell(to[d]) for d in PROBE_DELAYS)
            + f" | {secs[0]:.0f} ± {secs[1]:.0f} |")
        tables.setdefault("ablations", []).extend(_ablation_lines(m, runs, delays))
        summary["models"][m] = {
            "title": TITLES[m], "lr": best, "n_seeds": len(runs), "params": runs[0]["params"],
            "state_floats": runs[0]["state_floats"],
            "recall": {d: {"mean": cells[d][0], "sd": cells[d][1]} for d in delays},
            "recall_mean": {"mean": mean_all[0], "sd": mean_all[1]},
            "rows": {k: {"mean": v[0], "sd": v[1]} for k, v in rows.items()},
            "steps_to_0.9": {d: to[d] for d in PROBE_DELAYS},
            "train_seconds": {"mean": secs[0], "sd": secs[1]},
            "final_loss": {"mean": loss[0], "sd": loss[1]},
            "per_seed": [{"seed": r["seed"], "recall": r["recall"], "rows": r["rows"],
                          "final_loss": r["final_loss"]} for r in runs]}
    if delays:
        lines.append("Recall by delay (mean ± sd over seeds; chance 1/16 = 0.06):\n")
        lines.append("| model | lr | " + " | ".join(f"d={d}" for d in delays)
                     + " | mean | final loss |")
        lines.append("|---|---|" + "---|" * (len(delays) + 2))
        lines += tables["recall"]
        first = next(iter(summary["models"].values()))
        lines.append("\nForgetting rows (recall of mapping j when it returns after the later "
                     "ones; `return`: returns of the training schedule):\n")
        lines.append("| model | " + " | ".join(first["rows"]) + " |")
        lines.append("|---|" + "---|" * len(first["rows"]))
        lines += tables["rows"]
        lines.append("\nCost (state: floats one sequence keeps after T tokens; steps to 0.9: "
                     "first evaluation at or above 0.9, per seed; train s: 1 thread, shared "
                     "machine):\n")
        lines.append("| model | parameters | state T=256 | state T=4096 | "
                     + " | ".join(f"steps to 0.9 at d={d}" for d in PROBE_DELAYS)
                     + " | train s |")
        lines.append("|---|---|---|---|" + "---|" * len(PROBE_DELAYS) + "---|")
        lines += tables["cost"]
        if tables.get("ablations"):
            lines.append("\nAblations (recall by delay with one level frozen: its output kept, "
                         "its in-context writes stopped, i.e. what it stores; or silenced: its "
                         "output zeroed, i.e. what the model depends on; mean over seeds):\n")
            lines.append("| model | ablation | " + " | ".join(f"d={d}" for d in delays) + " |")
            lines.append("|---|---|" + "---|" * len(delays))
            lines += tables["ablations"]
    lines.append(f"\nLearning-rate sweep (seed {VAL_SEED}, mean validation recall over the delay "
                 "grid; * = chosen):\n")
    lines.append("| model | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |")
    lines.append("|---|" + "---|" * len(lrs))
    lines += tables["val"]
    text = "\n".join(lines) + "\n"
    summary["markdown"] = text
    out = CACHE.parent if "RECALL_CACHE" in os.environ else lab.RESULTS
    lab.store(out, "recall_comparison", summary)
    (out / "recall_comparison.md").write_text(text)
    return text


def _ablation_lines(model: str, runs: list[dict], delays: list[int]) -> list[str]:
    """One table row per (kind, level) the runs measured: mean recall over the seeds."""
    lines = []
    kinds = runs[0].get("ablations") or {}
    for kind in ("freeze", "silence"):
        for lid in kinds.get(kind, {}):
            tables = [r["ablations"][kind][lid] for r in runs
                      if lid in (r.get("ablations") or {}).get(kind, {})]
            cells = [lab.mean_sd([t[str(d)] for t in tables])[0] for d in delays]
            lines.append(f"| {model} | {kind} {lid} | "
                         + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return lines


def _pm(mean: float, sd: float) -> str:
    return "–" if mean != mean else f"{mean:.2f} ± {sd:.2f}"


def _val_cell(r: dict | None) -> str:
    if r is None:
        return "not run"
    if r.get("diverged"):
        return "diverged"
    return f"{_mean_recall(r):.3f}"


def _steps_cell(values: list) -> str:
    return " / ".join("never" if v is None else str(v) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only print tables from the cache")
    parser.add_argument("--params", action="store_true", help="only print parameter counts")
    parser.add_argument("--pin-models", action="store_true",
                        help="rebuild bench/recall_models.json from the presets and stop")
    args = parser.parse_args()
    lab.one_thread()
    if args.pin_models:
        PINNED.write_text(json.dumps({m: b() for m, b in BUILDERS.items()}, indent=1,
                                     ensure_ascii=False, sort_keys=True))
        print(f"wrote {PINNED}")
        return
    if args.params:
        for m in args.models:
            doc = MODELS[m]()
            model = lab.build_model(doc, lab.build_task(doc))
            print(f"{m:16s} {lab.parameter_count(model):8,d} params, state T=256 "
                  f"{lab.state_floats(model, 256):,} T=4096 {lab.state_floats(model, 4096):,}")
        return
    if not args.report:
        sweep(args.models, args.lrs, args.seeds, args.steps, args.eval_every, args.jobs)
    print(report(args.models, args.lrs, args.seeds, args.steps, args.eval_every))


if __name__ == "__main__":
    main()
