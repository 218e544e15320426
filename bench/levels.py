"""Throughput of every level kind, and the ratios that say whether it is fast enough.

Run ``.venv/bin/python bench/levels.py`` (``--quick`` for small settings). What it prints and
why is in bench/README.md. Every ratio is measured in one process with both sides interleaved
(warm-up first, medians of several repeats), under the same allocator settings; each ratio
line reads ``<what> vs <baseline> [config]: N.NNx`` (> 1: <what> is faster), and the level
table and the summary are printed as README.md's markdown tables. One file on purpose (over the
usual length): a benchmark is copied to another machine and run as it is.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable

# glibc reads these at start-up, so they must be in the environment before Python starts:
# without them, code that makes many large temporaries spends its time in page faults
# (bench/README.md, Allocator). Both sides of every ratio run under the same settings.
ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}

if __name__ == "__main__" and "--system-allocator" not in sys.argv and any(
        os.environ.get(k) != v for k, v in ALLOCATOR.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ALLOCATOR})

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from nlstudio.threads import configure_torch  # noqa: E402

KINDS = ("attention", "linear_attention", "delta", "titans", "self_modifying", "mlp")
VOCAB = 256
#: the clock of every timing: "wall" (time.perf_counter, the default) or "cpu"
#: (time.process_time: this process's CPU time, steadier than wall time on a loaded machine
#: with one torch thread; see bench/README.md)
CLOCK = {"fn": time.perf_counter}
#: what the sections measured, for the summary (README's tables)
RESULTS: dict[str, dict] = {"levels": {}, "titans": {}, "transformer": {}, "nsam": {},
                            "growth": None}


# ------------------------------------------------------------------------------------------
# timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def race(contenders: dict[str, Callable[[], None]], repeats: int, device: torch.device
         ) -> dict[str, float]:
    """Median seconds per call of each contender, interleaved: two warm-up calls each, then
    ``repeats`` rounds, each calling every contender once (the order rotates per round)."""
    names = list(contenders)
    for _ in range(2):
        for name in names:
            contenders[name]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync(device)
            t0 = CLOCK["fn"]()
            contenders[name]()
            sync(device)
            times[name].append(CLOCK["fn"]() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def ratio_line(what: str, baseline: str, config: str, value: float) -> str:
    return f"{what} vs {baseline} [{config}]: {value:.2f}x"


def fmt_rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s / 1e3:.1f}k" if tokens_per_s >= 1e3 else f"{tokens_per_s:.0f}"


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------
# steps (one forward + backward each)

def level_step(level: nn.Module, x: Tensor) -> Callable[[], None]:
    def step() -> None:
        level.zero_grad(set_to_none=True)
        out = level(x)
        y = out[0] if isinstance(out, tuple) else out
        y.square().mean().backward()
    return step


def lm_step(model: nn.Module, tokens: Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(tokens)
        logits = out[0] if isinstance(out, tuple) else out
        F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                        tokens[:, 1:].reshape(-1)).backward()
    return step


def _inplace_matmul_flops() -> dict:
    """FLOP formulas for the in-place matmuls (``baddbmm_``, ``addmm_``, ``addbmm_``):
    torch's FlopCounterMode keys its formulas by op and has none for these, so their work went
    uncounted (the chunk nodes write memories and gradients with ``baddbmm_``)."""
    aten = torch.ops.aten

    def bmm(self_shape, a, b, *args, out_shape=None, **kwargs) -> int:
        return 2 * a[0] * a[1] * a[2] * b[2]

    def mm(self_shape, a, b, *args, out_shape=None, **kwargs) -> int:
        return 2 * a[-2] * a[-1] * b[-1] * (a[0] if len(a) == 3 else 1)

    return {aten.baddbmm_: bmm, aten.addmm_: mm, aten.addbmm_: mm}


def count_flops(step: Callable[[], None]) -> int:
    """Matmul/attention FLOPs that one call of ``step`` executes (forward and backward),
    in-place matmuls included."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_inplace_matmul_flops()) as counter:
        step()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------
# the plain baseline: a minimal pre-norm SDPA + MLP block stack (no nlstudio code)

def rope(x: Tensor) -> Tensor:
    """Rotary positions (rotate-half), ``x [B, H, T, dh]``."""
    t, dh = x.shape[-2], x.shape[-1]
    half = dh // 2
    inv = 10000.0 ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., 2 * half:]), dim=-1)


class SDPABlock(nn.Module):
    def __init__(self, d: int, heads: int, expansion: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.w1 = nn.Linear(d, expansion * d, bias=False)
        self.w2 = nn.Linear(expansion * d, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        split = lambda z: z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(rope(split(self.q(h))), rope(split(self.k(h))),
                                           split(self.v(h)), is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return x + self.w2(F.silu(self.w1(self.norm2(x))))


class SDPAStack(nn.Module):
    def __init__(self, d: int, heads: int, blocks: int, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(SDPABlock(d, heads) for _ in range(blocks))
        self.norm = nn.RMSNorm(d)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return F.linear(self.norm(h), self.embed.weight)


# ------------------------------------------------------------------------------------------
# model specs (the presets' shapes, built here so the bench does not depend on project files)

def transformer_spec(d: int, heads: int, blocks: int = 2) -> dict:
    levels, edges, prev = [], [], "input"
    for i in range(1, blocks + 1):
        levels += [{"id": f"attn{i}", "kind": "attention", "period": None},
                   {"id": f"ffn{i}", "kind": "mlp", "period": None, "expansion": 4}]
        edges += [[prev, f"attn{i}"], [f"attn{i}", f"ffn{i}"]]
        prev = f"ffn{i}"
    return {"d_model": d, "heads": heads, "levels": levels, "edges": edges + [[prev, "output"]]}


def nsam_spec(d: int, heads: int) -> dict:
    """self_modifying (C=8) → mlp(16) → mlp(64) → mlp(null), as resources/presets/nsam."""
    levels = [
        {"id": "fast", "kind": "self_modifying", "period": 8, "objective": "l2",
         "optimizer": {"name": "dgd", "eta": 0.01}, "depth": 1, "conv": 4, "momentum": False},
        {"id": "cms_mid", "kind": "mlp", "period": 16, "objective": "task",
         "optimizer": {"name": "sgd", "eta": 0.01}, "expansion": 4},
        {"id": "cms_slow", "kind": "mlp", "period": 64, "objective": "task",
         "optimizer": {"name": "sgd", "eta": 0.003}, "expansion": 4},
        {"id": "frozen", "kind": "mlp", "period": None, "expansion": 4},
    ]
    ids = ["input"] + [lv["id"] for lv in levels] + ["output"]
    return {"d_model": d, "heads": heads, "levels": levels,
            "edges": [[a, b] for a, b in zip(ids, ids[1:])]}


def nsam_variant(spec: dict, part: str) -> dict:
    """The NSAM shape without one part, to see where its time goes: ``no task`` (the CMS
    levels frozen, period null: no in-context learning from the loss) or ``no self_modifying``
    (that level removed, the chain joined around it)."""
    levels = spec["levels"]
    if part == "no task":
        levels = [{**{k: v for k, v in lv.items() if k not in ("objective", "optimizer")},
                   "period": None} if lv.get("objective") == "task" else lv for lv in levels]
    elif part == "no self_modifying":
        levels = [lv for lv in levels if lv["kind"] != "self_modifying"]
    else:
        raise ValueError(part)
    ids = ["input"] + [lv["id"] for lv in levels] + ["output"]
    return {**spec, "levels": levels, "edges": [[a, b] for a, b in zip(ids, ids[1:])]}


def default_spec(kind: str) -> dict:
    from nlstudio.models.registry import kind_info

    info = kind_info(kind)
    spec = {"id": kind, "kind": kind, "period": info.default_period, **info.defaults()}
    if info.default_objective:
        spec["objective"] = info.default_objective
    if info.default_optimizer:
        spec["optimizer"] = {"name": info.default_optimizer}
    return spec


# ------------------------------------------------------------------------------------------
# sections

def level_table(dims, lengths, batch, heads, repeats, device) -> None:
    from nlstudio.models.levels import LEVEL_CLASSES

    classes = {}
    for kind in KINDS:
        try:
            classes[kind] = LEVEL_CLASSES[kind]
        except (ImportError, KeyError) as err:
            print(f"  (skipped {kind}: {type(err).__name__}: {err})")
    configs = [(d, t) for d in dims for t in lengths]
    rates: dict[str, list[str]] = {k: [] for k in classes}
    for d, t in configs:
        torch.manual_seed(0)
        x = torch.randn(batch, t, d, device=device)
        steps = {k: level_step(cls(default_spec(k), d, heads).to(device), x)
                 for k, cls in classes.items()}
        secs = race(steps, repeats, device)
        for k in classes:
            rates[k].append(fmt_rate(batch * t / secs[k]))
        del steps
        free()
    RESULTS["levels"] = rates
    print_markdown_table([f"d={d} T={t}" for d, t in configs], rates)


def print_markdown_table(columns: list[str], rows: dict[str, list[str]]) -> None:
    """The level table as README.md shows it (markdown, right-aligned numbers)."""
    print(f"| {'kind':<16} |" + "".join(f" {c} |" for c in columns))
    print(f"|{'-' * 18}|" + "".join(f"{'-' * (len(c) + 1)}:|" for c in columns))
    for k, row in rows.items():
        print(f"| {k:<16} |" + "".join(f" {r:>{len(c)}} |" for r, c in zip(row, columns)))


def titans_vs_peer(configs, repeats, device) -> None:
    try:
        from titans_pytorch import NeuralMemory
    except ImportError:
        print("  (skipped: titans-pytorch is not installed; "
              "`.venv/bin/pip install titans-pytorch==0.5.5 -c <(echo torch==2.13.0)`)")
        return
    from nlstudio.models.levels.titans import TitansLevel

    for d, t, c, b, note in configs:
        torch.manual_seed(0)
        x = torch.randn(b, t, d, device=device)
        # A chunk's write sums C tokens' gradients, so the step scales as 1/C: eta 0.1 at
        # C = 16 (the level's default chunk), 0.025 at C = 64 (0.1 there diverges to NaN at
        # d = 256 and at T = 2048, and timing NaN arithmetic measures nothing useful).
        eta = 0.1 * 16 / c
        # conv 0: titans-pytorch has no short convolution (ours keeps its output norm and gate,
        # which cannot be switched off; the peer has pre-norms and a LayerNorm in its memory)
        ours = TitansLevel({"id": "titans", "kind": "titans", "period": c, "depth": 2,
                            "expansion": 4, "objective": "l2", "conv": 0,
                            "optimizer": {"name": "momentum", "eta": eta, "alpha": 0.9}},
                           d_model=d, heads=1).to(device)
        peer = NeuralMemory(dim=d, chunk_size=c).to(device)
        with torch.no_grad():
            finite = {name: bool(torch.isfinite(m(x)[0]).all()) for name, m in
                      (("ours", ours), ("titans-pytorch", peer))}
        secs = race({"ours": level_step(ours, x), "peer": level_step(peer, x)}, repeats, device)
        config = f"d={d} T={t} C={c}" + (f" B={b}" if note else "")
        bad = [name for name, ok in finite.items() if not ok]
        print(f"  ours {fmt_rate(b * t / secs['ours'])} tok/s (eta {eta:g}), titans-pytorch "
              f"{fmt_rate(b * t / secs['peer'])} tok/s{'  (' + note + ')' if note else ''}"
              + (f"  WARNING: non-finite outputs from {', '.join(bad)}" if bad else ""))
        RESULTS["titans"][(d, t, c)] = secs["peer"] / secs["ours"]
        print(ratio_line("titans", "titans-pytorch", config, secs["peer"] / secs["ours"]))
        del ours, peer, x
        free()


def transformer_vs_sdpa(dims, lengths, batch, heads, repeats, device) -> None:
    from nlstudio.models import build_model

    for d in dims:
        for t in lengths:
            torch.manual_seed(0)
            tokens = torch.randint(0, VOCAB, (batch, t), device=device)
            ours = build_model(transformer_spec(d, heads), vocab_size=VOCAB).to(device)
            plain = SDPAStack(d, heads, blocks=2, vocab=VOCAB).to(device)
            secs = race({"ours": lm_step(ours, tokens), "plain": lm_step(plain, tokens)},
                        repeats, device)
            print(f"  transformer preset {fmt_rate(batch * t / secs['ours'])} tok/s, "
                  f"sdpa stack {fmt_rate(batch * t / secs['plain'])} tok/s")
            RESULTS["transformer"][(d, t)] = secs["plain"] / secs["ours"]
            print(ratio_line("transformer", "sdpa-stack", f"d={d} T={t}",
                             secs["plain"] / secs["ours"]))
            del ours, plain
            free()


def gemm_step(n: int, device: torch.device) -> Callable[[], None]:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return lambda: torch.mm(a, b)


NSAM_PARTS = ("no task", "no self_modifying")


def nsam_efficiency(dims, t, batch, heads, repeats, device, gemm_n: int,
                    parts: bool = False) -> None:
    """``parts``: also times the NSAM shape without its task objective and without its
    self-modifying level, interleaved in the same rounds (where the step's time goes)."""
    from nlstudio.models import build_model

    gemm_flops = 2 * gemm_n ** 3
    for d in dims:
        torch.manual_seed(0)
        tokens = torch.randint(0, VOCAB, (batch, t), device=device)
        spec = nsam_spec(d, heads)
        model = build_model(spec, vocab_size=VOCAB).to(device)
        steps = {"nsam": lm_step(model, tokens)}
        for part in NSAM_PARTS if parts else ():
            steps[part] = lm_step(build_model(nsam_variant(spec, part), vocab_size=VOCAB)
                                  .to(device), tokens)
        flops = {name: count_flops(step) for name, step in steps.items()}
        secs = race({**steps, "gemm": gemm_step(gemm_n, device)}, repeats, device)
        achieved, peak = flops["nsam"] / secs["nsam"], gemm_flops / secs["gemm"]
        print(f"  nsam {fmt_rate(batch * t / secs['nsam'])} tok/s, {flops['nsam'] / 1e9:.2f} "
              f"GFLOP per step, {achieved / 1e9:.1f} GFLOP/s; gemm {gemm_n}x{gemm_n} "
              f"{peak / 1e9:.1f} GFLOP/s")
        for part in NSAM_PARTS if parts else ():
            print(f"  nsam, {part}: {secs[part] * 1e3:.0f} ms per step against "
                  f"{secs['nsam'] * 1e3:.0f} ms, {flops[part] / 1e9:.2f} GFLOP, "
                  f"{flops[part] / secs[part] / 1e9:.1f} GFLOP/s")
        RESULTS["nsam"][d] = achieved / peak
        print(ratio_line("nsam", "gemm peak", f"d={d} T={t}", achieved / peak))
        del model, steps
        free()


def nsam_growth(d, lengths, batch, heads, repeats, device, parts: bool = False) -> None:
    """``parts``: the same for the NSAM shape without its self-modifying level (same rounds)."""
    from nlstudio.models import build_model

    torch.manual_seed(0)
    spec = nsam_spec(d, heads)
    models = {"nsam": build_model(spec, vocab_size=VOCAB).to(device)}
    if parts:
        models["no self_modifying"] = build_model(nsam_variant(spec, "no self_modifying"),
                                                  vocab_size=VOCAB).to(device)
    steps = {}
    for t in lengths:
        tokens = torch.randint(0, VOCAB, (batch, t), device=device)
        steps.update({(name, t): lm_step(m, tokens) for name, m in models.items()})
    secs = race(steps, repeats, device)
    doublings = math.log2(lengths[-1] / lengths[0])
    for name in models:
        per_token = {t: secs[name, t] / (batch * t) for t in lengths}
        growth = (per_token[lengths[-1]] / per_token[lengths[0]]) ** (1 / doublings)
        what = "" if name == "nsam" else f" ({name})"
        print(f"  time/token{what}: " + ", ".join(f"T={t} {per_token[t] * 1e6:.1f} us"
                                               for t in lengths))
        if name == "nsam":
            RESULTS["growth"] = (growth, lengths[0], lengths[-1])
            print(f"nsam time/token growth per 2x T [d={d}]: {growth:.2f}x")
        else:
            print(f"  growth per 2x T{what}: {growth:.2f}x")


def summary() -> None:
    """The ratio table of README.md's "Measured" section, from what this run measured."""
    rows = []

    def span(values) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:.2f}×" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}× – {hi:.2f}×"

    def mark(ok: bool) -> str:
        return "✓" if ok else "✗"

    titans = RESULTS["titans"]
    dims = sorted({d for d, _, _ in titans})
    lengths = sorted({t for _, t, _ in titans})
    for c in sorted({c for _, _, c in titans}):
        vals = [r for (_, _, cc), r in titans.items() if cc == c]
        what = (f"titans level vs `titans_pytorch.NeuralMemory` 0.5.5, C = {c}"
                + (" (our default)" if c == 16 else "")
                + f", d ∈ {{{', '.join(map(str, dims))}}}, T ∈ {{{', '.join(map(str, lengths))}}}")
        rows.append((what, span(vals), f"≥ 2× {mark(min(vals) >= 2.0)}"))
    if RESULTS["transformer"]:
        vals = list(RESULTS["transformer"].values())
        rows.append(("Transformer preset vs a plain SDPA block stack", span(vals),
                     f"≥ 1.0× (within noise: ≥ 0.95×) {mark(min(vals) >= 0.95)}"))
    if RESULTS["nsam"]:
        vals = RESULTS["nsam"]
        rows.append(("NSAM preset's achieved FLOP/s vs this machine's float32 GEMM peak",
                     ", ".join(f"{v:.2f}× (d={d})" for d, v in vals.items()),
                     f"≥ 0.30× {mark(min(vals.values()) >= 0.30)}"))
    if RESULTS["growth"]:
        g, t0, t1 = RESULTS["growth"]
        rows.append((f"NSAM time per token, growth per doubling of T ({t0} → {t1})",
                     f"{g:.2f}×", f"≤ 1.10× {mark(g <= 1.10)}"))
    if not rows:
        return
    print("\n== summary: README.md's ratio table")
    print("| ratio | measured | target |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


# ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small settings (about a minute)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the machines are shared and 2 threads "
                        "collapse under contention)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (median is kept)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", nargs="*", default=None,
                   choices=("levels", "titans", "transformer", "nsam"),
                   help="run only these sections")
    p.add_argument("--system-allocator", action="store_true",
                   help="do not set the glibc allocator variables (see bench/README.md)")
    p.add_argument("--parts", action="store_true",
                   help="nsam section: also time the NSAM shape without its task objective and "
                        "without its self-modifying level (where the time goes)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time (default) or this process's CPU time (steadier on a loaded "
                        "machine; CPU only)")
    args = p.parse_args(argv)
    if args.clock == "cpu":
        if args.device != "cpu":
            p.error("--clock cpu measures CPU time: use it with --device cpu")
        CLOCK["fn"] = time.process_time
    configure_torch(args.threads)  # as the app computes: subnormals flushed (nlstudio/threads.py)
    device = torch.device(args.device)
    only = set(args.only or ("levels", "titans", "transformer", "nsam"))

    if args.quick:
        repeats = args.repeats or 3
        dims, lengths, batch, heads = (32, 64), (128, 256), 4, 4
        titans = [(64, 256, 16, 4, ""), (64, 256, 64, 4, "")]
        growth_lengths, gemm_n = (128, 256, 512), 1024
    else:
        repeats = args.repeats or 5
        dims, lengths, batch, heads = (64, 256), (512, 2048), 8, 4
        titans = [(d, t, c, 8, "") for d in (64, 256) for t in (512, 2048) for c in (16, 64)]
        # titans-pytorch needs > 33 GiB for d=256, C=16, T=2048 at batch 8 (one weight set per
        # chunk and sequence): that config is compared at batch 2 on both sides.
        titans = [(d, t, c, 2, "batch 2: titans-pytorch needs > 33 GiB at batch 8")
                  if (d, t, c) == (256, 2048, 16) else cfg[:4] + ("",)
                  for cfg in titans for d, t, c in [cfg[:3]]]
        growth_lengths, gemm_n = (512, 1024, 2048), 2048

    alloc = ("system defaults (--system-allocator)" if args.system_allocator else
             " ".join(f"{k}={v}" for k, v in ALLOCATOR.items()) + " (set before Python started)")
    print(f"NL Studio level benchmark{' (--quick)' if args.quick else ''}")
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"allocator: {alloc}")
    print("subnormal floats: flushed to zero, as in the app (nlstudio/threads.py)")
    print(f"forward+backward, medians of {repeats} interleaved rounds after a warm-up of 2 calls "
          f"each, {args.clock} clock")
    print(f"load average at start: {load()}")

    if "levels" in only:
        print(f"\n== level kinds: tokens/s, batch {batch}, {heads} heads, registry defaults")
        level_table(dims, lengths, batch, heads, repeats, device)
    if "titans" in only:
        print("\n== titans vs titans-pytorch 0.5.5 NeuralMemory(dim=d, chunk_size=C): one head, "
              "depth-2 memory d -> 4d -> d on both sides (ours: expansion 4, momentum, conv 0)")
        titans_vs_peer(titans, repeats, device)
    if "transformer" in only:
        print(f"\n== transformer preset (attention -> mlp(null)) x 2 vs a plain pre-norm "
              f"SDPA+MLP stack, same dims, vocab {VOCAB}, batch {batch}")
        transformer_vs_sdpa(dims, lengths, batch, heads, repeats, device)
    if "nsam" in only:
        t = lengths[0]
        print(f"\n== nsam preset (self_modifying(8) -> mlp(16) -> mlp(64) -> mlp(null)): "
              f"counted matmul FLOPs per second vs a {gemm_n}x{gemm_n} float32 GEMM, batch {batch}")
        nsam_efficiency(dims, t, batch, heads, repeats, device, gemm_n, args.parts)
        print(f"\n== nsam time per token as T doubles (d={dims[0]}, batch {batch})")
        nsam_growth(dims[0], growth_lengths, batch, heads, repeats, device, args.parts)
    summary()
    print(f"load average at end: {load()}")


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
