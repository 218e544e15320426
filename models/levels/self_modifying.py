"""Self-modifying Titans, the memory of HOPE (Nested Learning, arXiv §8.1, Eqs. 84–97).

Keys, values, learning rates and retention are produced by memories that are themselves
written in context; only the query projection is fixed (the ablation keeps q static):

    x̃_t = conv(x)_t                                   (short causal conv, option ``conv``)
    k_t = M_k(x̃_t) (L2-normalised), v_t = M_v(x̃_t)     (Eq. 84: each projection is a memory)
    η_t = eta · σ(⟨r_η, M_η(x̃_t)⟩ + b_η),  α_t = σ(⟨r_α, M_α(x̃_t)⟩ + b_α)
    v̂_□,t = M_□(v_t)                                  (Eq. 84: every memory makes its own target)
    q_t = x̃_t W_q (L2-normalised),  o_t = M_mem(q_t)    (Eq. 94: read before write)
    M_□ ← M_□ (α_t I − η'_t k_t k_tᵀ) + η'_t v̂_□,t k_tᵀ,  η'_t = η_t / (1 + η_t‖k_t‖²)
                                                      (DGD, the exact proximal step; below)

for □ ∈ {k, v, η, α, mem}. ``period`` C is the chunk (Eq. 90): k, v, η, α, v̂ and every gradient
of a chunk come from the memories as they were at the chunk start (the anchor), the writes of
the chunk's tokens are applied in order when it completes (the erase term ``M_{t−1} k kᵀ`` uses
the running memory, through a triangular solve in models/chunked.py), and tokens inside a chunk
read the anchor. C = 1 is the exact recurrence.

DGD (optimizer ``dgd``, the default): one rule, the exact proximal step. For a matrix memory
and the objective ``L = ½‖M k − v̂‖²`` (arXiv App. C, Eq. 57),

    M⁺ = argmin_M ½‖M k − v̂‖² + ‖M − M_{t−1}‖²_F / (2η).

Setting the gradient to zero, ``(M k − v̂) kᵀ + (M − M_{t−1}) / η = 0``, so
``M (I + η k kᵀ) = M_{t−1} + η v̂ kᵀ``. Sherman–Morrison gives
``(I + η k kᵀ)⁻¹ = I − η' k kᵀ`` with ``η' = η / (1 + η‖k‖²)``, and
``η v̂ kᵀ (I − η' k kᵀ) = η (1 − η'‖k‖²) v̂ kᵀ = η' v̂ kᵀ``, hence

    M⁺ = M_{t−1} (I − η' k kᵀ) + η' v̂ kᵀ = M_{t−1} − η' (M_{t−1} k − v̂) kᵀ:

one erase term. Its fixed point is ``M k = v̂`` (repeating one pair, the error ``M k − v̂`` shrinks
by ``1 − η'‖k‖² = 1 / (1 + η‖k‖²)`` a step). Eq. 88 as printed, ``M(α I − η k kᵀ) − η ∇L``
with ``∇L = (M k − v̂) kᵀ``, erases twice, ``M(α I − 2η k kᵀ) + η v̂ kᵀ``, and settles at
``M k = v̂/2``: it puts the ℓ2 gradient where Eq. 57 has the value's ``−u``. Eq. 57 is the
regression of ``W x`` onto a value u by one proximal step, ``W(I − η' x xᵀ) + η' u xᵀ``; that is
the one meaning of ``dgd`` in the code base (``inner_optim``'s ``dgd`` is the same step, called
with ``grad = −u ⊗ x``; a test pins the identity). Here the value is the target, ``u = v̂``.
The retention α_t stays where Eq. 88 puts it, beside the identity (decoupled weight decay):
``M_t = M_{t−1}(α_t I − η'_t k kᵀ) + η'_t v̂ kᵀ``.

- ``½‖·‖²`` vs ``‖·‖²``: Eq. 88 writes ``‖M(k) − v̂‖²``; its proximal problem is ours with η
  doubled (``argmin ‖Mk − v̂‖² + ‖M − M₀‖²/(2η) = argmin ½‖Mk − v̂‖² + ‖M − M₀‖²/(2·2η)``).
  η_t = eta·σ(·) is learned, so the factor 2 is absorbed in η: our η_t is the paper's 2η_t.
- Dot objective ``L = −⟨M(k), v̂⟩``: DGD's erase is exactly the quadratic part of the ℓ2 loss
  (``½‖Mk − v̂‖² = ½‖Mk‖² − ⟨Mk, v̂⟩ + const``), so Eq. 92 (with the sign derived: its
  gradient is ``−v̂ kᵀ``, the write ``+ η v̂ kᵀ``; the paper prints ``−``) is the same step. With
  matrix memories the two objectives coincide under ``dgd``; they differ under ``sgd``.
- Depth 2, ``M(x) = x + W₁ silu(W₂ x)`` (Eq. 91): the same regression, layer by layer, each with
  its own anchor input as the key x and ``η' = η / (1 + η‖x‖²)``. The output layer W₁ (key
  ``h = silu(W₂ k)``) is linear in its output, so its step is the exact proximal step with the
  value the objective asks of it: ``u = v̂ − k`` for ℓ2 (the residual carries k), ``u = v̂`` for
  dot. The hidden layer W₂ has no closed-form proximal step (silu lies between); it takes
  Eq. 57 with its backpropagated surprise as the value, ``u = −δ``, ``δ = ∂L/∂(W₂ k)`` (as the
  ``mlp`` levels' ``dgd`` does with the task's surprise).
- Optimizer ``sgd``: ``M ← α M − η ∇L(M_anchor)`` per layer, no erase; the ℓ2 gradient then does
  its own (single) erase.

Other documented choices:
- Memories are per head (head dimension ``dh``), acting on the head's slice of the convolved
  input; all five are square ``dh → dh`` maps, so they are stored and written as one stacked
  tensor. η and α are scalars per head read out of M_η(x̃), M_α(x̃) by fixed (outer-learned)
  vectors r and biases b: the memory, not the readout, is what changes in context.
- v̂ is a target: the inner step treats it as a constant, the outer gradient flows through it.
- All memories share the one chunk C (the paper allows M_mem its own chunk size).
- Option ``momentum`` (default false, Eq. 88 has none): Titans-style momentum on the non-erase
  part of the writes, ``S_t = μ_t S_{t−1} + η'_t u_t x_tᵀ`` (``− η_t ∇L`` under sgd),
  ``M_t = M_{t−1}(α_t I − η'_t x xᵀ) + S_t``, with ``μ_t = σ(x̃_t w_μ + b_μ)`` a fixed linear
  gate per head.
- Initial memory states (and r, b, W_q, the conv and the output projection) are outer parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.chunked import (chunk_write, collapse, collapse_end, silu_grad,
                                     write_plain)
from nlstudio.models.levels.base import State
from nlstudio.models.levels.chunked_memory import ChunkedMemoryLevel
from nlstudio.models.levels.common import (L2_EPS, CausalConv1d, l2_normalize, merge_heads,
                                           split_heads)
from nlstudio.models.levels.self_modifying_chunk import SelfModifyingChunks


def dgd_write(w: Tensor, mom: Tensor | None, u: Tensor, key: Tensor, eta: Tensor,
              log_alpha: Tensor, log_mu: Tensor | None = None
              ) -> tuple[Tensor, Tensor | None]:
    """One chunk of DGD writes of a layer, token by token in order (exact, chunked):

        W_t = W_{t−1} (α_t I − η'_t x_t x_tᵀ) + η'_t u_t x_tᵀ,   η'_t = η_t / (1 + η_t ‖x_t‖²)

    (with momentum: ``S_t = μ_t S_{t−1} + η'_t u_t x_tᵀ``, ``W_t = W_{t−1}(α_t I − η'_t x_t x_tᵀ)
    + S_t``). ``w, mom [N, o, i]``; the values ``u [N, C, o]``, keys ``x [N, C, i]``; ``eta``,
    ``log_alpha``, ``log_mu [N, C]``. The erase reads the running memory W_{t−1}; what the
    caller gives (u, x, η, α) comes from the chunk's anchor. See the module docstring for the
    derivation (the exact proximal step of ½‖W x − u‖²)."""
    step = eta / (1 + eta * key.square().sum(-1))
    co = collapse(log_alpha, step, log_mu)
    return chunk_write(w, mom, -u, key, co, erase=step)


def _heads_major(t: Tensor) -> Tensor:
    """``[B, n, H, dh]`` -> ``[B·H, n, dh]``."""
    b, n, h, dh = t.shape
    return t.transpose(1, 2).reshape(b * h, n, dh)


#: The stacked memories, in storage order.
MEMORIES = ("k", "v", "eta", "alpha", "mem")
K, V, ETA, ALPHA, MEM = range(5)


class SelfModifyingLevel(ChunkedMemoryLevel):
    kind = "self_modifying"
    memory_key = "memories"

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        opt = self.make_inner_optimizer()
        self.depth = int(self.option("depth"))
        if self.depth not in (1, 2):
            raise ValueError(f"self_modifying: depth must be 1 or 2, got {self.depth}")
        self.use_momentum = bool(self.option("momentum"))
        self.erase = opt.name == "dgd"
        self.eta = float(opt.hp["eta"])
        dh = self.head_dim
        n_mem = len(MEMORIES)

        self.conv = CausalConv1d(d_model, int(self.option("conv")))
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)
        if self.depth == 1:  # near-identity matrices: k ≈ x̃, v ≈ x̃, v̂ ≈ v at the start
            init = [torch.eye(dh).expand(heads, n_mem, dh, dh)
                    + 0.1 / math.sqrt(dh) * torch.randn(heads, n_mem, dh, dh)]
        else:  # M(x) = x + W₁ silu(W₂ x): storage order [W₂ (first applied), W₁]
            init = [torch.randn(heads, n_mem, dh, dh) / math.sqrt(dh),
                    0.1 * torch.randn(heads, n_mem, dh, dh) / math.sqrt(dh)]
        self.memory_init = nn.ParameterList(nn.Parameter(w.clone()) for w in init)
        self.readout = nn.Parameter(torch.randn(2, heads, dh) / math.sqrt(dh))  # r_η, r_α
        self.readout_bias = nn.Parameter(torch.tensor([0.0, 4.0]).repeat_interleave(heads)
                                         .view(2, heads))  # η ≈ eta/2, α ≈ 0.98
        if self.use_momentum:
            self.to_momentum = nn.Linear(d_model, heads)
            with torch.no_grad():
                self.to_momentum.weight.mul_(0.1)
                self.to_momentum.bias.fill_(2.2)  # μ ≈ 0.9

    # ---------------------------------------------------------------------------------------
    # The five memories share their keys (k for the first layer) and their gates, and DGD acts
    # on each memory's input side, so the first layers of all five are one stacked matrix
    # ``[N, 5·out, in]`` (rows = the memories' outputs) and every shared-key operation is one
    # plain batched matmul. Second layers (depth 2) have per-memory inputs: batch ``N·5``.
    def _memories(self, ws: list[Tensor], inp: Tensor
                  ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """All five memories on the shared input ``inp [N, n, dh]``: outputs feature-major
        ``[N, 5, dh, n]``, plus (depth 2) the first layer's pre-activations ``[N, 5·dh, n]``
        and hidden activations ``[N·5, dh, n]``."""
        n_seq, n, dh = inp.shape
        z = torch.matmul(ws[0], inp.transpose(1, 2))  # W hᵀ: ∂/∂W comes back contiguous
        if self.depth == 1:
            return z.view(n_seq, len(MEMORIES), dh, n), None, None
        hidden = F.silu(z).view(n_seq * len(MEMORIES), -1, n)
        out = torch.matmul(ws[1], hidden).view(n_seq, len(MEMORIES), dh, n)
        return out + inp.transpose(1, 2).unsqueeze(1), z, hidden  # M(x) = x + W₁ silu(W₂ x)

    @staticmethod
    def _flat(memories, n_seq: int) -> list[Tensor]:
        """State ``[B, H, 5, o, i]`` -> compute layout: first layer ``[N, 5·o, i]`` (stacked
        rows), second layer ``[N·5, o, i]``."""
        first, *second = memories
        return [first.reshape(n_seq, -1, first.shape[-1])] + \
            [w.reshape(n_seq * len(MEMORIES), *w.shape[-2:]) for w in second]

    def _unflat(self, weights: list[Tensor], b: int, h: int) -> tuple[Tensor, ...]:
        first, *second = weights
        dh = self.head_dim
        return (first.view(b, h, len(MEMORIES), -1, dh),
                *(w.view(b, h, len(MEMORIES), *w.shape[-2:]) for w in second))

    def _gate(self, y: Tensor, which: int) -> Tensor:
        """``⟨r, y⟩ + b`` per token for a memory output ``y [N, dh, C]`` -> ``[N, C]``."""
        n_seq = y.shape[0]
        r = self.readout[which].expand(n_seq // self.heads, -1, -1).reshape(n_seq, -1, 1)
        b = self.readout_bias[which].expand(n_seq // self.heads, -1).reshape(n_seq, 1)
        return (y * r).sum(1) + b

    def _write(self, ws: list[Tensor], moms: list, x: Tensor, q: Tensor,
               log_mu: Tensor | None) -> tuple[list[Tensor], list, Tensor]:
        """One chunk (Eqs. 84–90): generate k, v, η, α and read at the anchor, then write all
        memories with the chunk's anchor targets and gradients. ``ws``: [first layers
        ``[N, 5·o, dh]``, second layers ``[N·5, dh, h]``]; ``x, q [N, C, dh]``. Returns new
        weights, momenta and the chunk's reads ``[N, C, dh]``."""
        n_seq, c, dh = x.shape
        n_mem = len(MEMORIES)
        y, _, _ = self._memories(ws, torch.cat((x, q), dim=1))  # Eq. 84 and the read (Eq. 94)
        k = l2_normalize(y[:, K, :, :c].transpose(1, 2))
        v = y[:, V, :, :c].transpose(1, 2)
        eta = self.eta * torch.sigmoid(self._gate(y[:, ETA, :, :c], 0))  # [N, C]
        log_alpha = F.logsigmoid(self._gate(y[:, ALPHA, :, :c], 1))
        read = y[:, MEM, :, c:].transpose(1, 2)

        # targets v̂ = M(v) and predictions M(k) at the anchor, every memory on the shared k, v
        out, z, hidden = self._memories(ws, torch.cat((k, v), dim=1))
        pred, v_hat = out[..., :c], out[..., c:]
        # ∂L/∂M(k): ½‖M(k) − v̂‖² → M(k) − v̂ (Eq. 93);  −⟨M(k), v̂⟩ → −v̂ (Eq. 92, sign derived)
        g = pred - v_hat if self.objective == "l2" else -v_hat  # [N, 5, dh, C]
        d0 = None
        if self.depth == 2:  # the hidden layer's backpropagated surprise δ = ∂L/∂(W₂ k)
            d0 = silu_grad(torch.matmul(ws[1].transpose(1, 2), g.reshape(n_seq * n_mem, dh, c))
                           .view(n_seq, -1, c), z[..., :c])
        keys = [k] if self.depth == 1 else [k, hidden[..., :c].transpose(1, 2)]
        per_memory = lambda t: None if t is None else t.repeat_interleave(n_mem, 0)
        if self.erase:  # dgd: each layer regresses onto its value u (module docstring)
            if self.depth == 1:  # u = v̂, whichever the objective
                values = [v_hat.reshape(n_seq, n_mem * dh, c)]
            else:  # hidden layer: u = −δ (Eq. 57); output layer: u = v̂ − k (ℓ2) or v̂ (dot)
                u1 = v_hat - k.transpose(1, 2).unsqueeze(1) if self.objective == "l2" else v_hat
                values = [-d0, u1.reshape(n_seq * n_mem, dh, c)]
            new = [dgd_write(ws[0], moms[0], values[0].transpose(1, 2), keys[0], eta, log_alpha,
                             log_mu)]
            if self.depth == 2:  # per-memory hidden keys: the gates repeated per memory
                new.append(dgd_write(ws[1], moms[1], values[1].transpose(1, 2), keys[1],
                                     per_memory(eta), per_memory(log_alpha),
                                     per_memory(log_mu)))
        else:  # sgd: W ← α W − η ∇L, every layer with its own anchor gradient
            deltas = [g.reshape(n_seq, n_mem * dh, c)] if self.depth == 1 else \
                [d0, g.reshape(n_seq * n_mem, dh, c)]
            new = [write_plain(ws[0], moms[0], deltas[0].transpose(1, 2), keys[0],
                               collapse_end(log_alpha, eta, log_mu))]
            if self.depth == 2:
                new.append(write_plain(ws[1], moms[1], deltas[1].transpose(1, 2), keys[1],
                                       collapse_end(per_memory(log_alpha), per_memory(eta),
                                                    per_memory(log_mu))))
        new_w = [w_l for w_l, _ in new]
        new_m = [m_l for _, m_l in new]
        return new_w, new_m, read

    def _project(self, x: Tensor, history: Tensor | None) -> tuple[Tensor, Tensor]:
        """The short convolution of the inputs (k, v, η, α and q are read from it per chunk)
        and its new history."""
        return self.conv(x, history)

    def _memory_pass(self, x: Tensor, xc: Tensor, history: Tensor, state: State,
                     frozen: bool) -> tuple[Tensor, State]:
        """The chunks of one call on the convolved inputs ``xc``: the reads
        ``o [B·H, T, dh]`` of the call's new tokens and the new state (see :meth:`forward`)."""
        b, t_new, _ = x.shape
        c, h, dh = self.chunk, self.heads, self.head_dim
        n_seq = b * h
        split = self._chunks(xc, state)
        xs, p, n, full, rest, done = (split.xs, split.pending, split.n, split.full, split.rest,
                                      split.done)
        # per token and head [B, n, H, dh] (no copy); the paths below take what they need
        q_tok = l2_normalize(self.to_q(xs).view(b, n, h, dh))
        x_tok = xs.view(b, n, h, dh)
        weights = self._flat(state["memories"], n_seq)
        if frozen:
            o = self._memories(weights, _heads_major(q_tok[:, p:]))[0][:, MEM].transpose(1, 2)
            return o, self._next_state(
                state, split, t_new, x.new_zeros(t_new), state["last_write"],
                state["memories"], state.get("momentum"), history, wrote=False)
        if self.fused:
            return self._fused_pass(x, split, q_tok, x_tok, weights, state, history)
        q, xh = _heads_major(q_tok), _heads_major(x_tok)
        log_mu = None
        if self.use_momentum:
            log_mu = F.logsigmoid(self.to_momentum(xs)).transpose(1, 2).reshape(n_seq, n)
        moms = (self._flat(state["momentum"], n_seq) if self.use_momentum
                else [None] * self.depth)

        reads: list[Tensor] = []
        sq_norms: list[Tensor] = []
        last_write = state["last_write"]
        if full:
            xcs = xh[:, :done].view(n_seq, full, c, dh).unbind(1)
            qcs = q[:, :done].view(n_seq, full, c, dh).unbind(1)
            mus = (log_mu[:, :done].view(n_seq, full, c).unbind(1) if log_mu is not None
                   else [None] * full)
            for j in range(full):
                new_w, new_m, read = self._write(weights, moms, xcs[j], qcs[j], mus[j])
                reads.append(read)
                with torch.no_grad():  # the probes follow the main memory M_mem
                    changes = [a[:, :, MEM] - b_[:, :, MEM] for a, b_ in
                               zip(self._unflat(new_w, b, h), self._unflat(weights, b, h))]
                    sq_norms.append(sum(d.square().sum((-2, -1)) for d in changes))
                    if j == full - 1:
                        last_write = changes[0][0, 0].clone()
                weights, moms = new_w, new_m
        if rest:
            reads.append(self._memories(weights, q[:, done:])[0][:, MEM].transpose(1, 2))
        o = torch.cat(reads, dim=1)[:, p:]  # pending tokens were read by an earlier call

        per_chunk = None
        if full:  # [full, B, H] -> [full]
            per_chunk = torch.stack(sq_norms).sum(-1).sqrt().mean(-1)
        write_norms = self._write_norm_series(per_chunk, split, t_new, x)
        return o, self._next_state(
            state, split, t_new, write_norms, last_write, self._unflat(weights, b, h),
            self._unflat(moms, b, h) if self.use_momentum else None, history)

    def _fused_pass(self, x: Tensor, split, q_tok: Tensor, x_tok: Tensor,
                    weights: list[Tensor], state: State, history: Tensor
                    ) -> tuple[Tensor, State]:
        """:meth:`_memory_pass` with all complete chunks in one node
        (models/levels/self_modifying_chunk.py), fed chunk-major ``[J, B·H, C, dh]``."""
        b, t_new, _ = x.shape
        c, h, dh = self.chunk, self.heads, self.head_dim
        n_seq = b * h
        full, done, p = split.full, split.done, split.pending
        w = weights[0]
        reads: list[Tensor] = []
        last_write, per_chunk = state["last_write"], None
        if full:
            chunk_major = lambda t: (t[:, :done].view(b, full, c, h, dh).permute(1, 0, 3, 2, 4)
                                     .reshape(full, n_seq, c, dh))
            per_seq = lambda t: t.expand(b, *t.shape).reshape(n_seq, *t.shape[1:])
            w, read, steps, last_write = SelfModifyingChunks.apply(
                self.eta, w, chunk_major(x_tok), chunk_major(q_tok),
                per_seq(self.readout[0]), per_seq(self.readout_bias[0]),
                per_seq(self.readout[1]), per_seq(self.readout_bias[1]), L2_EPS)
            reads.append(read.transpose(0, 1).reshape(n_seq, done, dh))
            per_chunk = steps.view(full, b, h).sum(-1).sqrt().mean(-1)  # [full]
        if split.rest:
            reads.append(self._memories([w], _heads_major(q_tok[:, done:]))[0][:, MEM]
                         .transpose(1, 2))
        o = torch.cat(reads, dim=1)[:, p:] if len(reads) > 1 else reads[0][:, p:]
        write_norms = self._write_norm_series(per_chunk, split, t_new, x)
        return o, self._next_state(state, split, t_new, write_norms, last_write,
                                   self._unflat([w], b, h), None, history)

    @property
    def fused(self) -> bool:
        """Depth 1, DGD, no momentum (every preset): a call's complete chunks are one fused node
        (models/levels/self_modifying_chunk.py) instead of the autograd path of ``_write``."""
        return self.depth == 1 and self.erase and not self.use_momentum

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """Reads ``o [B·H, T, dh]`` of the tokens of ``x`` -> the level's output
        ``[B, T, d_model]``."""
        return self.to_out(merge_heads(o.reshape(x.shape[0], self.heads, -1, self.head_dim)))

    def read(self, state: State, x: Tensor) -> Tensor:
        """``W_o M_mem(q(x))`` with the memories in ``state`` (as of the last completed write),
        each token of ``x`` read alone: the convolution sees no history (its newest tap only).
        Nothing is written."""
        b = x.shape[0]
        q = l2_normalize(split_heads(self.to_q(self.conv.alone(x)), self.heads))
        memories = tuple(m.expand(b, *m.shape[1:]) if m.shape[0] != b else m
                         for m in state["memories"])
        weights = self._flat(memories, b * self.heads)
        o = self._memories(weights, q.reshape(b * self.heads, -1, self.head_dim))[0][:, MEM]
        return self._output(o.transpose(1, 2), x)

    def activation_floats_per_token(self, seq_len: int) -> int:
        """Kept for the backward pass, per token: input, norm, output, the convolved input, q,
        the five memories' outputs on the inputs, queries, keys and values and the targets
        and gradients built from them (40·d, and 72·d more for the hidden layer of depth 2),
        the C×C coefficient and erase matrices of a chunk (8·heads·C, five times more for the
        per-memory hidden keys of depth 2), and per chunk one copy of every memory (three with
        momentum), ``⌈T/C⌉`` chunks spread over the T tokens. Fitted to the tensors autograd
        actually saves (tests/models/test_level_api_kinds.py checks it). The fused node of a
        call's chunks keeps less: 18·d (inputs, queries, the memories' generating outputs,
        keys, ``A_prev k − v``, the solve's solution, and the level's projections around the
        node), per head the C×C Gram, decayed-Gram and triangular matrices, the (C+1)² decays
        of a chunk and five per-token gates, and every anchor memory (``⌈T/C⌉ + 1``)."""
        d, c = self.d_model, self.chunk
        if self.fused:
            copies = (math.ceil(seq_len / c) + 1) * sum(p.numel() for p in self.memory_init)
            per_head = 3 * c + (c + 1) ** 2 / c + 5
            return (18 * d + math.ceil(self.heads * per_head)
                    + math.ceil(copies / max(seq_len, 1)))
        per = 40 * d + 72 * d * (self.depth - 1)
        per += 8 * self.heads * c * (1 + len(MEMORIES) * (self.depth - 1))
        copies = math.ceil(seq_len / c) * sum(p.numel() for p in self.memory_init)
        copies *= 3 if self.use_momentum else 1
        return per + math.ceil(copies / max(seq_len, 1))

    def _probe_memory(self, state: State) -> Tensor:
        return state["memories"][0][0, 0, MEM]
