"""Why the Titans baseline of the recall comparison sat at chance: cheap checks of its memory
level (results and reading: ``bench/results/titans_check.md``).

``init``: at initialisation, on one training batch of the comparison's task, for each inner step
size η: how much the first memory level's output depends on its writes (‖y − y_frozen‖/‖y‖),
and chunk by chunk how much a write lowers the inner loss ‖M(k) − v‖² on its own chunk's keys
(ratio after/before; 1 = the write stores nothing), how much the weights change (‖ΔW‖/‖W‖ per
layer, the forget gate included) and the momentum's size, until anything is non-finite.

``train``: a short run of the pinned ``titans`` model (bench/recall_models.json) with the given
inner settings, the comparison's recipe (batch 8 × 256, warm-up 200, seed 100), printing the
loss and the mean gates every 50 steps, recall by delay on validation streams at step 200 and
at the end (and on the reported streams with both memories frozen, the null). At a non-finite
loss it replays every titans level chunk by chunk on its last input and prints which tensor goes
non-finite first, with the keys' mean cosine inside a chunk and the values' norms.

Usage (one torch thread):
  .venv/bin/python bench/titans_check.py init --eta 0.003 0.03 0.3 [--depth 2] [--sgd]
  .venv/bin/python bench/titans_check.py train --eta 0.1 [--depth 1] [--sgd] [--steps 400]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recall_comparison as cmp  # noqa: E402
import recall_lab as lab  # noqa: E402
from nlstudio.build import build_model, build_task  # noqa: E402
from nlstudio.models.chunked import mlp_forward  # noqa: E402


def build(eta: float, depth: int | None, sgd: bool, steps: int, lr: float):
    doc = cmp.MODELS["titans"]()
    for lvl in doc["model"]["levels"]:
        if lvl["kind"] == "titans":
            if depth is not None:
                lvl["depth"] = depth
            lvl["optimizer"] = ({"name": "sgd", "eta": eta} if sgd else
                                {"name": "momentum", "eta": eta, "alpha": 0.9})
    doc = cmp.training_doc(doc, lr, cmp.VAL_SEED, steps)
    torch.manual_seed(int(doc["train"]["seed"]))
    task = build_task(doc)
    return doc, task, build_model(doc, task)


def memory_levels(model) -> dict:
    return {lid: lvl for lid, lvl in model.levels.items() if lvl.kind == "titans"}


def capture_inputs(model) -> dict:
    """The (pre-normed) input of every titans level in the latest forward pass."""
    got: dict = {}
    for lid, lvl in memory_levels(model).items():
        lvl.register_forward_pre_hook(
            lambda m, a, lid=lid: got.__setitem__(lid, a[0].detach()))
    return got


def keys_values(lvl, x):
    qkv, _ = lvl._qkv(x, None)
    _, k, v = qkv.chunk(3, dim=-1)
    return lvl._heads(k, True), lvl._heads(v, False)


@torch.no_grad()
def chunk_rows(lvl, x):
    """Per chunk: inner loss on its keys before/after its write, ‖ΔW‖/‖W‖, ‖S‖, finite."""
    b, t, _ = x.shape
    c, n = lvl.chunk, b * lvl.heads
    k, v = keys_values(lvl, x)
    state, rows = lvl.init_state(b, x.device, x.dtype), []
    for j in range(t // c):
        w0 = [w.reshape(n, *w.shape[2:]) for w in state["weights"]]
        kk, vv = k[:, j * c:(j + 1) * c], v[:, j * c:(j + 1) * c]
        before = float((mlp_forward(w0, kk, lvl.residual)[0] - vv).square().sum(-1).mean())
        _, state = lvl(x[:, j * c:(j + 1) * c], state)
        w1 = [w.reshape(n, *w.shape[2:]) for w in state["weights"]]
        after = float((mlp_forward(w1, kk, lvl.residual)[0] - vv).square().sum(-1).mean())
        rel = [float((a - z).norm() / z.norm()) for a, z in zip(w1, w0)]
        mom = [float(m.norm()) for m in state.get("momentum", ())]
        finite = all(bool(torch.isfinite(w).all()) for w in w1)
        rows.append((j, before, after, rel, mom, finite))
        if not finite:
            break
    return rows


def init_check(args) -> None:
    for eta in args.eta:
        _, task, model = build(eta, args.depth, args.sgd, 1, 3e-3)
        inputs = capture_inputs(model)
        batch = task.batch(0, 8)
        with torch.no_grad():
            model(batch.inputs, targets=batch.targets)
            lvl, x = model.levels["mem1"], inputs["mem1"]
            y, _ = lvl(x)
            y_frozen, _ = lvl(x, frozen=True)
        dep = float((y - y_frozen).norm() / y.norm())
        print(f"\n== eta {eta:g}: mem1 ‖y − y_frozen‖/‖y‖ = {dep:.4f} (finite: "
              f"{bool(torch.isfinite(y).all())})")
        rows = chunk_rows(lvl, x)
        for j, before, after, rel, mom, finite in rows[:2] + rows[-2:]:
            print(f"  chunk {j:2d}: inner loss {before:.4g} -> {after:.4g} (ratio "
                  f"{after / max(before, 1e-30):.4f})  ‖ΔW‖/‖W‖ "
                  f"{' '.join(f'{r:.2e}' for r in rel)}  ‖S‖ {' '.join(f'{m:.2e}' for m in mom)}"
                  f"  finite {finite}")
        model.zero_grad()
        logits, _ = model(batch.inputs, targets=batch.targets)
        task.loss(logits, batch.targets).backward()
        print("  outer gradient norms into mem1: " + ", ".join(
            f"{n} {float(p.grad.norm()):.2e}" for n, p in lvl.named_parameters()
            if p.grad is not None))


@torch.no_grad()
def locate_nan(model, inputs) -> None:
    for lid, x in inputs.items():
        lvl = model.levels[lid]
        c = lvl.chunk
        k, v = keys_values(lvl, x)
        kc = k.view(k.shape[0], -1, c, k.shape[-1])
        cos = (kc @ kc.transpose(-1, -2))[..., ~torch.eye(c, dtype=torch.bool)]
        log_keep, theta, log_mu = lvl._gates(x)
        print(f"  [{lid}] input finite {bool(torch.isfinite(x).all())}; keys' mean cosine in a "
              f"chunk {float(cos.mean()):.3f}; ‖v‖ mean {float(v.norm(dim=-1).mean()):.3f}; "
              f"θ mean {float(theta.mean()):.3g}; α mean {float(1 - log_keep.exp().mean()):.3g}"
              + (f"; μ mean {float(log_mu.exp().mean()):.3g}" if log_mu is not None else ""))
        state = lvl.init_state(x.shape[0])
        for j in range(x.shape[1] // c):
            _, state = lvl(x[:, j * c:(j + 1) * c], state)
            ws = [float(w.abs().max()) for w in state["weights"]]
            ms = [float(m.abs().max()) for m in state.get("momentum", ())]
            bad = not all(map(math.isfinite, ws + ms))
            if j % 4 == 0 or bad:
                print(f"    chunk {j}: max|W| {' '.join(f'{w:.3g}' for w in ws)}  max|S| "
                      f"{' '.join(f'{m:.3g}' for m in ms)}")
            if bad:
                break


def recall_line(r: dict) -> str:
    return " ".join(f"{d}:{v:.2f}" for d, v in r.items()) + f"  mean {sum(r.values()) / len(r):.3f}"


def train_check(args) -> None:
    (eta,) = args.eta
    doc, task, model = build(eta, args.depth, args.sgd, args.steps, args.lr)
    inputs = capture_inputs(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = lab.outer_optimizer(doc, params)
    base, warm, bs = args.lr, int(doc["train"]["warmup"]), int(doc["train"]["batch_size"])
    losses, t0 = [], time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = base * min(1.0, (step + 1) / warm)
        batch = task.batch(step, bs)
        model.train()
        logits, _ = model(batch.inputs, targets=batch.targets)
        loss = task.loss(logits, batch.targets)
        if not math.isfinite(float(loss.detach())):
            print(f"non-finite loss at step {step}")
            locate_nan(model, inputs)
            return
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0:
            with torch.no_grad():
                gates = []
                for lid, lvl in memory_levels(model).items():
                    log_keep, theta, log_mu = lvl._gates(inputs[lid])
                    gates.append(f"{lid} θ {float(theta.mean()):.3f} α "
                                 f"{float(1 - log_keep.exp().mean()):.4f}"
                                 + (f" μ {float(log_mu.exp().mean()):.2f}" if log_mu is not None
                                    else ""))
            print(f"step {step + 1}: loss {sum(losses[-50:]) / 50:.4f}  {'; '.join(gates)}  "
                  f"({time.time() - t0:.0f} s)", flush=True)
        if step + 1 in (200, args.steps):
            model.eval()
            lab.use_validation_streams(task)
            print(f"  recall@{step + 1}, validation streams: {recall_line(lab.recall(task, model))}")
            del task.eval_rng
    frozen = lab.recall(task, model, freeze=tuple(memory_levels(model)))
    print(f"  recall@{args.steps}, reported streams: {recall_line(lab.recall(task, model))}")
    print(f"  the same, both memories frozen (null): {recall_line(frozen)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("init", "train"))
    parser.add_argument("--eta", type=float, nargs="+", default=[0.003])
    parser.add_argument("--depth", type=int, default=None, help="default: the pinned model's")
    parser.add_argument("--sgd", action="store_true", help="no momentum")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    lab.one_thread()
    if args.what == "init":
        init_check(args)
    else:
        train_check(args)


if __name__ == "__main__":
    main()
