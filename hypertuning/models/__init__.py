"""Downstream model families and loading."""

from . import decoder, t5  # noqa: F401  (registers the families)
from .base import FAMILIES, DownstreamSpec, Family, KindSpec, Slot
from .downstream import Downstream, load_downstream

__all__ = ["FAMILIES", "Downstream", "DownstreamSpec", "Family", "KindSpec", "Slot", "load_downstream"]
