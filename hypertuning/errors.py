"""Errors a user can act on. Each says what was wrong and, where it can, what to do instead."""


class HypertuningError(Exception):
    """Base class of every error raised on purpose by hypertuning."""


class DownstreamMismatchError(HypertuningError, ValueError):
    """An adapter or hypermodel was built for a different downstream model."""


class CheckpointError(HypertuningError, OSError):
    """A saved hypermodel or adapter is missing, incomplete or corrupt."""


class DataError(HypertuningError, ValueError):
    """Input data is malformed (the message names the file and line where it can)."""
