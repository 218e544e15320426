"""What the trainer publishes. Plain, immutable records carrying CPU numbers and numpy arrays
only, so any consumer (the CLI, the GUI's worker thread, a notebook, a test) can keep them
without holding torch tensors or device memory.

Every event carries the ``run_id`` of the run that produced it, so a consumer can drop late
events of a run it has already let go of.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nlstudio.run_state import EndReason, RunState
from nlstudio.runs.rows import StepMetrics


@dataclass(frozen=True)
class Started:
    run_id: str
    run_dir: str
    device: str  # "cpu" or "cuda:0"
    device_name: str  # e.g. "CPU (2 threads)" or "NVIDIA H100"
    start_step: int
    total_steps: int
    levels: tuple[str, ...]


@dataclass(frozen=True)
class Progress:
    run_id: str
    step: int  # steps completed
    total_steps: int
    loss: float
    metric: float
    tokens_per_s: float
    elapsed_s: float  # training time of this process so far, pauses excluded
    eta_s: float  # from the pace of this process's steps, pauses excluded
    phase: str


@dataclass(frozen=True)
class MetricsRow:
    """One row of metrics.csv: ``row`` is its flat mapping of columns
    (``StepMetrics.as_dict()``), ``metrics`` the same row typed."""

    run_id: str
    row: dict

    @property
    def metrics(self) -> StepMetrics:
        return StepMetrics.from_dict(self.row)


@dataclass(frozen=True)
class LevelSnapshot:
    """What a level holds after a forward pass. ``write_norms``/``updates``/``spectrum`` are
    its write *schedule* (when it writes, and how hard): a level written every C tokens peaks
    at 1/C whatever it writes. How fast its content changes is :class:`ContentRate`."""

    kind: str
    period: int | None  # None: frozen (or non-parametric for attention)
    frequency: float  # designed update frequency in updates/token: inf, 1/C or 0
    memory: np.ndarray | None  # 2-D float32
    write: np.ndarray | None  # 2-D float32, latest surprise ⊗ key write
    write_norms: np.ndarray | None  # [time] float32, write norm per token of the last sequence
    updates: int  # writes in the last sequence
    spectrum: tuple[np.ndarray, np.ndarray] | None  # (frequency in cycles/token, power)


@dataclass(frozen=True)
class ContentRate:
    """How fast what one level returns changes, measured on a held-out stream (definitions:
    ``nlstudio.probes``, "Content rate"). ``replaced[i]`` and ``energy[i]`` are the sums
    behind the drift at lag ``lags[i]`` (``drift = replaced / energy``): measurements of more
    streams pool by adding them (``probes.pool_content``)."""

    kind: str
    period: int | None
    designed: float  # the designed update frequency: inf, 1/C or 0
    frequency: float  # measured content frequency ν = 1/τ per token: inf = re-reads its
    #                   context (attention), 0 = never changed; an upper bound when ``bound``
    turnover: float  # τ = 2·τ½ in tokens (inf: never changed or never half replaced)
    bound: bool  # never half replaced within the lags measured: ν < frequency
    lags: np.ndarray  # int64 [L]: 1 … the longest lag measured
    replaced: np.ndarray  # float64 [L]: Σ ‖C_{t+Δ} − C_t‖²
    energy: np.ndarray  # float64 [L]: Σ (‖C_t‖² + ‖C_{t+Δ}‖²)
    writes_per_token: float  # the write schedule on the same stream (updates / tokens)
    tokens: int  # tokens per stream
    sequences: int  # streams measured
    note: str = ""  # why a parametric level was not measured (its read() is missing)

    @property
    def drift(self) -> np.ndarray:
        """D(Δ) per lag: the share of the content replaced after Δ tokens."""
        return self.drift_of(self.replaced, self.energy)

    @staticmethod
    def drift_of(replaced, energy) -> np.ndarray:
        """D = replaced / energy (0 where there is no content at all)."""
        energy = np.asarray(energy, dtype=np.float64)
        out = np.zeros(energy.shape)
        np.divide(np.asarray(replaced, dtype=np.float64), energy, out=out, where=energy > 0)
        return out

    @property
    def rereads(self) -> bool:
        """Attention: nothing is written; the context itself is re-read at every token."""
        return bool(np.isinf(self.frequency))

    @property
    def measured(self) -> bool:
        return self.rereads or len(self.lags) > 0


@dataclass(frozen=True)
class Snapshot:
    run_id: str
    step: int
    levels: dict[str, LevelSnapshot]
    content: dict[str, ContentRate] = field(default_factory=dict)  # where measured


@dataclass(frozen=True)
class Evaluation:
    """Rows written to eval.csv (metric of every sub-task seen so far) and, where the task
    has a notion of delay, recall by delay (delay.csv) for the full model (key ``""``) and with
    each level silenced (``recall``: output zeroed, what the model depends on) or frozen
    (``frozen``: writes stopped, output kept, what the level stores; parametric levels only;
    empty in runs that did not measure it). ``content``: each level's content rate at this
    step (``probes.content_rates``; empty where not measured)."""

    run_id: str
    step: int
    rows: tuple[tuple[str, float], ...]  # (task, metric)
    metric_name: str
    delays: tuple[int, ...] = ()
    recall: dict[str, tuple[float, ...]] = field(default_factory=dict)  # "" = full model
    frozen: dict[str, tuple[float, ...]] = field(default_factory=dict)  # level -> recall
    content: dict[str, ContentRate] = field(default_factory=dict)

    @property
    def ablations(self) -> dict[str, dict[str, tuple[float, ...]]]:
        """``{"silence": recall, "freeze": frozen}`` as delay.csv stores them."""
        return {"silence": self.recall, **({"freeze": self.frozen} if self.frozen else {})}


@dataclass(frozen=True)
class StateChanged:
    """The trainer actually paused (at a step boundary) or resumed."""

    run_id: str
    step: int
    state: RunState  # RunState.PAUSED | RunState.RUNNING


@dataclass(frozen=True)
class Finished:
    run_id: str
    step: int
    reason: EndReason  # COMPLETED | STOPPED
    run_dir: str


@dataclass(frozen=True)
class Failed:
    run_id: str
    step: int
    message: str
    run_dir: str


Event = (Started | Progress | MetricsRow | Snapshot | Evaluation | StateChanged | Finished
         | Failed)
