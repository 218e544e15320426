"""The ``mlp`` kind: a feed-forward block, frozen in context or a Continuum Memory System level.

The block is ``y = W2 σ(W1 x)`` with σ = SiLU (as the deep memories of
:mod:`nlstudio.models.chunked`, whose analytic backward the local objectives reuse),
``W1 [hidden, d]``, ``W2 [d, hidden]``, ``hidden = expansion · d``, no biases (every weight is a
matrix that the matrix inner optimizers, e.g. DGD or Newton–Schulz in M3, can act on).

``period: null``: frozen in context (frequency 0); only the outer optimizer trains W1, W2.

``period: C``: a CMS level (NeurIPS Eq. 31 / arXiv Eq. 71). Each sequence has its own fast
weights ``W = W0 + Δ`` (``W0`` the outer parameters, so the outer optimizer learns the initial
state through the reads). Δ changes exactly when the stream position t reaches a multiple of C,
by one step of the level's inner optimizer on the SUM of the per-token inner gradients of the C
tokens since the previous write, all taken at the weights of that chunk (Eq. 31 sums
``η f(θ; x_t)`` over the chunk, so η is a per-token step size). Tokens ``[kC, (k+1)C)`` read the
weights after k writes.

Stateful inner optimizers (momentum, Adam, M3, DMGD, delta momentum): Eq. 31's f is "the error
component of an arbitrary optimizer"; we read it as the chunk's summed gradient, so a write is
ONE step of the optimizer and its state (a momentum, Adam's moments) advances once per chunk,
not once per token. Why: the weights do not change inside a chunk, so its C gradients are one
sample of the level's loss at one point, and the optimizer's memory then lives at the level's
own frequency (its α or β means the same decay per write for every C, as the optimizer of the
outer loop steps once per batch, not once per example). For SGD both readings are the same
write. (tests/models/test_cms.py pins the one-step write and that it differs from a per-token
momentum.)

Objectives (the inner loss whose gradient f is):

- ``task``: the model's own cross-entropy on the chunk's targets. A level cannot compute that
  alone, so the model drives it (models/assemble.py) through :meth:`MLPLevel.task_read` /
  ``forward(..., fast=)``, :meth:`MLPLevel.task_gradient`, :meth:`MLPLevel.write_due`,
  :meth:`MLPLevel.task_write` and :meth:`MLPLevel.settle` (by hand: :meth:`MLPLevel.accumulate`
  and :meth:`MLPLevel.write`); the write is not differentiated through (Δ is detached), the
  reads are. How the reads, the inner gradients and SGD's writes avoid a dense per-sequence
  weight per segment: models/levels/cms_reads.py.
- ``l2`` / ``dot``: a local associative objective on learned projections ``k = Wk x``,
  ``v = Wv x`` of the level input: ``Σ_t ‖M(k_t) − v_t‖²`` or ``−Σ_t ⟨M(k_t), v_t⟩`` with
  ``M = W2 σ(W1 ·)``. The level computes it itself in closed form, chunk by chunk, and the writes
  are differentiable (outer gradients reach W0, Wk, Wv through them).

Keys for key-using inner optimizers (DGD, arXiv Eq. 57): W1's key is the layer's input (x for
``task``, k for ``l2``/``dot``), W2's key is the hidden activation σ(W1 ·). With ``l2``/``dot``
DGD is one rule, as in ``self_modifying``: each layer regresses its output onto its target by
one exact proximal step (:func:`local_grads` with ``regress``), so repeating one pair settles at
``M(k) = v`` (an ℓ2 gradient fed to DGD would erase twice and settle at ``v/2``).

Frozen (``forward(..., frozen=True)``, the model's ``freeze``): the level reads with the weights
in its state and learns nothing from the call's tokens (no gradient summed, no key kept); a
chunk that ends while frozen is closed without a write (:meth:`MLPLevel.skip_write`: Δ, the
optimizer's state and ``updates`` stay, the chunk's gradient sum is dropped), so the writes of
later, unfrozen chunks stay on their multiples of C. The state's ``chunks`` counts the chunks
closed either way.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.chunked import mlp_backward, mlp_forward
from nlstudio.models.levels.base import Level, LevelProbe, State
from nlstudio.models.levels.cms_reads import (ChunkGradient, Factored, TaskRead, formed,
                                               linear_runs, sgd_write)
from nlstudio.models.precision import state_dtype, widen, writes_memory

WEIGHTS = ("w1", "w2")


def mlp_read(x: Tensor, w1: Tensor, w2: Tensor) -> tuple[Tensor, Tensor]:
    """``W2 σ(W1 x)`` with per-sequence weights ``[B, h, d]``, ``[B, d, h]`` and ``x [B, T, d]``;
    returns the output and the hidden activation ``σ(W1 x)`` (W2's key)."""
    hidden = F.silu(x @ w1.transpose(-1, -2))
    return hidden @ w2.transpose(-1, -2), hidden


def local_grads(w1: Tensor, w2: Tensor, k: Tensor, v: Tensor, objective: str,
                regress: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the local objective summed over the tokens of ``k, v [B, n, d]`` w.r.t.
    ``w1 [B, h, d]`` and ``w2 [B, d, h]`` (the anchor weights), and W2's key σ(W1 k).

    ``l2``: ``L = Σ_t ‖M(k_t) − v_t‖²`` (∂L/∂M(k) = 2(M(k) − v), as in ``titans``);
    ``dot``: ``L = −Σ_t ⟨M(k_t), v_t⟩`` (∂L/∂M(k) = −v), the Hebbian objective.
    Per layer the gradient is Σ_t δ_t h_tᵀ (surprise ⊗ layer input), one matmul per chunk, with
    δ from the analytic backward of :mod:`nlstudio.models.chunked` (differentiable).

    ``regress`` (the ``dgd`` inner optimizer): what is returned is ``−Σ_t u_t x_tᵀ`` for each
    layer's *target* u, the form DGD's proximal step ``W(I − η'x xᵀ) + η' u xᵀ`` expects (its
    erase already holds the quadratic part of the loss, so passing an ℓ2 gradient there would
    erase twice and settle at ``M(k) = v/2``). The output layer (linear in its output) regresses
    onto the value, ``u = v`` (for ``l2`` and ``dot`` alike: the exact proximal step of
    ``½‖W2 h − v‖²``). The hidden layer: ``l2`` asks its pre-activation to move down the
    objective's gradient, ``u = W1 k − δ`` with ``δ = ∂(½‖M(k) − v‖²)/∂(W1 k)`` (the step then
    is ``W1 − η δ kᵀ (I + η K Kᵀ)⁻¹``: preconditioned descent, at rest exactly when M(k) = v);
    ``dot`` has no target, so it keeps Eq. 57 with its surprise, ``u = −δ`` (as ``task`` does).
    Together: repeated writes of one pair settle at ``M(k) = v``.
    """
    out, trace = mlp_forward((w1, w2), k, residual=False)
    hidden = trace.inputs[1]
    if objective == "l2":
        err = (out - v) if regress else 2.0 * (out - v)
    elif objective == "dot":
        err = -v
    else:
        raise ValueError(f"no local objective {objective!r}")
    d1, d2 = mlp_backward((w1, w2), trace, err)
    if regress:
        d2 = -v
        if objective == "l2":
            d1 = d1 - trace.preacts[0]
    return d1.transpose(-1, -2) @ k, d2.transpose(-1, -2) @ hidden, hidden


class MLPLevel(Level):
    kind = "mlp"
    #: position-wise: within a segment each output reads only its own input (the weights
    #: change between segments, which the model drives)
    mixes_positions = False

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        if self.period is not None and (isinstance(self.period, bool)
                                        or not isinstance(self.period, int) or self.period < 1):
            raise ValueError(f"level {self.level_id!r}: period must be a positive integer or "
                             f"null, got {self.period!r}")
        if self.objective not in self.info.objectives:
            raise ValueError(f"level {self.level_id!r}: objective {self.objective!r} is not one "
                             f"of {', '.join(self.info.objectives)}")
        self.optimizer = self.make_inner_optimizer()
        # Keys (a chunk's layer inputs, B·C·(d + hidden) floats) are buffered only for rules
        # that read them (DGD).
        self.uses_key = self.optimizer.spec.uses_key
        self.hidden = int(self.option("expansion")) * d_model

        bound1, bound2 = 1.0 / math.sqrt(d_model), 1.0 / math.sqrt(self.hidden)
        self.w1 = nn.Parameter(torch.empty(self.hidden, d_model).uniform_(-bound1, bound1))
        self.w2 = nn.Parameter(torch.empty(d_model, self.hidden).uniform_(-bound2, bound2))
        if self.period is not None and self.objective != "task":
            self.wk = nn.Parameter(torch.empty(d_model, d_model).uniform_(-bound1, bound1))
            self.wv = nn.Parameter(torch.empty(d_model, d_model).uniform_(-bound1, bound1))

    # -- what the model asks -----------------------------------------------------------------
    @property
    def needs_task_grad(self) -> bool:
        """True when the model must supply the task gradient (objective ``task``, finite C)."""
        return self.period is not None and self.objective == "task"

    def fast_weights(self, state: State) -> dict[str, Tensor]:
        """The tensors the forward reads, ``W0 + Δ`` per sequence (``[B, ...]``)."""
        return {"w1": self.w1 + state["delta"]["w1"], "w2": self.w2 + state["delta"]["w2"]}

    def task_weights(self, state: State) -> dict[str, Tensor | None]:
        """What a ``task`` read uses (models/levels/cms_reads.py): ``W0 + Δ`` per sequence,
        detached, or None while Δ is zero (no write yet: ``W0`` itself is read)."""
        if state["updates"] == 0:
            return {n: None for n in WEIGHTS}
        return {n: getattr(self, n).detach() + state["delta"][n] for n in WEIGHTS}

    def task_read(self, state: State, steps: int, *, tape: list | None = None) -> TaskRead:
        """One read of ``steps`` tokens with the weights in ``state`` (the inner pass: a
        ``tape`` receives what the inner gradient needs, and the reads do not reach ``W0``)."""
        weights = self.task_weights(state)
        return TaskRead(((0, steps),), {n: (w,) for n, w in weights.items()},
                        outer=tape is None, tape=tape)

    def open_gradient(self, state: State) -> ChunkGradient:
        """The gradient summed over the open chunk, to be added to (nothing dense while no
        token of that chunk has been read since the last write: the sum is zero)."""
        empty = state["t"] == state["chunks"] * self.period
        return ChunkGradient(None if empty else state["grad"])

    def task_gradient(self, entry: tuple, d_z1: Tensor | None, d_y: Tensor | None,
                      into: ChunkGradient) -> None:
        """Adds the inner gradient of one tape ``entry`` (``(z1, y, x, σ(z1))``) to ``into``
        as factors: ``∂L/∂W1 = Σ_t δ1_t x_tᵀ``, ``∂L/∂W2 = Σ_t δ2_t σ(z1_t)ᵀ`` with
        ``δ1 = d_z1``, ``δ2 = d_y`` (None: the loss does not reach it, a zero gradient)."""
        _, _, x, hidden = entry
        if d_z1 is not None:
            into.add("w1", d_z1.detach(), x)
        if d_y is not None:
            into.add("w2", d_y.detach(), hidden)

    def write_due(self, state: State) -> bool:
        """Whether the stream has reached a multiple of C whose chunk is not closed yet."""
        return self.period is not None and state["t"] // self.period > state["chunks"]

    def accumulate(self, state: State, grads: dict[str, Tensor | None]) -> State:
        """Adds (detached) inner gradients w.r.t. :meth:`fast_weights` to the chunk's sum."""
        acc = dict(state["grad"])
        for name, g in grads.items():
            if g is not None:
                acc[name] = acc[name] + g.detach()
        return {**state, "grad": acc}

    def write(self, state: State) -> State:
        """One inner-optimizer step with the chunk's summed gradient (Eq. 31); resets the sum.

        The norm of the write lands on the last token of the current ``write_norms``: the write
        happens once that token (the chunk's last) has been read.
        """
        return self.task_write(state, state["grad"])[0]

    @writes_memory
    def task_write(self, state: State, grad: dict[str, Tensor] | ChunkGradient,
                   current: dict[str, Tensor | None] | None = None, *, clear: bool = True,
                   settle: bool = True) -> tuple[State, dict[str, Tensor]]:
        """:meth:`write` with the chunk's summed gradient ``grad`` given (dense, or as the
        model's :class:`ChunkGradient`, which this consumes); also returns the new weights
        ``W0 + Δ`` (detached for ``task``: what the next reads use). ``current``: the weights
        as :meth:`task_weights` gave them (saves rebuilding ``W0 + Δ``). ``clear=False`` leaves
        the state's gradient sum as it is (the model keeps the sum itself until the end of its
        call, models/assemble.py), else it is reset to zeros. ``settle=False`` leaves Δ as it
        was: the caller keeps the returned weights and sets Δ from them with :meth:`settle`
        before the state leaves its hands (one subtraction per call instead of per write).

        SGD with a factored sum takes the step as one batched matmul,
        ``W⁺ = W − η Σ_t δ_t k_tᵀ`` (the sum is never formed), and the write's norm
        ``η ‖Σ_t δ_t k_tᵀ‖`` from the factors' Gram matrices."""
        detach = self.objective == "task"
        delta, opt_state, keys = state["delta"], state["opt"], state["keys"]
        new_delta, new_opt, new_w, sq = {}, {}, {}, 0.0
        last_write = None
        factored = isinstance(grad, ChunkGradient)
        sgd = self.optimizer.name == "sgd" and detach
        for name in WEIGHTS:
            w0 = getattr(self, name)
            if detach:
                w0 = w0.detach()
            cur = None if current is None else current[name]
            pair = grad.factored(name) if factored and sgd else None
            if pair is not None:  # SGD: W⁺ = W − η Σ δᵀk, kept as factors up to the fold rank
                new, change_sq, change0 = sgd_write(cur, pair, self.optimizer.hp["eta"], w0,
                                                    self.fold_rank(w0), settle)
                new_opt[name] = opt_state[name]
                sq = sq + change_sq
                if name == "w1":
                    last_write = change0
            else:
                if isinstance(cur, Factored):
                    cur = cur.dense(w0)
                if cur is None:  # Δ = 0 (task_weights' None) is read as W0 for every sequence
                    cur = w0 + delta[name]
                g = grad.dense_of(name, delta[name]) if factored else grad[name]
                key = keys[name] if self.uses_key else None
                new, new_opt[name] = self.optimizer.step(cur, g, opt_state[name], key=key)
                if detach:
                    new = new.detach()
                change = (new - cur).detach()
                sq = sq + change.flatten(1).pow(2).sum(1)
                if name == "w1":
                    last_write = change[0]
            if settle:
                new_delta[name] = new - w0
            new_w[name] = new
        if factored:
            grad.clear()
        norms = state["write_norms"].clone()
        if norms.numel():
            norms[-1] = sq.sqrt().mean().to(norms.dtype)
        grad_sum = state["grad"]
        if clear:
            grad_sum = {n: torch.zeros_like(g).detach() for n, g in grad_sum.items()}
        return {**state, "delta": new_delta if settle else delta, "opt": new_opt, "grad": grad_sum,
                "keys": {n: k[:, :0] for n, k in keys.items()}, "updates": state["updates"] + 1,
                "chunks": state["chunks"] + 1, "write_norms": norms,  # else settle() forms it:
                "last_write": formed(last_write) if settle else last_write}, new_w  # once a call

    @writes_memory
    def settle(self, state: State, weights: dict[str, Tensor | Factored]) -> State:
        """``state`` with Δ = ``weights − W0`` (the weights :meth:`task_write` returned)."""
        delta = {}
        for name, w in weights.items():
            w0 = getattr(self, name).detach()
            if isinstance(w, Factored) and w.anchor is None:
                delta[name] = w.p.mT @ w.k  # Δ = pᵀk exactly, W0 never added
            else:
                delta[name] = (w.dense(w0) if isinstance(w, Factored) else w) - w0
        return {**state, "delta": delta, "last_write": formed(state["last_write"])}

    @staticmethod
    def fold_rank(w0: Tensor) -> int:
        """Factor tokens after which SGD writes are folded into a dense anchor: a quarter of
        the weight's smaller side (a factored read then costs at most ~1/4·(1/d_in + 1/d_out)
        of the dense one's flops per factor token on top, while writes and reads of dense
        weights, which are bound by memory traffic, happen that many times less often)."""
        return max(1, min(w0.shape) // 4)

    def skip_write(self, state: State) -> State:
        """Closes a chunk that ended while frozen: no write (Δ and the optimizer's state stay),
        the chunk's gradient sum and keys are dropped."""
        return {**state, "chunks": state["chunks"] + 1,
                "grad": {n: torch.zeros_like(g).detach() for n, g in state["grad"].items()},
                "keys": {n: k[:, :0] for n, k in state["keys"].items()}}

    # -- the Level contract -------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        device, dtype = self._param_device_dtype(device, dtype)
        state: State = {"t": 0, "updates": 0, "chunks": 0, "last_write": None,
                        "write_norms": torch.zeros(0, device=device, dtype=dtype)}
        if self.period is None:
            return state
        zeros = {n: torch.zeros(batch, *getattr(self, n).shape, device=device, dtype=dtype)
                 for n in WEIGHTS}
        key_dims = {"w1": self.d_model, "w2": self.hidden}
        state.update(
            delta=zeros,
            opt={n: self.optimizer.init(z) for n, z in zeros.items()},
            grad={n: torch.zeros_like(z) for n, z in zeros.items()},
            keys={n: torch.zeros(batch, 0, key_dims[n], device=device, dtype=dtype)
                  for n in WEIGHTS},
        )
        return state

    def forward(self, x: Tensor, state: State | None = None, *, frozen: bool = False,
                fast: TaskRead | None = None) -> tuple[Tensor, State]:
        """``fast``: how to read (objective ``task``: the model supplies it, see
        models/levels/cms_reads.py); ``frozen``: see the module docstring."""
        if state is None:
            state = self.init_state(x.shape[0], x.device, state_dtype(x))
        t0, steps = state["t"], x.shape[1]
        if self.period is None:
            y = F.linear(F.silu(F.linear(x, self.w1)), self.w2)
            return y, self.advanced(state, x)
        if self.objective == "task":
            return self._forward_task(x, state, fast, frozen)
        norms = x.new_zeros(steps, dtype=state["write_norms"].dtype).detach()
        if frozen:
            return self._forward_frozen(x, state, norms)
        return self._forward_local(x, state, norms)

    def read(self, state: State, x: Tensor) -> Tensor:
        """``W2 σ(W1 x)`` with the weights in ``state`` (``W0 + Δ``; frozen: the outer ones)."""
        if self.period is None:
            return F.linear(F.silu(F.linear(x, self.w1)), self.w2)
        w = self.fast_weights(state)
        return mlp_read(x, w["w1"], w["w2"])[0]

    def state_floats(self, batch: int = 1) -> int:
        """The fresh state (Δ, the optimizer's state, the chunk's gradient sum) plus the keys
        a key-using optimizer (DGD) buffers over a chunk: up to C rows of ``d + hidden``."""
        keys = batch * self.period * (self.d_model + self.hidden) \
            if self.period is not None and self.uses_key else 0
        return super().state_floats(batch) + keys

    def activation_floats_per_token(self, seq_len: int) -> int:
        """The base terms and the hidden layer, before and after σ (``2·hidden``)."""
        return super().activation_floats_per_token(seq_len) + 2 * self.hidden

    def probe(self, state: State) -> LevelProbe:
        memory = self.w1 if self.period is None else self.w1 + state["delta"]["w1"][0]
        last = state.get("last_write")
        return LevelProbe(memory=memory.detach(),
                          write=None if last is None else last.detach(),
                          updates=int(state["updates"]),
                          write_norms=state["write_norms"].detach())

    def extra_repr(self) -> str:
        base = f"id={self.level_id!r}, d={self.d_model}, hidden={self.hidden}, period={self.period}"
        if self.period is None:
            return base
        return f"{base}, objective={self.objective}, optimizer={self.optimizer.name}"

    # -- internals ----------------------------------------------------------------------------
    def advanced(self, state: State, x: Tensor, hidden: Tensor | None = None,
                 frozen: bool = False) -> State:
        """``state`` after a read of ``x`` that writes nothing (frozen in context, or a
        ``task`` read, whose writes the model drives): the stream position moves on, the
        call's write norms start at zero, and a key-using optimizer (DGD) of a learning
        ``task`` level keeps the read's keys ``x`` and ``hidden`` (σ(W1 x))."""
        norms = x.new_zeros(x.shape[1], dtype=state["write_norms"].dtype).detach()
        new = {**state, "t": state["t"] + x.shape[1], "write_norms": norms}
        if self.period is not None and self.uses_key and not frozen:
            keys = state["keys"]
            new["keys"] = {"w1": torch.cat((keys["w1"], widen(x.detach())), 1),
                           "w2": torch.cat((keys["w2"], widen(hidden.detach())), 1)}
        return new

    def _forward_task(self, x: Tensor, state: State, fast: TaskRead | None,
                      frozen: bool) -> tuple[Tensor, State]:
        """Reads as ``fast`` says (None: with the state's weights). A read with the outer graph
        that the model drives may span writes (its runs give each piece its weights; the model
        keeps the states of its inner pass instead); any other read must not."""
        t0, steps, c = state["t"], x.shape[1], self.period
        if (fast is None or not fast.outer) and (
                self.write_due(state) or (steps and t0 // c != (t0 + steps - 1) // c)):
            raise ValueError(
                f"level {self.level_id!r} (objective 'task', period {c}) cannot read tokens "
                f"[{t0}, {t0 + steps}) in one call: its weights change at every multiple of {c} "
                f"with the model's loss, so it must be driven by NestedModel (or by "
                f"accumulate()/write() between calls split at multiples of {c})")
        if fast is None:  # driven by hand: one read with the state's weights, outer graph
            fast = self.task_read(state, steps)
        z1 = linear_runs(x, self.w1, fast.runs, fast.weights["w1"], fast.outer)
        if fast.tape is not None and not z1.requires_grad:
            z1.requires_grad_()  # the first learning level of an inner pass: δ1 starts here
        hidden = F.silu(z1)
        y = linear_runs(hidden, self.w2, fast.runs, fast.weights["w2"], fast.outer)
        if fast.tape is not None:
            fast.tape.append((z1, y, x.detach(), hidden.detach()))
        return y, self.advanced(state, x, hidden, frozen)

    def _forward_frozen(self, x: Tensor, state: State, norms: Tensor) -> tuple[Tensor, State]:
        """l2/dot, frozen: one read with the weights as they are; chunks that end are closed
        without a write."""
        w = self.fast_weights(state)
        state = {**state, "t": state["t"] + x.shape[1], "write_norms": norms}
        if self.write_due(state):  # one or more chunks ended: all closed at once
            state = {**self.skip_write(state), "chunks": state["t"] // self.period}
        return mlp_read(x, w["w1"], w["w2"])[0], state

    @writes_memory
    def _forward_local(self, x: Tensor, state: State, norms: Tensor) -> tuple[Tensor, State]:
        """l2/dot: per chunk, read with the chunk's weights, add the chunk's local gradients
        (taken at those anchor weights) to the sum, write at each multiple of C. Reads and
        writes are differentiable: all in float32 under bf16 autocast (models/precision.py)."""
        x = widen(x)
        t0, steps, c = state["t"], x.shape[1], self.period
        k_all = F.linear(x, self.wk)
        v_all = F.linear(x, self.wv)
        ys, written = [], []
        start = 0
        while start < steps:
            t = t0 + start
            end = min(steps, start + c - t % c)
            w = self.fast_weights(state)
            ys.append(mlp_read(x[:, start:end], w["w1"], w["w2"])[0])
            k, v = k_all[:, start:end], v_all[:, start:end]
            g1, g2, hidden_k = local_grads(w["w1"], w["w2"], k, v, self.objective,
                                           regress=self.uses_key)
            grad = state["grad"]
            state = {**state, "t": t0 + end,
                     "grad": {"w1": grad["w1"] + g1, "w2": grad["w2"] + g2}}
            if self.uses_key:
                keys = state["keys"]
                state["keys"] = {"w1": torch.cat((keys["w1"], k), 1),
                                 "w2": torch.cat((keys["w2"], hidden_k), 1)}
            if self.write_due(state):
                state = self.write({**state, "write_norms": x.new_zeros(1)})
                written.append((end - 1, state["write_norms"][0]))
            start = end
        if written:  # writes complete every C tokens: one strided view takes them all
            # (no index tensor built from host memory, which would stop a CUDA graph capture)
            norms = norms.clone()
            norms[written[0][0]::c][:len(written)] = torch.stack(
                [n for _, n in written]).detach().to(norms.dtype)
        y = ys[0] if len(ys) == 1 else torch.cat(ys, 1)
        return y, {**state, "write_norms": norms}

