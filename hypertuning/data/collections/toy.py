"""`toy`: small synthetic tasks generated in code, for smoke runs and tests (nothing to fetch).

Each task is only identifiable from its examples, as real held-out tasks are: "label-N" tasks map words to
labels by a random table of their own, so a model can only answer them by reading the examples (which is
what a hypermodel must learn); the others are fixed string operations (copy, reverse, first/last word...).
Every task and document is a pure function of its name and the collection seed.
"""

from __future__ import annotations

from ..task import Example, Task, rng_for
from .base import COLLECTIONS, Collection

WORDS = (
    "cat dog sun moon tree rock blue red cold warm fast slow big small old new wet dry loud calm "
    "bird fish milk salt gold iron rain snow"
).split()
LABELS = ("yes", "no", "maybe", "never")
OPERATIONS = {
    "copy": lambda ws: " ".join(ws),
    "reverse": lambda ws: " ".join(reversed(ws)),
    "first": lambda ws: ws[0],
    "last": lambda ws: ws[-1],
    "sort": lambda ws: " ".join(sorted(ws)),
    "count": lambda ws: str(len(ws)),
    "upper": lambda ws: " ".join(ws).upper(),
}


@COLLECTIONS.register("toy")
class Toy(Collection):
    name = "toy"

    def __init__(self, label_tasks: int = 8, examples: int = 64, max_examples=None, seed: int = 0):
        super().__init__(max_examples, seed)
        self.label_tasks, self.examples = label_tasks, examples

    def task_names(self) -> list[str]:
        return sorted(OPERATIONS) + [f"label-{i}" for i in range(self.label_tasks)]

    def default_heldout(self) -> list[str]:
        return ["reverse", "label-0"]

    def _load(self, name: str) -> Task:
        rng = rng_for(self.seed, "toy", name)
        out = []
        if name.startswith("label-"):
            table = {w: rng.choice(LABELS) for w in WORDS}
            for _ in range(self.examples):
                w = rng.choice(WORDS)
                out.append(Example(w, choices=LABELS, answers=(LABELS.index(table[w]),)))
        else:
            op = OPERATIONS[name]
            for _ in range(self.examples):
                ws = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
                out.append(Example(" ".join(ws), outputs=(op(ws),)))
        return Task(name, tuple(out), collection="toy")


def toy_documents(n: int = 200, seed: int = 0) -> list[str]:
    """Word-salad documents for smoke CACLM runs."""
    rng = rng_for(seed, "toy-documents")
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120))) + "." for _ in range(n)]
