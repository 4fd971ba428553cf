"""Evaluation: metrics, rank classification and generation shared by every method, held-out reports."""

from .methods import METHODS, Adaptation, Method, Models, build_methods, parse_method
from .metrics import METRIC_FNS, accuracy, bleu, exact_match, macro_f1, rouge_l, task_metrics
from .runner import EvalSettings, Results, evaluate, format_table
from .scoring import NORMALISATIONS, TaskScore, rank_choices, score_task

__all__ = [
    "METHODS",
    "METRIC_FNS",
    "NORMALISATIONS",
    "Adaptation",
    "EvalSettings",
    "Method",
    "Models",
    "Results",
    "TaskScore",
    "accuracy",
    "bleu",
    "build_methods",
    "evaluate",
    "exact_match",
    "format_table",
    "macro_f1",
    "parse_method",
    "rank_choices",
    "rouge_l",
    "score_task",
    "task_metrics",
]
