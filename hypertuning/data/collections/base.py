"""A task collection: named tasks behind one loader, with a default held-out list.

A new collection is one file with a `Collection` subclass and a `@COLLECTIONS.register("name")` line.
Tasks are addressed as "collection:task" (e.g. "bigbench:gem/xsum").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from ..._registry import Registry, unknown_message
from ...errors import DataError
from ..task import Task

log = logging.getLogger(__name__)
COLLECTIONS: Registry[type[Collection]] = Registry("task collection", error=DataError)


class Collection:
    """Subclasses implement `task_names` and `_load`; options come from the constructor (or YAML)."""

    name = "?"
    # Tasks kept out of the default train/held-out lists (e.g. BIG-bench prose reserved for CACLM).
    reserved: tuple[str, ...] = ()

    def __init__(self, max_examples: int | None = None, seed: int = 0):
        self.max_examples = max_examples  # cap per task (deterministic subset), None = all
        self.seed = seed
        self._cache: dict[str, Task] = {}

    def task_names(self) -> list[str]:
        raise NotImplementedError

    def _load(self, name: str) -> Task:
        raise NotImplementedError

    def default_heldout(self) -> list[str]:
        """Task names evaluated by default (the paper's or the collection's own held-out set)."""
        return []

    def describe(self, name: str) -> dict:
        """Cheap facts for `hypertune tasks list`; collections with an index override this."""
        task = self.load(name)
        return {
            "examples": len(task),
            "metrics": list(task.metrics),
            "multiple_choice": task.is_multiple_choice,
        }

    def relabelled(self, name: str, mapping: dict[str, str]) -> Task:
        """The task with its labels renamed by `mapping` (for `remap=`). Collections that write the options
        into the prompt override this to re-render it; here options and references change, inputs stay as
        they are and the instruction is dropped."""
        from ..remap import relabel_task

        return relabel_task(self.load(name), mapping)

    # -- shared behaviour ----------------------------------------------------------------------------
    def check_name(self, name: str) -> str:
        names = self.task_names()
        if name not in names:
            raise DataError(unknown_message(f"task in {self.name}", name, names))
        return name

    def load(self, name: str) -> Task:
        if name not in self._cache:
            task = self._load(self.check_name(name)).capped(self.max_examples, self.seed).deduplicated()
            if len(task) == 0:
                raise DataError(f"{task.id} has no usable examples")
            self._cache[name] = task
        return self._cache[name]

    def split(
        self,
        heldout: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        include_reserved: bool = False,
    ) -> tuple[list[str], list[str]]:
        """(training task names, held-out task names). Held-out defaults to `default_heldout()`.

        A name in `heldout`/`exclude` may be a task or a parent ("gem" covers "gem/xsum"); an unknown
        name is an error, not a silent no-op.
        """
        names = self.task_names()
        held = set(self._expand(self.default_heldout() if heldout is None else heldout, names))
        drop = set(self._expand(exclude, names))
        if not include_reserved:
            drop |= set(self.reserved_names())
        train = [n for n in names if n not in held and n not in drop]
        return train, [n for n in names if n in held and n not in drop]

    def reserved_names(self) -> list[str]:
        """Tasks kept out of both default lists."""
        return self._expand(self.reserved, self.task_names(), strict=False)

    def _expand(self, wanted: Iterable[str], names: list[str], strict: bool = True) -> list[str]:
        out = []
        for w in wanted:
            hits = [n for n in names if n == w or n.startswith(w + "/")]
            if not hits and strict:
                raise DataError(unknown_message(f"task in {self.name}", w, names))
            out += hits
        return out

    def tasks(self, names: Iterable[str] | None = None) -> Iterator[Task]:
        for n in self.task_names() if names is None else names:
            yield self.load(n)


def get_collection(name: str, remap: int | None = None, **options) -> Collection:
    """The collection `name` with its options; `remap=SEED` gives its symbol-remapped view
    (`hypertuning.data.remap`): the tasks with a fixed label set, their labels replaced by symbols."""
    collection = COLLECTIONS.get(name)(**options)
    if remap is None:
        return collection
    from ..remap import Remapped

    return Remapped(collection, remap)


def parse_task_id(task_id: str, default_collection: str = "bigbench") -> tuple[str, str]:
    """'bigbench:gem/xsum' -> ('bigbench', 'gem/xsum'); a bare name uses the default collection."""
    collection, sep, name = task_id.partition(":")
    if not sep:
        return default_collection, task_id
    if not name:
        raise DataError(f"{task_id!r}: expected COLLECTION:TASK")
    return collection, name


def load_task(task_id: str, **options) -> Task:
    collection, name = parse_task_id(task_id)
    return get_collection(collection, **options).load(name)


def check_enough(tasks: Iterable[Task], k: int) -> list[Task]:
    """Tasks that can give an episode of K shots + 1 target; the others are reported, never dropped quietly."""
    ok, short = [], []
    for t in tasks:  # distinct inputs: a shot never shares the target's input
        (ok if len({e.input for e in t.examples}) >= k + 1 else short).append(t)
    if short:
        log.warning(
            "%d task(s) have fewer than K+1=%d distinct examples and are left out: %s",
            len(short),
            k + 1,
            ", ".join(f"{t.id} ({len(t)})" for t in short),
        )
    if not ok:
        names = ", ".join(f"{t.id} ({len(t)})" for t in short[:20])
        raise DataError(f"No task has the K+1={k + 1} examples an episode needs: {names}")
    return ok


def _datasets(repo: str):
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"Reading {repo} from the hub needs the `datasets` package (pip install 'hypertuning[hub]'), "
            "or pass path= to a local dump"
        ) from None
    return datasets


def hub_rows(repo: str, name: str | None = None, split: str = "train"):
    """Rows of a hub dataset through `datasets` (an optional dependency)."""
    return _datasets(repo).load_dataset(repo, name, split=split)


def hub_config_names(repo: str) -> list[str]:
    return sorted(_datasets(repo).get_dataset_config_names(repo))
