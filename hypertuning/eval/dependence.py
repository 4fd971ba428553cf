"""Does a method read its examples? The share of its answers that move when the examples move.

For a method that reads K examples (in-context, mtf-fewshot, hyper), on one task at one few-shot seed:

- `changed_with_other_examples`: the share of evaluated items whose prediction changes when the K examples
  come from another seed (seed + 1) of the same task; None when the task's pool holds only those K;
- `changed_with_other_task`: ... when the adapter (or prompt) comes from another evaluated task's K examples:
  the next task in the evaluation's order, of another family, with the same label set, else the same
  number of options (a generative task takes the next generative one); None when there is none. The
  pairing depends on which tasks are evaluated (recorded in `dependence_info.other_task`);
- `follows_label_permutation` (tasks with a fixed label set): each item gets a uniformly random permutation
  of the labels, applied to the labels of the K examples; the share of items whose prediction moves with it
  (new prediction = the permutation of the old one). A method that ignores its examples keeps its answer,
  which follows only when the permutation happens to fix it: 1/N on average for N labels. A method that
  reads the label mapping off the examples follows every time.

A score alone cannot tell reading from a good task-agnostic adapter; these can (Text-to-LoRA issue #7 and
our own BENCHMARKS.md found generators whose output did not depend on their input). Each costs extra
adaptations and scoring passes, so `EvalSettings.dependence` turns them on for must-read tasks only
(`auto`, the default: the `mustread` collection and `remap=` views), for every task (`all`), or off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..data.episodes import heldout_shots
from ..data.remap import SkipTask, label_set
from ..data.task import Example, Task, rng_for
from ..errors import DataError

FIGURES = ("changed_with_other_examples", "changed_with_other_task", "follows_label_permutation")
MODES = ("auto", "all", "off")

# (task whose K examples are shown, those examples, the evaluated examples) -> their predictions
Predict = Callable[[Task, Sequence[Example], Sequence[Example]], list]


def wanted(task: Task, mode: str) -> bool:
    return mode == "all" or (mode == "auto" and bool(task.meta.get("must_read")))


def chance(examples: Sequence[Example]) -> float | None:
    """Expected accuracy (%) of a uniform guess over each item's options; None for generative items."""
    if not examples or not all(e.choices and e.answers for e in examples):
        return None
    return 100 * sum(len(e.answers) / len(e.choices) for e in examples) / len(examples)


def _same(a, b) -> bool:
    return (a.strip() == b.strip()) if isinstance(a, str) and isinstance(b, str) else a == b


def changed(a: Sequence, b: Sequence) -> float:
    """Share (0-1) of positions where two prediction lists differ (generations compared stripped)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"cannot compare {len(a)} predictions with {len(b)}")
    return sum(not _same(x, y) for x, y in zip(a, b, strict=True)) / len(a)


def _kind(task: Task):
    """What must match for one task's examples to stand in for another's: its label set, else its
    number of options, else 'generative'."""
    if not task.is_multiple_choice:
        return None, "generative"
    try:
        labels = label_set(task)
    except SkipTask:
        labels = None
    return labels, len(task.examples[0].choices)


def _family(task: Task) -> str:
    """A task's family: its `mustread` family, or the parent of a "parent/sub" name."""
    return task.meta.get("family") or task.name.split("/")[0]


def other_task(task: Task, tasks: Sequence[Task]) -> Task | None:
    """The next task after `task` (cyclically) of another family with the same label set, else with the
    same option count; tasks of its own family only when no other qualifies. (Two seeds of one family can
    share their labels and their mapping, e.g. review-flipped: a perfect reader would not change.)"""
    ids = [t.id for t in tasks]
    start = ids.index(task.id) if task.id in ids else -1
    ring = [tasks[(start + 1 + j) % len(tasks)] for j in range(len(tasks))]
    ring = [t for t in ring if t.id != task.id]
    labels, size = _kind(task)
    for same_family in (False, True):
        pool = [t for t in ring if (_family(t) == _family(task)) == same_family]
        for match in (lambda t: labels is not None and _kind(t)[0] == labels, lambda t: _kind(t)[1] == size):
            for t in pool:
                if match(t):
                    return t
    return None


def permute_shot(e: Example, perm: dict[str, str]) -> Example:
    """The example with its label renamed by `perm` (its correct option moves to the permuted label)."""
    new = perm[e.choices[e.answers[0]]]
    return Example(e.input, (), e.choices, (e.choices.index(new),))


def label_permutations(task: Task, n: int, seed: int) -> list[dict[str, str]] | None:
    """One uniformly random permutation of the task's labels per evaluated item; None without a fixed
    label set."""
    try:
        labels = list(label_set(task))
    except SkipTask:
        return None
    out = []
    for i in range(n):
        shuffled = rng_for(seed, "permute", task.id, i).sample(labels, len(labels))
        out.append(dict(zip(labels, shuffled, strict=True)))
    return out


def dependence(
    predict: Predict,
    task: Task,
    shots: Sequence[Example],
    examples: Sequence[Example],
    predictions: Sequence,
    seed: int,
    tasks: Sequence[Task],
    k: int,
    pool_size: int,
) -> dict:
    """The three figures (shares, 0-1) for one method on one task at one seed; see the module doc.
    `predictions` are the method's predictions for `examples` with `shots`."""
    out: dict = dict.fromkeys(FIGURES)
    info: dict = {}
    try:
        alt, _ = heldout_shots(task, k, seed + 1, pool_size, up_to=True)
        # a pool of only K examples shows the same ones at every seed (reordered): no figure then
        same = {(e.input, e.target) for e in alt} == {(e.input, e.target) for e in shots}
        info["same_examples_at_other_seed"] = same
        if not same:
            out["changed_with_other_examples"] = changed(predictions, predict(task, alt, examples))
    except DataError:
        pass
    other = other_task(task, tasks)
    if other is not None:
        try:
            o_shots, _ = heldout_shots(other, k, seed, pool_size, up_to=True)
            out["changed_with_other_task"] = changed(predictions, predict(other, o_shots, examples))
            info["other_task"] = other.id
        except DataError:
            pass
    perms = label_permutations(task, len(examples), seed)
    if perms is not None and all(s.choices and not s.outputs for s in shots):
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(perms):
            groups.setdefault(tuple(sorted(p.items())), []).append(i)
        follows = 0
        for key, items in groups.items():
            perm = dict(key)
            moved = predict(task, [permute_shot(s, perm) for s in shots], [examples[i] for i in items])
            for i, new in zip(items, moved, strict=True):
                e = examples[i]
                follows += e.choices[new] == perm[e.choices[predictions[i]]]
        out["follows_label_permutation"] = follows / len(examples)
        info["permutations"] = len(groups)
    return {**out, "dependence_info": info}
