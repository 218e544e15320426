"""Lesson 3: optimizers are memories too.

Six inner optimizers of ``nlstudio.models.inner_optim`` (SGD, momentum, Adam, delta momentum,
DMGD and M3, the real pure functions, never re-implemented) are fed the same kind of gradient
stream in two problems:

1. **The landscape** ``ψ(r, θ) = r² + k (r − θ + a·sin(ω r))²``: a curved, wiggly valley whose
   floor leads to the minimum at the origin. Every optimizer starts at the same point; its
   path is drawn on the contour plot.
2. **Continual regression**: a linear map ``W`` learns a sequence of tasks whose inputs live in
   mutually orthogonal subspaces (plus a little isotropic noise), one task after another. The
   loss on the FIRST task over time shows what each optimizer forgets.

Each optimizer's state is a memory of the gradients it has seen: :meth:`OptimizerLesson.memory`
returns it (``memory_of``), e.g. momentum's m, Adam's m and v, M3's M1, M2 and V; with
``problem="shared"``, the memory each one builds from the very same gradient stream (the
gradients SGD computes in the regression).

    lesson = OptimizerLesson()
    for _ in range(10): lesson.next()
    lesson.landscape.paths()["adam"]          # [11, 2] (r, θ) positions
    lesson.regression.first_task_loss()       # {name: [steps + 1]}
    lesson.memory("m3")                       # {"M1": [m, d], "M2": ..., "V": ...}
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from nlstudio.models.inner_optim import OPTIMIZERS, make_optimizer, memory_of

DTYPE = torch.float64
NAMES = ("sgd", "momentum", "adam", "delta_momentum", "dmgd", "m3")

#: Hyper-parameters per optimizer for each problem (the rest are the optimizer's defaults).
LANDSCAPE_HYPER: dict[str, dict[str, float]] = {
    "sgd": {"eta": 0.02},
    "momentum": {"eta": 0.01, "alpha": 0.8},
    "adam": {"eta": 0.1},
    "delta_momentum": {"eta": 0.01, "alpha": 0.8},
    "dmgd": {"eta": 0.01, "alpha": 0.8},
    "m3": {"eta": 1.0, "chunk": 8},
}
REGRESSION_HYPER: dict[str, dict[str, float]] = {
    "sgd": {"eta": 0.1},
    "momentum": {"eta": 0.02, "alpha": 0.8},
    "adam": {"eta": 0.02},
    "delta_momentum": {"eta": 0.02, "alpha": 0.8},
    "dmgd": {"eta": 0.02, "alpha": 0.8},
    "m3": {"eta": 0.05, "chunk": 8},
}


def title(name: str) -> str:
    return OPTIMIZERS[name].title


# ---- 1. the landscape ψ(r, θ) ---------------------------------------------------------------
@dataclass(frozen=True)
class Landscape:
    k: float = 4.0
    a: float = 0.6
    omega: float = 3.0
    start: tuple[float, float] = (2.5, 0.8)
    bounds: tuple[float, float, float, float] = (-1.5, 3.0, -2.0, 3.0)  # r0, r1, θ0, θ1

    def psi(self, r, theta):
        """ψ for numpy arrays or torch tensors."""
        sin = torch.sin if isinstance(r, torch.Tensor) else np.sin
        return r ** 2 + self.k * (r - theta + self.a * sin(self.omega * r)) ** 2

    def grid(self, n: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(r values [n], θ values [n], ψ [n_θ, n_r])`` for a contour plot."""
        r0, r1, t0, t1 = self.bounds
        rs, ts = np.linspace(r0, r1, n), np.linspace(t0, t1, n)
        rr, tt = np.meshgrid(rs, ts)
        return rs, ts, self.psi(rr, tt)


@dataclass
class _Runner:
    """One optimizer's parameter, state and history (for Back)."""

    name: str
    optimizer: object
    param: torch.Tensor
    state: dict
    history: list = field(default_factory=list)  # (param, state) before each step


class LandscapeRace:
    """Every optimizer descending ψ from the same start; gradients by autograd."""

    def __init__(self, landscape: Landscape | None = None, names=NAMES,
                 hyper: dict[str, dict[str, float]] | None = None) -> None:
        self.landscape = landscape or Landscape()
        self.names = tuple(names)
        self.hyper = {n: dict((hyper or LANDSCAPE_HYPER).get(n, {})) for n in self.names}
        self.reset()

    def reset(self) -> None:
        self.runners: dict[str, _Runner] = {}
        self._paths: dict[str, list[tuple[float, float]]] = {}
        for name in self.names:
            opt = make_optimizer({"name": name, **self.hyper[name]})
            param = torch.tensor(self.landscape.start, dtype=DTYPE)
            self.runners[name] = _Runner(name, opt, param, opt.init(param))
            self._paths[name] = [tuple(self.landscape.start)]

    @property
    def step_count(self) -> int:
        return len(next(iter(self._paths.values()))) - 1

    def gradient(self, param: torch.Tensor) -> torch.Tensor:
        p = param.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.landscape.psi(p[0], p[1]), p)
        return g

    def step(self) -> None:
        for name, run in self.runners.items():
            run.history.append((run.param, run.state))
            grad = self.gradient(run.param)
            param, state = run.optimizer.step(run.param, grad, run.state)
            if not bool(torch.isfinite(param).all()):  # a diverging rule stays where it was
                param = run.param
            run.param, run.state = param.detach(), state
            self._paths[name].append((float(param[0]), float(param[1])))

    def back(self) -> None:
        for name, run in self.runners.items():
            if run.history:
                run.param, run.state = run.history.pop()
                self._paths[name].pop()

    def paths(self) -> dict[str, np.ndarray]:
        return {n: np.asarray(p, dtype=float) for n, p in self._paths.items()}

    def values(self) -> dict[str, float]:
        """ψ at every optimizer's current point."""
        return {n: float(self.landscape.psi(r.param[0], r.param[1]))
                for n, r in self.runners.items()}


# ---- 2. continual regression over orthogonal tasks -----------------------------------------
@dataclass(frozen=True)
class RegressionSetup:
    dim: int = 12  # input width
    outputs: int = 3  # output width
    tasks: int = 3
    rank: int = 4  # each task's input subspace
    steps_per_task: int = 60
    batch: int = 8
    noise: float = 0.1  # isotropic input noise (leaks every gradient a little into all tasks)
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return self.tasks * self.steps_per_task


class ContinualRegression:
    """``W [outputs, dim]`` learns task 0, then 1, ...; the loss on task 0 is tracked."""

    def __init__(self, setup: RegressionSetup | None = None, names=NAMES,
                 hyper: dict[str, dict[str, float]] | None = None) -> None:
        self.setup = s = setup or RegressionSetup()
        if s.tasks * s.rank > s.dim:
            raise ValueError("the tasks' subspaces must fit in the input width")
        self.names = tuple(names)
        self.hyper = {n: dict((hyper or REGRESSION_HYPER).get(n, {})) for n in self.names}
        gen = torch.Generator().manual_seed(s.seed)
        basis, _ = torch.linalg.qr(torch.randn(s.dim, s.dim, generator=gen, dtype=DTYPE))
        self.bases = [basis[:, j * s.rank:(j + 1) * s.rank] for j in range(s.tasks)]
        self.teachers = [torch.randn(s.outputs, s.dim, generator=gen, dtype=DTYPE)
                         for _ in range(s.tasks)]
        self._gen_seed = s.seed + 1
        # Fixed held-out inputs of the first task: its loss over time.
        self.probe_x, self.probe_y = self.sample(0, 128, torch.Generator().manual_seed(s.seed + 2))
        self.reset()

    def sample(self, task: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.setup
        z = torch.randn(n, s.rank, generator=gen, dtype=DTYPE)
        x = z @ self.bases[task].T + s.noise * torch.randn(n, s.dim, generator=gen, dtype=DTYPE)
        return x, x @ self.teachers[task].T

    def task_at(self, step: int) -> int:
        return min(step // self.setup.steps_per_task, self.setup.tasks - 1)

    def reset(self) -> None:
        s = self.setup
        self.runners: dict[str, _Runner] = {}
        self._loss: dict[str, list[float]] = {}
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        gen = torch.Generator().manual_seed(self._gen_seed)
        for step in range(s.total_steps):  # the same stream for every optimizer
            self._batches.append(self.sample(self.task_at(step), s.batch, gen))
        # ``shared``: every optimizer fed the very same gradients, those the first one (SGD)
        # computes, so their memories of one stream can be compared side by side.
        self.shared: dict[str, _Runner] = {}
        self.stream: list[torch.Tensor] = []  # that shared gradient stream, one per step
        for name in self.names:
            opt = make_optimizer({"name": name, **self.hyper[name]})
            w = torch.zeros(s.outputs, s.dim, dtype=DTYPE)
            self.runners[name] = _Runner(name, opt, w, opt.init(w))
            self.shared[name] = _Runner(name, opt, w, opt.init(w))
            self._loss[name] = [self.loss(w, self.probe_x, self.probe_y)]

    @staticmethod
    def loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
        return float(0.5 * ((x @ w.T - y) ** 2).sum(1).mean())

    @property
    def step_count(self) -> int:
        return len(next(iter(self._loss.values()))) - 1

    @property
    def done(self) -> bool:
        return self.step_count >= self.setup.total_steps

    def step(self) -> None:
        if self.done:
            return
        x, y = self._batches[self.step_count]
        stream = None
        for name, run in self.runners.items():
            w = run.param.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(0.5 * ((x @ w.T - y) ** 2).sum(1).mean(), w)
            stream = grad if stream is None else stream
            self._advance(run, grad)
            self._loss[name].append(self.loss(run.param, self.probe_x, self.probe_y))
        self.stream.append(stream)
        for run in self.shared.values():
            self._advance(run, stream)

    @staticmethod
    def _advance(run: _Runner, grad: torch.Tensor) -> None:
        run.history.append((run.param, run.state))
        param, state = run.optimizer.step(run.param, grad, run.state)
        if not bool(torch.isfinite(param).all()):  # a diverging rule stays where it was
            param = run.param
        run.param, run.state = param.detach(), state

    def back(self) -> None:
        for name, run in self.runners.items():
            if run.history:
                run.param, run.state = run.history.pop()
                self._loss[name].pop()
        if self.stream:
            self.stream.pop()
        for run in self.shared.values():
            if run.history:
                run.param, run.state = run.history.pop()

    def first_task_loss(self) -> dict[str, np.ndarray]:
        return {n: np.asarray(v) for n, v in self._loss.items()}

    def boundaries(self) -> list[int]:
        """Steps at which a new task begins."""
        s = self.setup
        return [j * s.steps_per_task for j in range(1, s.tasks)]

    def forgetting(self) -> dict[str, float]:
        """Loss on task 0 now minus its lowest value while task 0 was trained (≥ 0: forgot)."""
        s = self.setup
        out = {}
        for name, losses in self._loss.items():
            learned = min(losses[:s.steps_per_task + 1])
            out[name] = float(losses[-1] - learned)
        return out


# ---- the lesson ----------------------------------------------------------------------------
class OptimizerLesson:
    """Both problems stepped together, and each optimizer's memory (a
    :class:`nlstudio.lessons.LessonCore`: one step of every optimizer on both problems)."""

    def __init__(self, names=NAMES, landscape: Landscape | None = None,
                 setup: RegressionSetup | None = None) -> None:
        self.names = tuple(names)
        self.landscape = LandscapeRace(landscape, self.names)
        self.regression = ContinualRegression(setup, self.names)

    @property
    def step_count(self) -> int:
        return self.landscape.step_count

    @property
    def total_steps(self) -> int:
        return self.regression.setup.total_steps

    @property
    def done(self) -> bool:
        return self.step_count >= self.total_steps

    def next(self) -> bool:
        """One step of both problems; False (and nothing changes) once done."""
        if self.done:
            return False
        self.landscape.step()
        self.regression.step()
        return True

    def back(self) -> None:
        if self.step_count:
            self.landscape.back()
            self.regression.back()

    def reset(self) -> None:
        self.landscape.reset()
        self.regression.reset()

    def memory(self, name: str, problem: str = "regression") -> dict[str, np.ndarray]:
        """The optimizer's memory (``memory_of``) as 2-D float arrays, in ``problem``:
        ``"regression"`` (its own run), ``"shared"`` (fed the first optimizer's regression
        gradients, the same stream for all) or ``"landscape"``."""
        if problem == "shared":
            runner = self.regression.shared[name]
        else:
            runner = (self.regression if problem == "regression"
                      else self.landscape).runners[name]
        out = {}
        for key, tensor in memory_of(name, runner.state).items():
            arr = tensor.detach().numpy().astype(float)
            out[key] = arr.reshape(1, -1) if arr.ndim < 2 else arr.reshape(-1, arr.shape[-1])
        return out

    def summary(self) -> str:
        """Which optimizer forgot least, with the numbers (for the lesson text)."""
        if not self.regression.done:
            return ""
        forgot = self.regression.forgetting()
        best = min(forgot, key=forgot.get)
        worst = max(forgot, key=forgot.get)
        return (f"Loss on task 1 gained since it was learned: least {title(best)} "
                f"(+{forgot[best]:.3g}), most {title(worst)} (+{forgot[worst]:.3g}).")


__all__ = ["NAMES", "Landscape", "LandscapeRace", "RegressionSetup", "ContinualRegression",
           "OptimizerLesson", "LANDSCAPE_HYPER", "REGRESSION_HYPER", "title"]
