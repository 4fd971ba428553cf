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
def validation_loss(
    objective: Objective, module: nn.Module, batches: list[dict], device, accelerator=None
) -> dict:
    """Token-weighted mean loss over the objective's fixed validation batches. Under several processes
    each rank computes every num_processes-th batch and the sums are reduced, so the figure is the one
    process's, computed once."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine = batches[rank::world]
    total, tokens = 0.0, 0
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            for b in mine:
                loss, n = module(**{k: v.to(device) for k, v in b.items()})
                total, tokens = total + float(loss), tokens + int(n)
    finally:
        module.train(was)
    counts = [len(mine)]
    if world > 1:
        sums = accelerator.reduce(torch.tensor([total, tokens], dtype=torch.float64, device=device), "sum")
        total, tokens = float(sums[0]), int(sums[1])
        counts = accelerator.gather(torch.tensor([len(mine)], device=device)).tolist()
    return {"eval_loss": total / max(tokens, 1), "eval_tokens": tokens, "eval_batches_per_process": counts}


@EVALUATORS.register("score")
def task_score(
    objective: Objective, module: nn.Module, batches: list[dict], device, accelerator=None
) -> dict:
    """peft_task: the held-out task's own metric (accuracy, exact match, ROUGE-L...) on its evaluation
    examples under the PEFT parameters being trained, through the same scorer as `hypertune eval`; logged
    against training steps, it gives the paper's Figure 5."""
    from ...eval.scoring import score_task

    if not isinstance(objective, PeftTask):
        raise HypertuningError(
            f"eval.metric=score is for peft_task runs; use eval.metric=loss for {objective.cfg.objective}"
        )
    from accelerate.utils import DistributedType

    sharded = accelerator is not None and accelerator.distributed_type in (
        DistributedType.FSDP,
        DistributedType.DEEPSPEED,
    )
    if sharded:
        # every rank takes part in the gather (collective), but accelerate returns the full state on the
        # main process only (FSDP2 offloads it there; other ranks get an empty dict): the main process,
        # which alone logs, scores an unsharded copy
        state = accelerator.get_state_dict(module)
        if not accelerator.is_main_process:
            return {}
        with objective.unsharded(state) as peft:
            with torch.no_grad():
                phi = peft.target.bind({k: v.detach() for k, v in peft.params().items()})
    else:
        peft = objective.module  # not `module`, which accelerate may have wrapped (DDP)
        with torch.no_grad():
            phi = peft.target.bind({k: v.detach() for k, v in peft.params().items()})
    ds, examples = objective.downstream, list(objective.eval_examples)
    contexts = ds.encode_inputs([e.input for e in examples], stats=objective.stats)
    result = score_task(
        ds, objective.task, examples, contexts, phi, batch_size=objective.cfg.train.batch_size
    )
    return {"eval_score": result.score, **{f"eval_{k}": v for k, v in result.metrics.items()}}
