"""Symbol-remapped views of task collections: must-read versions of real tasks.

`get_collection("bigbench", remap=0)` (YAML: `data.options: {remap: 0}`; CLI: `--remap 0`) gives every task
with a fixed label set (the same answer options in every example, like BIG-bench's `target_scores` keys)
with its labels replaced by made-up symbols, drawn per (task, remap seed) from the held-out symbol pool and
the same in every example of the task. A model can then only answer by reading the examples (symbol
tuning, Wei et al. 2023). Tasks without a fixed label set are skipped, with the reason (`SkipTask`).

A collection that writes its options into the prompt re-renders it with the symbols (`relabelled`; BIG-bench
does); otherwise options and references are replaced and inputs are left as they are. The task's
instruction is dropped, as symbol tuning drops it: an instruction that names the labels ("use Neither
when...") would state the mapping once its words were replaced. Inputs may still name the natural labels
("True, False, or Neither?"); which symbol is which is then still only in the examples.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import replace

from ..errors import DataError
from .task import Example, Task, rng_for

log = logging.getLogger(__name__)


class SkipTask(DataError):
    """A task this view cannot offer (the reason is the message); evaluation lists it as skipped."""


def label_set(task: Task) -> tuple[str, ...]:
    """The task's labels, sorted, when every example offers the same ones; otherwise SkipTask says why."""
    if not task.is_multiple_choice:
        raise SkipTask("not multiple choice: no labels to remap")
    sets = {frozenset(e.choices) for e in task.examples}
    if len(sets) > 1:
        raise SkipTask(f"no fixed label set: its examples offer {len(sets)} different sets of options")
    labels = tuple(sorted(next(iter(sets))))
    if len(labels) < 2:
        raise SkipTask("a single label")
    return labels


def fixed_labels(task: Task) -> tuple[str, ...] | None:
    """`label_set`, or None for a task without one."""
    try:
        return label_set(task)
    except SkipTask:
        return None


def relabel_input(text: str, mapping: dict[str, str], choice_prefix: str | None) -> str:
    """The options listed in a prompt (each after `choice_prefix`, BIG-bench's "\\n  choice: ") renamed."""
    if not choice_prefix:
        return text
    names = "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True))
    pattern = re.compile(f"{re.escape(choice_prefix)}({names})(?=$|\\n|{re.escape(choice_prefix)})")
    return pattern.sub(lambda m: choice_prefix + mapping[m.group(1)], text)


def remap_episode(ep, labels: tuple[str, ...], rng, choice_prefix: str | None = None):
    """The episode with its labels replaced by training symbols drawn with `rng`, consistently in the
    shots, the target and the options listed in their prompts; without its instruction (see above)."""
    from .collections.mustread import TRAIN_SYMBOLS

    mapping = dict(zip(labels, rng.sample(TRAIN_SYMBOLS, len(labels)), strict=True))

    def one(e: Example) -> Example:
        e = relabel_example(e, mapping)
        return replace(e, input=relabel_input(e.input, mapping, choice_prefix))

    return replace(
        ep,
        target=one(ep.target),
        shots=tuple(one(s) for s in ep.shots),
        instruction=None,
    )


def symbol_map(labels: Iterable[str], seed: int, task_id: str) -> dict[str, str]:
    """label -> made-up symbol, distinct, deterministic in (seed, task id)."""
    from .collections.mustread import HELDOUT_SYMBOLS

    labels = sorted(labels)
    symbols = rng_for(seed, "remap", task_id).sample(HELDOUT_SYMBOLS, len(labels))
    return dict(zip(labels, symbols, strict=True))


def relabel_example(e: Example, mapping: dict[str, str]) -> Example:
    return only_labels(Example(e.input, e.outputs, tuple(mapping[c] for c in e.choices), e.answers))


def only_labels(e: Example) -> Example:
    """Without references other than its options: a shot shows its label, not (say) strategyqa's
    explanation, which would still say "Yes" in words."""
    return Example(e.input, (), e.choices, e.answers)


def relabel_task(task: Task, mapping: dict[str, str]) -> Task:
    return replace(
        task,
        examples=tuple(relabel_example(e, mapping) for e in task.examples),
        instruction=None,
    )


class Remapped:
    """A view of a collection whose tasks have their labels replaced by symbols (see the module doc)."""

    def __init__(self, inner, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DataError(f"remap must be an integer seed, got {seed!r}")
        self.inner, self.remap = inner, seed
        self.name = inner.name
        self.skipped: dict[str, str] = {}  # task name -> why it has no remapped version
        self._cache: dict[str, Task] = {}

    def __getattr__(self, attr):  # task_names, check_name, default_heldout... are the collection's own
        if attr == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def load(self, name: str) -> Task:
        if name not in self._cache:
            task = self.inner.load(name)
            try:
                mapping = symbol_map(label_set(task), self.remap, task.id)
            except SkipTask as e:
                self.skipped[name] = str(e)
                raise SkipTask(f"{task.id} has no remapped version: {e}") from None
            out = self.inner.relabelled(name, mapping)
            self._cache[name] = replace(
                out,
                examples=tuple(only_labels(e) for e in out.examples),
                metrics=("accuracy",),  # scored as rank classification of the symbols
                collection=f"{task.collection}+remap{self.remap}",
                meta={**out.meta, "must_read": True, "remap": self.remap, "label_map": mapping},
            )
        return self._cache[name]

    def remappable(self, names: Iterable[str]) -> list[str]:
        """The names that have a remapped version; the others are recorded in `skipped`."""
        out = []
        for n in names:
            try:
                self.load(n)
                out.append(n)
            except SkipTask:
                pass
        return out

    def split(self, *args, **kwargs) -> tuple[list[str], list[str]]:
        train, held = self.inner.split(*args, **kwargs)
        out = self.remappable(train), self.remappable(held)
        if self.skipped:
            log.info(
                "%s remap=%d: %d task(s) without a fixed label set skipped",
                self.name,
                self.remap,
                len(self.skipped),
            )
        return out

    def describe(self, name: str) -> dict:
        info = dict(self.inner.describe(name))
        try:
            info["label_map"] = self.load(name).meta["label_map"]
        except SkipTask:
            info["skipped"] = self.skipped[name]
        return info

    def tasks(self, names=None):
        for n in self.task_names() if names is None else names:
            yield self.load(n)
