"""Tasks as plain records, the metrics they are scored with, and their deterministic splits.

An `Example` holds the text the downstream model reads (`input`, with any collection-specific prompt
prefixes already applied) and what it should produce: references (`outputs`, several allowed) and/or
answer options (`choices`) with the indices of the correct ones (`answers`). A `Task` is a name, an optional
instruction (definition), its examples, optional fixed demonstrations (S-NI's positive examples) and the
metrics it is scored with.

Randomness here is keyed by stable hashes of (seed, task name), never by Python's salted `hash()` or by a
global RNG, so a split or a sample is the same in every process and on every machine.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..errors import DataError

# Our metric names, and what the collections call them. Scoring lives in the evaluation module.
METRICS = ("accuracy", "exact_match", "rouge_l", "bleu", "macro_f1")
METRIC_ALIASES = {
    "multiple_choice_grade": "accuracy",
    "exact_str_match": "exact_match",
    "rouge": "rouge_l",
    "rougeLsum": "rouge_l",
    "rougeL": "rouge_l",
    "rouge-l": "rouge_l",
}


def metric_name(name: str) -> str | None:
    """Our name for a metric, or None when we do not compute it (e.g. BIG-bench's bleurt)."""
    name = METRIC_ALIASES.get(name, name)
    return name if name in METRICS else None


@dataclass(frozen=True)
class Example:
    input: str
    outputs: tuple[str, ...] = ()  # reference outputs; the first is the one trained on and shown as a shot
    choices: tuple[str, ...] = ()  # answer options for rank classification
    answers: tuple[int, ...] = ()  # indices into `choices` of the correct option(s)

    def __post_init__(self):
        if not isinstance(self.input, str):
            raise DataError(f"example input must be a string, got {type(self.input).__name__}")
        if any(not 0 <= a < len(self.choices) for a in self.answers):
            raise DataError(f"answer index out of range for {len(self.choices)} choices: {self.answers}")
        if not self.outputs and not self.answers:
            raise DataError(f"has no 'output' (nor 'choices' with a correct 'label'): {self.input[:80]!r}")

    @property
    def target(self) -> str:
        """The output shown to the hypermodel and trained on."""
        return self.outputs[0] if self.outputs else self.choices[self.answers[0]]

    @property
    def references(self) -> tuple[str, ...]:
        return self.outputs or tuple(self.choices[a] for a in self.answers)

    @property
    def label(self) -> int | None:
        return self.answers[0] if self.answers else None

    def to_dict(self) -> dict:
        d: dict = {"input": self.input}
        if self.outputs:
            d["output"] = list(self.outputs) if len(self.outputs) > 1 else self.outputs[0]
        if self.choices:
            d["choices"] = list(self.choices)
            d["label"] = list(self.answers) if len(self.answers) > 1 else self.answers[0]
        return d

    @classmethod
    def from_dict(cls, row: dict, where: str = "example") -> Example:
        """Our JSONL record: `input` (a string), `output` (a string or a list of them) and/or `choices` (a
        list of strings) with `label` (an index, the correct choice's text, or a list of either). Every
        field is checked here, once, for every reader (files, collections, the server): a wrong type is an
        error naming `where` (FILE:LINE for files), never a silent conversion."""
        q = Record.parse(row, where)
        answers = q.answers
        if q.choices and not answers and q.outputs:
            answers = tuple(q.choices.index(o) for o in q.outputs if o in q.choices)
        if not q.outputs and not answers:
            raise DataError(f"{where}: has no 'output' (nor 'choices' with a correct 'label')")
        return cls(q.input, q.outputs, q.choices, answers)


def _kind(value) -> str:
    return (
        "null"
        if value is None
        else {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(
            type(value), f"a number ({value!r})" if isinstance(value, (int, float)) else type(value).__name__
        )
    )


@dataclass(frozen=True)
class Record:
    """One input record, checked: what `Example.from_dict`, `hypertune score` / `generate` and the server
    read. Unlike an Example it may have no reference (an input to generate from, choices to rank)."""

    input: str
    outputs: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answers: tuple[int, ...] = ()

    @classmethod
    def parse(cls, row, where: str = "record") -> Record:
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {_kind(row)}")
        if "input" not in row:
            raise DataError(f"{where}: needs an 'input' field")
        if not isinstance(row["input"], str):
            raise DataError(f"{where}: 'input' must be a string, got {_kind(row['input'])}")
        key = "output" if "output" in row else "outputs"
        outputs = _texts(row[key], key, where) if key in row else ()
        choices = ()
        if "choices" in row:
            choices = _texts(row["choices"], "choices", where, single=False)
        key = "label" if "label" in row else "answers"
        answers = _labels(row[key], key, choices, where) if key in row else ()
        return cls(row["input"], outputs, choices, answers)


def _texts(value, key: str, where: str, single: bool = True) -> tuple[str, ...]:
    """A non-empty list of non-blank strings (or, with `single`, one string)."""
    want = "a string or a list of strings" if single else "a list of strings"
    if single and isinstance(value, str):
        value = [value]
    elif not isinstance(value, list):
        raise DataError(f"{where}: '{key}' must be {want}, got {_kind(value)}")
    if not value:
        raise DataError(f"{where}: '{key}' is empty")
    for n, v in enumerate(value):
        at = f"'{key}'" if single and len(value) == 1 else f"'{key}'[{n}]"
        if not isinstance(v, str):
            raise DataError(f"{where}: {at} must be a string, got {_kind(v)}")
        if not v.strip():
            raise DataError(f"{where}: {at} is blank; an output or choice needs at least one character")
    return tuple(value)


def _labels(value, key: str, choices: tuple[str, ...], where: str) -> tuple[int, ...]:
    """Indices into `choices` from an index, a choice's text or a list of either."""
    if not choices:
        raise DataError(f"{where}: '{key}' needs 'choices' to point into")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise DataError(f"{where}: '{key}' is empty")
    out = []
    for v in items:
        if isinstance(v, str):
            if v not in choices:
                raise DataError(f"{where}: {key} {v!r} is not one of the choices {list(choices)}")
            v = choices.index(v)
        elif not isinstance(v, int) or isinstance(v, bool):
            raise DataError(
                f"{where}: '{key}' must be a choice index (an integer), a choice's text or a list of "
                f"either, got {_kind(v)}"
            )
        elif not 0 <= v < len(choices):
            raise DataError(f"{where}: {key} {v} is out of range for {len(choices)} choices (0-based)")
        out.append(v)
    return tuple(out)


@dataclass
class Task:
    name: str  # unique within its collection; "parent/sub" for subtasks
    examples: tuple[Example, ...]
    collection: str = "local"
    instruction: str | None = None
    demonstrations: tuple[Example, ...] = ()  # fixed shots shipped with the task (S-NI positive examples)
    metrics: tuple[str, ...] = ()  # our metric names; see METRICS
    shot_separator: str = "\n\n"  # between examples when they are written into one in-context prompt
    stop: tuple[str, ...] = ()  # strings that end a generation
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.examples = tuple(self.examples)
        if not self.metrics:
            self.metrics = ("accuracy",) if self.is_multiple_choice else ("exact_match", "rouge_l")

    @property
    def id(self) -> str:
        return f"{self.collection}:{self.name}"

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.examples) and all(e.choices and e.answers for e in self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __repr__(self) -> str:
        kind = "multiple-choice" if self.is_multiple_choice else "generative"
        return f"Task({self.id!r}, {len(self)} {kind} examples, metrics={list(self.metrics)})"

    def capped(self, max_examples: int | None, seed: int = 0) -> Task:
        """At most `max_examples` examples, a deterministic random subset (so huge tasks do not dominate)."""
        keep = cap_indices(len(self), max_examples, seed, self.id)
        if keep is None:
            return self
        return replace(self, examples=tuple(self.examples[i] for i in keep))

    def deduplicated(self) -> Task:
        """Without repeated identical examples (BIG-bench has some), so a target never meets its twin."""
        unique = tuple(dict.fromkeys(self.examples))
        if len(unique) == len(self):
            return self
        meta = {**self.meta, "duplicates_removed": len(self) - len(unique)}
        return replace(self, examples=unique, meta=meta)

    def split(self, pool_size: int = 64, seed: int = 0) -> tuple[Task, Task]:
        """(few-shot pool, evaluation) examples, disjoint and deterministic in (seed, task id).

        The pool gets about `pool_size` examples but never more than half the task, so small tasks keep
        half their examples for evaluation. Examples sharing an input stay on one side, so no evaluation
        input is ever shown as a shot.
        """
        groups: dict[str, list[int]] = {}
        for i, ex in enumerate(self.examples):
            groups.setdefault(ex.input, []).append(i)
        if len(groups) < 2:
            raise DataError(f"{self.id} has {len(groups)} distinct input(s); splitting needs at least 2")
        keys = list(groups)
        rng_for(seed, "split", self.id).shuffle(keys)
        n_pool = min(pool_size, len(self) // 2)
        pool: list[int] = []
        for n, key in enumerate(keys):
            if len(pool) >= n_pool or n == len(keys) - 1:
                break
            pool += groups[key]
        chosen = set(pool)
        return (
            replace(self, examples=tuple(self.examples[i] for i in sorted(chosen))),
            replace(self, examples=tuple(e for i, e in enumerate(self.examples) if i not in chosen)),
        )


def rng_for(seed: int, *keys: str | int) -> random.Random:
    """A `random.Random` seeded by a stable hash of (seed, keys): the same stream on every machine."""
    digest = hashlib.sha256("\x1f".join(map(str, (seed, *keys))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def config_hash(*parts) -> str:
    """A short stable hash of what a data stream depends on (checked when a run resumes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_state(what: str, state: dict, mine: dict, keys) -> None:
    for key in keys:
        if state.get(key) != mine[key]:
            detail = "another data configuration" if key == "fingerprint" else f"{key}={mine[key]!r}"
            raise DataError(
                f"{what} state was saved with a different {key} ({state.get(key)!r}); this one has {detail}: "
                "resume with the same data configuration"
            )


def cap_indices(n: int, cap: int | None, seed: int, task_id: str) -> list[int] | None:
    """The indices kept when a task of `n` examples is capped to `cap` (None: keep all)."""
    if cap is None or n <= cap:
        return None
    return sorted(rng_for(seed, "cap", task_id).sample(range(n), cap))


def sample_shots(
    pool: Sequence[Example], k: int, seed: int, *keys, exclude: int | None = None
) -> list[Example]:
    """K distinct examples from `pool`, deterministic in (seed, keys). With `exclude` (the target's index),
    no shot is the target or shares its input."""
    avoid = pool[exclude].input if exclude is not None else None
    candidates = [i for i in range(len(pool)) if i != exclude and pool[i].input != avoid]
    if k > len(candidates):
        raise DataError(f"asked for {k} examples but only {len(candidates)} are available")
    return [pool[i] for i in rng_for(seed, "shots", *keys).sample(candidates, k)]
