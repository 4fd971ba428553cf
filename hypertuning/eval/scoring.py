"""Scoring one task's evaluation examples under one adapted model: rank classification of answer options by
log-likelihood, or greedy generation, then the task's metrics. Every method goes through `score_task`;
methods differ only in the model, the adapter and the prompt they hand it (see methods.py).

Length normalisation of option log-likelihoods (`normalisation=`):
- `"none"` (default): the summed log-probability of the option's tokens. This is what T0's evaluation of
  P3 does (bigscience-workshop/t-zero, `seq_log_prob.sum(-1)`), and so the paper's P3 numbers.
- `"token"`: the mean log-probability per option token (GPT-3's "per-token" normalisation).
- `"char"`: the summed log-probability divided by the option's length in characters (lm-evaluation-harness's
  `acc_norm`), which does not depend on the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..data.task import Example, Task
from ..errors import HypertuningError
from .metrics import METRIC_FNS, task_metrics

NORMALISATIONS = ("none", "token", "char")


@dataclass
class TaskScore:
    metrics: dict[str, float]  # metric name -> percentage
    predictions: list = field(default_factory=list)  # option index or generated text, per example

    @property
    def score(self) -> float:
        """The headline number: the task's first metric."""
        return next(iter(self.metrics.values()))


def option_logprobs(
    downstream,
    contexts: Sequence[list[int]],
    choices: Sequence[Sequence[str]],
    adapter=None,
    normalisation: str = "none",
    batch_size: int = 8,
    choice_ids: Sequence[Sequence[list[int]] | None] | None = None,
) -> list[list[float]]:
    """The (normalised) log-likelihood of every option after its context; all options of all contexts go
    through the model as one batched stream. `adapter` is None, one Adapter, or one Adapter (or None)
    per context. `choice_ids`: the options already tokenised by `downstream.encode_targets`, per context
    (None for a context to tokenise here)."""
    if normalisation not in NORMALISATIONS:
        raise HypertuningError(
            f"normalisation must be one of {', '.join(NORMALISATIONS)}; got {normalisation!r}"
        )
    per_context = isinstance(adapter, list)
    rows_ctx, rows_cont, rows_len, rows_adapter = [], [], [], []
    for i, (ctx, opts) in enumerate(zip(contexts, choices, strict=True)):
        if not opts:
            raise HypertuningError(f"example {i} has no answer options to rank")
        given = choice_ids[i] if choice_ids is not None else None
        for text, ids in zip(opts, given or downstream.encode_targets(list(opts)), strict=True):
            rows_ctx.append(ctx)
            rows_cont.append(ids)
            rows_len.append({"none": 1, "token": len(ids), "char": max(len(text), 1)}[normalisation])
            rows_adapter.append(adapter[i] if per_context else None)
    lp = downstream.loglikelihood_ids(
        rows_ctx, rows_cont, rows_adapter if per_context else adapter, batch_size
    )
    lp = (lp / torch.tensor(rows_len, dtype=lp.dtype)).tolist()
    out, start = [], 0
    for opts in choices:
        out.append(lp[start : start + len(opts)])
        start += len(opts)
    return out


def rank_choices(
    downstream,
    contexts: Sequence[list[int]],
    choices: Sequence[Sequence[str]],
    adapter=None,
    normalisation: str = "none",
    batch_size: int = 8,
) -> list[int]:
    """The index of the best option for each context, by (normalised) log-likelihood."""
    scores = option_logprobs(downstream, contexts, choices, adapter, normalisation, batch_size)
    return [max(range(len(s)), key=s.__getitem__) for s in scores]


def generation_budget(downstream, task: Task, examples: Sequence[Example]) -> int:
    """New tokens to generate: the longest reference of the evaluated examples plus a margin, within the
    downstream target limit (generating far past every reference only costs time)."""
    refs = [r for e in examples for r in e.references]
    longest = max(
        (len(downstream.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs), default=0
    )
    return max(1, min(downstream.max_target_tokens, longest + 8))


def stop_strings(task: Task, examples: Sequence[Example]) -> tuple[str, ...]:
    """The task's own stop strings; otherwise a newline when no reference spans lines, since a decoder-only
    model trained without an end-of-sequence token would otherwise run on to `max_new_tokens`."""
    if task.stop:
        return task.stop
    if any("\n" in r.strip() for e in examples for r in e.references):
        return ()
    return ("\n",)


def score_task(
    downstream,
    task: Task,
    examples: Sequence[Example],
    contexts: Sequence[list[int]],
    adapter=None,
    normalisation: str = "none",
    batch_size: int = 8,
    metrics: Sequence[str] | None = None,
) -> TaskScore:
    """The task's metrics for `examples`, whose prompts (token ids) are `contexts`, under `adapter`."""
    if not examples:
        raise HypertuningError(f"{task.id}: no evaluation examples")
    metrics = tuple(metrics or task_metrics(task))
    if metrics[0] == "accuracy" or (metrics[0] == "macro_f1" and task.is_multiple_choice):
        preds = rank_choices(
            downstream, contexts, [e.choices for e in examples], adapter, normalisation, batch_size
        )
        scores = {"accuracy": METRIC_FNS["accuracy"](preds, [e.answers for e in examples])}
        if "macro_f1" in metrics:  # over the chosen options' text against the correct one's
            chosen = [e.choices[p] for e, p in zip(examples, preds, strict=True)]
            gold = [[e.choices[e.answers[0]]] for e in examples]
            scores["macro_f1"] = METRIC_FNS["macro_f1"](chosen, gold)
        return TaskScore({m: scores[m] for m in metrics if m in scores}, preds)
    preds = downstream.generate_ids(
        list(contexts),
        adapter,
        max_new_tokens=generation_budget(downstream, task, examples),
        batch_size=batch_size,
        stop=stop_strings(task, examples),
    )
    refs = [e.references for e in examples]
    return TaskScore({m: METRIC_FNS[m](preds, refs) for m in metrics}, preds)
