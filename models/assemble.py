"""``build_model``: levels + edges -> one ``nn.Module`` (docs/internals.md §3).

Embedding (tokens) or a linear projection (features) -> the levels in topological order of the
edge DAG as pre-norm residual blocks ``h = in + level(RMSNorm(in))``, ``in`` = the sum of the
node's predecessors' outputs -> ``output`` = the sum of its predecessors -> RMSNorm -> head
(tied to the embedding by default for tokens).

CMS levels with the ``task`` objective learn in context from the model's own loss: the call is
processed in segments whose boundaries are the write positions (multiples of those levels'
periods, in stream coordinates); after each segment the gradient of that segment's summed
cross-entropy w.r.t. the fast weights it read is accumulated (detached: writes are not
differentiated through), and every level whose period is reached writes. With an outer graph
the levels from the first task level on then run once more over the whole call, each task
level reading every piece with the weights it had there: the same logits as the segments', with
the graph of one pass, so the outer backward of the whole sequence's loss is unchanged
(:meth:`NestedModel._segmented`). With no such level the forward is one pass.

Streams: the state a call returns continues the stream in the next call, and a stream cut
anywhere gives the logits and the final state of one call. Without explicit targets the target
of a token position is the stream's next token, so the positions whose target has not arrived
are held back in ``state["pending"]`` and committed by the next call (:meth:`NestedModel._stream`).
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.graph import INPUT, OUTPUT, checked_order, reachable, successors
from nlstudio.models.levels import LEVEL_CLASSES, LevelProbe
from nlstudio.models.levels.cms_reads import ChunkGradient, TaskRead
from nlstudio.models.precision import full_precision, widen
from nlstudio.models.task_pass import InnerPass, Record

IGNORE_INDEX = -100


def _detach(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach()
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detach(v) for v in obj)
    return obj


class NestedModel(nn.Module):
    """Levels wired by a DAG of edges; see the module docstring and docs/internals.md §3."""

    def __init__(self, model_spec: dict, vocab_size: int | None = None, *,
                 input_dim: int | None = None, n_outputs: int | None = None):
        super().__init__()
        if (vocab_size is None) == (input_dim is None):
            raise ValueError("give exactly one of vocab_size (token inputs) or input_dim "
                             "(feature inputs)")
        self.spec = dict(model_spec)
        d_model, heads = int(model_spec["d_model"]), int(model_spec.get("heads", 1))
        self.d_model, self.heads = d_model, heads
        self.token_inputs = vocab_size is not None
        tie = bool(model_spec.get("tie_embeddings", True)) and self.token_inputs
        if self.token_inputs:
            n_outputs = vocab_size if n_outputs is None else n_outputs
            if tie and n_outputs != vocab_size:
                raise ValueError(f"a tied head predicts the {vocab_size} input tokens, not "
                                 f"{n_outputs} outputs; set tie_embeddings to false")
            self.embed = nn.Embedding(vocab_size, d_model)
            # GPT-2's N(0, 0.02): with the tied head, N(0, 1) would start every prediction with
            # a logit of about d_model for the input token itself.
            nn.init.normal_(self.embed.weight, std=0.02)
        else:
            if n_outputs is None:
                raise ValueError("feature inputs need n_outputs")
            self.embed = nn.Linear(input_dim, d_model)
        self.n_outputs = int(n_outputs)
        self.tied = tie
        self.head = None if tie else nn.Linear(d_model, self.n_outputs, bias=False)
        self.final_norm = nn.RMSNorm(d_model)

        specs = list(model_spec.get("levels", []))
        ids = [str(s["id"]) for s in specs]
        self.order, self.preds = checked_order(ids, model_spec.get("edges", []))
        by_id = dict(zip(ids, specs))
        self.levels = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for lid in self.order:
            spec = by_id[lid]
            if spec.get("kind") not in LEVEL_CLASSES:
                raise ValueError(f"level {lid!r}: unknown kind {spec.get('kind')!r}; expected one "
                                 f"of {', '.join(LEVEL_CLASSES)}")
            if not lid or "." in lid or hasattr(self.levels, lid):
                raise ValueError(f"level id {lid!r} cannot name a module (empty, contains '.', "
                                 f"or is a reserved name)")
            self.levels[lid] = LEVEL_CLASSES[spec["kind"]](spec, d_model, heads)
            self.norms[lid] = nn.RMSNorm(d_model)
        self.task_levels = [lid for lid in self.order
                            if getattr(self.levels[lid], "needs_task_grad", False)]
        self._task_periods = sorted({self.levels[lid].period for lid in self.task_levels})
        succs = successors(self.order, model_spec.get("edges", []))
        after_task = set().union(*(reachable(lid, succs) for lid in self.task_levels))
        self._whole_segments = any(self.levels[lid].mixes_positions for lid in after_task)
        suffix = self.order[self.order.index(self.task_levels[0]):] if self.task_levels else []
        #: the inner pass by hand when only MLP blocks follow the first task level (None:
        #: autograd's, for any suffix)
        self._inner_pass = InnerPass(suffix) \
            if suffix and InnerPass.covers(self, suffix) else None

    # -- state --------------------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device | str | None = None) -> dict:
        p = self.final_norm.weight
        device = p.device if device is None else torch.device(device)
        return {"t": 0, "levels": {lid: self.levels[lid].init_state(batch, device, p.dtype)
                                   for lid in self.order}}

    @staticmethod
    def detach_state(state: dict) -> dict:
        """The same state with every tensor detached (cut the graph between training steps)."""
        return _detach(state)

    def probe(self, state: dict) -> dict[str, LevelProbe]:
        return {lid: self.levels[lid].probe(state["levels"][lid]) for lid in self.order}

    # -- forward ------------------------------------------------------------------------------
    def forward(self, inputs: Tensor, state: dict | None = None, targets: Tensor | None = None,
                silence: Iterable[str] = (), freeze: Iterable[str] = ()) -> tuple[Tensor, dict]:
        """``inputs``: tokens ``[B, T]`` or features ``[B, T, F]``; ``state``: from a previous
        call of the same stream (None: a fresh stream); ``targets [B, T]`` (−100: none) drive the
        ``task`` writes (None, for tokens: the stream's next tokens, see :meth:`_stream`).
        Two ablations by level id: ``silence`` replaces those levels' outputs by zero (what the
        model *depends on*); ``freeze`` stops their in-context writes while they keep reading
        and returning (what they *store*; parametric levels only). Returns logits
        ``[B, T, n_outputs]`` and the new state. In-context writes also happen under
        ``torch.no_grad()``."""
        ablation = self._ablation(silence, freeze)
        if state is None:
            state = self.init_state(inputs.shape[0], inputs.device)
        if self.task_levels and self.token_inputs and (targets is None or "pending" in state):
            return self._stream(inputs, state, targets, ablation)
        logits, levels = self._advance(inputs, state["levels"], int(state["t"]), targets,
                                       ablation)
        return logits, {"t": int(state["t"]) + inputs.shape[1], "levels": levels}

    def _ablation(self, silence: Iterable[str], freeze: Iterable[str]) -> _Ablation:
        silence, freeze = frozenset(silence), frozenset(freeze)
        for verb, ids in (("silence", silence), ("freeze", freeze)):
            unknown = ids - set(self.order)
            if unknown:
                raise ValueError(f"cannot {verb} unknown level(s) {sorted(unknown)}")
        stateless = sorted(lid for lid in freeze if not self.levels[lid].info.parametric)
        if stateless:
            raise ValueError(f"cannot freeze level(s) {stateless}: they write no memory in "
                             f"context (non-parametric); silence them instead")
        return _Ablation(silence, freeze)

    def _advance(self, inputs: Tensor, states: dict, t0: int, targets: Tensor | None,
                 ablation: _Ablation) -> tuple[Tensor, dict]:
        """Reads ``inputs`` from stream position ``t0`` and commits every write they complete:
        logits and the levels' new states."""
        h0 = self._embed(inputs)
        if not self.task_levels:
            return self._pass(h0, dict(states), ablation, {})
        return self._segmented(h0, t0, targets, dict(states), ablation)

    def _stream(self, inputs: Tensor, state: dict, targets: Tensor | None,
                ablation: _Ablation) -> tuple[Tensor, dict]:
        """Token inputs of a model with ``task`` levels, where a position's target is the
        stream's next token: a stream cut anywhere, even one token per call, gives the logits
        and the final state of one call.

        A position whose target has not arrived yet is held back: the call commits the
        positions before :meth:`_commit_end` (their targets are known, so every write they
        complete happens exactly as in one call), computes the logits of the rest from the
        committed state without committing it (:meth:`_peek`), and keeps their tokens as
        ``state["pending"]`` (``[B, m]``). The next call prepends them, with its own first
        token as the last one's target, and drops their repeated logits rows. ``state["t"]``
        counts the tokens read; the levels' states (and their probes) stand ``m`` tokens behind
        it, at the last committed position. Explicit ``targets`` commit everything (pending
        positions first, with the stream's next tokens as their targets). A held-back position
        is committed under the ablation of the call that commits it.
        """
        pending = state.get("pending")
        steps, t_read = inputs.shape[1], int(state["t"])
        if steps == 0:
            return self._head(self._embed(inputs)), dict(state)
        lead = 0 if pending is None else pending.shape[1]
        tokens = inputs if not lead else torch.cat((pending.to(inputs.device), inputs), 1)
        t0 = t_read - lead  # where the levels' states stand
        if targets is None:
            commit = self._commit_end(t0, t_read + steps) - t0
            targets = tokens[:, 1:commit + 1]
        else:
            commit = tokens.shape[1]
            if lead:
                targets = torch.cat((tokens[:, 1:lead + 1], targets), 1)
        levels, parts = dict(state["levels"]), []
        if commit:
            logits, levels = self._advance(tokens[:, :commit], levels, t0, targets, ablation)
            parts.append(logits)
        new = {"t": t_read + steps, "levels": levels}
        if commit < tokens.shape[1]:
            new["pending"] = tokens[:, commit:]
            parts.append(self._peek(new["pending"], levels, ablation))
        logits = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        return logits[:, lead:], new

    def _commit_end(self, t0: int, read: int) -> int:
        """How far a stream of ``read`` tokens can be committed, from ``t0``: up to its last
        position, whose target is still to come. When a level that mixes positions (attention,
        a recurrent memory) reads a task level's output, a segment's inner gradient has paths
        between its positions, so only whole segments are committed: up to the last write
        position (a multiple of a task level's period) at or before the last position."""
        last = read - 1
        if not self._whole_segments:
            return last
        return max(t0, max((last // c) * c for c in self._task_periods))

    def _peek(self, inputs: Tensor, states: dict, ablation: _Ablation) -> Tensor:
        """The logits of ``inputs`` read from ``states``, which stay as they are (nothing is
        committed: the new states are dropped). ``inputs`` must not cross a write position of a
        task level (every write due has been made, and :meth:`_commit_end` stops before)."""
        return self._pass(self._embed(inputs), dict(states), ablation,
                          self._fast(states, inputs.shape[1]))[0]

    def _fast(self, states: dict, steps: int) -> dict[str, TaskRead]:
        """How every task level reads ``steps`` tokens now (``W0 + Δ``, with the outer graph)."""
        return {lid: self.levels[lid].task_read(states[lid], steps) for lid in self.task_levels}

    def _embed(self, inputs: Tensor) -> Tensor:
        """The residual stream's start. Float32 under bf16 autocast too (a feature input's
        linear projection would make it bfloat16; token embeddings are float32 already), so
        the residual sums stay float32 (models/precision.py)."""
        return widen(self.embed(inputs))

    def _head(self, h: Tensor) -> Tensor:
        h = self.final_norm(h)
        return F.linear(h, self.embed.weight) if self.tied else self.head(h)

    def _pass(self, h0: Tensor, states: dict, ablation: _Ablation,
              fast: dict[str, TaskRead], order: list[str] | None = None,
              outs: dict[str, Tensor] | None = None) -> tuple[Tensor, dict]:
        """Logits of one pass of ``order`` (default: every level) over ``h0`` (or on top of
        the outputs ``outs`` of the levels before it)."""
        outs, states = self._run(self.order if order is None else order,
                                 {INPUT: h0} if outs is None else outs, states, ablation, fast)
        return self._head(self._sum(OUTPUT, outs)), states

    def _sum(self, node: str, outs: dict[str, Tensor]) -> Tensor:
        preds = self.preds[node]
        total = outs[preds[0]]
        for p in preds[1:]:
            total = total + outs[p]
        return total

    def _run(self, order: list[str], outs: dict[str, Tensor], states: dict,
             ablation: _Ablation, fast: dict[str, TaskRead]
             ) -> tuple[dict[str, Tensor], dict]:
        """Runs ``order`` (a topologically ordered run of levels) on top of ``outs``."""
        outs, states = dict(outs), dict(states)
        for lid in order:
            inp = self._sum(lid, outs)
            options: dict[str, Any] = {}
            if lid in fast:
                options["fast"] = fast[lid]
            if lid in ablation.freeze:  # only then: a level may not know the keyword yet
                options["frozen"] = True
            y, states[lid] = self.levels[lid](self.norms[lid](inp), states[lid], **options)
            outs[lid] = inp if lid in ablation.silence else inp + y
        return outs, states

    def _segments(self, t0: int, steps: int) -> list[tuple[int, int]]:
        """Call-relative ``[start, end)`` pieces cut at every multiple of a task level's C."""
        cuts = {steps}
        for c in self._task_periods:
            cuts.update(range((t0 // c + 1) * c - t0, steps, c))
        bounds = [0, *sorted(cuts)]
        return list(zip(bounds[:-1], bounds[1:]))

    def _segmented(self, h0: Tensor, t0: int, targets: Tensor | None, states: dict,
                   ablation: _Ablation) -> tuple[Tensor, dict]:
        """The call cut into segments at the task levels' write positions.

        Levels before the first task level (the prefix) do not read what the task levels write:
        they run once over the whole call, with the outer graph if any. The rest (the suffix)
        runs segment by segment on a graph cut at the prefix's outputs (the *inner* pass: the
        segment's logits, its inner gradients, the states), and every task level whose period
        is reached writes. With an outer graph, the suffix then runs once more over the whole
        call from the states it started with (the *outer* pass), each task level reading every
        piece of the call with the weights its inner pass read there
        (models/levels/cms_reads.py): its logits are those of the inner passes, with the graph
        the outer backward needs, and the writes stay out of that graph.

        When only MLP blocks follow the first task level (the presets' shape), both passes
        are computed by hand (models/task_pass.py): each segment's forward without a graph
        and its inner backward written out, and instead of the second forward one autograd
        node whose backward runs over the segments' recorded activations."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError("CMS levels with the 'task' objective learn from gradients of the "
                               "model's loss while reading; run them under torch.no_grad(), "
                               "not torch.inference_mode()")
        outer_grad = torch.is_grad_enabled()
        segments = self._segments(t0, h0.shape[1])
        # the task levels that learn in this call (a frozen one reads, writes nothing)
        learning = [lid for lid in self.task_levels if lid not in ablation.freeze]
        learn = targets is not None and bool(learning)
        first = self.order.index(self.task_levels[0])
        prefix, suffix = self.order[:first], self.order[first:]
        by_hand = self._inner_pass if learn and self._inner_pass is not None \
            and self._inner_pass.applies(h0, ablation.silence) else None
        record = Record() if by_hand is not None and outer_grad else None
        prefix_outs, states = self._run(prefix, {INPUT: h0}, states, ablation, {})
        start = states
        cut = {k: v.detach() for k, v in prefix_outs.items()}
        states = {**states, **{lid: _detach(states[lid]) for lid in suffix}}
        weights = {lid: self.levels[lid].task_weights(states[lid]) for lid in self.task_levels}
        read = {lid: [] for lid in self.task_levels}  # per segment: the weights each one read
        sums = {lid: self.levels[lid].open_gradient(states[lid]) for lid in learning} \
            if learn else {}
        parts, norms, wrote = [], {lid: [] for lid in suffix}, set()
        for s, e in segments:
            tape = {lid: [] for lid in sums}
            fast = {lid: TaskRead(((0, e - s),), {n: (w,) for n, w in weights[lid].items()},
                                  outer=False, tape=tape.get(lid))
                    for lid in self.task_levels}
            for lid in self.task_levels:
                read[lid].append(weights[lid])
            outs = {k: v[:, s:e] for k, v in cut.items()}
            if by_hand is not None:  # the same segment without autograd (models/task_pass.py)
                logits, states = by_hand.step(self, outs, states, weights, targets[:, s:e], sums,
                                              ablation.freeze, record)
            else:
                with torch.enable_grad() if learn else torch.no_grad():
                    logits, states = self._pass(None, states, ablation, fast, suffix, outs)
                    if learn:
                        self._inner_grads(logits, targets[:, s:e], tape, sums)
            for lid in self.task_levels:
                level = self.levels[lid]
                if not level.write_due(states[lid]):
                    continue
                if lid in ablation.freeze:
                    states[lid] = level.skip_write(states[lid])
                else:  # Δ is set from the weights once, after the loop
                    grad = sums[lid] if lid in sums else states[lid]["grad"]
                    states[lid], weights[lid] = level.task_write(
                        states[lid], grad, weights[lid], clear=lid not in sums, settle=False)
                    wrote.add(lid)
            parts.append(logits.detach())
            if len(segments) > 1:
                for lid in suffix:
                    norms[lid].append(states[lid].get("write_norms"))
        for lid, total in sums.items():  # the sum of the chunk still open, dense again
            states[lid] = {**states[lid], "grad": total.total(states[lid]["grad"])}
        for lid in wrote:
            states[lid] = self.levels[lid].settle(states[lid], weights[lid])
        if len(segments) > 1:
            for lid, pieces in norms.items():
                if all(p is not None for p in pieces):
                    states[lid] = {**states[lid], "write_norms": torch.cat(pieces)}
        if not outer_grad:
            return (parts[0] if len(parts) == 1 else torch.cat(parts, 1)), states
        fast = {lid: self._runs(segments, read[lid]) for lid in self.task_levels}
        if record is not None:  # the segments' activations give the outer backward
            return by_hand.outer(self, record, fast, prefix_outs), states
        # the outer pass only reads: its task-level states are dropped (the inner pass wrote),
        # so they run frozen (no keys kept); the other levels' states carry the outer graph
        outer = _Ablation(ablation.silence, ablation.freeze | set(self.task_levels))
        logits, outer_states = self._pass(None, start, outer, fast, suffix, prefix_outs)
        for lid in suffix:
            if lid not in fast:
                states[lid] = outer_states[lid]
        return logits, states

    @staticmethod
    def _runs(segments: list[tuple[int, int]], read: list[dict]) -> TaskRead:
        """One read of the whole call: consecutive segments that read the same weights merge
        into one run."""
        runs, weights = [], []
        for (s, e), w in zip(segments, read):
            if weights and weights[-1] is w:
                runs[-1] = (runs[-1][0], e)
            else:
                runs.append((s, e))
                weights.append(w)
        return TaskRead(tuple(runs), {n: tuple(w[n] for w in weights) for n in weights[0]},
                        outer=True)

    def _inner_grads(self, logits: Tensor, targets: Tensor, tape: dict[str, list],
                     sums: dict[str, ChunkGradient]) -> None:
        """Adds to ``sums`` the gradient of a segment's summed cross-entropy w.r.t. the fast
        weights of the learning task levels. The inner pass ran on a graph cut at the first
        task level's input, so autograd walks only this segment's downstream graph (not
        everything upstream since the start of the call, which made the cost grow with T²);
        it stops at each level's pre-activation and output, and the weight gradients are their
        outer products with the layers' inputs (models/levels/cms_reads.py)."""
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        taps = [(lid, entry) for lid in tape for entry in tape[lid]]
        if not taps or not loss.requires_grad:
            return
        wanted = [t for _, entry in taps for t in entry[:2]]
        with full_precision(loss):  # a backward runs outside autocast (models/precision.py)
            grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        for i, (lid, entry) in enumerate(taps):
            self.levels[lid].task_gradient(entry, grads[2 * i], grads[2 * i + 1], sums[lid])


class _Ablation(NamedTuple):
    """The level ids whose outputs a call zeroes (``silence``) or whose writes it stops
    (``freeze``)."""

    silence: frozenset
    freeze: frozenset


def build_model(model_spec: dict, vocab_size: int | None = None, *,
                input_dim: int | None = None, n_outputs: int | None = None) -> NestedModel:
    """A :class:`NestedModel` for token inputs (``vocab_size``; ``n_outputs`` defaults to it)
    or feature inputs (``input_dim`` and ``n_outputs``)."""
    return NestedModel(model_spec, vocab_size, input_dim=input_dim, n_outputs=n_outputs)
