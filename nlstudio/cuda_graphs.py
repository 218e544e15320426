"""One training step's forward, loss and backward, captured once as a CUDA graph and replayed.

Why: the in-context memories run a sequential loop over chunks, each a few small kernels. On a
GPU at the lab's sizes that is launch-bound: Python and the autograd engine issue kernels more
slowly than the GPU runs them (docs/internals.md, "CUDA graphs"). A graph replays the whole
step's kernels from one launch.

What is captured: ``model(inputs, None, targets=targets)``, the task loss and ``backward()``.
The outer optimizer step, gradient clipping and the divergence check stay eager, so a NaN loss
still stops the run before its update is applied and warm-up changes of the learning rate take
effect. Every step of a run has the same shapes (fresh in-context state, fixed batch and
sequence length); a step with other shapes is captured anew. With ``graphs=False`` (the CPU,
torchrun's DDP with its gradient hooks, or the project's choice) every step runs eagerly, so
the trainer has one step path either way. If capture fails (an operation that syncs with the
host), the steps run eagerly and the reason is kept in :attr:`GraphedStep.disabled`.

``precision="bf16"`` (the project's ``train.precision``): the forward and the loss, captured or
eager, run under ``torch.autocast(<device type>, dtype=torch.bfloat16)``; the backward runs
outside it, as PyTorch recommends. Parameters, gradients and the optimizer's state stay float32
(autocast casts copies), the in-context memories keep float32 state (models/precision.py), and
the logits returned are float32. Evaluation and the probes never run here: they stay float32.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
from torch import Tensor, nn

WARMUP_CALLS = 2  # eager calls on a side stream before capture (the PyTorch recipe)
MAX_CAPTURES = 4  # shapes that keep changing: stop capturing
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # train.precision -> the autocast dtype


class GraphedStep:
    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 params: list[nn.Parameter], graphs: bool = True, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"train.precision: must be one of {', '.join(PRECISIONS)}, got "
                             f"{precision!r}")
        self.precision = precision
        self.graphs = graphs
        self.model = model
        self.loss_fn = loss_fn
        self.params = params
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple | None = None
        self.captures = 0
        self.disabled: str | None = None
        self._inputs = self._targets = None
        self._out: tuple | None = None

    def __call__(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, dict, Tensor]:
        """Runs one step; returns ``(logits, state, loss)`` with ``.grad`` of every parameter
        set (the graph's own buffers, overwritten by the next call)."""
        if self.graphs and self.disabled is None:
            key = (tuple(inputs.shape), inputs.dtype, tuple(targets.shape), targets.dtype)
            if key != self.key:
                self._capture(inputs, targets, key)
            if self.disabled is None:
                self._inputs.copy_(inputs)
                self._targets.copy_(targets)
                self.graph.replay()
                return self._out
        return self._eager(inputs, targets)

    @property
    def note(self) -> str:
        """How the steps ran on a GPU: replayed CUDA graphs, or eagerly and why."""
        if self.disabled:
            return f"CUDA graphs off ({self.disabled}); steps ran eagerly"
        return "CUDA graphs on" if self.graph is not None else ""

    def _eager(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, dict, Tensor]:
        for p in self.params:
            p.grad = None
        logits, state, loss = self._forward_loss(inputs, targets)
        loss.backward()
        return logits, state, loss

    def _forward_loss(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, dict, Tensor]:
        """The model and the task loss, under bf16 autocast when the precision asks for it
        (the logits come back float32 either way: what the metric reads)."""
        with self.autocast(inputs.device):
            logits, state = self.model(inputs, None, targets=targets)
            loss = self.loss_fn(logits, targets)
        return logits.float(), state, loss

    def autocast(self, device: torch.device) -> ContextManager:
        """The step's autocast context (none for ``fp32``). The cast weights are not cached
        across the step's uses when CUDA graphs capture it: a cache would hold copies made
        outside the graph's memory pool (PyTorch's rule for autocast in graphs)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=dtype, cache_enabled=not self.graphs)

    def _capture(self, inputs: Tensor, targets: Tensor, key: tuple) -> None:
        self.graph, self._out, self.key = None, None, key
        self.captures += 1
        if self.captures > MAX_CAPTURES:
            self.disabled = f"shapes changed {MAX_CAPTURES} times"
            return
        self._inputs, self._targets = inputs.clone(), targets.clone()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_CALLS):
                    self._eager(self._inputs, self._targets)
            torch.cuda.current_stream().wait_stream(side)
            for p in self.params:  # backward allocates .grad from the graph's pool
                p.grad = None
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits, state, loss = self._forward_loss(self._inputs, self._targets)
                loss.backward()
        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager
            self.disabled = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            torch.cuda.synchronize()
            for p in self.params:
                p.grad = None
            return
        self.graph, self._out = graph, (logits, state, loss)
