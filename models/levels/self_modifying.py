"""Self-modifying Titans, the memory of HOPE (Nested Learning, arXiv §8.1, Eqs. 84–97).

Keys, values, learning rates and retention are produced by memories that are themselves
written in context; only the query projection is fixed (the ablation keeps q static):

    x̃_t = conv(x)_t                                   (short causal conv, option ``conv``)
    k_t = M_k(x̃_t) (L2-normalised), v_t = M_v(x̃_t)     (Eq. 84: each projection is a memory)
    η_t = eta · σ(⟨r_η, M_η(x̃_t)⟩ + b_η),  α_t = σ(⟨r_α, M_α(x̃_t)⟩ + b_α)
    v̂_□,t = M_□(v_t)                                  (Eq. 84: every memory makes its own target)
    q_t = x̃_t W_q (L2-normalised),  o_t = M_mem(q_t)    (Eq. 94: read before write)
    M_□ ← M_□ (α_t I − η_t k_t k_tᵀ) − η_t ∇L(M_□; k_t, v̂_□,t)   (Eq. 88, DGD with decay)

for □ ∈ {k, v, η, α, mem}. ``period`` C is the chunk (Eq. 90): k, v, η, α, v̂ and every gradient
of a chunk come from the memories as they were at the chunk start (the anchor), the writes of
the chunk's tokens are applied in order when it completes (the erase term ``M_{t−1} k kᵀ`` uses
the running memory, through a triangular solve in models/chunked.py), and tokens inside a chunk
read the anchor. C = 1 is the exact recurrence.

Documented choices:
- Memories are per head (head dimension ``dh``), acting on the head's slice of the convolved
  input; all five are square ``dh → dh`` maps, so they are stored and written as one stacked
  tensor. η and α are scalars per head read out of M_η(x̃), M_α(x̃) by fixed (outer-learned)
  vectors r and biases b: the memory, not the readout, is what changes in context.
- Depth 1: matrix memories ``M(x) = W x`` (Eqs. 92/93). Depth 2: residual MLPs
  ``M(x) = x + W₁ silu(W₂ x)`` with hidden width dh (Eq. 91); Eq. 88 is applied per layer with
  the layer's anchor input as the key, unit-normalised in the erase term so that
  ``α I − η x̂ x̂ᵀ`` stays a contraction like the first layer's (whose key k is already unit).
- L2 objective: ``L = ½‖M(k) − v̂‖²``, so the matrix case is Eq. 93 exactly as printed.
  Dot objective: ``L = −⟨M(k), v̂⟩``, whose gradient is ``−v̂ kᵀ``; the write is therefore
  ``M(α I − η k kᵀ) + η v̂ kᵀ`` (Eq. 92 prints ``− η v̂ kᵀ``; we follow the derivation).
- v̂ is a target: the inner gradient treats it as a constant, the outer gradient flows through it.
- All memories share the one chunk C (the paper allows M_mem its own chunk size).
- Optimizer ``dgd`` (default) is Eq. 88; ``sgd`` drops the ``η k kᵀ`` erase (keeps α_t decay).
  The optimizer's ``eta`` scales η_t. Eq. 88 is applied as printed (η_t in both terms, chunked
  in closed form), not through the implicit Sherman–Morrison step of inner_optim's ``dgd``
  (η' = η / (1 + η‖x‖²)): only the optimizer's name and ``eta`` are read.
- Option ``momentum`` (default false, Eq. 88 has none): Titans-style momentum on the writes,
  ``S_t = μ_t S_{t−1} − η_t ∇L``, ``M_t = M_{t−1}(α_t I − η_t k kᵀ) + S_t``, with
  ``μ_t = σ(x̃_t w_μ + b_μ)`` a fixed linear gate per head.
- Initial memory states (and r, b, W_q, the conv and the output projection) are outer parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.chunked import chunk_write, collapse, silu_grad, write_plain
from nlstudio.models.levels.base import State
from nlstudio.models.levels.chunked_memory import ChunkedMemoryLevel
from nlstudio.models.levels.common import CausalConv1d, l2_normalize, merge_heads, split_heads

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
        memories with the chunk's anchor gradients. ``ws``: [first layers ``[N, 5·o, dh]``,
        second layers ``[N·5, dh, h]``]; ``x, q [N, C, dh]``. Returns new weights, momenta and
        the chunk's reads ``[N, C, dh]``."""
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
        # ½‖M(k) − v̂‖² → M(k) − v̂ (Eq. 93);  −⟨M(k), v̂⟩ → −v̂ (Eq. 92, sign derived)
        g = pred - v_hat if self.objective == "l2" else -v_hat  # [N, 5, dh, C]
        co = collapse(log_alpha, eta, log_mu)
        erase = eta if self.erase else None
        if self.depth == 1:
            deltas = [g.reshape(n_seq, n_mem * dh, c)]
            keys = [k]
        else:
            d1 = g.reshape(n_seq * n_mem, dh, c)
            d0 = silu_grad(torch.matmul(ws[1].transpose(1, 2), d1).view(n_seq, -1, c),
                           z[..., :c])
            deltas = [d0, d1]
            keys = [k, hidden[..., :c].transpose(1, 2)]
        new_w, new_m = [], []
        for l in range(self.depth):
            co_l, erase_l, x_hat = co, erase, None  # layer 0: the unit key k, shared
            if l == 1:  # per-memory hidden inputs: gates repeated per memory, unit keys
                co_l = collapse(*(None if t is None else t.repeat_interleave(n_mem, 0)
                                  for t in (log_alpha, eta, log_mu)))
                erase_l = None if erase is None else erase.repeat_interleave(n_mem, 0)
                x_hat = l2_normalize(keys[l])
            if erase_l is None:
                w_l, m_l = write_plain(ws[l], moms[l], deltas[l].transpose(1, 2), keys[l],
                                       co_l.end())
            else:
                w_l, m_l = chunk_write(ws[l], moms[l], deltas[l].transpose(1, 2), keys[l], co_l,
                                       erase=erase_l, x_hat=x_hat)
            new_w.append(w_l)
            new_m.append(m_l)
        return new_w, new_m, read

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        b, t_new, _ = x.shape
        if state is None:
            state = self.init_state(b, x.device, x.dtype)
        if t_new == 0:
            return self._empty_call(x, state)
        c, h, dh = self.chunk, self.heads, self.head_dim
        n_seq = b * h
        xc, history = self.conv(x, state["conv"])
        split = self._chunks(xc, state)
        xs, p, n, full, rest, done = (split.xs, split.pending, split.n, split.full, split.rest,
                                      split.done)

        q = l2_normalize(split_heads(self.to_q(xs), h)).view(n_seq, n, dh)
        xh = split_heads(xs, h).view(n_seq, n, dh)
        log_mu = None
        if self.use_momentum:
            log_mu = F.logsigmoid(self.to_momentum(xs)).transpose(1, 2).reshape(n_seq, n)
        weights = self._flat(state["memories"], n_seq)
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
        y = self.to_out(merge_heads(o.reshape(b, h, t_new, dh)))

        per_chunk = None
        if full:  # [full, B, H] -> [full]
            per_chunk = torch.stack(sq_norms).sum(-1).sqrt().mean(-1)
        write_norms = self._write_norm_series(per_chunk, split, t_new, x)
        return y, self._next_state(
            state, split, t_new, write_norms, last_write, self._unflat(weights, b, h),
            self._unflat(moms, b, h) if self.use_momentum else None, history)

    def _probe_memory(self, state: State) -> Tensor:
        return state["memories"][0][0, 0, MEM]
