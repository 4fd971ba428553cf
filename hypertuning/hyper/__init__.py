from .model import HyperConfig, HyperModel

__all__ = ["HyperConfig", "HyperModel"]
