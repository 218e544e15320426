"""Inner optimizers as associative memories (Nested Learning §3 / arXiv §4).

Every optimizer is a pair of pure functions::

    state = opt.init(param)
    param, state = opt.step(param, grad, state, key=None)

usable on any tensor. Nothing is modified in place, so a write can be differentiated through.
Leading dimensions are batch dimensions (one fast weight per sequence); matrix operations
(Newton–Schulz, ∇Lᵀ∇L, DGD's x xᵀ) act on the last two dimensions. ``key`` is the input that
produced ``grad`` (rows ``[..., n, d_in]`` for a ``[..., d_out, d_in]`` weight); only rules that
need it (DGD) read it.

Hyper-parameters are named as in the paper: ``eta`` (η, learning rate), ``alpha`` (α, momentum
decay), ``beta1..3`` (β), ``eps`` (ε), ``chunk`` (Ĉ).

``memory_of(name, state)`` returns the state tensors that are the optimizer's memory (for the
optimizer lesson); ``newton_schulz`` is M3's orthogonalisation, usable on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import Tensor

State = dict[str, Tensor]


@dataclass(frozen=True)
class HyperParam:
    name: str
    symbol: str
    default: float
    low: float
    high: float
    doc: str
    integer: bool = False
    log: bool = False


@dataclass(frozen=True)
class InnerOptimizer:
    name: str
    title: str
    summary: str  # one sentence: what memory this optimizer is
    equation: str  # the update as in the paper, plain text
    hyper: tuple[HyperParam, ...]
    init_fn: Callable[[Tensor, Mapping[str, float]], State]
    step_fn: Callable[[Tensor, Tensor, State, Mapping[str, float], Tensor | None],
                      tuple[Tensor, State]]
    memory: tuple[str, ...] = ()  # the state entries that ARE the optimizer's memory
    uses_key: bool = False  # step() needs the key that produced the gradient (DGD)

    def defaults(self) -> dict[str, float]:
        return {h.name: h.default for h in self.hyper}

    def bind(self, **hp: float) -> "BoundOptimizer":
        unknown = set(hp) - {h.name for h in self.hyper}
        if unknown:
            raise ValueError(f"{self.name}: unknown hyper-parameter(s) {sorted(unknown)}; "
                             f"expected {[h.name for h in self.hyper]}")
        values = self.defaults()
        values.update(hp)
        for h in self.hyper:
            if h.integer:
                values[h.name] = int(values[h.name])
        return BoundOptimizer(self, values)


@dataclass(frozen=True)
class BoundOptimizer:
    spec: InnerOptimizer
    hp: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def init(self, param: Tensor) -> State:
        return self.spec.init_fn(param, self.hp)

    def step(self, param: Tensor, grad: Tensor, state: State,
             key: Tensor | None = None) -> tuple[Tensor, State]:
        return self.spec.step_fn(param, grad, state, self.hp, key)


# --------------------------------------------------------------------------------------------
# Shape conventions shared by the rules below.
_TINY = 1e-12


def _as_matrix(x: Tensor) -> tuple[Tensor, bool]:
    """A vector (or scalar) parameter as a 1-row matrix ``[1, d]``; matrices unchanged."""
    if x.ndim >= 2:
        return x, False
    return x.reshape(1, -1), True


def _counter(param: Tensor) -> Tensor:
    """A step counter as a 0-d tensor (at least float32, exact up to 2**24 steps)."""
    return torch.zeros((), device=param.device,
                       dtype=torch.promote_types(param.dtype, torch.float32))


def newton_schulz(x: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Orthogonalise the last two dims of ``x`` (Muon's quintic Newton–Schulz iteration).

    Approximates the polar factor ``U Vᵀ`` of ``x = U S Vᵀ``: after 5 steps with the standard
    coefficients (3.4445, −4.7750, 2.0315) the singular values lie roughly in [0.7, 1.2]
    (the iteration trades exactness for speed). Zero in, zero out. Vectors are read as one
    row, which orthogonalises to ``x / ‖x‖``.
    """
    mat, was_vector = _as_matrix(x)
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = mat.shape[-2] > mat.shape[-1]
    y = mat.mT if tall else mat
    y = y / (y.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = y @ y.mT
        y = a * y + (b * gram + c * gram @ gram) @ y
    y = y.mT if tall else y
    return y.reshape(x.shape) if was_vector else y


# --------------------------------------------------------------------------------------------
# SGD: a 1-level memory. W_{t+1} = W_t − η ∇L
def _sgd_init(param: Tensor, hp) -> State:
    return {}


def _sgd_step(param, grad, state, hp, key):
    return param - hp["eta"] * grad, state


# Momentum: a 2-level memory. m_{i+1} = α m_i − η ∇L ;  W_{i+1} = W_i + m_{i+1}
def _momentum_init(param: Tensor, hp) -> State:
    return {"m": torch.zeros_like(param)}


def _momentum_step(param, grad, state, hp, key):
    m = hp["alpha"] * state["m"] - hp["eta"] * grad
    return param + m, {"m": m}


# Adam (App. B): the optimal element-wise memory m* = M̃ ⊙ P / (H + λ) with P = √H, where
# M̃ and H are the (bias-corrected) β-weighted sums of g and g². ε plays λ = ε√H.
def _adam_init(param: Tensor, hp) -> State:
    return {"m": torch.zeros_like(param), "v": torch.zeros_like(param),
            "step": _counter(param)}


def _adam_step(param, grad, state, hp, key):
    b1, b2 = hp["beta1"], hp["beta2"]
    step = state["step"] + 1
    m = b1 * state["m"] + (1 - b1) * grad
    v = b2 * state["v"] + (1 - b2) * grad * grad
    m_hat = m / (1 - torch.pow(b1, step)).to(m.dtype)
    v_hat = v / (1 - torch.pow(b2, step)).to(v.dtype)
    param = param - hp["eta"] * m_hat / (v_hat.sqrt() + hp["eps"])
    return param, {"m": m, "v": v, "step": step}


# DGD, delta gradient descent (arXiv Eq. 57, App. C). The exact solution of the proximal problem
#     W⁺ = argmin_W ⟨W, G⟩ + ½ Σ_i ‖W x_i‖² + ‖W − W_t‖² / (2η),   G = Σ_i (∇_y L)_i x_iᵀ
# is W⁺ = (W_t − η G)(I + η XᵀX)⁻¹. For one key, Sherman–Morrison gives Eq. 57,
#     W⁺ = W_t (I − η' x xᵀ) − η' ∇_y L ⊗ x,   η' = η / (1 + η ‖x‖²),
# a contraction for every η > 0 (eigenvalues of (I + η XᵀX)⁻¹ lie in (0, 1]). A chunk of n keys
# uses Σ x xᵀ = XᵀX; we solve the n×n Woodbury system (or the d_in×d_in one when smaller).
# Fixed points: fed a dot-product surprise (∇_y L = −v) DGD is the delta rule and settles at
# W x = v; fed an ℓ2 surprise (∇_y L = W_t x − v) the erase is counted twice and it settles at
# W x = v/2 (as Eq. 88 is written).
def _dgd_init(param: Tensor, hp) -> State:
    return {}


def _dgd_step(param, grad, state, hp, key):
    if key is None:
        raise ValueError("dgd needs the key x that produced the gradient (W ← W(I − η'x xᵀ) − "
                         "η'∇_y L ⊗ x): pass key=[..., d_in] or a chunk of keys [..., n, d_in]")
    vector = param.ndim < 2
    w = param.reshape(-1, 1) if vector else param
    g = grad.reshape(w.shape)
    x = key.reshape(-1, 1) if vector and key.ndim <= 1 else key
    if x.ndim == w.ndim - 1:  # one key per batch element
        x = x.unsqueeze(-2)
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"dgd: key width {x.shape[-1]} does not match the parameter's input "
                         f"width {w.shape[-1]}")
    eta = hp["eta"]
    p = w - eta * g
    n, d_in = x.shape[-2], x.shape[-1]
    if n == 0:  # no keys: nothing to erase, a plain gradient step
        out = p
    elif n == 1:
        x1 = x[..., 0, :]  # Sherman–Morrison, Eq. 57
        eta_p = eta / (1 + eta * (x1 * x1).sum(-1, keepdim=True))  # [..., 1]
        out = p - (eta_p * (p @ x1.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1) * x1.unsqueeze(-2)
    else:  # solves run in at least float32 (there are no half-precision ones)
        work = torch.promote_types(torch.promote_types(p.dtype, x.dtype), torch.float32)
        pw, xw = p.to(work), x.to(work)
        if n <= d_in:  # Woodbury: (I + ηXᵀX)⁻¹ = I − η Xᵀ (I_n + η X Xᵀ)⁻¹ X
            a = torch.eye(n, device=x.device, dtype=work) + eta * (xw @ xw.mT)
            # solve_ex: I + ηXXᵀ is positive definite, and the unchecked solve never waits
            # on the host for an error flag (a CUDA graph can capture it)
            z = torch.linalg.solve_ex(a, (pw @ xw.mT).mT)[0].mT
            out = (pw - eta * (z @ xw)).to(p.dtype)
        else:
            a = torch.eye(d_in, device=x.device, dtype=work) + eta * (xw.mT @ xw)
            out = torch.linalg.solve_ex(a, pw.mT)[0].mT.to(p.dtype)
    return out.reshape(param.shape), state


# Delta momentum (NeurIPS Eq. 22 / arXiv Eq. 49): GD on the momentum's ℓ2 objective
# ‖m ∇Lᵀ − P‖², which erases what m recalls along the gradient before writing it:
#     m ← m (α I − ĝᵀĝ) − η P ∇L ;  W ← W + m.
# P, the values the momentum maps gradients to, is the identity: the paper gives it no source
# for Eq. 22, and with P = I and no erase term the rule is exactly classic momentum (the
# dot-product objective ⟨m ∇Lᵀ, I⟩ of Eqs. 46–47), which delta momentum extends.
# ĝ, the key of the erase: ``normalize`` = 1 (default) uses ĝ = ∇L / ‖∇L‖_F, so ĝᵀĝ ⪯ I and
# the transition α I − ĝᵀĝ has eigenvalues in [α − 1, α] ⊂ [−1, 1] whatever the gradient's
# scale (as DeltaNet normalises its keys and DGD's Eq. 57 assumes ‖x‖ = 1). ``normalize`` = 0
# is Eq. 22 as printed, ĝ = ∇L: its erase has no step size, so the memory grows as soon as
# σ_max(∇L)² > 1 + α (a chunk's summed gradient or the lesson landscape's ‖∇ψ‖ ≈ 39 at its
# start diverge in a few steps). A vector is one row: m ← α m − ⟨m, ĝ⟩ ĝ − η ∇L.
def _delta_momentum_init(param: Tensor, hp) -> State:
    return {"m": torch.zeros_like(param)}


def _delta_momentum_step(param, grad, state, hp, key):
    m, _ = _as_matrix(state["m"])
    g, _ = _as_matrix(grad)
    g_hat = g / (g.norm(dim=(-2, -1), keepdim=True) + _TINY) if hp["normalize"] else g
    m = hp["alpha"] * m - (m @ g_hat.mT) @ g_hat - hp["eta"] * g
    m = m.reshape(param.shape)
    return param + m, {"m": m}


# DMGD, deep momentum (Eq. 50): W ← W + m_{i+1}(u_i), m_{i+1} = α m_i − η ∇L⁽²⁾(m_i; u_i),
# u_i = ∇L(W_i). Our memory m is an element-wise residual MLP with `hidden` units:
#     m(u) = b + s · Σ_k w2_k tanh(w1_k û + c1_k),   s = rms(u), û = u / s,
# with b the size of the parameter (the residual path: alone it is classic momentum) and the
# small shared weights (w1, c1, w2) per batch element. Its objective is the dot product of
# momentum-as-memory, L⁽²⁾(m; u) = ⟨m(u), u⟩: GD on it gives b ← α b − η u exactly; the shared
# weights take their step on the coordinate-mean of L⁽²⁾/s² (so their step size does not depend
# on the number or scale of the coordinates). Starting from w2 = 0, they learn an odd,
# saturating descent direction (a soft sign step) whose size follows the gradient's rms.
def _dmgd_reduce_dims(param: Tensor) -> tuple[int, ...]:
    return (-2, -1) if param.ndim >= 2 else tuple(range(-param.ndim, 0))


def _dmgd_init(param: Tensor, hp) -> State:
    h = int(hp["hidden"])
    batch = param.shape[:-2] if param.ndim >= 2 else ()
    spread = 0.5 * 4.0 ** (torch.arange(h, device=param.device, dtype=param.dtype)
                           / max(h - 1, 1))
    return {"b": torch.zeros_like(param),
            "w1": spread.expand(*batch, h).clone(),
            "c1": param.new_zeros(*batch, h),
            "w2": param.new_zeros(*batch, h)}


def _dmgd_read(z: Tensor, s: Tensor, b: Tensor, w1: Tensor, c1: Tensor, w2: Tensor,
               lead: int) -> tuple[Tensor, Tensor]:
    """m(u) and the hidden activations; ``lead`` = dims between the batch and the hidden axis."""
    shape = w1.shape[:-1] + (1,) * lead + w1.shape[-1:]
    th = torch.tanh(z.unsqueeze(-1) * w1.reshape(shape) + c1.reshape(shape))
    return b + s * (th * w2.reshape(shape)).sum(-1), th


def _dmgd_step(param, grad, state, hp, key):
    alpha, eta = hp["alpha"], hp["eta"]
    dims = _dmgd_reduce_dims(param)
    lead = len(dims)
    u = grad
    s = (u * u).mean(dim=dims, keepdim=True).sqrt() + _TINY if dims else u.abs() + _TINY
    z = u / s
    w1, c1, w2 = state["w1"], state["c1"], state["w2"]
    _, th = _dmgd_read(z, s, state["b"], w1, c1, w2, lead)
    hidden_dims = tuple(d - 1 for d in dims)  # the coordinate dims, left of the hidden axis
    zz = z.unsqueeze(-1)
    sech2 = 1 - th * th
    mean = (lambda t: t.mean(dim=hidden_dims)) if hidden_dims else (lambda t: t)
    g_w2 = mean(zz * th)
    g_c1 = w2 * mean(zz * sech2)
    g_w1 = w2 * mean(zz * zz * sech2)
    new = {"b": alpha * state["b"] - eta * u,
           "w1": alpha * w1 - eta * g_w1,
           "c1": alpha * c1 - eta * g_c1,
           "w2": alpha * w2 - eta * g_w2}
    update, _ = _dmgd_read(z, s, new["b"], new["w1"], new["c1"], new["w2"], lead)
    return param + update, new


# M3, multi-scale momentum Muon (arXiv Algorithm 1), as sums (the algorithm's "+="):
#     M1 += β1 g ;  V += β2 g² ;  S += g   (every step)
#     every Ĉ-th step: M2 += β3 S ; S ← 0  (the slow memory takes the chunk's summed gradient)
#     W −= η (NS(M1) + α NS(M2)) / (√V + ε)
# The slow write happens at the chunk's last step (its sum is complete then), so that step
# already reads the new M2. The counter is a tensor and the chunk test is branch-free, so the
# step stays a pure, traceable function (NS(M2) is recomputed each step rather than cached).
# V is a sum too, so the step shrinks like 1/√t (AdaGrad-like); with Ĉ longer than the stream
# M2 stays 0 and M3 is Muon on the summed gradients over that AdaGrad denominator.
def _m3_init(param: Tensor, hp) -> State:
    z = torch.zeros_like(param)
    return {"M1": z, "M2": z.clone(), "V": z.clone(), "S": z.clone(),
            "step": _counter(param)}


def _m3_step(param, grad, state, hp, key):
    step = state["step"] + 1
    m1 = state["M1"] + hp["beta1"] * grad
    v = state["V"] + hp["beta2"] * grad * grad
    s = state["S"] + grad
    chunk_end = torch.remainder(step, int(hp["chunk"])) == 0
    m2 = torch.where(chunk_end, state["M2"] + hp["beta3"] * s, state["M2"])
    s = torch.where(chunk_end, torch.zeros_like(s), s)
    direction = newton_schulz(m1) + hp["alpha"] * newton_schulz(m2)
    param = param - hp["eta"] * direction / (v.sqrt() + hp["eps"])
    return param, {"M1": m1, "M2": m2, "V": v, "S": s, "step": step}


_ETA = HyperParam("eta", "η", 0.1, 1e-5, 10.0, "learning rate", log=True)
_ALPHA = HyperParam("alpha", "α", 0.9, 0.0, 1.0, "momentum decay (how long gradients are kept)")
_BETA1 = HyperParam("beta1", "β₁", 0.9, 0.0, 0.9999, "decay of the gradient average (first moment)")
_BETA2 = HyperParam("beta2", "β₂", 0.999, 0.0, 0.99999,
                    "decay of the squared-gradient average (second moment)")
_EPS = HyperParam("eps", "ε", 1e-8, 1e-12, 1e-2, "added to the denominator", log=True)

OPTIMIZERS: dict[str, InnerOptimizer] = {}


def register(opt: InnerOptimizer) -> InnerOptimizer:
    OPTIMIZERS[opt.name] = opt
    return opt


register(InnerOptimizer(
    "sgd", "SGD", "One level: the weights store each input's surprise directly.",
    "W ← W − η ∇L", (_ETA,), _sgd_init, _sgd_step))
register(InnerOptimizer(
    "momentum", "Momentum", "Two levels: a momentum memory m compresses past gradients, the "
    "weights read it.", "m ← α m − η ∇L ;  W ← W + m", (_ETA, _ALPHA),
    _momentum_init, _momentum_step, memory=("m",)))
register(InnerOptimizer(
    "adam", "Adam", "The optimal element-wise memory of the gradients: a first moment m and a "
    "second moment v that sets each coordinate's step.",
    "m ← β₁ m + (1−β₁) g ;  v ← β₂ v + (1−β₂) g² ;  W ← W − η m̂ / (√v̂ + ε)",
    (HyperParam("eta", "η", 1e-2, 1e-5, 1.0, "learning rate", log=True), _BETA1, _BETA2, _EPS),
    _adam_init, _adam_step, memory=("m", "v")))
register(InnerOptimizer(
    "dgd", "Delta gradient descent", "GD that first erases what the weights recall for the "
    "current key, then writes the surprise (the exact solution of an ℓ2 proximal step).",
    "W ← W (I − η' x xᵀ) − η' ∇_y L ⊗ x ,  η' = η / (1 + η‖x‖²)",
    (_ETA,), _dgd_init, _dgd_step, uses_key=True))
register(InnerOptimizer(
    "delta_momentum", "Delta momentum", "A momentum memory trained with the delta rule: it "
    "forgets the past gradient along the current gradient's direction before adding it.",
    "m ← m (α I − ĝᵀĝ) − η ∇L ,  ĝ = ∇L/‖∇L‖ (normalize = 1) or ∇L (0, as printed) ;  "
    "W ← W + m",
    (_ETA, _ALPHA,
     HyperParam("normalize", "ĝ", 1, 0, 1, "1: erase along the unit gradient (stable at any "
                "gradient scale); 0: along the raw gradient as Eq. 22 prints it (grows once "
                "‖∇L‖² > 1 + α)", integer=True)),
    _delta_momentum_init, _delta_momentum_step, memory=("m",)))
register(InnerOptimizer(
    "dmgd", "Deep momentum (DMGD)", "The momentum is a small MLP memory that maps the gradient "
    "to the update and learns by GD on its own objective.",
    "m ← α m − η ∇_m ⟨m(u), u⟩ ,  u = ∇L ;  W ← W + m(u)",
    (_ETA, _ALPHA,
     HyperParam("hidden", "h", 4, 1, 16, "hidden units of the momentum MLP", integer=True)),
    _dmgd_init, _dmgd_step, memory=("b", "w1", "c1", "w2")))
register(InnerOptimizer(
    "m3", "Multi-scale momentum Muon (M3)", "Two momentum memories at two frequencies, a fast "
    "one every step and a slow one every Ĉ steps, both orthogonalised by Newton–Schulz.",
    "M1 += β₁ g ;  V += β₂ g² ;  every Ĉ steps M2 += β₃ Σ_{last Ĉ} g ;  "
    "W ← W − η (NS(M1) + α NS(M2)) / (√V + ε)",
    (HyperParam("eta", "η", 1e-2, 1e-5, 1.0, "learning rate", log=True),
     HyperParam("beta1", "β₁", 0.9, 0.0, 1.0, "weight of each gradient in the fast momentum"),
     HyperParam("beta2", "β₂", 0.999, 0.0, 1.0, "weight of each squared gradient in V"),
     HyperParam("beta3", "β₃", 0.5, 0.0, 1.0, "weight of each chunk's gradient sum in the "
                "slow momentum"),
     HyperParam("alpha", "α", 1.0, 0.0, 10.0, "weight of the slow momentum in the update"),
     _EPS,
     HyperParam("chunk", "Ĉ", 8, 1, 4096, "steps between two writes of the slow momentum",
                integer=True, log=True)),
    _m3_init, _m3_step, memory=("M1", "M2", "V")))


def get_optimizer(name: str) -> InnerOptimizer:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise KeyError(f"unknown inner optimizer {name!r}; expected one of "
                       f"{', '.join(OPTIMIZERS)}") from None


def make_optimizer(spec: Mapping | None, default: str = "sgd") -> BoundOptimizer:
    """A bound optimizer from a project-file dict such as ``{"name": "sgd", "eta": 0.1}``."""
    spec = dict(spec or {})
    name = spec.pop("name", default)
    return get_optimizer(name).bind(**spec)


def memory_of(name: str, state: State) -> dict[str, Tensor]:
    """The tensors of an optimizer's state that ARE its memory (momentum's m, Adam's m and v,
    M3's M1, M2 and V, ...); empty for memoryless rules (SGD, DGD: their memory is the weights).
    """
    return {k: state[k] for k in get_optimizer(name).memory if k in state}
