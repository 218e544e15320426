"""Pure-PyTorch memories of Nested Learning (imported as ``nlstudio.models``).

No Qt and no imports from the core: this package depends on torch and numpy only.
"""
from nlstudio.models.assemble import NestedModel, build_model
from nlstudio.models.inner_optim import OPTIMIZERS, make_optimizer
from nlstudio.models.levels import LEVEL_CLASSES, LevelProbe
from nlstudio.models.registry import KINDS

__all__ = ["build_model", "NestedModel", "KINDS", "OPTIMIZERS", "make_optimizer", "LevelProbe",
           "LEVEL_CLASSES"]
