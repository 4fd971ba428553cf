"""Training objectives: what is trained, on which data, and with which loss. The loop (`loop.py`) is shared.

An objective builds its models and data from the run config and provides:
- `module`: the nn.Module handed to accelerate; its forward(**batch) returns (summed token loss, tokens);
  frozen models are kept out of it (not registered), so checkpoints and DDP hold only what is trained;
- `batch(indices)`: the tensors for examples `indices` of its stream (a pure function: resuming at step n
  recomputes exactly the batches an uninterrupted run would have seen);
- `validation()`: fixed batches for the evaluation hook;
- `save_final(directory)`: the artefact users load (a hypermodel, a downstream checkpoint or a PEFT adapter).

A new objective is one class in a file of this folder plus its `@OBJECTIVES.register(name)` line (and
the file imported here).
"""

from .base import OBJECTIVES, TRAINABLE_FILE, EpisodeObjective, Objective, build_downstream, build_hypermodel
from .caclm import Caclm
from .evaluators import EVALUATORS, task_score, validation_loss
from .full import MtfFewshot, MtfFull, PlainLM
from .hyper import TEACHER, HyperLM, HyperObjective, Joint, MtfHyper, distillation_loss, save_hypermodel
from .peft import MtfPeft, PeftLM, PeftObjective, PeftTask, save_peft

__all__ = [
    "EVALUATORS",
    "OBJECTIVES",
    "TEACHER",
    "TRAINABLE_FILE",
    "Caclm",
    "EpisodeObjective",
    "HyperLM",
    "HyperObjective",
    "Joint",
    "MtfFewshot",
    "MtfFull",
    "MtfHyper",
    "MtfPeft",
    "Objective",
    "PeftLM",
    "PeftObjective",
    "PeftTask",
    "PlainLM",
    "build_downstream",
    "build_hypermodel",
    "distillation_loss",
    "save_hypermodel",
    "save_peft",
    "task_score",
    "validation_loss",
]
