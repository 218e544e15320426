"""What a project describes, built: its task, its model, and the memory training them needs.

    task = build_task(project)            # sized by train.seq_len / train.seed / train.steps
    model = build_model(project)          # nlstudio.models.build_model sized for that task
    check_resources(project)              # ProjectError (path "model") before allocating a model
                                          # that cannot fit
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from nlstudio.models import build_model as assemble
from nlstudio.project import Project, ProjectError, construct_task, load_project, parse_project
from nlstudio.tasks import get_task
from nlstudio.tasks._util import TaskConfigError

FLOAT_BYTES = 4  # parameters, optimizer state and activations are float32


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
def _meta_model(project: Project, task) -> nn.Module:
    """The project's model on the ``meta`` device: every shape, no memory. Every level kind
    builds there (tests/core/test_project.py checks each), so the estimate asks the levels."""
    with torch.device("meta"):
        return _assemble(project, task)


def count_parameters(project: Project, task) -> int:
    """Exact, from the model built on the ``meta`` device (no memory is allocated)."""
    return sum(p.numel() for p in _meta_model(project, task).parameters())


def _activation_floats(levels: Iterable, d_model: int, n_outputs: int, batch: int,
                       seq_len: int) -> int:
    """Floats kept for the backward pass of one training step (a documented estimate):

    - every level: :meth:`Level.activation_floats_per_token` (its input, norm and output and
      whatever its own computation keeps: projections, gates, a hidden layer, attention
      weights);
    - in-context memories: one copy of the level's state (:meth:`Level.state_floats`) per
      sequence for every sequential step the outer gradient flows through
      (``⌈T / compute_chunk⌉``);
    - the embedding and the final norm (``2·d``), the logits and their gradient
      (``2·n_outputs``) per token.

    Doubled for the gradients of those activations during the backward pass.
    """
    per_token = 2 * n_outputs + 2 * d_model
    per_sequence = 0
    for level in levels:
        per_token += level.activation_floats_per_token(seq_len)
        chunk = level.compute_chunk
        if chunk:
            per_sequence += math.ceil(seq_len / chunk) * level.state_floats(1)
    return 2 * (batch * seq_len * per_token + batch * per_sequence)


def estimate_memory(project: Project | dict | str | os.PathLike, task=None) -> int:
    """Bytes one training step needs: parameters, their gradients and the outer optimizer's
    state (Adam/AdamW: two moments; SGD: one momentum buffer) plus the activations of
    :func:`_activation_floats`. An estimate meant to refuse what cannot fit, not a bound."""
    project = _as_project(project)
    if task is None:
        task = build_task(project)
    model = _meta_model(project, task)
    n_params = sum(p.numel() for p in model.parameters())
    opt, train = project.train.optimizer, project.train
    state = 2 if opt.name in ("adam", "adamw") else (1 if opt.momentum > 0 else 0)
    activations = _activation_floats(model.levels.values(), model.d_model, model.n_outputs,
                                     train.batch_size, train.seq_len)
    return (n_params * (2 + state) + activations) * FLOAT_BYTES


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
