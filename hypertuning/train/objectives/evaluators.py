"""Validation hooks the loop calls every eval.every steps (eval.metric names one)."""

from __future__ import annotations

import torch
from torch import nn

from ..._registry import Registry
from ...errors import HypertuningError
from .base import (
    Objective,
)
from .peft import PeftTask

EVALUATORS: Registry = Registry("evaluator")


@EVALUATORS.register("loss")
def validation_loss(objective: Objective, module: nn.Module, batches: list[dict], device) -> dict:
    """Token-weighted mean loss over the objective's fixed validation batches."""
    total, tokens = 0.0, 0
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            for b in batches:
                loss, n = module(**{k: v.to(device) for k, v in b.items()})
                total, tokens = total + float(loss), tokens + int(n)
    finally:
        module.train(was)
    return {"eval_loss": total / max(tokens, 1), "eval_tokens": tokens}


@EVALUATORS.register("score")
def task_score(objective: Objective, module: nn.Module, batches: list[dict], device) -> dict:
    """peft_task: the held-out task's own metric (accuracy, exact match, ROUGE-L...) on its evaluation
    examples under the PEFT parameters being trained, through the same scorer as `hypertune eval`; logged
    against training steps, it gives the paper's Figure 5."""
    from ...eval.scoring import score_task

    if not isinstance(objective, PeftTask):
        raise HypertuningError(
            f"eval.metric=score is for peft_task runs; use eval.metric=loss for {objective.cfg.objective}"
        )
    peft = objective.module  # not `module`, which accelerate may have wrapped (DDP)
    ds, examples = objective.downstream, list(objective.eval_examples)
    with torch.no_grad():
        phi = peft.target.bind({k: v.detach() for k, v in peft.params().items()})
    contexts = ds.encode_inputs([e.input for e in examples], stats=objective.stats)
    result = score_task(
        ds, objective.task, examples, contexts, phi, batch_size=objective.cfg.train.batch_size
    )
    return {"eval_score": result.score, **{f"eval_{k}": v for k, v in result.metrics.items()}}
