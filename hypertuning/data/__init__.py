"""Task data: JSONL reading and the paper's few-shot formatting."""

from .format import X_TOKEN, Y_TOKEN, encode_examples, normalise_examples
from .jsonl import read_jsonl

__all__ = ["X_TOKEN", "Y_TOKEN", "encode_examples", "normalise_examples", "read_jsonl"]
