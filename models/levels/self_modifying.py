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
  The optimizer's ``eta`` scales η_t.
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

from nlstudio.models.chunked import chunk_write, collapse, mlp_backward, mlp_forward, write_plain
from nlstudio.models.inner_optim import make_optimizer
from nlstudio.models.levels.base import Level, LevelProbe, State
from nlstudio.models.levels.common import CausalConv1d, l2_normalize, merge_heads, split_heads

#: The stacked memories, in storage order.
MEMORIES = ("k", "v", "eta", "alpha", "mem")
K, V, ETA, ALPHA, MEM = range(5)


class SelfModifyingLevel(Level):
    kind = "self_modifying"

    def __init__(self, spec: dict, d_model: int, heads: int):
        super().__init__(spec, d_model, heads)
        if not isinstance(self.period, int) or isinstance(self.period, bool) or self.period < 1:
            raise ValueError(f"self_modifying: period must be a positive integer, "
                             f"got {self.period!r}")
        if d_model % heads:
            raise ValueError(f"self_modifying: d_model {d_model} is not divisible by {heads} "
                             f"heads")
        if self.objective not in self.info.objectives:
            raise ValueError(f"self_modifying: objective must be one of {self.info.objectives}")
        opt = make_optimizer(spec.get("optimizer"), default=self.info.default_optimizer)
        if opt.name not in self.info.optimizers:
            raise ValueError(f"self_modifying: inner optimizer must be one of "
                             f"{self.info.optimizers}, got {opt.name!r}")
        self.chunk = int(self.period)
        self.depth = int(self.option("depth"))
        if self.depth not in (1, 2):
            raise ValueError(f"self_modifying: depth must be 1 or 2, got {self.depth}")
        self.use_momentum = bool(self.option("momentum"))
        self.erase = opt.name == "dgd"
        self.eta = float(opt.hp["eta"])
        self.head_dim = dh = d_model // heads
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
    def init_state(self, batch: int, device=None, dtype=None) -> State:
        device, dtype = self._param_device_dtype(device, dtype)
        memories = tuple(p.to(device=device, dtype=dtype).unsqueeze(0).expand(batch, *p.shape)
                         for p in self.memory_init)
        state: State = {
            "t": 0, "updates": 0,
            "write_norms": torch.zeros(0, device=device, dtype=dtype),
            "last_write": None,
            "memories": memories,
            "pending": torch.zeros(batch, 0, self.d_model, device=device, dtype=dtype),
            "conv": torch.zeros(batch, max(self.conv.width - 1, 0), self.d_model,
                                device=device, dtype=dtype),
        }
        if self.use_momentum:
            state["momentum"] = tuple(torch.zeros(batch, *p.shape, device=device, dtype=dtype)
                                      for p in self.memory_init)
        return state

    def _generate(self, weights: list[Tensor], x: Tensor, q: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Eq. 84 at the anchor: ``k, v [N, C, dh]``, ``η, log α [N, C]`` and the read
        ``o = M_mem(q)`` (Eq. 94), one stacked forward of the five memories."""
        n, c, dh = x.shape
        inp = torch.cat((x.unsqueeze(1).expand(n, 4, c, dh), q.unsqueeze(1)), dim=1)
        y, _ = mlp_forward(weights, inp, self.depth > 1)
        r = self.readout.unsqueeze(1).expand(2, n // self.heads, self.heads, dh).reshape(2, n, 1, dh)
        rb = self.readout_bias.unsqueeze(1).expand(2, n // self.heads, self.heads).reshape(2, n, 1)
        eta = self.eta * torch.sigmoid((y[:, ETA] * r[0]).sum(-1) + rb[0])
        log_alpha = F.logsigmoid((y[:, ALPHA] * r[1]).sum(-1) + rb[1])
        return l2_normalize(y[:, K]), y[:, V], eta, log_alpha, y[:, MEM]

    def _write(self, weights: list[Tensor], moms: list, x: Tensor, q: Tensor,
               log_mu: Tensor | None) -> tuple[list[Tensor], list, Tensor]:
        """One chunk: generate at the anchor, read, then write all memories (Eqs. 84–90)."""
        k, v, eta, log_alpha, read = self._generate(weights, x, q)
        # targets and gradients at the anchor, every memory on the shared k and v
        residual = self.depth > 1
        pred, trace = mlp_forward(weights, k.unsqueeze(1), residual)
        v_hat = mlp_forward(weights, v.unsqueeze(1), residual)[0]
        # ½‖M(k) − v̂‖² → M(k) − v̂ (Eq. 93);  −⟨M(k), v̂⟩ → −v̂ (Eq. 92, sign derived)
        g = pred - v_hat if self.objective == "l2" else -v_hat
        deltas = mlp_backward(weights, trace, g)
        co = collapse(log_alpha.unsqueeze(1), eta.unsqueeze(1),
                      None if log_mu is None else log_mu.unsqueeze(1))
        erase = eta.unsqueeze(1) if self.erase else None
        new_w, new_m = [], []
        for l in range(self.depth):
            keys = trace.inputs[l]
            if erase is None:
                w_l, m_l = write_plain(weights[l], moms[l], deltas[l], keys, co.end())
            else:  # layer 0's key k is unit already; deeper layers erase along their unit input
                w_l, m_l = chunk_write(weights[l], moms[l], deltas[l], keys, co, erase=erase,
                                       x_hat=None if l == 0 else l2_normalize(keys))
            new_w.append(w_l)
            new_m.append(m_l)
        return new_w, new_m, read

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        b, t_new, _ = x.shape
        if state is None:
            state = self.init_state(b, x.device, x.dtype)
        if t_new == 0:
            return x.new_zeros(b, 0, self.d_model), {**state, "write_norms": x.new_zeros(0)}
        c, h, dh = self.chunk, self.heads, self.head_dim
        n_seq = b * h
        xc, history = self.conv(x, state["conv"])
        pending = state["pending"]
        p = pending.shape[1]
        xs = torch.cat((pending.to(x.dtype), xc), dim=1) if p else xc
        n = p + t_new
        full, rest = divmod(n, c)
        done = full * c

        q = l2_normalize(split_heads(self.to_q(xs), h)).view(n_seq, n, dh)
        xh = split_heads(xs, h).view(n_seq, n, dh)
        log_mu = None
        if self.use_momentum:
            log_mu = F.logsigmoid(self.to_momentum(xs)).transpose(1, 2).reshape(n_seq, n)
        weights = [w.reshape(n_seq, *w.shape[2:]) for w in state["memories"]]
        moms = ([m.reshape(n_seq, *m.shape[2:]) for m in state["momentum"]]
                if self.use_momentum else [None] * self.depth)

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
                    sq_norms.append(sum((nw[:, MEM] - w[:, MEM]).square().sum((-2, -1))
                                        for nw, w in zip(new_w, weights)))
                    if j == full - 1:
                        last_write = (new_w[0][0, MEM] - weights[0][0, MEM]).detach()
                weights, moms = new_w, new_m
        if rest:
            mem = [w[:, MEM] for w in weights]
            reads.append(mlp_forward(mem, q[:, done:], self.depth > 1)[0])
        o = torch.cat(reads, dim=1)[:, p:]  # pending tokens were read by an earlier call
        y = self.to_out(merge_heads(o.reshape(b, h, t_new, dh)))

        write_norms = torch.zeros(t_new, device=x.device, dtype=x.dtype)
        if full:
            per_chunk = torch.stack(sq_norms).view(full, b, h).sum(-1).sqrt().mean(-1)
            ends_at = torch.arange(1, full + 1, device=x.device) * c - 1 - p
            write_norms[ends_at] = per_chunk.to(x.dtype)
        new_state: State = {
            "t": state["t"] + t_new,
            "updates": state["updates"] + full,
            "write_norms": write_norms,
            "last_write": last_write,
            "memories": tuple(w.view(b, h, *w.shape[1:]) for w in weights),
            "pending": xs[:, done:],
            "conv": history,
        }
        if self.use_momentum:
            new_state["momentum"] = tuple(m.view(b, h, *m.shape[1:]) for m in moms)
        return y, new_state

    def probe(self, state: State) -> LevelProbe:
        norms = state.get("write_norms")
        last = state.get("last_write")
        return LevelProbe(
            memory=state["memories"][0][0, 0, MEM].detach().cpu(),
            write=None if last is None else last.detach().cpu(),
            updates=int(state["updates"]),
            write_norms=None if norms is None else norms.detach().cpu(),
        )
