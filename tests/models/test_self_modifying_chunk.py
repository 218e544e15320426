"""The fused self-modifying chunk node (depth 1, DGD, no momentum) against the level's general
path (``SelfModifyingLevel._write``: autograd through ``dgd_write``), float64: the written
memory, the read and the gradients of every input (memory, inputs, queries, readouts)."""
import pytest
import torch

from nlstudio.models.levels.common import L2_EPS
from nlstudio.models.levels.self_modifying import SelfModifyingLevel
from nlstudio.models.levels.self_modifying_chunk import SelfModifyingChunk

F64 = torch.float64


def make(d=8, heads=2, eta=0.5, seed=0):
    torch.manual_seed(seed)
    spec = {"id": "hope", "kind": "self_modifying", "period": 4, "depth": 1, "conv": 0,
            "momentum": False, "objective": "l2", "optimizer": {"name": "dgd", "eta": eta}}
    level = SelfModifyingLevel(spec, d_model=d, heads=heads).to(F64)
    with torch.no_grad():
        level.readout.normal_(0.0, 1.0)
        level.readout_bias.normal_(0.0, 1.0)
    return level


def gates(level, batch):
    per_seq = lambda t: t.expand(batch, *t.shape).reshape(batch * level.heads, *t.shape[1:])
    return (per_seq(level.readout[0]), per_seq(level.readout_bias[0]),
            per_seq(level.readout[1]), per_seq(level.readout_bias[1]))


def case(level, batch, c, seed, zero_token=False):
    g = torch.Generator().manual_seed(seed)
    n, dh = batch * level.heads, level.head_dim
    w = (torch.eye(dh, dtype=F64).repeat(1, 5, 1).view(1, 5 * dh, dh)
         + 0.3 * torch.randn(n, 5 * dh, dh, generator=g, dtype=F64))
    x = torch.randn(n, c, dh, generator=g, dtype=F64)
    if zero_token:  # a key of norm 0: the normalisation's floor is active
        w[:, :dh] = 0.0
    q = torch.nn.functional.normalize(torch.randn(n, c, dh, generator=g, dtype=F64), dim=-1)
    return w, x, q


@pytest.mark.parametrize("c,seed,zero_token", [(1, 0, False), (3, 1, False), (8, 2, False),
                                               (4, 3, True)])
def test_fused_chunk_equals_the_general_path_with_gradients(c, seed, zero_token):
    level = make(seed=seed)
    batch = 2
    w, x, q = case(level, batch, c, seed, zero_token)
    leaves = [w.requires_grad_(True), x.requires_grad_(True), q.requires_grad_(True)]
    params = [level.readout, level.readout_bias]
    g = torch.Generator().manual_seed(10 + seed)
    proj_w = torch.randn(w.shape, generator=g, dtype=F64)
    proj_r = torch.randn(x.shape, generator=g, dtype=F64)
    results = []
    for fused in (False, True):
        if fused:
            w_new, read = SelfModifyingChunk.apply(level.eta, w, x, q, *gates(level, batch),
                                                   L2_EPS)
        else:
            new_w, _, read = level._write([w], [None], x, q, None)
            w_new = new_w[0]
        loss = (w_new * proj_w).sum() + (read * proj_r).sum()
        grads = torch.autograd.grad(loss, leaves + params)
        results.append((w_new.detach(), read.detach(), grads))
    (w_ref, r_ref, g_ref), (w_got, r_got, g_got) = results
    torch.testing.assert_close(w_got, w_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r_got, r_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_ref, g_got):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)


def test_gradcheck_of_the_fused_chunk():
    level = make(d=4, heads=2, seed=4)
    w, x, q = case(level, 1, 3, 4)
    r_eta, b_eta, r_alpha, b_alpha = (t.detach().clone() for t in gates(level, 1))
    inputs = tuple(t.requires_grad_(True) for t in (w, x, q, r_eta, b_eta, r_alpha, b_alpha))
    assert torch.autograd.gradcheck(
        lambda *ts: SelfModifyingChunk.apply(level.eta, *ts, L2_EPS), inputs)


def test_a_second_derivative_raises_instead_of_being_wrong():
    level = make()
    w, x, q = case(level, 1, 3, 0)
    x.requires_grad_(True)
    w_new, read = SelfModifyingChunk.apply(level.eta, w, x, q, *gates(level, 1), L2_EPS)
    (gx,) = torch.autograd.grad(w_new.sum() + read.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()
