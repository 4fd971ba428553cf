"""The methods compared on held-out tasks (the rows of the paper's Tables 1-3), all scored by `score_task`.

A method turns (task, its K shots, the evaluation examples) into an `Adaptation`: which downstream model
runs, with which adapter, on which prompts. A method is named on the command line as `[LABEL:]KIND[=PATH]`:

| kind | PATH | the model sees |
|---|---|---|
| `zero-shot` | - | the frozen downstream model, x alone |
| `in-context` | - | the frozen downstream model, the instruction and K examples written before x |
| `mtf` | a `mtf_full` run's `final/` | the fine-tuned model, x alone (T5-MTF) |
| `mtf-fewshot` | a `mtf_fewshot` run's `final/` | the fine-tuned model, K examples before x |
| `peft` | a PEFT adapter (`mtf_peft` final/, or any adapter) | the frozen model with one shared adapter, x |
| `hyper` | a hypermodel (`mtf_hyper` or `joint` final/) | its downstream model with the adapter it generates from the K examples (and instruction), x |

A `joint` hypermodel names its own fine-tuned downstream checkpoint, so `hyper` also gives HyperT5-X+.
A new method is one class here plus its `@METHODS.register(kind)` line.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._registry import Registry
from ..data.task import Example, Task
from ..errors import HypertuningError

METHODS: Registry[type[Method]] = Registry("evaluation method")


@dataclass
class Adaptation:
    downstream: object  # the Downstream that runs
    adapter: object  # None, or the Adapter applied to every row
    contexts: list[list[int]]  # prompt token ids, one per evaluation example
    seconds: float = 0.0  # time spent adapting to the task (a hypermodel's forward pass)
    stats: dict = field(default_factory=dict)  # examples dropped or inputs truncated to fit the budgets


class Models:
    """Downstream models loaded once per checkpoint and shared by the methods, with the evaluation's
    length limits and device."""

    def __init__(
        self,
        base: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        limits: dict | None = None,
    ):
        self.base_name, self.device, self.dtype = base, device, dtype
        self.limits = {k: v for k, v in (limits or {}).items() if v is not None}
        self._loaded: dict[str, object] = {}

    def load(self, name: str):
        from ..models.downstream import load_downstream
        from ..models.loading import resolve_checkpoint

        key = resolve_checkpoint(name)
        if key not in self._loaded:
            ds = load_downstream(name, dtype=self.dtype, device=self.device)
            for k, v in self.limits.items():
                setattr(ds, k, v)
            self._loaded[key] = ds
        return self._loaded[key]

    @property
    def base(self):
        if self.base_name is None:
            raise HypertuningError(
                "zero-shot and in-context need a downstream model: pass --downstream, or a hyper/peft method "
                "whose files name one"
            )
        return self.load(self.base_name)


def shots_hash(shots: Sequence[Example], instruction: str | None = None) -> str:
    """Identifies the examples a method was shown (the same for every method at one seed)."""
    data = [instruction, [(e.input, e.target) for e in shots]]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:12]


class Method:
    kind = "?"
    uses_shots = False  # False: the result does not depend on the few-shot seed (evaluated once)
    in_context = False  # the K examples are written into the prompt

    def __init__(self, models: Models, path: str | None = None, label: str | None = None):
        self.models, self.path = models, path
        self.label = label or (self.kind if path is None else f"{self.kind}({_run_name(path)})")

    def info(self) -> dict:
        return {"label": self.label, "kind": self.kind, "path": self.path}

    def downstream(self):
        return self.models.base

    def adapt(self, task: Task, shots: Sequence[Example], examples: Sequence[Example]) -> Adaptation:
        return self.adaptation(self.downstream(), None, task, shots, examples)

    def adaptation(self, ds, adapter, task, shots, examples, seconds: float = 0.0) -> Adaptation:
        """The prompts for `examples`, with counts of what the length budgets cut instead of warnings."""
        stats: Counter = Counter()
        if self.in_context:
            pairs = [(s.input, s.target) for s in shots]
            contexts = [
                ds.encode_in_context(pairs, task.instruction, e.input, task.shot_separator, stats=stats)
                for e in examples
            ]
        else:
            contexts = ds.encode_inputs([e.input for e in examples], stats=stats)
        return Adaptation(ds, adapter, contexts, seconds, dict(stats))


def _run_name(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name == "final" else p.name


def _needs_path(method: Method) -> str:
    if not method.path:
        raise HypertuningError(f"method {method.kind!r} needs a path: {method.kind}=DIR")
    return method.path


@METHODS.register("zero-shot")
class ZeroShot(Method):
    kind = "zero-shot"


@METHODS.register("in-context")
class InContext(Method):
    kind = "in-context"
    uses_shots = in_context = True


@METHODS.register("mtf")
class Mtf(Method):
    kind = "mtf"

    def downstream(self):
        return self.models.load(_needs_path(self))


@METHODS.register("mtf-fewshot")
class MtfFewshot(Mtf):
    kind = "mtf-fewshot"
    uses_shots = in_context = True


@METHODS.register("peft")
class Peft(Method):
    kind = "peft"

    def __init__(self, models, path=None, label=None):
        super().__init__(models, path, label)
        from ..adapter import Adapter, plain_peft_base

        base = plain_peft_base(_needs_path(self))  # a plain PEFT adapter: checked against its base model
        ds = self.models.load(base) if base is not None else None
        self.adapter = Adapter.from_pretrained(self.path, downstream=ds)

    def info(self):
        return {
            **super().info(),
            "target": self.adapter.target,
            "training": self.adapter.meta.get("training"),
        }

    def downstream(self):
        return self.models.load(self.adapter.spec.checkpoint)

    def adapt(self, task, shots, examples):
        return self.adaptation(self.downstream(), self.adapter, task, shots, examples)


@METHODS.register("hyper")
class Hyper(Method):
    kind = "hyper"
    uses_shots = True

    def __init__(self, models, path=None, label=None):
        super().__init__(models, path, label)
        from ..hyper import HyperModel

        spec = HyperModel.read_spec(_needs_path(self))
        self.hypermodel = HyperModel.from_pretrained(path, downstream=models.load(spec.checkpoint))
        self.hypermodel.to(models.device or "cpu")

    def info(self):
        c = self.hypermodel.config
        return {**super().info(), "target": c.target, "training": c.extra.get("training")}

    def downstream(self):
        return self.models.load(self.hypermodel.spec.checkpoint)

    def adapt(self, task, shots, examples):
        dropped: Counter = Counter()  # what the hypermodel's input budget cut, recorded like in-context's
        start = time.perf_counter()
        adapter = self.hypermodel.generate([(s.input, s.target) for s in shots], task.instruction, dropped)
        took = time.perf_counter() - start
        adaptation = self.adaptation(self.downstream(), adapter, task, shots, examples, took)
        adaptation.stats.update(dropped)
        return adaptation


def parse_method(text: str) -> tuple[str | None, str, str | None]:
    """`[LABEL:]KIND[=PATH]` -> (label, kind, path)."""
    head, _, path = text.partition("=")
    label, _, kind = head.rpartition(":")
    return label or None, kind.strip(), path or None


def build_methods(specs: Sequence[str], models: Models) -> list[Method]:
    methods = []
    for text in specs:
        label, kind, path = parse_method(text)
        methods.append(METHODS.get(kind)(models, path, label))
    labels = [m.label for m in methods]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise HypertuningError(f"two methods are labelled {sorted(dup)}; name them with LABEL:KIND=PATH")
    return methods
