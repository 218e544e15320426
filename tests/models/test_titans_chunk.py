"""The Titans chunk node (models/levels/titans_chunk.py: all complete chunks of a call) against
the autograd composition of models/chunked.py's ``mlp_forward`` / ``mlp_backward`` /
``write_plain`` (the reference math) chained chunk by chunk, float64: outputs, write norms, the
last write, and every input's gradient for a loss that reads the new weights, the new momenta
and the reads (gradcheck on the node itself as well)."""
import pytest
import torch

from nlstudio.models.chunked import collapse_end, mlp_backward, mlp_forward, write_plain
from nlstudio.models.levels.titans_chunk import TitansChunks

F64 = torch.float64


def reference(ws, ss, log_a, theta, log_mu, k, v, q, l2, residual):
    end = collapse_end(log_a, theta, log_mu)
    out, trace = mlp_forward(ws, k, residual)
    g = out - v if l2 else -v
    deltas = mlp_backward(ws, trace, g)
    new = [write_plain(ws[l], ss[l] if ss else None, deltas[l], trace.inputs[l], end)
           for l in range(len(ws))]
    read = mlp_forward(ws, q, residual)[0]
    return [w for w, _ in new], [s for _, s in new if s is not None], read


CASES = [(1, True, "l2"), (2, True, "l2"), (3, True, "l2"), (2, False, "l2"), (1, False, "l2"),
         (2, True, "dot"), (3, False, "dot")]


# -- all chunks of a call in one node (TitansChunks, what the level runs) --------------------

def chunks_inputs(depth, momentum, full=3, n=2, d=4, hidden=5, c=3, seed=0):
    """Memory before the first chunk, gates ``[n, full·c]``, keys/values/queries ``[n, full·c,
    d]``."""
    g = torch.Generator().manual_seed(seed)
    dims = [d] + [hidden] * (depth - 1) + [d]
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=F64)
    ws = [rnd(n, dims[l + 1], dims[l]) / dims[l] ** 0.5 for l in range(depth)]
    ss = [0.1 * rnd(n, dims[l + 1], dims[l]) for l in range(depth)] if momentum else []
    t = full * c
    log_a = torch.nn.functional.logsigmoid(rnd(n, t) + 2)
    theta = torch.sigmoid(rnd(n, t))
    log_mu = torch.nn.functional.logsigmoid(rnd(n, t) + 1) if momentum else None
    return ws, ss, log_a, theta, log_mu, rnd(n, t, d), rnd(n, t, d), rnd(n, t, d)


def chained_reference(ws, ss, log_a, theta, log_mu, k, v, q, l2, residual, c):
    """The reference math chunk after chunk: each chunk's gradients at the memory the previous
    chunk left, the reads of each chunk with its anchor."""
    reads, sq = [], []
    for j in range(k.shape[1] // c):
        sl = slice(j * c, (j + 1) * c)
        new_w, new_s, read = reference(ws, ss, log_a[:, sl], theta[:, sl],
                                       None if log_mu is None else log_mu[:, sl], k[:, sl],
                                       v[:, sl], q[:, sl], l2, residual)
        sq.append(sum((a - b).square().sum((-2, -1)) for a, b in zip(new_w, ws)))
        reads.append(read - q[:, sl] if residual else read)
        ws, ss = new_w, new_s
    return ws, ss, torch.cat(reads, dim=1), torch.stack(sq)


def all_chunks(ws, ss, log_a, theta, log_mu, k, v, q, l2, residual, c):
    n, t = log_a.shape
    fold = lambda z: None if z is None else z.view(n, t // c, c)
    end = collapse_end(fold(log_a), fold(theta), fold(log_mu))
    bias = (k - v if residual else -v) if l2 else -v
    outs = TitansChunks.apply(l2, end.keep, end.from_s0, end.s_keep, end.grad, end.s_grad,
                              k, bias, q, *ws, *ss)
    depth = len(ws)
    new_s = list(outs[depth:2 * depth]) if ss else []
    read, sq, last_write = outs[-3:]
    assert not sq.requires_grad and not last_write.requires_grad
    torch.testing.assert_close(last_write, outs[0][0] - (ws[0][0] if t == c else last_write_anchor(
        ws, ss, log_a, theta, log_mu, k, v, q, l2, residual, c)), rtol=1e-12, atol=1e-12)
    return list(outs[:depth]), new_s, read, sq


def last_write_anchor(ws, ss, log_a, theta, log_mu, k, v, q, l2, residual, c):
    """Layer 0 of memory 0 before the last chunk (the reference's)."""
    t = log_a.shape[1] - c
    cut = lambda z: None if z is None else z[:, :t]
    with torch.no_grad():
        w, *_ = chained_reference(ws, ss, cut(log_a), cut(theta), cut(log_mu), cut(k), cut(v),
                                  cut(q), l2, residual, c)
    return w[0][0]


@pytest.mark.parametrize("depth,momentum,objective", CASES)
def test_all_chunks_node_equals_the_chained_reference_with_its_gradients(depth, momentum,
                                                                          objective):
    """Outputs, write norms, the last write and every input's gradient of the one-node chunk
    loop equal the reference math applied chunk by chunk (float64)."""
    l2, residual = objective == "l2", depth > 1
    c = 3
    ws, ss, log_a, theta, log_mu, k, v, q = chunks_inputs(depth, momentum, c=c)
    flat = [*ws, *ss, log_a, theta, *([log_mu] if momentum else []), k, v, q]
    for t in flat:
        t.requires_grad_(True)
    results, grads = [], []
    g = torch.Generator()
    for fn in (chained_reference, all_chunks):
        new_w, new_s, read, sq = fn(ws, ss, log_a, theta, log_mu, k, v, q, l2, residual, c)
        outs = [*new_w, *new_s, read]
        results.append([*outs, sq.detach()])
        g.manual_seed(1)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=F64)).sum() for o in outs)
        grads.append(torch.autograd.grad(loss, flat, allow_unused=True))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("depth,momentum,objective", [(2, True, "l2"), (3, False, "dot")])
def test_gradcheck_of_the_all_chunks_node(depth, momentum, objective):
    l2, residual = objective == "l2", depth > 1
    c = 2
    ws, ss, log_a, theta, log_mu, k, v, q = chunks_inputs(depth, momentum, full=2, d=3,
                                                          hidden=4, c=c)
    flat = [t.requires_grad_(True)
            for t in (*ws, *ss, log_a, theta, *([log_mu] if momentum else []), k, v, q)]
    nw, ns = len(ws), len(ss)

    def f(*ts):
        ws_, ss_ = list(ts[:nw]), list(ts[nw:nw + ns])
        rest = list(ts[nw + ns:])
        la, th = rest.pop(0), rest.pop(0)
        lm = rest.pop(0) if momentum else None
        new_w, new_s, read, _ = all_chunks(ws_, ss_, la, th, lm, *rest, l2, residual, c)
        return (*new_w, *new_s, read)

    assert torch.autograd.gradcheck(f, tuple(flat))


def test_all_chunks_node_with_only_some_outputs_used():
    """Only the reads (the last chunk's write then gets no gradient: its keys' and values'
    gradients are zero), or only the final memory, or only the final momentum."""
    c = 3
    ws, ss, log_a, theta, log_mu, k, v, q = chunks_inputs(2, True, c=c)
    leaves = (*ws, *ss, log_a, theta, log_mu, k, v, q)
    for t in leaves:
        t.requires_grad_(True)
    for pick in (lambda w, s, r: r.sum(), lambda w, s, r: w[0].sum(), lambda w, s, r: s[1].sum()):
        args = (ws, ss, log_a, theta, log_mu, k, v, q, True, True, c)
        got = torch.autograd.grad(pick(*all_chunks(*args)[:3]), leaves, allow_unused=True)
        ref = torch.autograd.grad(pick(*chained_reference(*args)[:3]), leaves, allow_unused=True)
        for a, b in zip(ref, got):
            if a is None or b is None:
                assert (a is None or a.abs().max() == 0) and (b is None or b.abs().max() == 0)
            else:
                torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_a_second_derivative_raises_instead_of_being_wrong():
    c = 3
    ws, ss, log_a, theta, log_mu, k, v, q = chunks_inputs(2, True, c=c)
    k.requires_grad_(True)
    new_w, _, read, _ = all_chunks(ws, ss, log_a, theta, log_mu, k, v, q, True, True, c)
    (gk,) = torch.autograd.grad(read.sum() + new_w[0].sum(), k, create_graph=True)
    with pytest.raises(RuntimeError):
        gk.sum().backward()
