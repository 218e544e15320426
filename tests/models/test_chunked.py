"""The shared anchor machinery (models/chunked.py) against explicit sequential scans."""
import pytest
import torch

from nlstudio.models.chunked import (chunk_write, collapse, collapse_end, mlp_backward,
                                     mlp_forward, segsum, write_plain)

F64 = torch.float64


def _gates(shape, momentum: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    log_a = torch.nn.functional.logsigmoid(torch.randn(shape, generator=g, dtype=F64) + 2.0)
    theta = 0.3 * torch.rand(shape, generator=g, dtype=F64)
    log_mu = (torch.nn.functional.logsigmoid(torch.randn(shape, generator=g, dtype=F64) + 1.0)
              if momentum else None)
    return log_a, theta, log_mu


def test_segsum_is_the_sum_over_the_segment():
    x = torch.randn(3, 6, dtype=F64)
    out = segsum(x)
    for t in range(6):
        for s in range(6):
            if s <= t:
                torch.testing.assert_close(out[:, t, s], x[:, s + 1:t + 1].sum(-1))
            else:
                assert torch.isneginf(out[:, t, s]).all()


@pytest.mark.parametrize("momentum", [False, True])
def test_collapsed_coefficients_equal_the_sequential_scan(momentum):
    c = 7
    log_a, theta, log_mu = _gates((2, c), momentum)
    co = collapse(log_a, theta, log_mu)
    a, mu = log_a.exp(), (log_mu.exp() if momentum else torch.zeros_like(theta))
    # Track M and S as coefficient vectors over the basis (M_0, S_0, U_0 .. U_{C-1}).
    m = torch.zeros(2, 2 + c, dtype=F64)
    s = torch.zeros(2, 2 + c, dtype=F64)
    m[:, 0] = 1.0
    if momentum:
        s[:, 1] = 1.0
    for t in range(c):
        u = torch.zeros(2, 2 + c, dtype=F64)
        u[:, 2 + t] = 1.0
        s = mu[:, t:t + 1] * s - theta[:, t:t + 1] * u  # S_t = μ_t S_{t−1} − θ_t U_t
        m = a[:, t:t + 1] * m + s  # M_t = a_t M_{t−1} + S_t
        torch.testing.assert_close(co.keep[:, t], m[:, 0])
        torch.testing.assert_close(co.grad[:, t, :t + 1], -m[:, 2:3 + t])
        torch.testing.assert_close(co.grad[:, t, t + 1:], torch.zeros_like(co.grad[:, t, t + 1:]))
        if momentum:
            torch.testing.assert_close(co.from_s0[:, t], m[:, 1])
    for t in range(c):
        torch.testing.assert_close(co.decay[:, c - 1, t], a[:, t + 1:].prod(-1))
    if momentum:
        torch.testing.assert_close(co.s_keep, s[:, 1])
        torch.testing.assert_close(co.s_grad, -s[:, 2:])


@pytest.mark.parametrize("momentum", [False, True])
def test_end_only_coefficients_equal_the_last_row(momentum):
    log_a, theta, log_mu = _gates((3, 2, 9), momentum, seed=5)
    full, end = collapse(log_a, theta, log_mu).end(), collapse_end(log_a, theta, log_mu)
    for name in ("keep", "grad", "from_s0", "s_keep", "s_grad"):
        a, b = getattr(full, name), getattr(end, name)
        assert (a is None) == (b is None) == (name in ("from_s0", "s_keep", "s_grad")
                                               and not momentum)
        if a is not None:
            torch.testing.assert_close(a, b)
    per_chunk = end.unbind(1)
    assert len(per_chunk) == 2
    torch.testing.assert_close(per_chunk[1].grad, end.grad[:, 1])


def _sequential(m0, s0, delta, x, log_a, theta, log_mu, erase, x_hat):
    """The chunk recurrence token by token (arXiv Eq. 88 / Titans §3 with anchor gradients)."""
    m, s = m0.clone(), (s0.clone() if s0 is not None else None)
    xh = x if x_hat is None else x_hat
    eye = torch.eye(m0.shape[-1], dtype=F64)
    for t in range(x.shape[-2]):
        u = delta[..., t, :, None] * x[..., t, None, :]  # U_t = δ_t x_tᵀ
        th = theta[..., t, None, None]
        if s is not None:
            s = log_mu[..., t, None, None].exp() * s - th * u
            step = s
        else:
            step = -th * u
        a = log_a[..., t, None, None].exp()
        if erase is not None:
            k = xh[..., t, :]
            p = a * eye - erase[..., t, None, None] * k[..., :, None] * k[..., None, :]
            m = m @ p + step
        else:
            m = a * m + step
    return m, s


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("erase", ["none", "same_keys", "own_keys"])
def test_chunk_write_equals_the_token_recurrence(momentum, erase):
    torch.manual_seed(1)
    n, mems, c, o, i = 3, 2, 6, 4, 5
    m0 = torch.randn(n, mems, o, i, dtype=F64)
    s0 = torch.randn(n, mems, o, i, dtype=F64) if momentum else None
    delta = torch.randn(n, mems, c, o, dtype=F64)
    x = torch.nn.functional.normalize(torch.randn(n, 1, c, i, dtype=F64), dim=-1)  # shared keys
    log_a, theta, log_mu = _gates((n, 1, c), momentum, seed=2)  # gates shared by the memories
    b, x_hat = None, None
    if erase != "none":
        b = 0.5 * torch.rand(n, 1, c, dtype=F64)
    if erase == "own_keys":
        x = torch.randn(n, mems, c, i, dtype=F64)
        x_hat = torch.nn.functional.normalize(x, dim=-1)
    co = collapse(log_a, theta, log_mu)
    m, s = chunk_write(m0, s0, delta, x, co, erase=b, x_hat=x_hat)
    m_ref, s_ref = _sequential(m0, s0, delta, x, log_a, theta, log_mu, b, x_hat)
    if b is None:  # the 3-D fast path (baddbmm) of the plain write agrees too
        flat = lambda t: None if t is None else t.expand(n, mems, *t.shape[2:]).reshape(
            n * mems, *t.shape[2:])
        end = collapse_end(log_a.expand(n, mems, c).reshape(n * mems, c),
                           theta.expand(n, mems, c).reshape(n * mems, c),
                           None if log_mu is None else log_mu.expand(n, mems, c).reshape(-1, c))
        m3, s3 = write_plain(flat(m0), flat(s0), flat(delta), flat(x), end)
        torch.testing.assert_close(m3.view_as(m_ref), m_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m, m_ref, rtol=1e-10, atol=1e-10)
    if momentum:
        torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)
    else:
        assert s is None


@pytest.mark.parametrize("depth,residual", [(1, False), (2, True), (3, False)])
def test_manual_backward_gives_the_weighted_gradient_sum(depth, residual):
    torch.manual_seed(3)
    d, h, c = 4, 6, 5
    dims = [d] + [h] * (depth - 1) + [d]
    ws = [torch.randn(2, dims[l + 1], dims[l], dtype=F64, requires_grad=True) for l in range(depth)]
    k, v = torch.randn(2, c, d, dtype=F64), torch.randn(2, c, d, dtype=F64)
    weights = torch.rand(2, c, dtype=F64)
    out, trace = mlp_forward(ws, k, residual)
    deltas = mlp_backward(ws, trace, 2 * (out - v))  # ℓ_t = ‖M(k_t) − v_t‖²
    sums = [torch.matmul((dl * weights[..., None]).transpose(-1, -2), hl)
            for dl, hl in zip(deltas, trace.inputs)]
    loss = (((out - v) ** 2).sum(-1) * weights).sum()
    ref = torch.autograd.grad(loss, ws)
    for got, want in zip(sums, ref):
        torch.testing.assert_close(got, want)


def test_chunk_write_is_differentiable_through_gates_keys_and_weights():
    torch.manual_seed(4)
    n, c, o, i = 2, 4, 3, 3
    m0 = torch.randn(n, o, i, dtype=F64, requires_grad=True)
    s0 = torch.randn(n, o, i, dtype=F64, requires_grad=True)
    delta = torch.randn(n, c, o, dtype=F64, requires_grad=True)
    x = torch.randn(n, c, i, dtype=F64, requires_grad=True)
    za = torch.randn(n, c, dtype=F64, requires_grad=True)
    zm = torch.randn(n, c, dtype=F64, requires_grad=True)
    theta = torch.rand(n, c, dtype=F64, requires_grad=True)

    def f(m0, s0, delta, x, za, zm, theta):
        xh = torch.nn.functional.normalize(x, dim=-1)
        co = collapse(torch.nn.functional.logsigmoid(za), theta,
                      torch.nn.functional.logsigmoid(zm))
        return chunk_write(m0, s0, delta, xh, co, erase=0.5 * theta)

    assert torch.autograd.gradcheck(f, (m0, s0, delta, x, za, zm, theta))


def test_fast_writes_and_manual_backward_are_twice_differentiable():
    """The 3-D fast path (hand-written backward) and the silu' kernel support gradgrad too."""
    torch.manual_seed(6)
    n, c, d, hid = 2, 3, 2, 3
    w1 = torch.randn(n, hid, d, dtype=F64, requires_grad=True)
    w2 = torch.randn(n, d, hid, dtype=F64, requires_grad=True)
    s1 = torch.randn(n, hid, d, dtype=F64, requires_grad=True)
    k = torch.randn(n, c, d, dtype=F64, requires_grad=True)
    za = torch.randn(n, c, dtype=F64, requires_grad=True)

    def f(w1, w2, s1, k, za):
        out, trace = mlp_forward((w1, w2), k, residual=True)
        deltas = mlp_backward((w1, w2), trace, out - 1.0)
        end = collapse_end(torch.nn.functional.logsigmoid(za), torch.sigmoid(za),
                           torch.nn.functional.logsigmoid(-za))
        return write_plain(w1, s1, deltas[0], k, end)

    assert torch.autograd.gradcheck(f, (w1, w2, s1, k, za))
    assert torch.autograd.gradgradcheck(f, (w1, w2, s1, k, za))
