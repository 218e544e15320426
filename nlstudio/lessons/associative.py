"""Lesson 2: training a linear layer is writing an associative memory.

A layer ``y = W x`` learns input → target pairs one at a time with the loss
``L = ½‖W x − y*‖²``. One step of the real SGD inner optimizer (``nlstudio.models.inner_optim``)
writes ``W ← W − η u xᵀ``, where ``u = ∇_y L`` is the surprise at the output: the layer stores
the pair (key x, value −η u). The same step is the solution of the proximal problem

    W⁺ = argmin_W ⟨W x, u⟩ + ‖W − W_t‖² / (2η),

which :func:`solve_proximal` finds numerically (Newton's method on the objective, with the
gradient and Hessian taken by autograd and the linear system solved by ``torch.linalg``), not
from the closed form.

    lesson = AssociativeMemoryLesson(dim=6, pairs=6, eta=0.5)
    step = lesson.next()          # an AssocStep: x, target, surprise, write, W before/after
    step.proximal_gap             # max |W⁺(proximal) − W⁺(SGD)|, ~1e-16
    lesson.back(); lesson.reset()
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nlstudio.models.inner_optim import make_optimizer

DTYPE = torch.float64


@dataclass(frozen=True)
class AssocStep:
    """One write of the memory (arrays are float64 numpy copies)."""

    number: int  # 1-based count of writes so far
    pair: int  # which pair (0-based) was shown
    x: np.ndarray  # [d] the input (key)
    target: np.ndarray  # [d] y*
    prediction: np.ndarray  # [d] W_t x, what the memory recalled before the write
    surprise: np.ndarray  # [d] u = ∇_y L at W_t
    write: np.ndarray  # [d, d] W_{t+1} − W_t = −η u xᵀ
    before: np.ndarray  # [d, d] W_t
    after: np.ndarray  # [d, d] W_{t+1} from the SGD inner optimizer
    proximal: np.ndarray  # [d, d] the proximal problem's numerical solution
    proximal_gap: float  # max |proximal − after|
    proximal_residual: float  # ‖∇F‖ at the numerical solution (0 = exact minimiser)
    loss_before: float  # mean ½‖W x_i − y*_i‖² over all pairs, at W_t
    loss_after: float  # the same at W_{t+1}


def solve_proximal(w_t: torch.Tensor, x: torch.Tensor, u: torch.Tensor, eta: float,
                   iterations: int = 2) -> tuple[torch.Tensor, float]:
    """``argmin_W ⟨W x, u⟩ + ‖W − W_t‖²/(2η)`` by Newton's method on the objective itself.

    Gradient and Hessian come from autograd (the objective is written out as it reads, never
    its closed-form minimiser) and each Newton system is solved with ``torch.linalg.solve``.
    The objective is quadratic, so one iteration is exact; the second checks it. Returns the
    minimiser and the norm of the objective's gradient there.
    """
    w_t = w_t.detach().to(DTYPE)
    x, u = x.detach().to(DTYPE), u.detach().to(DTYPE)
    shape = w_t.shape

    def objective(flat: torch.Tensor) -> torch.Tensor:
        w = flat.reshape(shape)
        return torch.dot(w @ x, u) + ((w - w_t) ** 2).sum() / (2.0 * eta)

    flat = w_t.reshape(-1).clone()
    residual = float("nan")
    for _ in range(iterations):
        point = flat.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(point), point)
        hess = torch.autograd.functional.hessian(objective, flat)
        flat = flat - torch.linalg.solve(hess, grad)
    point = flat.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(point), point)
    residual = float(grad.norm())
    return flat.reshape(shape).detach(), residual


class AssociativeMemoryLesson:
    """A ``dim × dim`` linear memory W (starting at 0) learning ``pairs`` key → value pairs,
    shown in turn, written with the real SGD inner optimizer (a
    :class:`nlstudio.lessons.LessonCore`: one write per step, the pairs shown round and
    round)."""

    def __init__(self, dim: int = 6, pairs: int = 6, eta: float = 0.5, seed: int = 0) -> None:
        if dim < 1 or pairs < 1 or eta <= 0:
            raise ValueError("dim and pairs must be positive, eta > 0")
        self.dim, self.pairs, self.eta = int(dim), int(pairs), float(eta)
        gen = torch.Generator().manual_seed(int(seed))
        keys = torch.randn(self.pairs, self.dim, generator=gen, dtype=DTYPE)
        self.keys = keys / keys.norm(dim=1, keepdim=True)  # unit keys: the step size reads as η
        self.targets = torch.randn(self.pairs, self.dim, generator=gen, dtype=DTYPE)
        self.optimizer = make_optimizer({"name": "sgd", "eta": self.eta})
        self.history: list[AssocStep] = []
        self.reset()

    # ---- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.weights = torch.zeros(self.dim, self.dim, dtype=DTYPE)
        self.opt_state = self.optimizer.init(self.weights)
        self.history = []

    @property
    def step_count(self) -> int:
        return len(self.history)

    @property
    def done(self) -> bool:
        return False  # the pairs come round again: there is always a next write

    @property
    def current(self) -> AssocStep | None:
        return self.history[-1] if self.history else None

    def memory(self) -> np.ndarray:
        return self.weights.numpy().copy()

    def loss(self, weights: torch.Tensor | None = None) -> float:
        """Mean ½‖W x_i − y*_i‖² over every pair: how well the memory recalls them all."""
        w = self.weights if weights is None else weights
        err = self.keys @ w.T - self.targets
        return float(0.5 * (err ** 2).sum(1).mean())

    def losses(self) -> np.ndarray:
        """The loss before the first write, then after every write: ``[steps + 1]``."""
        first = self.history[0].loss_before if self.history else self.loss()
        return np.array([first, *[s.loss_after for s in self.history]])

    # ---- stepping -------------------------------------------------------------------------
    def next(self) -> AssocStep:
        """Show the next pair and write it."""
        pair = self.step_count % self.pairs
        x, target = self.keys[pair], self.targets[pair]
        w = self.weights
        # The surprise: the gradient of the loss with respect to the layer's output.
        y = (w @ x).detach().requires_grad_(True)
        (u,) = torch.autograd.grad(0.5 * ((y - target) ** 2).sum(), y)
        # The gradient with respect to the weights, by autograd too (it equals u xᵀ).
        w_leaf = w.detach().clone().requires_grad_(True)
        (grad_w,) = torch.autograd.grad(0.5 * ((w_leaf @ x - target) ** 2).sum(), w_leaf)
        after, self.opt_state = self.optimizer.step(w, grad_w, self.opt_state)
        proximal, residual = solve_proximal(w, x, u, self.eta)
        step = AssocStep(
            number=self.step_count + 1, pair=pair, x=x.numpy().copy(),
            target=target.numpy().copy(), prediction=y.detach().numpy().copy(),
            surprise=u.numpy().copy(), write=(after - w).numpy().copy(),
            before=w.numpy().copy(), after=after.numpy().copy(),
            proximal=proximal.numpy().copy(),
            proximal_gap=float((proximal - after).abs().max()),
            proximal_residual=residual,
            loss_before=self.loss(w), loss_after=self.loss(after))
        self.weights = after.detach()
        self.history.append(step)
        return step

    def back(self) -> AssocStep | None:
        """Undo the last write; returns the step now shown (None at the start)."""
        if not self.history:
            return None
        last = self.history.pop()
        self.weights = torch.from_numpy(last.before.copy())
        self.opt_state = self.optimizer.init(self.weights)  # SGD keeps no state
        return self.current


__all__ = ["AssocStep", "AssociativeMemoryLesson", "solve_proximal"]
