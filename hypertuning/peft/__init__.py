"""PEFT targets: what the hypermodel emits and how the frozen model takes it. One file per target."""

from . import lora, prefix  # noqa: F401  (registers the targets)
from .base import TARGETS, ActivePhi, Phi, Target

__all__ = ["TARGETS", "ActivePhi", "Phi", "Target"]
