"""Task data: records and collections, the paper's formatting, few-shot episodes and the CACLM corpus."""

from .caclm import CaclmCorpus, CaclmEncoder, Segments, bigbench_prose, documents_from_files
from .collections import COLLECTIONS, Collection, check_enough, get_collection, load_task
from .episodes import Episode, EpisodeEncoder, EpisodeSampler, heldout_shots, mixing_weights
from .format import SPECIAL_TOKENS, X_TOKEN, Y_TOKEN, encode_examples, normalise_examples, pad_batch
from .jsonl import read_examples, read_jsonl, read_records
from .task import METRICS, Example, Record, Task

__all__ = [
    "COLLECTIONS",
    "METRICS",
    "SPECIAL_TOKENS",
    "X_TOKEN",
    "Y_TOKEN",
    "CaclmCorpus",
    "CaclmEncoder",
    "Collection",
    "Episode",
    "EpisodeEncoder",
    "EpisodeSampler",
    "Example",
    "Record",
    "Segments",
    "Task",
    "bigbench_prose",
    "check_enough",
    "documents_from_files",
    "encode_examples",
    "get_collection",
    "heldout_shots",
    "load_task",
    "mixing_weights",
    "normalise_examples",
    "pad_batch",
    "read_examples",
    "read_jsonl",
    "read_records",
]
