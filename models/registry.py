"""What each level kind is, as data: the single source for validation (core), the inspector
(widgets) and the level constructors (models).

A level in a project file is a flat dict::

    {"id": "mid", "kind": "mlp", "period": 64, "objective": "task",
     "optimizer": {"name": "sgd", "eta": 0.01}, "expansion": 4}

``id``, ``kind``, ``period``, ``objective`` and ``optimizer`` are common; every other key is
one of the kind's :class:`Option`s below. Missing keys take their defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nlstudio.models.inner_optim import get_optimizer

#: Period rules. ``"inf"``: non-parametric, recomputed every token (period must be null);
#: ``"one"``: written every token (period must be 1); ``"positive"``: a chunk size C >= 1;
#: ``"positive_or_null"``: C >= 1, or null for a level frozen at test time (frequency 0).
PERIOD_RULES = ("inf", "one", "positive", "positive_or_null")
#: The largest period a level may have (keeps anything sized from a file finite).
MAX_PERIOD = 1 << 30
#: What a period that breaks its kind's rule is told: the one wording, used by the project
#: schema (file faults) and the level constructors (ValueError) alike.
PERIOD_MESSAGES = {
    "inf": "must be null (this kind writes no weights: it re-reads the context every token)",
    "one": "must be 1 (this kind writes its memory at every token)",
    "positive": "must be a positive integer",
    "positive_or_null": "must be a positive integer or null",
}


def period_fault(rule: str, value: Any) -> str | None:
    """``None`` when ``value`` is a valid period under ``rule``, else the fault's message."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if rule == "inf":
        ok = value is None
    elif rule == "one":
        ok = is_int and value == 1
    else:
        ok = (is_int and 1 <= value <= MAX_PERIOD) or (value is None and rule == "positive_or_null")
    return None if ok else PERIOD_MESSAGES[rule]

OBJECTIVES = {
    "task": "the model's own loss: the backpropagated surprise of the tokens already seen",
    "l2": "regression of learned values on learned keys, ||M(k) - v||^2",
    "dot": "alignment of M(k) with v, -<M(k), v> (Hebbian)",
}


@dataclass(frozen=True)
class Option:
    """A kind-specific setting of a level."""

    name: str
    type: str  # "int" | "float" | "bool" | "choice" | "int_or_null"
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    #: the project-file format version that added this option, and what files written
    #: before it (which lack the key) meant; the schema's migrations fill it in
    introduced: int = 1
    legacy: Any = None


@dataclass(frozen=True)
class KindInfo:
    name: str
    title: str
    summary: str  # one sentence, shown as the palette tooltip
    period_rule: str
    default_period: int | None
    objectives: tuple[str, ...] = ()
    default_objective: str | None = None
    optimizers: tuple[str, ...] = ()
    default_optimizer: str | None = None
    options: tuple[Option, ...] = field(default_factory=tuple)
    #: hyper-parameters whose default for this kind differs from the inner optimizer's own
    #: (applied to whichever allowed optimizer has them)
    optimizer_defaults: tuple[tuple[str, float], ...] = ()
    #: the class that builds a level of this kind, ``"module:Class"`` inside
    #: ``nlstudio.models.levels`` (imported on first use, by ``levels.LEVEL_CLASSES``)
    implementation: str = ""

    @property
    def parametric(self) -> bool:
        return self.period_rule != "inf"

    def period_fault(self, value: Any) -> str | None:
        """``None`` when ``value`` is a valid period for this kind, else what is wrong."""
        return period_fault(self.period_rule, value)

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {opt.name: opt.default for opt in self.options}

    def optimizer_overrides(self, optimizer: str) -> dict[str, float]:
        """This kind's defaults for ``optimizer``'s hyper-parameters where they differ from
        the optimizer's own (e.g. η = 1 for linear attention: exactly one GD step)."""
        names = {h.name for h in get_optimizer(optimizer).hyper}
        return {k: v for k, v in self.optimizer_defaults if k in names}


#: The short causal depthwise convolution on q, k, v that practically every modern recall
#: baseline carries (H3/Based/Zoology, Mamba, DeltaNet, Gated DeltaNet, Titans §4.4). Project
#: files of format version 1 had no such key and meant no convolution (``legacy`` 0).
CONV = Option("conv", "int", 4, "width of the short causal depthwise convolution on q, k, v "
              "(0: none)", low=0, high=8, introduced=2, legacy=0)

ALL_OPTIMIZERS = ("sgd", "momentum", "adam", "dgd", "delta_momentum", "dmgd", "m3")

KINDS: dict[str, KindInfo] = {
    k.name: k
    for k in (
        KindInfo(
            name="attention", implementation="attention:AttentionLevel",
            title="Attention",
            summary="Causal softmax attention: no weights of its own, it re-reads the whole "
                    "context at every token (frequency ∞).",
            period_rule="inf", default_period=None,
            options=(
                Option("window", "int_or_null", None,
                       "sliding window in tokens (null: attend to the whole past)", low=1),
                CONV,
            ),
        ),
        KindInfo(
            name="linear_attention", implementation="linear_attention:LinearAttentionLevel",
            title="Linear attention",
            summary="A matrix memory written every token with M += v kᵀ: one gradient step on "
                    "-⟨Mk, v⟩.",
            period_rule="one", default_period=1,
            objectives=("dot",), default_objective="dot",
            optimizers=("sgd",), default_optimizer="sgd", optimizer_defaults=(("eta", 1.0),),
            options=(
                Option("gate", "choice", "none",
                       "forget gate on the memory: none, one scalar per head, or one per key "
                       "dimension (RetNet/GLA family)", choices=("none", "scalar", "vector")),
                CONV,
            ),
        ),
        KindInfo(
            name="delta", implementation="delta:DeltaLevel",
            title="Delta rule",
            summary="A matrix memory that erases before it writes: gradient descent on "
                    "‖Mk − v‖² every token (Gated DeltaNet).",
            period_rule="one", default_period=1,
            objectives=("l2",), default_objective="l2",
            optimizers=("sgd",), default_optimizer="sgd", optimizer_defaults=(("eta", 1.0),),
            options=(
                Option("gate", "bool", True, "data-dependent forget gate α_t that decays the "
                       "memory and its erase term (Gated DeltaNet); off: DeltaNet"),
                CONV,
            ),
        ),
        KindInfo(
            name="titans", implementation="titans:TitansLevel",
            title="Titans memory",
            summary="A deep MLP memory that learns at test time from its surprise, with momentum "
                    "and a forget gate, written once per chunk.",
            period_rule="positive", default_period=16,
            objectives=("l2", "dot"), default_objective="l2",
            optimizers=("momentum", "sgd"), default_optimizer="momentum",
            # θ_t = η·σ(·) scales a write summed over the chunk: η = 0.1 diverges in a few steps
            optimizer_defaults=(("eta", 0.003),),
            options=(
                Option("depth", "int", 2, "layers of the memory MLP", low=1, high=4),
                Option("expansion", "int", 2, "hidden width as a multiple of the head dimension",
                       low=1, high=8),
                CONV,
            ),
        ),
        KindInfo(
            name="self_modifying", implementation="self_modifying:SelfModifyingLevel",
            title="Self-modifying memory (HOPE)",
            summary="Generates its own keys, values, learning rates and decay with memories "
                    "that are themselves updated in context (delta gradient descent).",
            period_rule="positive", default_period=8,
            objectives=("l2", "dot"), default_objective="l2",
            optimizers=("dgd", "sgd"), default_optimizer="dgd", optimizer_defaults=(("eta", 0.01),),
            options=(
                Option("depth", "int", 1, "1: matrix memories (Eqs. 92/93); 2: residual 2-layer "
                       "MLP memories", low=1, high=2),
                Option("conv", "int", 4, "width of the short causal convolution on q, k, v "
                       "(0: none)", low=0, high=8),
                Option("momentum", "bool", False,
                       "Titans-style momentum on the memory writes. The paper's Eq. 88 has none, "
                       "its ablation has a 'w/o momentum' row; default follows Eq. 88"),
            ),
        ),
        KindInfo(
            name="mlp", implementation="cms:MLPLevel",
            title="MLP / CMS level",
            summary="A feed-forward block; with a period C it keeps learning in context every C "
                    "tokens (a continuum-memory level), with null it is frozen after training.",
            period_rule="positive_or_null", default_period=None,
            objectives=("task", "l2", "dot"), default_objective="task",
            optimizers=ALL_OPTIMIZERS, default_optimizer="sgd",
            # a write applies the SUM of C per-token gradients (Eq. 31): a per-token step of
            # 0.1 is too large once C is 16 or more
            optimizer_defaults=(("eta", 0.01),),
            options=(
                Option("expansion", "int", 4, "hidden width as a multiple of d_model",
                       low=1, high=8),
            ),
        ),
    )
}


def kind_info(kind: str) -> KindInfo:
    try:
        return KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown level kind {kind!r}; expected one of {', '.join(KINDS)}") from None
