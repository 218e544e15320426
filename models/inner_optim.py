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


_ETA = HyperParam("eta", "η", 0.1, 1e-5, 10.0, "learning rate", log=True)
_ALPHA = HyperParam("alpha", "α", 0.9, 0.0, 1.0, "momentum decay (how long gradients are kept)")

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
    _momentum_init, _momentum_step))


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
