"""Where people train: our memories against the field's GPU kernels, NSAM against a Transformer.

Run ``python bench/gpu.py`` on a CUDA machine (``--quick``: tiny sizes, runs on the CPU in
seconds; that is what tests/test_bench_gpu.py checks). In one process, forward + backward,
interleaved medians (bench/levels.py's ``race``), ratio lines ``<what> vs <baseline> [config]:
N.NNx`` (> 1: <what> is faster; for ``gemm peak`` baselines the ratio is a fraction of it):

1. **kernels**: the recurrences of ``delta`` (``chunked_delta_rule``, gated and not) and
   ``linear_attention`` (``chunked_linear_attention``, gate none / scalar / vector), the
   PyTorch path, against flash-linear-attention's own chunk kernels (``chunk_gated_delta_rule``,
   ``chunk_simple_gla``, ``chunk_gla``) on the same float32 tensors, each in its native layout
   (DeltaNet against ``chunk_gated_delta_rule`` with log α = 0: fla's ``chunk_delta_rule``
   refuses float32); also our dispatch to fla (models/levels/fla_kernels.py, which adds the
   surprises) against fla's public op. The largest difference between the sides' outputs is
   printed with every config: a fast wrong kernel would show there. Skipped, with a note,
   without CUDA or without fla.
2. **nsam vs transformer**: the NSAM shape (bench/levels.py ``nsam_spec``) against
   bench/levels.py's plain SDPA block stack with the block count that matches NSAM's parameter
   count (both counts printed), tokens/s; NSAM's counted matmul FLOP/s (FlopCounterMode)
   against this device's measured GEMM rates: float32 (TF32 off), and on CUDA TF32 and bf16.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F

from nlstudio.threads import configure_torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from levels import (VOCAB, SDPAStack, count_flops, fmt_rate, free, lm_step,  # noqa: E402
                    nsam_spec, race, ratio_line)


# ------------------------------------------------------------------------------------------
# 1. the recurrences against fla's chunk kernels

def kernel_inputs(b: int, h: int, t: int, d: int, gate, device) -> dict:
    """Inputs as the levels make them: q, k L2-normalised, steps in (0, 1), log-decays < 0;
    our ``[B, H, T, D]`` and fla's ``[B, T, H, D]`` (contiguous) copies of the same values."""
    g = torch.Generator(device="cpu").manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    q, k = F.normalize(r(b, h, t, d), dim=-1), F.normalize(r(b, h, t, d), dim=-1)
    v, memory = r(b, h, t, d), torch.zeros(b, h, d, d, device=device)
    eta = torch.sigmoid(r(b, h, t))
    if gate in ("gated", "scalar"):
        log = F.logsigmoid(r(b, h, t) + 3.0)
        log = log if gate == "gated" else log[..., None]
    elif gate == "vector":
        log = F.logsigmoid(r(b, h, t, d) + 3.0)
    else:
        log = None
    ours = {"q": q, "k": k, "v": v, "eta": eta, "log": log, "memory": memory}
    for x in ours.values():
        if x is not None:
            x.requires_grad_()
    fla = {n: None if x is None else x.detach().transpose(1, 2).contiguous().requires_grad_()
           for n, x in ours.items()}
    fla["memory"] = memory.detach().mT.contiguous().requires_grad_()  # fla's state is [K, V]
    return {"ours": ours, "fla": fla}


def grad_step(fn: Callable[[], torch.Tensor], tensors: dict) -> Callable[[], None]:
    """One forward + backward of ``fn`` (loss: the mean square of the output)."""
    leaves = [x for x in tensors.values() if x is not None]

    def step() -> None:
        for x in leaves:
            x.grad = None
        fn().square().mean().backward()
    return step


def kernel_contenders(kind: str, gate, ins: dict) -> dict[str, Callable[[], torch.Tensor]]:
    """The output of each side for the same inputs: ours (PyTorch path), fla's public op, and
    (delta only) our dispatch to fla's kernels. Outputs in our layout ``[B, H, T, D]``."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    from fla.ops.gla import chunk_gla
    from fla.ops.simple_gla import chunk_simple_gla

    from nlstudio.models.levels import fla_kernels
    from nlstudio.models.levels.delta import chunked_delta_rule
    from nlstudio.models.levels.linear_attention import chunked_linear_attention

    o, f = ins["ours"], ins["fla"]
    common = dict(scale=1.0, initial_state=f["memory"], output_final_state=True)
    back = lambda out: out[0].transpose(1, 2)  # noqa: E731
    if kind == "delta":
        # DeltaNet: fla's chunk_delta_rule refuses float32, so its gated kernels with log α = 0
        # (what our dispatch runs too)
        g = f["log"] if gate == "gated" else torch.zeros_like(f["eta"]).detach()
        peer = lambda: back(chunk_gated_delta_rule(f["q"], f["k"], f["v"], g, f["eta"],  # noqa
                                                   **common))
        return {"ours": lambda: chunked_delta_rule(o["q"], o["k"], o["v"], o["eta"], o["log"],
                                                   o["memory"])[0],
                "fla": peer,
                "ours-on-fla": lambda: fla_kernels.delta_rule(o["q"], o["k"], o["v"], o["eta"],
                                                              o["log"], o["memory"])[0]}
    if gate == "vector":
        peer = lambda: back(chunk_gla(f["q"], f["k"], f["v"], f["log"], **common))  # noqa
    else:
        g = None if f["log"] is None else f["log"][..., 0].contiguous()
        peer = lambda: back(chunk_simple_gla(f["q"], f["k"], f["v"], g=g, **common))  # noqa
    return {"ours": lambda: chunked_linear_attention(o["q"], o["k"], o["v"], o["log"],
                                                     o["memory"])[0],
            "fla": peer}


def kernels_vs_fla(configs, repeats: int, device: torch.device) -> None:
    if device.type != "cuda":
        print("  (skipped: flash-linear-attention's kernels need a CUDA device; this run is on "
              f"{device.type})")
        return
    from nlstudio.models.levels import fla_kernels

    why = fla_kernels.fla_unavailable()
    if why is not None:
        print(f"  (skipped: {why}; `pip install nlstudio[gpu]`)")
        return
    cases = [("delta", "gated"), ("delta", None), ("linear_attention", None),
             ("linear_attention", "scalar"), ("linear_attention", "vector")]
    for b, h, t, d in configs:
        for kind, gate in cases:
            torch.manual_seed(0)
            ins = kernel_inputs(b, h, t, d, gate, device)
            outs = kernel_contenders(kind, gate, ins)
            with torch.no_grad():
                want = outs["ours"]()
                diff = max((fn() - want).abs().max().item() for n, fn in outs.items()
                           if n != "ours")
            steps = {n: grad_step(fn, ins["fla" if n == "fla" else "ours"])
                     for n, fn in outs.items()}
            secs = race(steps, repeats, device)
            config = f"gate={gate or 'none'} B={b} H={h} T={t} d={d}"
            print(f"  {kind} [{config}]: " + ", ".join(
                f"{n} {fmt_rate(b * t / s)} tok/s" for n, s in secs.items())
                + f"; max |output difference| {diff:.1e}")
            print(ratio_line(kind, "fla", config, secs["fla"] / secs["ours"]))
            if "ours-on-fla" in secs:
                print(ratio_line(f"{kind}-on-fla", "fla", config,
                                 secs["fla"] / secs["ours-on-fla"]))
            del ins, outs, steps
            free()


# ------------------------------------------------------------------------------------------
# 2. NSAM against a same-size Transformer, and against the device's GEMM rates

def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_blocks(target: int, d: int, heads: int, vocab: int = VOCAB) -> tuple[int, int]:
    """The SDPA block count whose stack's parameter count is nearest ``target`` (at least 1),
    and that count (models built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        counts = {}
        n = 1
        while True:
            counts[n] = param_count(SDPAStack(d, heads, blocks=n, vocab=vocab))
            if counts[n] >= target:
                break
            n += 1
    best = min(counts, key=lambda k: abs(counts[k] - target))
    return best, counts[best]


def gemm_rates(n: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Measured FLOP/s of an n×n matmul: ``fp32`` (TF32 off) everywhere; on CUDA also ``tf32``
    and ``bf16``."""
    a32, b32 = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    modes = {"fp32": (a32, b32, False)}
    if device.type == "cuda":
        modes["tf32"] = (a32, b32, True)
        modes["bf16"] = (a32.bfloat16(), b32.bfloat16(), False)

    def mm(a, b, tf32):
        def step():
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                torch.mm(a, b)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
        return step
    secs = race({k: mm(*v) for k, v in modes.items()}, repeats, device)
    return {k: 2 * n ** 3 / s for k, s in secs.items()}


def nsam_vs_transformer(d: int, heads: int, t: int, batch: int, repeats: int,
                        device: torch.device, gemm_n: int, precision: str) -> None:
    from nlstudio.models import build_model

    torch.manual_seed(0)
    nsam = build_model(nsam_spec(d, heads), vocab_size=VOCAB).to(device)
    blocks, stack_params = matched_blocks(param_count(nsam), d, heads)
    plain = SDPAStack(d, heads, blocks=blocks, vocab=VOCAB).to(device)
    print(f"  parameters: nsam {param_count(nsam):,}, transformer (SDPA, {blocks} blocks) "
          f"{stack_params:,}")
    cast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16"
            else nullcontext)

    def under_cast(step):
        def run():
            with cast():
                step()
        return run
    while True:
        tokens = torch.randint(0, VOCAB, (batch, t), device=device)
        steps = {"nsam": under_cast(lm_step(nsam, tokens)),
                 "transformer": under_cast(lm_step(plain, tokens))}
        try:
            flops = {n: count_flops(s) for n, s in steps.items()}
            secs = race(steps, repeats, device)
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            print(f"  (out of memory at batch {batch}: both sides at batch {batch // 2})")
            del steps
            free()
            batch //= 2
    config = f"d={d} H={heads} T={t} B={batch} {precision}"
    for n, s in secs.items():
        print(f"  {n}: {fmt_rate(batch * t / s)} tok/s, {flops[n] / 1e9:.3g} GFLOP per step, "
              f"{flops[n] / s / 1e12:.3f} TFLOP/s")
    print(ratio_line("nsam", "transformer", config, secs["transformer"] / secs["nsam"]))
    del steps, nsam, plain
    free()
    peaks = gemm_rates(gemm_n, repeats, device)
    print(f"  {gemm_n}x{gemm_n} GEMM: " + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s"
                                                    for k, v in peaks.items()))
    for k, peak in peaks.items():
        for n in secs:
            print(ratio_line(n, f"{k} gemm peak", config, flops[n] / secs[n] / peak))


# ------------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (seconds, runs on the CPU: a smoke test, not a measurement)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (median is kept)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--only", nargs="*", choices=("kernels", "nsam"), default=None)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="nsam section: both models under bf16 autocast or not (default fp32)")
    args = p.parse_args(argv)
    configure_torch(args.threads)  # as the app computes: subnormals flushed (nlstudio/threads.py)
    device = torch.device(args.device)
    only = set(args.only or ("kernels", "nsam"))
    if args.quick:
        repeats = args.repeats or 2
        kernel_configs = [(1, 2, 128, 16)]
        nsam = dict(d=32, heads=2, t=64, batch=2, gemm_n=256)
    else:
        repeats = args.repeats or 5
        kernel_configs = [(8, 8, 2048, 64), (4, 4, 4096, 128)]
        nsam = dict(d=512, heads=8, t=2048, batch=16, gemm_n=8192)

    print(f"NL Studio GPU benchmark{' (--quick)' if args.quick else ''}: {device_name(device)}")
    print(f"torch {torch.__version__}, device {device}, forward+backward, medians of {repeats} "
          f"interleaved rounds after 2 warm-up calls each; TF32 matmul in torch: "
          f"{torch.backends.cuda.matmul.allow_tf32}")
    if "kernels" in only:
        print("\n== the recurrences (PyTorch path) vs flash-linear-attention's chunk kernels, "
              "same tensors, scale 1, zero initial state, final state returned")
        kernels_vs_fla(kernel_configs, repeats, device)
    if "nsam" in only:
        print(f"\n== nsam (bench/levels.py nsam_spec) vs a same-size SDPA Transformer, vocab "
              f"{VOCAB}, {args.precision}")
        nsam_vs_transformer(repeats=repeats, device=device, precision=args.precision, **nsam)
    return 0


if __name__ == "__main__":
    sys.exit(main())
