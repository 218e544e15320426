"""What a project describes, built: its task, its model, and the memory training them needs.

    task = build_task(project)            # sized by train.seq_len / train.seed / train.steps
    model = build_model(project)          # nlstudio.models.build_model sized for that task
    check_resources(project)              # ProjectError (path "model") before allocating a model
                                          # that cannot fit
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from nlstudio.project import Project, ProjectError, construct_task, load_project, parse_project

FLOAT_BYTES = 4  # parameters, optimizer state and activations are float32
#: Internal compute chunk of the matrix-memory levels (linear attention, delta rule): their
#: chunk-wise parallel form keeps one memory state per chunk for the backward pass.
MATRIX_CHUNK = 64


def _as_project(project: Project | dict | str | os.PathLike) -> Project:
    if isinstance(project, Project):
        return project
    if isinstance(project, dict):
        return parse_project(project)
    return load_project(project)


def _source(project: Project) -> str:
    return project.path.name if project.path else "<project>"


def build_task(project: Project | dict | str | os.PathLike,
               base_dir: str | os.PathLike | None = None, total_steps: int | None = None):
    """The project's task: ``get_task(name)(params, seq_len=train.seq_len, seed=train.seed)``,
    with ``total_steps`` (default ``train.steps``) and ``base_dir`` (default: the project
    file's folder) for the tasks that take them. A setting that does not fit (e.g. a missing
    ``text_file``) raises ProjectError at ``task.<field>``."""
    from nlstudio.tasks import get_task
    from nlstudio.tasks._util import TaskConfigError

    project = _as_project(project)
    if base_dir is None and project.path is not None:
        base_dir = project.path.parent
    train = project.train
    try:
        return construct_task(get_task(project.task.name), project.task.params, train.seq_len,
                          train.seed, total_steps or train.steps,
                          Path(base_dir) if base_dir is not None else None)
    except TaskConfigError as exc:
        raise ProjectError(_source(project), f"task.{exc.field}", exc.message) from None


def _assemble(project: Project, task) -> nn.Module:
    from nlstudio.models import build_model as assemble

    return assemble(project.model_spec(), vocab_size=task.vocab_size,
                    input_dim=task.input_dim, n_outputs=task.n_outputs)


def build_model(project: Project | dict | str | os.PathLike, task=None,
                base_dir: str | os.PathLike | None = None) -> nn.Module:
    """The project's model (``nlstudio.models.build_model``), sized for its task: token
    inputs (``vocab_size``) or features (``input_dim``), ``n_outputs`` classes."""
    project = _as_project(project)
    if task is None:
        task = build_task(project, base_dir)
    return _assemble(project, task)


# ---- memory ---------------------------------------------------------------------------------
def count_parameters(project: Project, task) -> int:
    """Exact, from the model built on the ``meta`` device (no memory is allocated); the
    analytic count of :func:`_analytic_parameters` if a level cannot be built there."""
    try:
        with torch.device("meta"):
            model = _assemble(project, task)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - any level that cannot live on meta: count analytically
        return _analytic_parameters(project, task)


def _analytic_parameters(project: Project, task) -> int:
    m = project.model
    d, heads = m.d_model, m.heads
    dh = d // heads
    n_out = task.n_outputs
    if task.vocab_size is not None:
        total = task.vocab_size * d + (0 if m.tie_embeddings else n_out * d)
    else:
        total = (task.input_dim or 1) * d + n_out * d
    for level in m.levels:
        o = level.options()
        total += 2 * d  # norms
        if level.kind == "attention":
            total += 4 * d * d
        elif level.kind in ("linear_attention", "delta"):
            total += 4 * d * d + 2 * d * heads
        elif level.kind == "titans":
            total += 4 * d * d + 3 * d * heads + heads * o["depth"] * o["expansion"] * dh * dh
        elif level.kind == "self_modifying":
            total += 7 * d * d * o["depth"]
        elif level.kind == "mlp":
            total += 2 * o["expansion"] * d * d
        if o.get("conv", 0) > 1:  # the short convolution on q, k, v
            total += 3 * d * o["conv"] if level.kind != "self_modifying" else 0
        if level.kind == "titans":  # the output norm and gate
            total += d * d + dh
    return total


def _fast_weights_per_sequence(level, d: int, heads: int) -> int:
    """Floats of one copy of a level's in-context memory for one sequence."""
    dh = d // heads
    o = level.options()
    if level.kind in ("linear_attention", "delta"):
        return heads * dh * dh
    if level.kind == "titans":
        return 2 * heads * o["depth"] * o["expansion"] * dh * dh  # memory + momentum
    if level.kind == "self_modifying":
        return 6 * heads * dh * dh * o["depth"] * (2 if o["momentum"] else 1)
    if level.kind == "mlp" and level.period is not None:
        return 2 * o["expansion"] * d * d
    return 0


def _activation_floats(project: Project, n_outputs: int) -> int:
    """Floats kept for the backward pass of one training step (a documented estimate):

    - every level: its input, norm and output, ``3·d`` per token, plus
      attention: q, k, v, o (``4·d``) and the softmax weights (``heads × min(T, window)``);
      matrix memories and Titans/HOPE: projections and gates (``6·d``); MLPs: the hidden layer
      (``2·expansion·d``);
    - in-context memories: one copy of the fast weights per sequence for every write the
      outer gradient flows through (``⌈T/C⌉`` chunks; ``⌈T/64⌉`` for the matrix memories'
      internal chunks);
    - the logits and their gradient (``2·n_outputs`` per token).

    Doubled for the gradients of those activations during the backward pass.
    """
    m, train = project.model, project.train
    b, t, d = train.batch_size, train.seq_len, m.d_model
    per_token = 2 * n_outputs + 2 * d
    per_sequence = 0
    for level in m.levels:
        per_token += 3 * d
        o = level.options()
        if level.kind == "attention":
            window = o["window"] or t
            per_token += 4 * d + m.heads * min(t, window)
        elif level.kind == "mlp":
            per_token += 2 * o["expansion"] * d
        else:
            per_token += 6 * d
        chunk = MATRIX_CHUNK if level.kind in ("linear_attention", "delta") else level.period
        if chunk:
            per_sequence += math.ceil(t / chunk) * _fast_weights_per_sequence(level, d, m.heads)
    return 2 * (b * t * per_token + b * per_sequence)


def estimate_memory(project: Project | dict | str | os.PathLike, task=None) -> int:
    """Bytes one training step needs: parameters, their gradients and the outer optimizer's
    state (Adam/AdamW: two moments; SGD: one momentum buffer) plus the activations of
    :func:`_activation_floats`. An estimate meant to refuse what cannot fit, not a bound."""
    project = _as_project(project)
    if task is None:
        task = build_task(project)
    n_params = count_parameters(project, task)
    opt = project.train.optimizer
    state = 2 if opt.name in ("adam", "adamw") else (1 if opt.momentum > 0 else 0)
    floats = n_params * (2 + state) + _activation_floats(project, task.n_outputs)
    return floats * FLOAT_BYTES


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(device: str = "auto") -> tuple[int | None, str]:
    """(free bytes, where) on the device ``train.device`` names; (None, ...) when unknown."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free), "GPU memory"
    return _meminfo_available(), "RAM"


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_resources(project: Project | dict | str | os.PathLike,
                    available_bytes: int | None = None, task=None) -> int:
    """Refuse (ProjectError at ``model``) a project whose :func:`estimate_memory` exceeds the
    free memory of its device, before anything is allocated. Returns the estimate."""
    project = _as_project(project)
    needed = estimate_memory(project, task)
    where = "as given"
    if available_bytes is None:
        available_bytes, where = available_memory(project.train.device)
    if available_bytes is not None and needed > available_bytes:
        train = project.train
        raise ProjectError(
            _source(project), "model",
            f"needs about {human_bytes(needed)} to train (parameters, optimizer state and "
            f"activations for {train.batch_size} × {train.seq_len} tokens) but only "
            f"{human_bytes(available_bytes)} is free ({where}); make d_model, the levels, "
            f"batch_size or seq_len smaller")
    return needed


__all__ = ["build_task", "build_model", "estimate_memory", "check_resources",
           "count_parameters", "available_memory", "human_bytes"]
