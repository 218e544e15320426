"""Lesson 4: linear attention and the delta rule are one gradient-descent step per token.

The real levels (``linear_attention`` from the linear-attention preset, ``delta`` from the
DeltaNet preset) read a stream one token per call, in float64. After each token the lesson
reads the level's new memory from its state and sets it beside one explicit GD step, computed
with ``torch.autograd`` on the level's own keys and values:

- linear attention: the objective ``−⟨M k, v⟩``, step size η (the level's inner SGD η);
- delta rule: the objective ``½‖M k − v‖²``, step size η_t = η·σ(w·x_t + b) (read from the
  level, one per head and token).

The difference is printed: zero up to float64 rounding. The read is checked too: the level's
output equals its output projection applied to ``M_t q_t`` with the GD memory.

    lesson = GradientStepLesson("linear_attention")
    step = lesson.next()     # a TokenStep; step.max_diff ~ 1e-17
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nlstudio.models.levels import LEVEL_CLASSES
from nlstudio.project import load_preset, project_to_dict

DTYPE = torch.float64


@dataclass(frozen=True)
class Rule:
    """One of the lesson's two write rules: the level of a bundled preset, and its objective."""

    preset: str
    level_id: str
    objective: str  # "dot": L = −⟨Mk, v⟩ (step size η); "l2": L = ½‖Mk − v‖² (η_t per token)


RULES = {"linear_attention": Rule("linear_attention", "lin1", "dot"),
         "delta": Rule("deltanet", "delta1", "l2")}


@dataclass(frozen=True)
class TokenStep:
    """What one token did to the memory (per head; numpy float64 copies)."""

    number: int  # 1-based token index
    key: np.ndarray  # [H, d_k] (L2-normalised, as the level uses it)
    value: np.ndarray  # [H, d_v]
    eta: np.ndarray  # [H] the step size of this token's GD step
    before: np.ndarray  # [H, d_v, d_k] M_{t−1}
    gd_update: np.ndarray  # [H, d_v, d_k] −η ∇L(M_{t−1})
    gd_after: np.ndarray  # [H, d_v, d_k] M_{t−1} − η ∇L
    level_after: np.ndarray  # [H, d_v, d_k] the level's memory after the token
    max_diff: float  # max |level − GD| over every head and entry
    read_diff: float  # max |level output − out_proj(M_gd q)|
    objective_before: float  # the inner objective at M_{t−1} (summed over heads)
    objective_after: float  # ... and at the level's M_t


def level_spec(rule: str) -> tuple[dict, int, int]:
    """The level spec, d_model and heads of the preset behind ``rule``."""
    spec_of = RULES[rule]
    doc = project_to_dict(load_preset(spec_of.preset))
    spec = next(lv for lv in doc["model"]["levels"] if lv["id"] == spec_of.level_id)
    return spec, int(doc["model"]["d_model"]), int(doc["model"]["heads"])


class GradientStepLesson:
    """The real ``rule`` level fed ``tokens`` random inputs one at a time, beside GD (a
    :class:`nlstudio.lessons.LessonCore`: one token per step)."""

    def __init__(self, rule: str = "linear_attention", tokens: int = 24, seed: int = 0) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        self.rule = rule
        self.objective = RULES[rule].objective
        self.tokens = int(tokens)
        spec, self.d_model, self.heads = level_spec(rule)
        self.spec = spec
        torch.manual_seed(int(seed))
        self.level = LEVEL_CLASSES[spec["kind"]](spec, self.d_model, self.heads).to(DTYPE)
        self.level.eval()
        gen = torch.Generator().manual_seed(int(seed) + 1)
        self.inputs = torch.randn(1, self.tokens, self.d_model, generator=gen, dtype=DTYPE)
        self.history: list[TokenStep] = []
        self._states: list[dict] = []
        self.reset()

    @property
    def eta(self) -> float:
        """The level's inner step size η (the delta rule scales it per token by a gate)."""
        return float(self.level.eta)

    def reset(self) -> None:
        self.state = self.level.init_state(1, "cpu", DTYPE)
        self.history, self._states = [], []

    @property
    def step_count(self) -> int:
        return len(self.history)

    @property
    def done(self) -> bool:
        return self.step_count >= self.tokens

    @property
    def current(self) -> TokenStep | None:
        return self.history[-1] if self.history else None

    def max_diffs(self) -> np.ndarray:
        return np.array([s.max_diff for s in self.history])

    # ---- one token -------------------------------------------------------------------------
    def _objective(self, memory: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The inner objective summed over heads; memory ``[H, d_v, d_k]``, k, v ``[H, d]``."""
        recalled = (memory @ k.unsqueeze(-1)).squeeze(-1)  # M k per head
        if self.objective == "dot":
            return -(recalled * v).sum()
        return 0.5 * ((recalled - v) ** 2).sum()

    def next(self) -> TokenStep:
        """Feed the next token to the level and take the GD step beside it."""
        if self.done:
            raise IndexError(f"the stream has {self.tokens} tokens")
        t = self.step_count
        x = self.inputs[:, t:t + 1]
        level = self.level
        with torch.no_grad():
            q, k, v = level.project(x)  # [1, H, 1, d]
            if self.objective == "dot":
                eta = torch.full((self.heads,), level.eta, dtype=DTYPE)
            else:
                eta = level.rates(x)[0][0, :, 0]  # η_t per head
            y_level, new_state = level(x, self.state)
        q, k, v = q[0, :, 0], k[0, :, 0], v[0, :, 0]  # [H, d]
        before = self.state["M"][0].detach()
        memory = before.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self._objective(memory, k, v), memory)
        update = -eta[:, None, None] * grad
        gd_after = before + update
        level_after = new_state["M"][0].detach()
        with torch.no_grad():
            read = (gd_after @ q.unsqueeze(-1)).squeeze(-1)  # [H, d_v]
            y_gd = level.out_proj(read.reshape(1, 1, -1))
            step = TokenStep(
                number=t + 1, key=k.numpy().copy(), value=v.numpy().copy(),
                eta=eta.numpy().copy(), before=before.numpy().copy(),
                gd_update=update.numpy().copy(), gd_after=gd_after.numpy().copy(),
                level_after=level_after.numpy().copy(),
                max_diff=float((level_after - gd_after).abs().max()),
                read_diff=float((y_level - y_gd).abs().max()),
                objective_before=float(self._objective(before, k, v)),
                objective_after=float(self._objective(level_after, k, v)))
        self._states.append(self.state)
        self.state = new_state
        self.history.append(step)
        return step

    def back(self) -> TokenStep | None:
        """Forget the last token (the level's state goes back with it)."""
        if not self.history:
            return None
        self.history.pop()
        self.state = self._states.pop()
        return self.current


__all__ = ["GradientStepLesson", "TokenStep", "Rule", "RULES", "level_spec"]
