"""The fused self-modifying node of a call's complete chunks (depth 1, DGD, no momentum) against
the level's general path (``SelfModifyingLevel._write`` chunk after chunk: autograd through
``dgd_write``), float64: the written memory, the reads, the probes' write norms and the
gradients of every input (memory, inputs, queries, readouts)."""
import pytest
import torch

from nlstudio.models.levels.common import L2_EPS
from nlstudio.models.levels.self_modifying import SelfModifyingLevel
from nlstudio.models.levels.self_modifying import MEM
from nlstudio.models.levels import self_modifying_chunk
from nlstudio.models.levels.self_modifying_chunk import SelfModifyingChunks

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


def case(level, batch, c, seed, zero_token=False, chunks=1):
    """Anchor memory ``w [N, 5D, D]``, chunk-major inputs and queries ``[J, N, C, D]``."""
    g = torch.Generator().manual_seed(seed)
    n, dh = batch * level.heads, level.head_dim
    w = (torch.eye(dh, dtype=F64).repeat(1, 5, 1).view(1, 5 * dh, dh)
         + 0.3 * torch.randn(n, 5 * dh, dh, generator=g, dtype=F64))
    x = torch.randn(chunks, n, c, dh, generator=g, dtype=F64)
    if zero_token:  # a key of norm 0: the normalisation's floor is active
        w[:, :dh] = 0.0
    q = torch.nn.functional.normalize(torch.randn(chunks, n, c, dh, generator=g, dtype=F64),
                                      dim=-1)
    return w, x, q


def general_path(level, w, x, q):
    """The chunks one after the other through ``_write`` (autograd): the final memory, the
    reads ``[J, N, C, D]``, ``‖ΔW_mem‖²`` per chunk and sequence, and the last ``ΔW_mem``."""
    reads, steps = [], []
    for j in range(x.shape[0]):
        new_w, _, read = level._write([w], [None], x[j], q[j], None)
        d = level.head_dim
        change = (new_w[0] - w)[:, MEM * d:]
        steps.append(change.detach().square().sum((-2, -1)))
        reads.append(read)
        w = new_w[0]
    return w, torch.stack(reads), torch.stack(steps), change[0].detach()


def backward_form(monkeypatch, stacked: bool) -> None:
    """Pick the backward's form of the ∂/∂W_0 update (chosen by head width in the node: one
    baddbmm per row block over stacked tokens for wide heads, products added for narrow ones),
    so that both are checked at the small widths of these tests."""
    monkeypatch.setattr(self_modifying_chunk, "_WIDE_HEAD", 0 if stacked else 10 ** 9)


@pytest.mark.parametrize("c,chunks,seed,zero_token", [
    (1, 1, 0, False), (3, 1, 1, False), (8, 1, 2, False), (4, 1, 3, True),
    (1, 5, 5, False), (3, 4, 6, False), (8, 3, 7, False), (4, 3, 8, True)])
@pytest.mark.parametrize("stacked", [False, True])
def test_fused_chunks_equal_the_general_path_with_gradients(c, chunks, seed, zero_token, stacked,
                                                           monkeypatch):
    backward_form(monkeypatch, stacked)
    level = make(seed=seed)
    batch = 2
    w, x, q = case(level, batch, c, seed, zero_token, chunks)
    leaves = [w.requires_grad_(True), x.requires_grad_(True), q.requires_grad_(True)]
    params = [level.readout, level.readout_bias]
    g = torch.Generator().manual_seed(10 + seed)
    proj_w = torch.randn(w.shape, generator=g, dtype=F64)
    proj_r = torch.randn(x.shape, generator=g, dtype=F64)
    results = []
    for fused in (False, True):
        if fused:
            w_new, read, steps, last = SelfModifyingChunks.apply(
                level.eta, w, x, q, *gates(level, batch), L2_EPS)
            assert not steps.requires_grad and not last.requires_grad
        else:
            w_new, read, steps, last = general_path(level, w, x, q)
        loss = (w_new * proj_w).sum() + (read * proj_r).sum()
        grads = torch.autograd.grad(loss, leaves + params)
        results.append((w_new.detach(), read.detach(), steps, last, grads))
    (w_ref, r_ref, s_ref, l_ref, g_ref), (w_got, r_got, s_got, l_got, g_got) = results
    torch.testing.assert_close(w_got, w_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r_got, r_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_got, s_ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(l_got, l_ref, rtol=1e-10, atol=1e-14)
    for a, b in zip(g_ref, g_got):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("stacked", [False, True])
def test_gradcheck_of_the_fused_chunks(chunks, stacked, monkeypatch):
    backward_form(monkeypatch, stacked)
    level = make(d=4, heads=2, seed=4)
    w, x, q = case(level, 1, 3, 4, chunks=chunks)
    r_eta, b_eta, r_alpha, b_alpha = (t.detach().clone() for t in gates(level, 1))
    inputs = tuple(t.requires_grad_(True) for t in (w, x, q, r_eta, b_eta, r_alpha, b_alpha))
    assert torch.autograd.gradcheck(
        lambda *ts: SelfModifyingChunks.apply(level.eta, *ts, L2_EPS)[:2], inputs)


def test_a_second_derivative_raises_instead_of_being_wrong():
    level = make()
    w, x, q = case(level, 1, 3, 0, chunks=2)
    x.requires_grad_(True)
    w_new, read, _, _ = SelfModifyingChunks.apply(level.eta, w, x, q, *gates(level, 1), L2_EPS)
    (gx,) = torch.autograd.grad(w_new.sum() + read.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()
