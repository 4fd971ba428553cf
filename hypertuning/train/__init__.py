"""Training: one accelerate loop (`loop.py`), objectives as small classes (`objectives.py`), YAML configs."""

from .config import RunConfig, load_config
from .loop import Trainer, train
from .objectives import EVALUATORS, OBJECTIVES

__all__ = ["EVALUATORS", "OBJECTIVES", "RunConfig", "Trainer", "load_config", "train"]
