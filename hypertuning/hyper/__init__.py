from . import kv as _kv  # noqa: F401  (registers the "kv" readout)
from . import outer as _outer  # noqa: F401  (registers the "outer" LoRA readout)
from . import select as _select  # noqa: F401  (registers the "select" key/value selection readout)
from .model import READOUTS, HyperConfig, HyperModel

__all__ = ["READOUTS", "HyperConfig", "HyperModel"]
