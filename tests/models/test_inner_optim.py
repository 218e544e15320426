"""Inner optimizers: pure, differentiable, batched steps, each checked against the memory it is
in the paper (explicit nested forms, closed-form optima, proximal solutions)."""
from __future__ import annotations

import pytest
import torch

from nlstudio.models.inner_optim import (OPTIMIZERS, get_optimizer, make_optimizer, memory_of,
                                         newton_schulz)

F64 = torch.float64
ALL = tuple(OPTIMIZERS)
# Learning rates at which each rule is in its stable regime on the test quadratic.
QUAD_ETA = {"sgd": 0.3, "momentum": 0.1, "adam": 0.1, "dgd": 0.3, "delta_momentum": 0.3,
            "dmgd": 0.1, "m3": 0.1}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _regression(seed: int = 0, d_out: int = 4, d_in: int = 6, n: int = 10):
    g = _gen(seed)
    x = torch.randn(n, d_in, generator=g, dtype=F64)
    w_star = torch.randn(d_out, d_in, generator=g, dtype=F64)
    return x, w_star, x @ w_star.T


def _loss(w, x, y):
    return 0.5 * ((x @ w.mT - y) ** 2).sum((-2, -1)) / x.shape[0]


def _grad(w, x, y):
    return (x @ w.mT - y).mT @ x / x.shape[0]


def test_registry_entries_are_complete():
    assert set(ALL) >= {"sgd", "momentum", "adam", "dgd", "delta_momentum", "dmgd", "m3"}
    for opt in OPTIMIZERS.values():
        assert opt.summary.endswith(".") and opt.equation
        for h in opt.hyper:
            assert h.symbol and h.doc and h.low <= h.default <= h.high
        assert make_optimizer({"name": opt.name}).hp == opt.defaults()
    with pytest.raises(ValueError):
        make_optimizer({"name": "adam", "lr": 0.1})
    with pytest.raises(KeyError):
        get_optimizer("lion")


@pytest.mark.parametrize("name", ALL)
def test_decreases_random_quadratic(name):
    x, w_star, y = _regression()
    opt = make_optimizer({"name": name, "eta": QUAD_ETA[name]})
    w = torch.zeros(4, 6, dtype=F64)
    state = opt.init(w)
    start = _loss(w, x, y).item()
    losses = []
    for _ in range(150):
        w, state = opt.step(w, _grad(w, x, y), state, key=x / x.shape[0] ** 0.5)
        losses.append(_loss(w, x, y).item())
    assert all(torch.isfinite(torch.tensor(losses)))
    # DGD adds ½‖Wx‖² to the proximal step, so with an ℓ2 surprise its fixed point is W*/2
    # (a quarter of the starting loss; see test_dgd_fixed_points). M3's undecayed sums
    # (Algorithm 1) make it a slow, AdaGrad-like descent.
    bound = {"dgd": 0.3, "m3": 0.3}.get(name, 0.01)
    assert losses[-1] < bound * start, (name, start, losses[-1])
    assert sum(losses[-10:]) < sum(losses[:10])


@pytest.mark.parametrize("name", ALL)
def test_step_is_pure(name):
    g = _gen(1)
    opt = make_optimizer({"name": name})
    w = torch.randn(3, 5, generator=g)
    state = opt.init(w)
    key = torch.randn(2, 5, generator=g)
    w, state = opt.step(w, torch.randn(3, 5, generator=g), state, key=key)  # non-trivial state
    grad = torch.randn(3, 5, generator=g)
    before = (w.clone(), grad.clone(), key.clone(), {k: v.clone() for k, v in state.items()})
    new_w, new_state = opt.step(w, grad, state, key=key)
    assert torch.equal(w, before[0]) and torch.equal(grad, before[1])
    assert torch.equal(key, before[2])
    assert state.keys() == before[3].keys()
    for k, v in state.items():
        assert torch.equal(v, before[3][k]), k
    assert not torch.equal(new_w, w)


@pytest.mark.parametrize("name", ALL)
def test_step_is_differentiable(name):
    g = _gen(2)
    opt = make_optimizer({"name": name, "eta": 0.05})
    w0 = torch.randn(3, 4, generator=g, dtype=F64)
    key = torch.randn(2, 4, generator=g, dtype=F64)
    state = opt.init(w0)
    for _ in range(2):
        w0, state = opt.step(w0, torch.randn(3, 4, generator=g, dtype=F64), state, key=key)
    w = w0.clone().requires_grad_()
    grad = torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True)
    key = key.clone().requires_grad_()
    new_w, _ = opt.step(w, grad, state, key=key)
    dw, dg = torch.autograd.grad(new_w.square().sum(), (w, grad))
    assert torch.isfinite(dw).all() and dg.abs().sum() > 0

    def fn(w_, g_, k_):
        return opt.step(w_, g_, state, key=k_)[0]

    assert torch.autograd.gradcheck(fn, (w, grad, key), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_leading_dims_are_batch_dims(name):
    g = _gen(3)
    opt = make_optimizer({"name": name, "chunk": 2} if name == "m3" else {"name": name})
    b, d_out, d_in, n = 3, 4, 5, 2
    w0 = torch.randn(b, d_out, d_in, generator=g, dtype=F64)
    grads = torch.randn(3, b, d_out, d_in, generator=g, dtype=F64)
    keys = torch.randn(3, b, n, d_in, generator=g, dtype=F64)
    w, state = w0, opt.init(w0)
    for s in range(3):
        w, state = opt.step(w, grads[s], state, key=keys[s])
    for i in range(b):
        wi, si = w0[i], opt.init(w0[i])
        for s in range(3):
            wi, si = opt.step(wi, grads[s, i], si, key=keys[s, i])
        torch.testing.assert_close(w[i], wi, rtol=1e-10, atol=1e-12)


def test_memory_of_lists_the_state_that_is_memory():
    w = torch.zeros(2, 3)
    assert memory_of("sgd", make_optimizer({"name": "sgd"}).init(w)) == {}
    assert set(memory_of("momentum", make_optimizer({"name": "momentum"}).init(w))) == {"m"}
    assert set(memory_of("adam", make_optimizer({"name": "adam"}).init(w))) == {"m", "v"}
    assert set(memory_of("m3", make_optimizer({"name": "m3"}).init(w))) == {"M1", "M2", "V"}
    assert set(memory_of("dmgd", make_optimizer({"name": "dmgd"}).init(w))) == {
        "b", "w1", "c1", "w2"}
    assert memory_of("dgd", {}) == {}
    adam = make_optimizer({"name": "adam"})
    state = adam.init(w)
    _, state = adam.step(w, torch.ones(2, 3), state)
    assert memory_of("adam", state)["m"] is state["m"]


# ------------------------------------------------------------------------- nested forms
def test_momentum_equals_explicit_two_level_memory():
    """m is a memory written by GD (step η, decay α) on ⟨m, ∇L⟩; W reads it (W ← W + m)."""
    g = _gen(4)
    eta, alpha = 0.07, 0.8
    opt = make_optimizer({"name": "momentum", "eta": eta, "alpha": alpha})
    stream = torch.randn(12, 3, 4, generator=g, dtype=F64)
    w = w_ref = torch.randn(3, 4, generator=g, dtype=F64)
    state = opt.init(w)
    m = torch.zeros(3, 4, dtype=F64)
    for grad in stream:
        w, state = opt.step(w, grad, state)
        m_leaf = m.clone().requires_grad_()
        (d_m,) = torch.autograd.grad((m_leaf * grad).sum(), m_leaf)  # inner level's gradient
        m = alpha * m - eta * d_m
        w_ref = w_ref + m  # outer level reads the inner memory
    torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(state["m"], m, rtol=0, atol=1e-12)


def test_adam_equals_closed_form_optimal_memory():
    """App. B: m* = argmin Σ‖m ⊙ g_i − P‖² + λ‖m‖² = M̃ ⊙ P / (H + λ); P = √H, λ = ε√H is Adam."""
    g = _gen(5)
    eta, b1, b2, eps = 0.01, 0.85, 0.97, 1e-3
    opt = make_optimizer({"name": "adam", "eta": eta, "beta1": b1, "beta2": b2, "eps": eps})
    stream = torch.randn(15, 4, 3, generator=g, dtype=F64) * torch.logspace(-2, 1, 3,
                                                                           dtype=F64)
    w = w0 = torch.randn(4, 3, generator=g, dtype=F64)
    state = opt.init(w)
    total = torch.zeros_like(w)
    for t in range(1, len(stream) + 1):
        w, state = opt.step(w, stream[t - 1], state)
        past = stream[:t]
        wm = torch.tensor([(1 - b1) * b1 ** (t - i) for i in range(1, t + 1)], dtype=F64)
        wv = torch.tensor([(1 - b2) * b2 ** (t - i) for i in range(1, t + 1)], dtype=F64)
        m_tilde = (wm[:, None, None] * past).sum(0) / (1 - b1 ** t)
        h = (wv[:, None, None] * past ** 2).sum(0) / (1 - b2 ** t)
        p = h.sqrt()
        lam = eps * h.sqrt()
        m_star = m_tilde * p / (h + lam)
        total = total + m_star
        torch.testing.assert_close(w, w0 - eta * total, rtol=0, atol=1e-6)
    assert state["step"].item() == len(stream)


def test_dgd_unit_key_is_the_proximal_solution():
    g = _gen(6)
    eta = 0.7
    opt = make_optimizer({"name": "dgd", "eta": eta})
    w = torch.randn(3, 5, generator=g, dtype=F64)
    x = torch.randn(5, generator=g, dtype=F64)
    x = x / x.norm()
    surprise = torch.randn(3, generator=g, dtype=F64)  # ∇_y L
    grad = torch.outer(surprise, x)
    new_w, _ = opt.step(w, grad, {}, key=x)
    # argmin_W ⟨W, G⟩ + ½‖Wx‖² + ‖W − W_t‖²/(2η): normal equations W (x xᵀ + I/η) = W_t/η − G
    a = torch.outer(x, x) + torch.eye(5, dtype=F64) / eta
    ref = torch.linalg.solve(a, (w / eta - grad).T).T
    torch.testing.assert_close(new_w, ref, rtol=0, atol=1e-12)
    eta_p = eta / (1 + eta)  # Eq. 57 with ‖x‖ = 1
    eq57 = w @ (torch.eye(5, dtype=F64) - eta_p * torch.outer(x, x)) - eta_p * grad
    torch.testing.assert_close(new_w, eq57, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [3, 8])  # Woodbury (n < d_in) and direct (n > d_in) paths
def test_dgd_key_chunk_is_the_proximal_solution(n):
    g = _gen(7)
    eta = 0.3
    opt = make_optimizer({"name": "dgd", "eta": eta})
    w = torch.randn(2, 4, 5, generator=g, dtype=F64)
    x = torch.randn(2, n, 5, generator=g, dtype=F64)
    grad = torch.randn(2, 4, 5, generator=g, dtype=F64)
    new_w, _ = opt.step(w, grad, {}, key=x)
    a = x.mT @ x + torch.eye(5, dtype=F64) / eta  # Σ x xᵀ over the rows
    ref = torch.linalg.solve(a, (w / eta - grad).mT).mT
    torch.testing.assert_close(new_w, ref, rtol=0, atol=1e-10)
    # Contraction: a zero surprise only shrinks W, never grows it.
    shrunk, _ = opt.step(w, torch.zeros_like(w), {}, key=x * 100)
    assert (shrunk.norm(dim=(-2, -1)) <= w.norm(dim=(-2, -1)) + 1e-12).all()


def test_dgd_fixed_points():
    """With the ℓ2 surprise (Wx − y) DGD settles at W*/2; with the dot-product surprise −y it is
    the delta rule and recovers W*."""
    x, w_star, y = _regression(seed=8)
    opt = make_optimizer({"name": "dgd", "eta": 1.0})
    key = x / x.shape[0] ** 0.5
    w_l2 = w_dot = torch.zeros_like(w_star)
    for _ in range(300):
        w_l2, _ = opt.step(w_l2, _grad(w_l2, x, y), {}, key=key)
        w_dot, _ = opt.step(w_dot, -(y.T @ x) / x.shape[0], {}, key=key)
    torch.testing.assert_close(w_l2, w_star / 2, rtol=0, atol=1e-8)
    torch.testing.assert_close(w_dot, w_star, rtol=0, atol=1e-8)


def test_dgd_needs_a_key_and_matching_width():
    opt = make_optimizer({"name": "dgd"})
    with pytest.raises(ValueError, match="key"):
        opt.step(torch.zeros(2, 3), torch.ones(2, 3), {})
    with pytest.raises(ValueError, match="width"):
        opt.step(torch.zeros(2, 3), torch.ones(2, 3), {}, key=torch.ones(4))
    assert OPTIMIZERS["dgd"].uses_key and not OPTIMIZERS["m3"].uses_key
    # An empty chunk of keys erases nothing: a plain gradient step.
    w, _ = opt.step(torch.ones(2, 3), torch.ones(2, 3), {}, key=torch.ones(0, 3))
    torch.testing.assert_close(w, torch.full((2, 3), 1 - opt.hp["eta"]))
    # A bias is a 1-column matrix whose key is the constant 1.
    b, _ = opt.step(torch.ones(3), torch.ones(3), {}, key=torch.ones(1))
    eta = opt.hp["eta"]
    torch.testing.assert_close(b, torch.full((3,), (1 - eta) / (1 + eta)))


def test_delta_momentum_is_gd_on_its_l2_objective():
    """m ← α m − ∇_m[½‖m ĝᵀ‖² + η⟨m, g⟩]: the Gram term of Eq. 22 with ĝ = g/‖g‖."""
    g = _gen(9)
    eta, alpha = 0.2, 0.9
    opt = make_optimizer({"name": "delta_momentum", "eta": eta, "alpha": alpha})
    w = torch.randn(3, 4, generator=g, dtype=F64)
    state = opt.init(w)
    m = state["m"]
    for scale in (1.0, 1e3, 1e-3, 1.0):
        grad = scale * torch.randn(3, 4, generator=g, dtype=F64)
        w_prev = w
        w, state = opt.step(w, grad, state)
        leaf = m.clone().requires_grad_()
        g_hat = grad / grad.norm()
        obj = 0.5 * (leaf @ g_hat.T).square().sum() + eta * (leaf * grad).sum()
        (d_m,) = torch.autograd.grad(obj, leaf)
        m = alpha * m - d_m
        torch.testing.assert_close(state["m"], m, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(w, w_prev + m, rtol=1e-8, atol=1e-12)
    # Stable whatever the gradient scale: the transition m ↦ m(αI − ĝᵀĝ) has spectral norm
    # ≤ max(α, 1 − α), so the memory part never grows.
    big = 1e6 * torch.randn(3, 4, generator=g, dtype=F64)
    m0 = torch.randn(3, 4, generator=g, dtype=F64)
    _, out = opt.step(w, big, {"m": m0})
    transported = out["m"] + eta * big
    assert transported.norm() <= max(alpha, 1 - alpha) * m0.norm() + 1e-9


def test_delta_momentum_vector_erases_along_the_gradient():
    opt = make_optimizer({"name": "delta_momentum", "eta": 0.1, "alpha": 1.0})
    m = torch.tensor([1.0, 2.0, 0.0], dtype=F64)
    grad = torch.tensor([0.0, 3.0, 0.0], dtype=F64)
    _, st = opt.step(torch.zeros(3, dtype=F64), grad, {"m": m})
    torch.testing.assert_close(st["m"], torch.tensor([1.0, -0.3, 0.0], dtype=F64))


def test_delta_momentum_printed_form_is_eq_22_with_p_the_identity():
    """normalize = 0: m_{i+1} = m_i (α I − ∇Lᵀ∇L) − η P ∇L with P = I, a hand-written float64
    loop of the printed equation (batched matrices and a vector), and W ← W + m."""
    g = _gen(11)
    eta, alpha = 0.3, 0.9
    printed = make_optimizer({"name": "delta_momentum", "eta": eta, "alpha": alpha,
                              "normalize": 0})
    default = make_optimizer({"name": "delta_momentum", "eta": eta, "alpha": alpha})
    assert default.hp["normalize"] == 1
    for shape in ((2, 3, 4), (5,)):
        w = torch.randn(*shape, generator=g, dtype=F64)
        state, m = printed.init(w), torch.zeros(shape, dtype=F64)
        for _ in range(4):
            grad = 0.4 * torch.randn(*shape, generator=g, dtype=F64)
            w_prev = w
            w, state = printed.step(w, grad, state)
            rows = grad.reshape(-1, 1, shape[-1]) if len(shape) == 1 else grad
            mm = m.reshape(rows.shape)
            eye = torch.eye(shape[-1], dtype=F64)
            m = (mm @ (alpha * eye - rows.mT @ rows) - eta * eye[:rows.shape[-2], :rows.shape[-2]]
                 @ rows).reshape(shape)
            torch.testing.assert_close(state["m"], m, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(w, w_prev + m, rtol=1e-12, atol=1e-14)
        # the two forms differ (the deviation is real) wherever ‖∇L‖ ≠ 1
        _, a = printed.step(w, 3 * grad, {"m": m})
        _, b = default.step(w, 3 * grad, {"m": m})
        assert (a["m"] - b["m"]).abs().max() > 1e-3


def test_delta_momentum_normalised_default_stays_bounded_where_the_printed_form_grows():
    """The reason for the default: the printed erase has no step size, so a gradient with
    ‖∇L‖² > 1 + α makes m(α I − ∇Lᵀ∇L) grow; the unit key keeps the transition a contraction."""
    g = _gen(12)
    grad = torch.randn(3, 4, generator=g, dtype=F64)
    grad = 2.0 * grad / grad.norm()  # ‖∇L‖² = 4 > 1 + α
    norms = {}
    for normalize in (0, 1):
        opt = make_optimizer({"name": "delta_momentum", "eta": 0.1, "alpha": 0.5,
                              "normalize": normalize})
        w, state = torch.zeros(3, 4, dtype=F64), None
        state = opt.init(w)
        for _ in range(30):
            w, state = opt.step(w, grad, state)
        norms[normalize] = state["m"].norm().item()
    assert norms[0] > 1e6 and norms[1] < 1.0


def test_dmgd_memory_is_gd_on_its_own_objective():
    g = _gen(10)
    eta, alpha = 0.05, 0.9
    opt = make_optimizer({"name": "dmgd", "eta": eta, "alpha": alpha, "hidden": 3})
    w = torch.randn(3, 4, generator=g, dtype=F64)
    state = opt.init(w)
    assert state["w1"].shape == (3,) and (state["w2"] == 0).all()
    for _ in range(3):
        u = torch.randn(3, 4, generator=g, dtype=F64)
        new_w, new_state = opt.step(w, u, state)
        s = u.square().mean().sqrt()
        z = u / s
        leaves = {k: v.clone().requires_grad_() for k, v in state.items()}

        def m_of(p):
            hidden = torch.tanh(z[..., None] * p["w1"] + p["c1"])
            return p["b"] + s * (hidden * p["w2"]).sum(-1)

        obj = (m_of(leaves) * u).sum()  # L⁽²⁾(m; u) = ⟨m(u), u⟩
        grads = dict(zip(leaves, torch.autograd.grad(obj, list(leaves.values()))))
        for k in state:
            scale = 1.0 if k == "b" else 1.0 / (u.numel() * s ** 2)  # shared weights: mean
            expected = alpha * state[k] - eta * scale * grads[k]
            torch.testing.assert_close(new_state[k], expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(new_w, w + m_of(new_state), rtol=1e-12, atol=1e-12)
        w, state = new_w, new_state
    # Batched parameters carry one set of shared weights per batch element.
    assert opt.init(torch.zeros(5, 3, 4))["w2"].shape == (5, 3)


# ------------------------------------------------------------------------- M3 and NS
def test_newton_schulz_is_near_orthogonal():
    g = _gen(11)
    for shape in [(8, 8), (6, 10), (10, 6), (3, 5, 7)]:
        x = torch.randn(*shape, generator=g, dtype=F64)
        o = newton_schulz(x)
        assert o.shape == x.shape
        sv = torch.linalg.svdvals(o)
        assert sv.min() > 0.6 and sv.max() < 1.25, (shape, sv)
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        polar = u @ vh
        cos = (o * polar).sum((-2, -1)) / (o.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
        assert (cos > 0.95).all()
        # Same singular vectors: Uᵀ O V is diagonal.
        core = u.mT @ o @ vh.mT
        off = core - torch.diag_embed(torch.diagonal(core, dim1=-2, dim2=-1))
        assert off.abs().max() < 1e-8
    assert torch.equal(newton_schulz(torch.zeros(3, 4)), torch.zeros(3, 4))
    v = torch.tensor([3.0, 4.0], dtype=F64)
    assert 0.6 < newton_schulz(v).norm() < 1.25
    torch.testing.assert_close(newton_schulz(v) / newton_schulz(v).norm(), v / 5)


def _m3_reference(stream, w, eta, beta1, beta2, beta3, alpha, eps, chunk):
    """Algorithm 1 written out with explicit sums over the stream."""
    out = []
    for t in range(1, len(stream) + 1):
        past = stream[:t]
        m1 = beta1 * past.sum(0)
        v = beta2 * (past ** 2).sum(0)
        done = (t // chunk) * chunk  # gradients of completed chunks
        m2 = beta3 * stream[:done].sum(0)
        w = w - eta * (newton_schulz(m1) + alpha * newton_schulz(m2)) / (v.sqrt() + eps)
        out.append(w)
    return out


@pytest.mark.parametrize("chunk", [3, 100])
def test_m3_matches_algorithm_1(chunk):
    g = _gen(12)
    hp = dict(eta=0.02, beta1=0.9, beta2=0.99, beta3=0.5, alpha=0.7, eps=1e-8, chunk=chunk)
    opt = make_optimizer({"name": "m3", **hp})
    stream = torch.randn(7, 4, 5, generator=g, dtype=F64)
    w0 = torch.randn(4, 5, generator=g, dtype=F64)
    ref = _m3_reference(stream, w0, **hp)
    w, state = w0, opt.init(w0)
    for t, grad in enumerate(stream):
        w, state = opt.step(w, grad, state)
        torch.testing.assert_close(w, ref[t], rtol=1e-10, atol=1e-12)
    if chunk > len(stream):
        # Ĉ longer than the stream: the slow memory is never written, M3 is Muon / √V.
        assert (state["M2"] == 0).all()
        torch.testing.assert_close(state["S"], stream.sum(0))
    else:
        torch.testing.assert_close(state["M2"], 0.5 * stream[:6].sum(0))
        torch.testing.assert_close(state["S"], stream[6])
    assert state["step"].item() == 7
