"""Titans neural memory (Behrouz et al., Titans, arXiv 2501.00663 §3): a deep MLP memory that
learns in context from its surprise, with momentum and a forget gate, written once per chunk.

Per head, with gates computed from the input:

    q, k, v = SiLU(conv(x W_q)), SiLU(conv(x W_k)), SiLU(conv(x W_v)); q, k L2-normalised
    ℓ(M; x_t) = ‖M(k_t) − v_t‖²   (objective "l2"; "dot": −⟨M(k_t), v_t⟩)
    S_t = η_t S_{t−1} − θ_t ∇ℓ(M_anchor; x_t)              (surprise with momentum)
    M_t = (1 − α_t) M_{t−1} + S_t                          (forget gate)
    o_t = M_anchor(q_t)                                     (read before write)
    y_t = W_o (RMSNorm(o_t) ⊙ SiLU(W_g x_t))               (norm and gate before the output)

The architecture of q, k, v and of the output follows Titans §4.4 ("Architectural Details"):
SiLU as the activation computing q, k and v, q and k L2-normalised, a 1-D depthwise causal
convolution after each of the q, k, v projections (option ``conv``: its width, 0 for none), and
"normalization and gating with a linear layer before the final output projection" (the paper
cites Mehta et al. 2023; we use the form of Gated DeltaNet / flash-linear-attention,
``RMSNorm(o) ⊙ SiLU(W_g x)``, the norm per head with one scale shared by the heads).

``period`` C is the chunk: gradients of a chunk's tokens are taken at the memory as it was at
the chunk start (the anchor) and the memory is written once, when the chunk completes; tokens
inside a chunk read the anchor (C = 1: the exact recurrence ``o_t = M_{t−1}(q_t)``). The
momentum and the decay inside the chunk collapse to coefficients (models/chunked.py), so the
only sequential loop is over chunks. The complete chunks of a call are one autograd node with a
hand-written backward (models/levels/titans_chunk.py) that loops over them: per chunk its keys
and its queries through the anchor (the inner gradient and the chunk's read), the analytic
backward of the inner gradient, and one batched-matmul write per layer.

Choices (documented here, visible in the inspector through the registry):
- one memory per head, of the head dimension ``dh = d_model / heads``; hidden width
  ``expansion · dh``; depth 1 is a matrix memory ``M(k) = W k``, depth ≥ 2 a residual MLP
  ``M(k) = k + W_L silu(… silu(W_1 k))``. titans-pytorch (after TTT) also puts a LayerNorm on
  the memory MLP's output inside the residual; the Titans paper does not describe one, and we
  leave it out (the inner gradient stays the plain MLP's, with its analytic backward);
- ℓ is ``‖·‖²`` as printed (Titans Eq. 12): its gradient 2(M(k) − v) keeps the 2 (in θ_t);
- θ_t = eta · σ(·), η_t = alpha · σ(·) (optimizer "momentum": eta, alpha are its
  hyper-parameters), α_t = σ(·), each a linear map of the input per head; optimizer "sgd" has
  no momentum (S_t = −θ_t ∇ℓ);
- initial memory weights are outer parameters (meta-learned), shared by all sequences.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.chunked import collapse_end, mlp_forward
from nlstudio.models.levels.base import State
from nlstudio.models.levels.chunked_memory import ChunkedMemoryLevel
from nlstudio.models.levels.common import (CausalConv1d, OutputNormGate, l2_normalize,
                                           split_heads)
from nlstudio.models.levels.titans_chunk import TitansChunks


class TitansLevel(ChunkedMemoryLevel):
    kind = "titans"
    memory_key = "weights"

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        opt = self.make_inner_optimizer()
        self.depth = int(self.option("depth"))
        self.expansion = int(self.option("expansion"))
        self.eta = float(opt.hp["eta"])
        # momentum decay scale; 0 (or optimizer "sgd") = no momentum memory at all
        self.momentum_scale = float(opt.hp.get("alpha", 0.0)) if opt.name == "momentum" else 0.0
        self.use_momentum = self.momentum_scale > 0
        dh = self.head_dim
        hidden = self.expansion * dh
        dims = [dh] + [hidden] * (self.depth - 1) + [dh]
        self.residual = self.depth > 1

        self.to_qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = CausalConv1d(3 * d_model, int(self.option("conv")))  # on q, k, v (§4.4)
        n_gates = 3 if self.use_momentum else 2
        self.to_gates = nn.Linear(d_model, n_gates * heads)  # θ_t, α_t (, η_t) per head
        self.out_gate = OutputNormGate(d_model, heads)  # Titans §4.4
        self.to_out = nn.Linear(d_model, d_model, bias=False)
        self.memory_init = nn.ParameterList(
            nn.Parameter(torch.randn(heads, dims[l + 1], dims[l]) / math.sqrt(dims[l]))
            for l in range(self.depth))
        with torch.no_grad():
            self.to_gates.weight.mul_(0.1)
            bias = self.to_gates.bias.view(n_gates, heads)
            bias[0].fill_(0.0)  # θ ≈ eta / 2
            bias[1].fill_(-4.0)  # α ≈ 0.018: the memory forgets slowly
            if self.use_momentum:
                bias[2].fill_(2.0)  # η ≈ 0.88 alpha: surprise is kept over several chunks

    # ---------------------------------------------------------------------------------------
    def _gates(self, xs: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(log(1 − α_t), θ_t, log η_t or None)`` per head, each ``[B·H, n]``."""
        b, n, _ = xs.shape
        z = self.to_gates(xs).view(b, n, -1, self.heads).permute(2, 0, 3, 1)
        z = z.reshape(-1, b * self.heads, n)  # [gate, B·H, n]
        # ℓ2's gradient is 2(M(k) − v): the 2 is folded into θ
        theta = (self.eta * (2.0 if self.objective == "l2" else 1.0)) * torch.sigmoid(z[0])
        log_keep = F.logsigmoid(-z[1])  # log(1 − α_t), α_t = σ(z)
        log_mu = (math.log(self.momentum_scale) + F.logsigmoid(z[2])
                  if self.use_momentum else None)
        return log_keep, theta, log_mu

    def _project(self, x: Tensor, history: Tensor | None) -> tuple[Tensor, Tensor]:
        """The convolved-and-activated q, k, v projections ``[B, T, 3·d_model]`` (before the
        heads are split and q, k normalised) and the convolution's new history. A pending
        token keeps its input (for the gates) and its q, k, v, so the convolution sees every
        token exactly once."""
        qkv, history = self.conv(self.to_qkv(x), history)
        return F.silu(qkv), history

    def _heads(self, z: Tensor, normalise: bool) -> Tensor:
        """``[B, n, d_model] -> [B·H, n, dh]``."""
        b, n, _ = z.shape
        z = split_heads(z, self.heads)
        return (l2_normalize(z) if normalise else z).reshape(b * self.heads, n, self.head_dim)

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """``o [B·H, T, dh]`` of the tokens of ``x [B, T, d_model]`` -> the level's output."""
        b, t, _ = x.shape
        return self.to_out(self.out_gate(o.reshape(b, self.heads, t, self.head_dim), x))

    def _memory_pass(self, x: Tensor, qkv: Tensor, history: Tensor, state: State,
                     frozen: bool) -> tuple[Tensor, State]:
        """The chunks of one call: the reads ``o [B·H, T, dh]`` of the call's new tokens and
        the new state (see :meth:`forward`)."""
        b, t_new, _ = x.shape
        c, h, dh = self.chunk, self.heads, self.head_dim
        n_mem = b * h
        split = self._chunks((x, qkv), state)
        p, n, full, rest, done = split.pending, split.n, split.full, split.rest, split.done
        xs, qkv = split.xs
        q, k, v = qkv.chunk(3, dim=-1)
        q, k, v = self._heads(q, True), self._heads(k, True), self._heads(v, False)
        weights = [w.reshape(n_mem, *w.shape[2:]) for w in state["weights"]]
        moms = ([m.reshape(n_mem, *m.shape[2:]) for m in state["momentum"]]
                if self.use_momentum else [None] * self.depth)
        if frozen:
            o = mlp_forward(weights, q[:, p:n], self.residual)[0]
            return o, self._next_state(
                state, split, t_new, x.new_zeros(t_new), state["last_write"], state["weights"],
                state.get("momentum"), history, wrote=False)

        reads: list[Tensor] = []  # [N, ·, dh]: the complete chunks' (and the rest's)
        per_chunk, last_write = None, state["last_write"]
        if full:
            log_keep, theta, log_mu = self._gates(xs[:, :done])
            end = collapse_end(log_keep.view(n_mem, full, c), theta.view(n_mem, full, c),
                               None if log_mu is None else log_mu.view(n_mem, full, c))
            l2 = self.objective == "l2"
            # the inner gradient is g = M(k) − v = Z_out + (k − v) for ℓ2, −v for dot
            bias = (k - v if self.residual else -v) if l2 else -v
            # the only sequential part: one node (models/levels/titans_chunk.py) that, chunk by
            # chunk, takes the gradients at the anchor, writes, and reads the anchor with the
            # chunk's queries (read before write)
            outs = TitansChunks.apply(l2, end.keep, end.from_s0, end.s_keep, end.grad,
                                      end.s_grad, k[:, :done], bias[:, :done], q[:, :done],
                                      *weights, *(moms if self.use_momentum else ()))
            weights = list(outs[:self.depth])
            if self.use_momentum:
                moms = list(outs[self.depth:2 * self.depth])
            read, sq_norms, last_write = outs[-3:]
            reads.append(read + q[:, :done] if self.residual else read)
            # [full, N] -> per chunk: the norm over heads, averaged over the batch
            per_chunk = sq_norms.view(full, b, h).sum(-1).sqrt().mean(-1)
        if rest:  # the tokens of the incomplete chunk read the last write's result
            reads.append(mlp_forward(weights, q[:, done:n], self.residual)[0])
        o = torch.cat(reads, dim=1) if len(reads) > 1 else reads[0]
        o = o[:, p:]  # pending tokens were read by an earlier call

        write_norms = self._write_norm_series(per_chunk, split, t_new, x)
        return o, self._next_state(
            state, split, t_new, write_norms, last_write,
            tuple(w.view(b, h, *w.shape[1:]) for w in weights),
            tuple(m.view(b, h, *m.shape[1:]) for m in moms) if self.use_momentum else None,
            history)

    def read(self, state: State, x: Tensor) -> Tensor:
        """``W_o(RMSNorm(M(q(x))) ⊙ SiLU(W_g x))`` with the memory in ``state`` (the weights of
        the last completed write), each token of ``x`` read alone: the convolution sees no
        history (its newest tap only). Nothing is written."""
        b = x.shape[0]
        q = F.silu(self.conv.alone(self.to_qkv(x)))[..., :self.d_model]
        weights = [w.expand(b, *w.shape[1:]) if w.shape[0] != b else w
                   for w in state["weights"]]
        weights = [w.reshape(b * self.heads, *w.shape[2:]) for w in weights]
        return self._output(mlp_forward(weights, self._heads(q, True), self.residual)[0], x)

    def _memory_floats(self) -> int:
        return sum(p.numel() for p in self.memory_init)

    def activation_floats_per_token(self, seq_len: int) -> int:
        """Kept for the backward pass, per token: input, norm, output (3·d), q, k, v through
        projection, convolution, activation and norm, the pending copies, the gates and the
        output's norm and gate (19·d together); per hidden layer of the memory, what the fused
        chunk node keeps (models/levels/titans_chunk.py): the keys' pre-activation, activation,
        backpropagated surprise and its input, the write's scaled surprise (and its momentum
        twin), the queries' pre-activation and activation (6, or 8 with momentum,
        ·expansion·d), less the scaled surprise (and twin) of the first hidden layer when it
        is wider than its input (expansion > 1: that write scales the layer's input instead,
        recomputed in the backward); and per chunk one copy of the memory (and of the
        momentum), its anchor (``⌈T/C⌉`` chunks, spread over the T tokens). Checked against
        the tensors autograd actually saves (tests/models/test_level_api_kinds.py)."""
        d = self.d_model
        scaled = 2 if self.use_momentum else 1
        wide_first = self.depth > 1 and self.expansion > 1
        hidden_terms = (6 + scaled) * (self.depth - 1) - (scaled if wide_first else 0)
        per = 22 * d + hidden_terms * self.expansion * d
        copies = math.ceil(seq_len / self.chunk) * self._memory_floats()
        copies *= 2 if self.use_momentum else 1
        return per + math.ceil(copies / max(seq_len, 1))

    def _pending_width(self) -> int:
        return 4 * self.d_model  # the input (for the gates) and its q, k, v

    def _probe_memory(self, state: State) -> Tensor:
        return state["weights"][0][0, 0]
