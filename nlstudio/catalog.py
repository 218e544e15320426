"""What the GUI may show about the building blocks: level kinds, inner optimizers, objectives
and tasks, re-exported from where they are defined.

Widgets import this module (widgets → core → models), never ``nlstudio.models`` directly.
``MODEL_SETTINGS`` and ``TRAIN_SETTINGS`` are the pydantic models of the project's scalar model
settings and of its ``train`` section: the inspector generates its editors from them.
"""
from __future__ import annotations

from nlstudio.models.inner_optim import OPTIMIZERS, HyperParam, InnerOptimizer
from nlstudio.models.registry import KINDS, OBJECTIVES, PERIOD_RULES, KindInfo, Option, kind_info
from nlstudio.schema import ModelSizes as MODEL_SETTINGS
from nlstudio.schema import TrainSection as TRAIN_SETTINGS
from nlstudio.tasks import all_tasks  # {name: Task class} of every registered task


__all__ = ["KINDS", "OPTIMIZERS", "OBJECTIVES", "PERIOD_RULES", "KindInfo", "Option",
           "HyperParam", "InnerOptimizer", "kind_info", "all_tasks", "MODEL_SETTINGS",
           "TRAIN_SETTINGS"]
