"""Task metrics, each a function of (predictions, references) returning a percentage (0-100, as the paper's
tables are written).

- `accuracy`: rank classification; a prediction is the index of the chosen option, a reference the tuple
  of correct indices (BIG-bench marks ties, several options can be correct).
- `exact_match`: generated text against one or more references (BIG-bench lists several); the best
  reference counts. Both sides are stripped of surrounding whitespace, nothing else, as BIG-bench's
  `exact_str_match` compares them.
- `rouge_l`: ROUGE-L F-measure from `rouge-score` (the reference implementation the paper's S-NI numbers
  use), the best over references.
- `bleu`: corpus BLEU from `sacrebleu` with multiple references, as BIG-bench computes it.
- `macro_f1`: generated labels against gold labels, F1 averaged over the gold classes as MetaICL's
  evaluation does; written by hand because its class set (gold classes only) differs from scikit-learn's
  default (the union with predicted labels), and scikit-learn would be a heavy dependency for ten lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..data.task import METRICS, Task

MetricFn = Callable[[Sequence, Sequence], float]
# Generated text is compared with references; rank classification predicts an option's index.
GENERATIVE = ("exact_match", "rouge_l", "bleu", "macro_f1")


def _check(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def accuracy(predictions: Sequence[int], references: Sequence[Sequence[int]]) -> float:
    _check(predictions, references)
    return 100.0 * sum(p in set(r) for p, r in zip(predictions, references, strict=True)) / len(predictions)


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    _check(predictions, references)
    hits = sum(
        p.strip() in {r.strip() for r in refs} for p, refs in zip(predictions, references, strict=True)
    )
    return 100.0 * hits / len(predictions)


_rouge = None


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    global _rouge
    from rouge_score import rouge_scorer

    _check(predictions, references)
    if _rouge is None:
        _rouge = rouge_scorer.RougeScorer(["rougeL"])
    total = 0.0
    for p, refs in zip(predictions, references, strict=True):
        total += max(_rouge.score(r, p)["rougeL"].fmeasure for r in refs)
    return 100.0 * total / len(predictions)


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    import sacrebleu

    _check(predictions, references)
    width = max(len(r) for r in references)
    # sacrebleu wants one stream per reference position; missing references are empty strings
    streams = [[refs[i] if i < len(refs) else "" for refs in references] for i in range(width)]
    return float(sacrebleu.corpus_bleu(list(predictions), streams).score)


def macro_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    _check(predictions, references)
    pred = [p.strip() for p in predictions]
    gold = [r[0].strip() for r in references]
    f1s = []
    for c in sorted(set(gold)):
        tp = sum(p == c and g == c for p, g in zip(pred, gold, strict=True))
        n_pred, n_gold = pred.count(c), gold.count(c)
        precision = tp / n_pred if n_pred else 0.0  # a class never predicted scores 0, not an error
        recall = tp / n_gold
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return 100.0 * sum(f1s) / len(f1s)


METRIC_FNS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "exact_match": exact_match,
    "rouge_l": rouge_l,
    "bleu": bleu,
    "macro_f1": macro_f1,
}
assert set(METRIC_FNS) == set(METRICS)


def task_metrics(task: Task) -> tuple[str, ...]:
    """The metrics a task is scored with: rank classification (`accuracy`, and `macro_f1` over the chosen
    options when the task declares it) for multiple-choice tasks, the task's generative metrics otherwise. The first is its headline number in tables."""
    if task.is_multiple_choice:
        # ranked options; classification tasks that declare macro-F1 (MetaICL's) report it first, as the
        # paper does, with accuracy beside it
        return ("macro_f1", "accuracy") if "macro_f1" in task.metrics else ("accuracy",)
    metrics = [m for m in task.metrics if m in GENERATIVE]
    preferred = task.meta.get("preferred_score")
    if preferred:
        from ..data.task import metric_name

        name = metric_name(preferred)
        if name in metrics:
            metrics.remove(name)
            metrics.insert(0, name)
    return tuple(metrics) or ("exact_match", "rouge_l")
