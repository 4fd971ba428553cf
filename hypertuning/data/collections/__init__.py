"""Task collections: BIG-bench (offline default), P3, Super-NaturalInstructions, MetaICL and local JSONL."""

from . import bigbench, local, metaicl, mustread, p3, sni, toy  # noqa: F401  (registers the collections)
from .base import COLLECTIONS, Collection, check_enough, get_collection, load_task, parse_task_id

__all__ = ["COLLECTIONS", "Collection", "check_enough", "get_collection", "load_task", "parse_task_id"]
