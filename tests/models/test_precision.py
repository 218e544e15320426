"""bf16 autocast (``train.precision: bf16``) through every level kind, on the CPU for real.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the outer layers compute in bfloat16,
while every in-context memory keeps its state in float32 and writes it with autocast off
(models/precision.py). Pinned here for every kind and the variants whose math differs (the
hand-written chunk nodes, the chunked recurrences, a CMS level's task path with its factored
SGD writes, dense optimizer writes and DGD's keys, local objectives), and for the inner
gradient of a CMS level that flows back through a later memory's chunk node.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlstudio.models import build_model
from nlstudio.models.precision import full_precision, state_dtype, widen

D, H, V = 16, 2, 16
B, T = 2, 40  # not a multiple of the chunks: pending tokens and partial chunks included
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def single(kind: str, **opts) -> list[dict]:
    return [{"id": "m", "kind": kind, **opts}]


#: one model per kind and per variant whose state or math differs
MODELS = {
    "attention": single("attention"),
    "attention_window": single("attention", window=8),
    "linear_attention": single("linear_attention"),
    "linear_scalar": single("linear_attention", gate="scalar"),
    "linear_vector": single("linear_attention", gate="vector"),
    "delta": single("delta", gate=False),
    "delta_gated": single("delta"),
    "titans": single("titans", period=4),
    "titans_matrix_dot_sgd": single("titans", period=3, depth=1, objective="dot",
                                    optimizer={"name": "sgd"}),
    "self_modifying": single("self_modifying", period=4),  # the fused chunk node
    "self_modifying_deep_momentum": single("self_modifying", period=4, depth=2, momentum=True),
    "self_modifying_sgd_dot": single("self_modifying", period=3, objective="dot",
                                     optimizer={"name": "sgd"}),
    "mlp_frozen": single("mlp", period=None),
    "cms_task_sgd": single("mlp", period=4),  # factored SGD writes
    "cms_task_momentum": single("mlp", period=4, optimizer={"name": "momentum"}),
    "cms_task_dgd": single("mlp", period=4, optimizer={"name": "dgd"}),  # keys in the state
    "cms_l2_sgd": single("mlp", period=4, objective="l2"),
    "cms_dot_dgd": single("mlp", period=4, objective="dot", optimizer={"name": "dgd"}),
    "cms_l2_m3": single("mlp", period=4, objective="l2", optimizer={"name": "m3"}),
    # a task level's inner gradient flows back through a later memory's hand-written node
    "cms_then_titans": [{"id": "c", "kind": "mlp", "period": 8},
                        {"id": "m", "kind": "titans", "period": 4}],
    "cms_then_self_modifying": [{"id": "c", "kind": "mlp", "period": 8},
                                {"id": "m", "kind": "self_modifying", "period": 4}],
}


def model_for(name: str, seed: int = 0):
    levels = MODELS[name]
    ids = [lv["id"] for lv in levels]
    edges = [["input", ids[0]], *[[a, b] for a, b in zip(ids, ids[1:])], [ids[-1], "output"]]
    torch.manual_seed(seed)
    return build_model({"d_model": D, "heads": H, "levels": levels, "edges": edges},
                       vocab_size=V)


def tokens(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, T + 1), generator=g)
    return x[:, :-1], x[:, 1:]


def step(model, inputs, targets, autocast: bool, state=None):
    """Forward (+ loss) under bf16 autocast or not, the backward outside it (as the trainer
    does): the loss, the new state and the outer gradients."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(**BF16, enabled=autocast):
        logits, state = model(inputs, state, targets=targets)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss.detach(), state, grads


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_kind_trains_under_bf16_autocast_with_float32_state(name, float_tensors):
    model = model_for(name)
    inputs, targets = tokens()
    loss32, state32, grads32 = step(model, inputs, targets, autocast=False)
    loss16, state16, grads16 = step(model, inputs, targets, autocast=True)
    # autocast took effect (a precision that is ignored would give the float32 loss exactly)
    assert loss16 != loss32
    # bf16 keeps 8 bits of mantissa (relative rounding 2⁻⁹ ≈ 0.2 %): the loss, a mean over
    # B·T tokens of ~ln V = 2.8 nats, moves by a few roundings at most; 1 % is ~5 of them
    assert abs(loss16 - loss32) <= 0.01 * loss32, (loss16, loss32)
    assert torch.isfinite(grads16).all()
    # the outer gradient points the same way (every parameter, one vector)
    assert F.cosine_similarity(grads16, grads32, dim=0) > 0.99
    # every tensor of every level's state is float32, and close to the float32 run's
    flat32 = dict(float_tensors(state32))
    for path, t in float_tensors(state16):
        assert t.dtype == torch.float32, f"{name}: {path} is {t.dtype}"
        ref = flat32[path]
        if not ref.numel():
            continue
        scale = ref.abs().max().clamp_min(1e-6)
        assert (t - ref).abs().max() <= 0.05 * scale, f"{name}: {path}"


@pytest.mark.parametrize("name", ["titans", "self_modifying_deep_momentum", "delta_gated",
                                  "attention_window", "cms_task_dgd", "cms_then_titans"])
def test_a_stream_continued_under_autocast_keeps_float32_state(name, float_tensors):
    """A second call continues the state of the first (pending tokens, convolution history,
    KV cache, a chunk's gradient sum): no dtype mix and the state stays float32."""
    model = model_for(name)
    inputs, targets = tokens()
    with torch.autocast(**BF16), torch.no_grad():
        _, state = model(inputs[:, :13], targets=targets[:, :13])
        logits, state = model(inputs[:, 13:], state, targets=targets[:, 13:])
    assert torch.isfinite(logits).all()
    for path, t in float_tensors(state):
        assert t.dtype == torch.float32, f"{name}: {path} is {t.dtype}"


def test_a_memory_written_many_times_keeps_float32_writes():
    """400 linear-attention writes ``η v kᵀ`` onto a memory of order one, under autocast: the
    memory equals the one computed in float32 from the same (bf16-rounded) keys and values.
    With the recurrence left to autocast (its matmuls in bfloat16) it is off by up to 0.16
    (3 %; measured by removing the float32 region from models/levels/matrix_memory.py)."""
    torch.manual_seed(0)
    model = build_model({"d_model": D, "heads": 1, "levels": single("linear_attention"),
                         "edges": [["input", "m"], ["m", "output"]]}, vocab_size=V)
    level = model.levels["m"]
    x = torch.randn(1, 400, D)
    state = level.init_state(1)
    state["M"] = torch.ones_like(state["M"])
    with torch.autocast(**BF16), torch.no_grad():
        _, new = level(x, state)
        q, k, v = level.project(x, state["conv"])
    assert new["M"].dtype == torch.float32
    expected = state["M"] + level.eta * torch.einsum("bhtv,bhtk->bhvk", v.float(), k.float())
    torch.testing.assert_close(new["M"], expected, rtol=1e-4, atol=1e-4)


def test_the_helpers_are_the_identity_without_autocast():
    """The float32 path is unchanged: no cast, no context."""
    x = torch.randn(3)
    assert widen(x) is x and state_dtype(x) == torch.float32
    assert state_dtype(x.double()) == torch.float64
    with full_precision(x):
        assert not torch.is_autocast_enabled("cpu")
    with torch.autocast(**BF16):
        y = torch.nn.functional.linear(x, torch.eye(3))
        assert y.dtype == torch.bfloat16 and widen(y).dtype == torch.float32
        with full_precision(y):
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")
