"""Does each memory level of NSAM/HOPE store something? The freeze ablation, swept.

For each variant of a base preset (``nsam_kv_stream`` unless ``--base``), trains it on the CPU
(bench/recall_lab.py) and measures recall by delay on held-out streams: intact, with each
in-context memory level FROZEN (it keeps reading and returning, its writes stop: what it
*stores*) and with each SILENCED (its output zeroed: what the model *depends on*). A level
earns its place when freezing it costs recall at some delay; the table prints, per level, the
largest freeze cost over the delay grid and where it is.

Variants are named patches of the project (``VARIANTS`` below, e.g. the self-modifying level's
η, chunk, depth, the CMS levels' η, objective and optimizer, the task's stream). Results are
cached per run under ``bench/results/hope_sweep/`` and summarised in
``bench/results/hope_sweep.md``.

Usage::

    .venv/bin/python bench/hope_sweep.py --variants base fast_eta1 --steps 300 --seeds 0
    .venv/bin/python bench/hope_sweep.py --report --steps 300 --seeds 0
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recall_lab as lab  # noqa: E402

import os  # noqa: E402

#: independent sets of held-out streams each recall is averaged over (≥ 256 facts per delay)
REPEATS = 4
CACHE = Path(os.environ.get("HOPE_CACHE", lab.RESULTS / "hope_sweep"))


#: Experimental code changes a variant may ask for (``"code": name``), applied at run time to
#: a copy of the method, never to the file: what a fix in models/ would do, measured before
#: anyone writes it. ``normalize_v``: the self-modifying level's values L2-normalised like its
#: keys, so that each memory's transition ``αI + η'(v − k)kᵀ`` stays bounded for η' ≤ 1.
CODE_PATCHES = {
    "normalize_v": ("nlstudio.models.levels.self_modifying", "SelfModifyingLevel", "_write",
                    "v = y[:, V, :, :c].transpose(1, 2)",
                    "v = l2_normalize(y[:, V, :, :c].transpose(1, 2))"),
}


def apply_code_patch(name: str | None):
    """Replaces the method named by ``CODE_PATCHES[name]`` with its patched copy (this
    process only) and returns a function that puts the original back; raises when the line to
    change is no longer in the source."""
    if name is None:
        return lambda: None
    import importlib
    import inspect
    import textwrap

    module_name, cls_name, method, old, new = CODE_PATCHES[name]
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    source = textwrap.dedent(inspect.getsource(getattr(cls, method)))
    if old not in source:
        raise RuntimeError(f"code patch {name!r}: {old!r} is not in {cls_name}.{method}")
    namespace = dict(vars(module))
    exec(compile(source.replace(old, new), f"<patched {cls_name}.{method}>", "exec"), namespace)
    original = cls.__dict__[method]
    setattr(cls, method, namespace[method])
    return lambda: setattr(cls, method, original)


def patched(base: dict, patch: dict) -> dict:
    """``patch`` keys: ``level.key[.sub]`` (a level's option, e.g. ``fast.optimizer.eta``),
    ``task.key``, ``train.key``; ``drop``: level ids removed (their edges bridged); ``insert``:
    ``(after_id, level_dict)`` inserted after a level; ``edges``: the whole edge list."""
    doc = copy.deepcopy(base)
    levels = {l["id"]: l for l in doc["model"]["levels"]}
    for key, value in patch.items():
        if key == "code":
            continue  # applied to the process by apply_code_patch, recorded in the result
        if key == "drop":
            for lid in value:
                _drop(doc, lid)
            continue
        if key == "edges":
            doc["model"]["edges"] = [list(e) for e in value]
            continue
        if key == "insert":
            after, level = value
            _insert(doc, after, copy.deepcopy(level))
            continue
        head, *path = key.split(".")
        target = doc[head] if head in ("task", "train") else levels[head]
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    doc["view"]["positions"] = {}
    return doc


def _drop(doc: dict, lid: str) -> None:
    edges = doc["model"]["edges"]
    before = [a for a, b in edges if b == lid]
    after = [b for a, b in edges if a == lid]
    doc["model"]["edges"] = [e for e in edges if lid not in e] + [[a, b] for a in before
                                                                  for b in after]
    doc["model"]["levels"] = [l for l in doc["model"]["levels"] if l["id"] != lid]


def _insert(doc: dict, after: str, level: dict) -> None:
    edges = doc["model"]["edges"]
    doc["model"]["edges"] = [[level["id"] if a == after else a, b] for a, b in edges] + \
        [[after, level["id"]]]
    ids = [l["id"] for l in doc["model"]["levels"]]
    pos = ids.index(after) + 1 if after in ids else 0
    doc["model"]["levels"].insert(pos, level)


PARALLEL = [["input", "fast"], ["fast", "cms_mid"], ["fast", "cms_slow"], ["cms_mid", "frozen"],
            ["cms_slow", "frozen"], ["frozen", "output"]]

#: name -> (what it asks, patch of the base preset)
VARIANTS: dict[str, tuple[str, dict]] = {
    "base": ("the preset as shipped", {}),
    "fast_eta0.1": ("self-modifying η 0.1 (10× the preset's)", {"fast.optimizer.eta": 0.1}),
    "fast_eta1": ("self-modifying η 1 (β ∈ (0, 1), DeltaNet's range)",
                  {"fast.optimizer.eta": 1.0}),
    "fast_eta1_c4": ("η 1 and chunk 4", {"fast.optimizer.eta": 1.0, "fast.period": 4}),
    "fast_eta1_d2": ("η 1, depth-2 memories", {"fast.optimizer.eta": 1.0, "fast.depth": 2}),
    "slow_eta0.01": ("CMS slow η 0.01 (as mid)", {"cms_slow.optimizer.eta": 0.01}),
    "slow_eta0.03": ("CMS slow η 0.03", {"cms_slow.optimizer.eta": 0.03}),
    "no_mid": ("without the mid CMS level", {"drop": ["cms_mid"]}),
    "no_mid_eta1": ("fast η 1, without the mid CMS level",
                    {"fast.optimizer.eta": 1.0, "drop": ["cms_mid"]}),
    # round 2: η where the self-referential memories stay finite; forgetting in the mid level
    "fast_eta0.03": ("self-modifying η 0.03 (the largest finite at init, depth 1)",
                     {"fast.optimizer.eta": 0.03}),
    "fast_d2_eta0.05": ("depth-2 memories, η 0.05", {"fast.depth": 2, "fast.optimizer.eta": 0.05}),
    "fast_d2_eta0.1": ("depth-2 memories, η 0.1", {"fast.depth": 2, "fast.optimizer.eta": 0.1}),
    "fast_mom_eta0.03": ("η 0.03 with momentum", {"fast.optimizer.eta": 0.03,
                                                  "fast.momentum": True}),
    "mid_dgd": ("CMS mid with DGD (erases along its inputs: forgets), η 0.01",
                {"cms_mid.optimizer": {"name": "dgd", "eta": 0.01}}),
    "mid_dgd_eta0.002": ("CMS mid with DGD, η 0.002",
                         {"cms_mid.optimizer": {"name": "dgd", "eta": 0.002}}),
    # round 3: the self-modifying level with L2-normalised values (an experimental code change)
    "vnorm_eta0.1": ("[code: v L2-normalised] self-modifying η 0.1",
                     {"code": "normalize_v", "fast.optimizer.eta": 0.1}),
    "vnorm_eta1": ("[code: v L2-normalised] self-modifying η 1",
                   {"code": "normalize_v", "fast.optimizer.eta": 1.0}),
    "vnorm_eta1_c4": ("[code: v L2-normalised] self-modifying η 1, chunk 4",
                      {"code": "normalize_v", "fast.optimizer.eta": 1.0, "fast.period": 4}),
    # round 4: give each level something only it can hold
    "vnorm_eta1_no_mid": ("[code: v L2-normalised] η 1, without the mid CMS level (the "
                          "self-modifying level must hold d < 64 itself)",
                          {"code": "normalize_v", "fast.optimizer.eta": 1.0,
                           "drop": ["cms_mid"]}),
    "mid_dgd_slow0.03": ("CMS mid with DGD η 0.01 (forgets), CMS slow SGD η 0.03 (keeps)",
                         {"cms_mid.optimizer": {"name": "dgd", "eta": 0.01},
                          "cms_slow.optimizer": {"name": "sgd", "eta": 0.03}}),
    # round 6: CMS levels side by side (arXiv Eq. 74, "independent"): slow reads what fast
    # wrote, not mid's answer, and both feed the frozen MLP
    "parallel_mid_dgd": ("CMS mid (DGD η 0.01, forgets) and slow (SGD η 0.03, keeps) in "
                         "parallel after the fast level",
                         {"cms_mid.optimizer": {"name": "dgd", "eta": 0.01},
                          "cms_slow.optimizer": {"name": "sgd", "eta": 0.03},
                          "edges": PARALLEL}),
    "parallel": ("the preset's CMS levels in parallel after the fast level", {"edges": PARALLEL}),
    "parallel_mid_dgd_slow0.01": ("CMS mid (DGD η 0.01) and slow (SGD η 0.01) in parallel",
                                  {"cms_mid.optimizer": {"name": "dgd", "eta": 0.01},
                                   "cms_slow.optimizer": {"name": "sgd", "eta": 0.01},
                                   "edges": PARALLEL}),
    "long512": ("streams of 512 tokens (batch 4), 256 keys: delays up to 384",
                {"train.seq_len": 512, "train.batch_size": 4, "task.num_keys": 256}),
}


def run_key(name: str, doc: dict, seed: int, steps: int) -> str:
    return f"{name}-s{seed}-{steps}-" + lab.doc_hash(doc, seed, steps,
                                                     VARIANTS[name][1].get("code"))


def one(name: str, base: str, seed: int, steps: int, lr: float | None) -> dict:
    doc = patched(lab.preset_doc(base), VARIANTS[name][1])
    doc = lab.with_training(doc, seed=seed, steps=steps, lr=lr)
    key = run_key(name, doc, seed, steps)
    hit = lab.cached(CACHE, key)
    if hit is not None:
        return hit
    restore = apply_code_patch(VARIANTS[name][1].get("code"))
    t0 = time.time()
    try:
        out = lab.train(doc)
        result = _measure(name, seed, steps, doc, out)
    finally:
        restore()
    result["wall_seconds"] = time.time() - t0
    return lab.store(CACHE, key, result)


def _measure(name: str, seed: int, steps: int, doc: dict, out: dict) -> dict:
    result = {"variant": name, "code_patch": VARIANTS[name][1].get("code"),
              "what": VARIANTS[name][0], "seed": seed, "steps": steps, "doc": doc, "diverged": out["diverged"], "final_loss": out["final_loss"],
              "train_seconds": out["seconds"]}
    if out["diverged"] is None:
        net, task = out["model"], out["task"]
        levels = lab.memory_levels(net)
        result["levels"] = levels
        result["repeats"] = REPEATS
        result["recall"] = lab.recall(task, net, repeats=REPEATS)
        result.update(lab.ablations(task, net, levels, repeats=REPEATS))
        result["rows"] = lab.forgetting_rows(task, net)
        result["rows_frozen"] = {lid: _rows_frozen(task, net, lid) for lid in levels}
    return result


def _rows_frozen(task, net, lid: str) -> dict:
    """The forgetting rows with one level frozen (the model's call with ``freeze``)."""
    class Frozen:
        def __call__(self, *a, **kw):
            return net(*a, **{**kw, "freeze": (lid,)})
    return lab.forgetting_rows(task, Frozen())


def costs(result: dict, ablation: str) -> dict[str, tuple[float, int]]:
    """Per level: the largest recall lost over the delay grid and the delay where it is."""
    base = {int(d): v for d, v in result["recall"].items()}
    out = {}
    for lid, rec in result[ablation].items():
        drops = {int(d): base[int(d)] - v for d, v in rec.items()}
        d = max(drops, key=drops.get)
        out[lid] = (drops[d], d)
    return out


def table(results: list[dict]) -> str:
    lines = []
    for r in results:
        head = f"### {r['variant']} (seed {r['seed']}, {r['steps']} steps): {r['what']}"
        if r.get("diverged"):
            lines += [head, f"diverged: {r['diverged']}\n"]
            continue
        delays = sorted(int(d) for d in r["recall"])
        lines += [head, "", "| recall | " + " | ".join(f"d={d}" for d in delays) + " |",
                  "|---|" + "---|" * len(delays),
                  "| intact | " + " | ".join(f"{r['recall'][str(d)]:.2f}" for d in delays) + " |"]
        for ablation in ("freeze", "silence"):
            for lid in r["levels"]:
                lines.append(f"| {ablation} {lid} | " + " | ".join(
                    f"{r[ablation][lid][str(d)]:.2f}" for d in delays) + " |")
        rows = r["rows"]
        lines.append("\nforgetting rows: " + ", ".join(f"{k} {v:.2f}" for k, v in rows.items()))
        for lid, fr in r["rows_frozen"].items():
            lines.append(f"  frozen {lid}: " + ", ".join(f"{k} {v:.2f}" for k, v in fr.items()))
        lines.append(f"\nfinal loss {r['final_loss']:.3f}, train {r['train_seconds']:.0f} s\n")
    lines.append("| variant | seed | mean recall | " + " | ".join(
        ["largest freeze cost per level (delay)"]) + " |")
    lines.append("|---|---|---|---|")
    for r in results:
        if r.get("diverged"):
            lines.append(f"| {r['variant']} | {r['seed']} | diverged | |")
            continue
        mean = sum(r["recall"].values()) / len(r["recall"])
        cost = costs(r, "freeze")
        lines.append(f"| {r['variant']} | {r['seed']} | {mean:.2f} | " + ", ".join(
            f"{lid} {c:+.2f} (d={d})" for lid, (c, d) in cost.items()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--base", default="nsam_kv_stream")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=None, help="outer lr (default: preset's)")
    parser.add_argument("--report", action="store_true", help="only print cached results")
    parser.add_argument("--out", default="hope_sweep", help="summary file name in results/")
    args = parser.parse_args()
    lab.one_thread()
    results = []
    for name in args.variants:
        for seed in args.seeds:
            if args.report:
                doc = lab.with_training(patched(lab.preset_doc(args.base), VARIANTS[name][1]),
                                        seed=seed, steps=args.steps, lr=args.lr)
                r = lab.cached(CACHE, run_key(name, doc, seed, args.steps))
            else:
                r = one(name, args.base, seed, args.steps, args.lr)
                print(table([r]), flush=True)
            if r is not None:
                results.append(r)
    text = table(results)
    if args.report:
        print(text)
    out = Path(args.out) if "/" in args.out else lab.RESULTS / f"{args.out}.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
