"""The pydantic models of a project file (``*.nlproj``), version 3, and the migrations that
upgrade older versions (:data:`MIGRATIONS`).

Levels are flat dicts whose allowed keys depend on their ``kind`` (``models/registry.py``) and
whose ``optimizer`` keys depend on the optimizer's ``name`` (``models/inner_optim.py``). One
model class is generated per (kind, optimizer) pair from those registries, so the schema never
repeats what they say. Which class validates a level is decided by ``nlstudio.validate`` from
the level's ``kind`` and ``optimizer.name`` (with messages that name the valid choices).

Everything is strict (JSON types only: ``"8"`` is not an integer, ``1`` is not ``true``) and
``extra="forbid"``, except :class:`ViewSection`, whose free-form keys change nothing in training.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, PrivateAttr,
                      SerializeAsAny, create_model, model_serializer)
from pydantic_core import PydanticCustomError

from nlstudio.models.graph import MAX_ID_LENGTH, RESERVED, is_level_id, topological_order
from nlstudio.models.inner_optim import OPTIMIZERS
from nlstudio.models.registry import (KINDS, MAX_PERIOD, OBJECTIVES, KindInfo,  # noqa: F401
                                      Option, period_fault)  # MAX_PERIOD: re-exported
from nlstudio.tasks.base import TaskParams

FORMAT = "nlstudio.project"
#: Format versions: 1, the first; 2 added the ``conv`` option (short causal convolution on
#: q, k, v) to attention, linear attention, delta and titans levels, default 4. A version-1
#: file had no convolution there, so it loads with ``conv: 0`` (its old meaning). 3 removed
#: ``train.snapshot_every``: it was validated and shown but never used (the trainer paces its
#: memory snapshots by time, at most 30 a second: ``Trainer(snapshot_interval_s=)``), so a
#: version-2 file loads without it.
VERSION = 3

# Bounds that keep validation (and anything sized from a file) finite.
MAX_LEVELS = 256
MAX_EDGES = 4096
# MAX_ID_LENGTH: with the level-id rule in nlstudio.models.graph
MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 10_000
MAX_D_MODEL = 1 << 20
MAX_HEADS = 1024
MAX_STEPS = 10**9
MAX_BATCH = 1 << 16
MAX_SEQ_LEN = 1 << 20
MAX_SEED = 2**32 - 1



class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


def _int(low: int, high: int, default: Any = ...) -> Any:
    return Field(default, ge=low, le=high)


def _doc(description: str, title: str | None = None, log: bool | None = None) -> Any:
    """What an editor shows for a field: its tooltip (``description``), its label (``title``,
    default: the name with spaces) and whether it is explored on a log scale (``log``)."""
    extra = {"log": log} if log is not None else None
    return Field(description=description, title=title, json_schema_extra=extra)


# ---- level fields with their own messages -------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("level_id", "must be a string")
    if value in RESERVED:
        raise PydanticCustomError("level_id", "'{id}' is reserved for the graph's endpoint; "
                                  "choose another id", {"id": value})
    if not is_level_id(value):
        raise PydanticCustomError(
            "level_id", "must be an identifier: a letter or _ followed by letters, digits or _ "
            "(at most {n} characters)", {"n": MAX_ID_LENGTH})
    return value


LevelId = Annotated[str, PlainValidator(_check_id)]

_PERIOD_DOCS = {
    "inf": "∞: re-reads its whole context at every token; nothing is written",
    "one": "pinned: this memory is written at every token",
    "positive": "tokens between two writes of this level's memory (arrows double and halve it)",
    "positive_or_null": "tokens between two writes of this level's memory (arrows double and "
                        "halve it; 0 = frozen in context, learned only by the outer optimizer)",
}


def _period_type(rule: str) -> Any:
    def check(value: Any) -> int | None:
        fault = period_fault(rule, value)  # the one period rule, shared with the levels
        if fault:
            raise PydanticCustomError("period", fault)
        return value

    return Annotated[Optional[int], PlainValidator(check)]


def _objective_type(info: KindInfo) -> Any:
    def check(value: Any) -> str | None:
        if not info.objectives:
            if value is not None:
                raise PydanticCustomError(
                    "objective", "{kind} has no inner objective (it writes no weights); remove "
                    "this field", {"kind": info.name})
            return None
        allowed = ", ".join(info.objectives)
        if not isinstance(value, str):
            raise PydanticCustomError("objective", "must be one of {allowed}",
                                      {"allowed": allowed})
        if value not in OBJECTIVES:
            raise PydanticCustomError("objective", "unknown objective {value}; expected one of "
                                      "{allowed}", {"value": short_repr(value),
                                                    "allowed": allowed})
        if value not in info.objectives:
            raise PydanticCustomError("objective", "objective '{value}' is not allowed for kind "
                                      "'{kind}' (allowed: {allowed})",
                                      {"value": value, "kind": info.name, "allowed": allowed})
        return value

    return Annotated[Optional[str], PlainValidator(check)]


def _no_optimizer(value: Any) -> None:
    if value is not None:
        raise PydanticCustomError("optimizer", "this kind has no inner optimizer (it writes no "
                                  "weights); remove this field")
    return None


def _option_field(opt: Option) -> tuple[Any, Any]:
    bounds = {k: v for k, v in (("ge", opt.low), ("le", opt.high)) if v is not None}
    doc = Field(description=opt.doc)  # the inspector's tooltip
    if opt.type == "int":
        return Annotated[int, Field(**bounds), doc], opt.default
    if opt.type == "float":
        return Annotated[float, Field(**bounds), doc], opt.default
    if opt.type == "bool":
        return Annotated[bool, doc], opt.default
    if opt.type == "choice":
        return Annotated[Literal[opt.choices], doc], opt.default  # type: ignore[valid-type]
    if opt.type == "int_or_null":
        return Annotated[Optional[Annotated[int, Field(**bounds)]], doc], opt.default
    raise ValueError(f"option {opt.name!r}: unknown option type {opt.type!r}")


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr`` of a value from a file, cut so that a huge string never floods a message."""
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- inner optimizers and levels ----------------------------------------------------------
class OptimizerSpec(_Strict):
    """An inner optimizer: ``name`` plus its hyper-parameters (``OPTIMIZERS[name].hyper``)."""

    name: str

    def hyper(self) -> dict[str, float]:
        return self.model_dump(exclude={"name"})


@functools.cache
def optimizer_model(name: str, kind: str | None = None) -> type[OptimizerSpec]:
    """The model of optimizer ``name``; inside a level of ``kind``, missing hyper-parameters
    take the kind's defaults (``KindInfo.optimizer_overrides``) before the optimizer's own."""
    fields: dict[str, Any] = {"name": (Literal[name], name)}  # type: ignore[valid-type]
    overrides = KINDS[kind].optimizer_overrides(name) if kind else {}
    for h in OPTIMIZERS[name].hyper:
        kind_ = int if h.integer else float
        value = overrides.get(h.name, h.default)
        default = int(value) if h.integer else float(value)
        fields[h.name] = (Annotated[kind_, Field(ge=h.low, le=h.high, description=h.doc,
                                                 json_schema_extra={"log": h.log,
                                                                    "symbol": h.symbol})],
                          default)
    return create_model(f"{name.title().replace('_', '')}Optimizer", __base__=OptimizerSpec,
                        **fields)


COMMON_LEVEL_KEYS = ("id", "kind", "period", "objective", "optimizer")


class LevelSpec(_Strict):
    """One level. Subclasses (one per kind and optimizer) add the kind's options as fields."""

    id: str
    kind: str
    period: Optional[int] = None
    objective: Optional[str] = None
    optimizer: Optional[SerializeAsAny[OptimizerSpec]] = None

    @property
    def info(self) -> KindInfo:
        return KINDS[self.kind]

    def options(self) -> dict[str, Any]:
        """The kind-specific options (e.g. ``{"expansion": 4}``)."""
        return self.model_dump(exclude=set(COMMON_LEVEL_KEYS))

    def spec(self) -> dict[str, Any]:
        """The flat dict of the file format; objective and optimizer only where the kind
        has them."""
        out = self.model_dump(mode="json")
        if not self.info.parametric:
            out.pop("objective", None)
            out.pop("optimizer", None)
        return out


@functools.cache
def level_model(kind: str, optimizer: str | None) -> type[LevelSpec]:
    """The model of a level of ``kind`` whose inner optimizer is ``optimizer``."""
    info = KINDS[kind]
    fields: dict[str, Any] = {
        "id": (LevelId, Field(..., description="the level's name in edges, plots and run files "
                                               "(letters, digits, _)")),
        "kind": (Literal[kind], ...),  # type: ignore[valid-type]
        "period": (_period_type(info.period_rule),
                   Field(info.default_period, description=_PERIOD_DOCS[info.period_rule])),
        "objective": (_objective_type(info), Field(
            info.default_objective, description="what the inner optimizer minimises when it "
                                                "writes this memory")),
    }
    if info.parametric:
        opt_model = optimizer_model(optimizer or info.default_optimizer, kind)
        fields["optimizer"] = (opt_model, Field(
            default_factory=opt_model, title="inner optimizer",
            description="the update rule that writes this memory in context (itself a memory)"))
    else:
        fields["optimizer"] = (Annotated[None, PlainValidator(_no_optimizer)], None)
    for opt in info.options:
        fields[opt.name] = _option_field(opt)
    suffix = f"_{optimizer}" if optimizer else ""
    return create_model(f"{kind.title().replace('_', '')}{suffix.title()}Level",
                        __base__=LevelSpec, **fields)


# ---- sections -----------------------------------------------------------------------------
Edge = Annotated[list[str], Field(min_length=2, max_length=2)]


class ModelSizes(_Strict):
    """The scalar settings of the ``model`` section (checked on their own, e.g. that ``heads``
    divides ``d_model``, while levels may still be wrong)."""

    d_model: Annotated[int, _int(1, MAX_D_MODEL), _doc(
        "width of the residual stream every level reads and writes", title="d_model")] = 64
    heads: Annotated[int, _int(1, MAX_HEADS), _doc(
        "attention/memory heads; must divide d_model")] = 4
    tie_embeddings: Annotated[bool, _doc(
        "share the input embedding with the output head (token tasks)")] = True


class ModelSection(ModelSizes):
    levels: Annotated[list[SerializeAsAny[LevelSpec]], Field(min_length=1,
                                                             max_length=MAX_LEVELS)]
    edges: Annotated[list[Edge], Field(max_length=MAX_EDGES)]


class OuterOptimizer(_Strict):
    """The outer (pre-training) optimizer of every parameter, a ``torch.optim`` class."""

    name: Annotated[Literal["adamw", "adam", "sgd"], _doc(
        "the outer optimizer: it pre-trains every level's parameters")] = "adamw"
    lr: Annotated[float, Field(gt=0, le=10), _doc(
        "learning rate of the outer optimizer", title="learning rate", log=True)] = 3e-3
    weight_decay: Annotated[float, Field(ge=0, le=10), _doc(
        "decoupled weight decay (adamw) or L2 (adam, sgd)")] = 0.0
    momentum: Annotated[float, Field(ge=0, lt=1), _doc(
        "momentum of the outer sgd (ignored by adam/adamw)")] = 0.9  # read by "sgd" only


class TrainSection(_Strict):
    steps: Annotated[int, _int(1, MAX_STEPS), _doc("outer optimizer steps (pre-training)")] = 300
    batch_size: Annotated[int, _int(1, MAX_BATCH), _doc("sequences per step")] = 16
    seq_len: Annotated[int, _int(1, MAX_SEQ_LEN), _doc(
        "tokens per sequence", title="sequence length")] = 128
    seed: Annotated[int, _int(0, MAX_SEED), _doc(
        "makes data, initialisation and CPU runs repeatable")] = 0
    device: Annotated[Literal["auto", "cpu", "cuda"], _doc(
        "auto: CUDA when available, else CPU")] = "auto"
    optimizer: OuterOptimizer = Field(default_factory=OuterOptimizer, title="Outer optimizer",
                                      description="the optimizer that pre-trains the model")
    grad_clip: Annotated[Optional[Annotated[float, Field(gt=0, le=1e6)]], _doc(
        "clip the outer gradient norm (none: no clipping)", log=True)] = 1.0
    warmup: Annotated[int, _int(0, MAX_STEPS), _doc(
        "steps of linear learning-rate warm-up at the start of training")] = 0
    log_every: Annotated[int, _int(1, MAX_STEPS), _doc(
        "steps between two rows of metrics.csv")] = 10
    eval_every: Annotated[int, _int(1, MAX_STEPS), _doc(
        "steps between two evaluations (forgetting curves)")] = 100
    cuda_graphs: Annotated[bool, _doc(
        "on a GPU, capture each step's forward and backward once as a CUDA graph and replay it "
        "(much faster for the chunked memories)")] = True
    # written only when not fp32: files saved with the default stay loadable by NL Studio
    # versions from before the field (unknown fields are refused) and presets stay canonical
    precision: Annotated[Literal["fp32", "bf16"], Field(exclude_if=lambda v: v == "fp32"), _doc(
        "bf16: the training step's forward runs under bfloat16 autocast (meant for CUDA GPUs "
        "with bf16; on a CPU it is usually slower). Parameters, optimizer state, the "
        "in-context memories' state and their updates, evaluation and probes stay "
        "float32")] = "fp32"


Position = Annotated[list[float], Field(min_length=2, max_length=2)]


class ViewSection(BaseModel):
    """Canvas layout. Free-form (any JSON) beside ``positions``; nothing here changes training."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True, allow_inf_nan=False)

    positions: dict[str, Position] = Field(default_factory=dict)


class TaskSection(BaseModel):
    """``{"name": ..., <params>}`` in the file; ``params`` is the task's validated Params."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    params: SerializeAsAny[TaskParams]

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        return {"name": self.name, **self.params.model_dump(mode="json")}


class Project(_Strict):
    """A validated project. Build one with ``nlstudio.project.parse_project`` or
    ``load_project`` (they pick each level's model by kind and check the graph)."""

    format: Literal["nlstudio.project"] = FORMAT
    version: Literal[3] = VERSION
    app_version: Optional[str] = None  # the NL Studio that wrote the file (informational)
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH), _doc(
        "shown in the title bar and run folders")] = "Untitled"
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH)] = ""
    model: ModelSection
    task: TaskSection
    train: TrainSection = Field(default_factory=TrainSection)
    view: ViewSection = Field(default_factory=ViewSection)

    _path: Optional[Path] = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The file this project was loaded from (relative task paths resolve beside it)."""
        return self._path

    @property
    def levels(self) -> list[LevelSpec]:
        return list(self.model.levels)

    def level(self, level_id: str) -> LevelSpec:
        for level in self.model.levels:
            if level.id == level_id:
                return level
        raise KeyError(f"no level {level_id!r}; levels: "
                       f"{', '.join(lv.id for lv in self.model.levels)}")

    def topological_order(self) -> list[str]:
        """Level ids, every level after its predecessors (ties in file order)."""
        return topological_order([lv.id for lv in self.model.levels], self.model.edges)

    def model_spec(self) -> dict[str, Any]:
        """The ``model`` section as the plain dict ``nlstudio.models.build_model`` takes."""
        m = self.model
        return {"d_model": m.d_model, "heads": m.heads,
                "levels": [level.spec() for level in m.levels],
                "edges": [list(edge) for edge in m.edges], "tie_embeddings": m.tie_embeddings}

    def task_params(self) -> dict[str, Any]:
        return self.task.params.model_dump(mode="json")


# ---- migrations ----------------------------------------------------------------------------
def _fill_introduced_options(to_version: int) -> Callable[[dict], dict]:
    """The upgrade to ``to_version``: every level whose kind gained an option in that version
    (``Option.introduced``) and lacks its key gets the value older files meant
    (``Option.legacy``). Anything malformed is left as it is, for validation to report."""

    def upgrade(doc: dict) -> dict:
        model = doc.get("model")
        levels = model.get("levels") if isinstance(model, dict) else None
        for level in levels if isinstance(levels, list) else ():
            kind = level.get("kind") if isinstance(level, dict) else None
            if not isinstance(kind, str) or kind not in KINDS:
                continue
            for opt in KINDS[kind].options:
                if opt.introduced == to_version and opt.name not in level:
                    level[opt.name] = opt.legacy
        return doc

    return upgrade


def _drop_retired_train_settings(doc: dict) -> dict:
    """The upgrade to version 3: ``train.snapshot_every`` (never used) is dropped."""
    train = doc.get("train")
    if isinstance(train, dict):
        train.pop("snapshot_every", None)
    return doc


#: ``MIGRATIONS[v](doc) -> doc`` upgrades a version-``v`` document (plain JSON, already
#: scanned) to version ``v + 1``; ``nlstudio.validate`` applies them in turn.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _fill_introduced_options(2),
                                                 2: _drop_retired_train_settings}


# Sections validated as raw JSON first: levels and task are dispatched by nlstudio.project.
class RawModelSection(ModelSection):
    levels: Annotated[list[Any], Field(min_length=1, max_length=MAX_LEVELS)]


class RawProject(Project):
    model: RawModelSection
    task: dict[str, Any]
