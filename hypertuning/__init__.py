"""hypertuning: adapt a frozen language model to a task from a few examples, without back-propagation."""

from .adapter import Adapter
from .errors import CheckpointError, DataError, DownstreamMismatchError, HypertuningError
from .hyper import HyperConfig, HyperModel
from .models import Downstream, load_downstream
from .peft import TARGETS, ActivePhi

__version__ = "0.1.0"
__all__ = [
    "TARGETS",
    "ActivePhi",
    "Adapter",
    "CheckpointError",
    "DataError",
    "Downstream",
    "DownstreamMismatchError",
    "HyperConfig",
    "HyperModel",
    "HypertuningError",
    "load_downstream",
]
