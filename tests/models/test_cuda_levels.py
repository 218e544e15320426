"""Every level kind and inner optimizer on CUDA gives what it gives on the CPU.

Skipped on machines without a GPU (CI has none); run on a lent GPU machine as part of the
device check (docs/internals.md, "CUDA"). Comparisons are in float64, so they hold to
round-off whatever TF32 settings the machine has.
"""
from __future__ import annotations

import pytest
import torch

from nlstudio.models import KINDS, build_model
from nlstudio.models.inner_optim import make_optimizer
from nlstudio.models.registry import ALL_OPTIMIZERS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

V, D = 17, 16
F64 = torch.float64


def one_level(kind: str) -> dict:
    info = KINDS[kind]
    period = {"positive_or_null": 4, "positive": 4}.get(info.period_rule, info.default_period)
    level = {"id": "lv", "kind": kind, "period": period}
    return {"d_model": D, "heads": 2, "levels": [level],
            "edges": [["input", "lv"], ["lv", "output"]]}


def tokens(batch: int, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, V, (batch, steps + 1), generator=g)
    return t[:, :-1].clone(), t[:, 1:].clone()


def _loss_and_grads(model, x, y):
    logits, state = model(x, targets=y)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad],
                                allow_unused=True)
    return logits.detach(), state, grads


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_level_forward_and_outer_gradients_match_cpu(kind):
    torch.manual_seed(0)
    model = build_model(one_level(kind), vocab_size=V).to(F64)
    x, y = tokens(2, 24)
    cpu_logits, _, cpu_grads = _loss_and_grads(model, x, y)
    model.cuda()
    gpu_logits, _, gpu_grads = _loss_and_grads(model, x.cuda(), y.cuda())
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, rtol=1e-9, atol=1e-10)
    for a, b in zip(gpu_grads, cpu_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_level_state_split_on_cuda(kind):
    torch.manual_seed(1)
    model = build_model(one_level(kind), vocab_size=V).to(F64).cuda()
    x, y = (t.cuda() for t in tokens(2, 20, seed=1))
    with torch.no_grad():
        whole, _ = model(x, targets=y)
        first, state = model(x[:, :9], targets=y[:, :9])
        second, _ = model(x[:, 9:], state, targets=y[:, 9:])
    assert whole.device.type == "cuda"
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", ALL_OPTIMIZERS)
def test_inner_optimizer_matches_cpu(name):
    g = torch.Generator().manual_seed(3)
    opt = make_optimizer({"name": name})
    w = torch.randn(3, 4, 5, generator=g, dtype=F64)
    grads = torch.randn(4, 3, 4, 5, generator=g, dtype=F64)
    keys = torch.randn(4, 3, 2, 5, generator=g, dtype=F64)
    results = []
    for device in ("cpu", "cuda"):
        p, state = w.to(device), opt.init(w.to(device))
        for s in range(4):
            p, state = opt.step(p, grads[s].to(device), state, key=keys[s].to(device))
        assert p.device.type == device
        assert all(v.device.type == device for v in state.values() if torch.is_tensor(v))
        results.append(p.cpu())
    torch.testing.assert_close(results[1], results[0], rtol=1e-9, atol=1e-11)


def test_float32_training_step_on_cuda_is_finite_for_every_kind():
    for kind in sorted(KINDS):
        torch.manual_seed(0)
        model = build_model(one_level(kind), vocab_size=V).cuda()
        x, y = (t.cuda() for t in tokens(4, 64))
        logits, _ = model(x, targets=y)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        assert torch.isfinite(loss), kind
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                   if p.grad is not None), kind
