"""Ordinary PEFT parameters: mtf_peft (one set for every task) and peft_task (one held-out task, from
random, shared or hypermodel-generated initialisation)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..._io import atomic_write, read_safetensors
from ...adapter import Adapter
from ...data.collections import get_collection
from ...data.episodes import heldout_shots
from ...data.task import config_hash
from ...errors import CheckpointError, HypertuningError
from ...hyper import HyperModel
from ...peft import TARGETS
from ..config import RunConfig
from .base import (
    OBJECTIVES,
    TRAINABLE_FILE,
    EpisodeObjective,
    Objective,
    epoch_item,
    training_lineage,
)


class PeftLM(nn.Module):
    """Ordinary PEFT parameters (one set for every row) on the frozen downstream model."""

    def __init__(self, target, downstream):
        super().__init__()
        self.target = target
        self.params = target.trainable(downstream)
        self._downstream = (downstream,)

    def forward(self, **lm):
        return self._downstream[0].lm_loss(lm, self.target.bind(self.params()))


class PeftObjective(EpisodeObjective):
    def build_target(self):
        p = self.cfg.peft
        return TARGETS.get(p.target)(self.downstream.spec, **p.options)

    def build_module(self):
        torch.manual_seed(self.cfg.seed)
        return PeftLM(self.build_target(), self.downstream)

    def save_final(self, directory, step):
        save_peft(self, directory, step)


def save_peft(obj, directory: Path, step: int) -> None:
    module = obj.module
    with torch.no_grad():
        phi = {k: v.detach().float().cpu().contiguous() for k, v in module.params().items()}
    t = module.target
    meta = {"training": training_lineage(obj.cfg, step)}
    Adapter(t.name, t.options, obj.downstream.spec, phi, meta).save_pretrained(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in module.params.state_dict().items()}
    atomic_write(directory / TRAINABLE_FILE, lambda p: save_file(state, p, metadata={"format": "pt"}))


@OBJECTIVES.register("mtf_peft")
class MtfPeft(PeftObjective):
    """One shared prefix, Prefix-MLP or LoRA trained on every training task (MTF-Prefix / MTF-LoRA)."""

    reads_shots = False


@OBJECTIVES.register("peft_task")
class PeftTask(PeftObjective):
    """Single-task PEFT on one held-out task, from random, shared (an mtf_peft run) or hyper initialisation
    (a hypermodel reading K examples of the task's training pool: the same K the evaluation shows)."""

    def __init__(self, cfg: RunConfig):
        Objective.__init__(self, cfg)
        p = cfg.peft
        if not p.task:
            raise HypertuningError("peft_task needs peft.task: COLLECTION:TASK")
        if p.init not in ("random", "shared", "hyper"):
            raise HypertuningError(f"peft.init must be random, shared or hyper; got {p.init!r}")
        if p.train_on not in ("pool", "shots"):
            raise HypertuningError(f"peft.train_on must be pool or shots; got {p.train_on!r}")
        if p.init != "random" and not p.init_from:
            raise HypertuningError(f"peft.init={p.init} needs peft.init_from (a directory)")
        collection, _, name = p.task.rpartition(":")
        # loaded as `hypertune eval` loads it: data.options' max_examples caps the training mixture's tasks,
        # and capping the held-out task too would split it into other shots and evaluation examples
        options = {k: v for k, v in cfg.data.options.items() if k != "max_examples"}
        task = get_collection(collection or cfg.data.collection, **options).load(name)
        seed = p.few_shot_seed if p.few_shot_seed is not None else cfg.seed
        self.shots, evaluation = heldout_shots(task, p.k, seed, p.pool_size)
        self.pool, _ = task.split(pool_size=max(p.pool_size, p.k), seed=0)
        # "shots": back-propagation on exactly the K examples the hypermodel reads (adaptation-cost study)
        self.train_examples = self.shots if p.train_on == "shots" else self.pool.examples
        # eval.batches x train.batch_size evaluation examples (all with eval.batches=0): the same deterministic
        # subset `hypertune eval --max-examples` scores, so that step 0 under one initialisation reproduces it
        n_eval = cfg.eval.batches * cfg.train.batch_size
        self.eval_examples = evaluation.capped(n_eval or None, seed=0).examples
        self.task, self.stats = task, Counter()
        self.hyper = self.generated = None
        if p.init == "hyper":
            self.hyper = HyperModel.from_pretrained(p.init_from, self.downstream)
            self.generated = self.hyper.generate([(e.input, e.target) for e in self.shots], task.instruction)
        self.module = self.build_module()
        self.initialise(p)
        self.stream_fingerprint = config_hash(
            task.id, len(self.pool), p.pool_size, p.k, seed, *(["shots"] if p.train_on == "shots" else [])
        )

    def build_target(self):
        if self.hyper is not None:  # the generated parameters decide the shapes (rank, prefix length)
            if self.hyper.config.target != self.cfg.peft.target:
                raise CheckpointError(
                    f"{self.cfg.peft.init_from} generates {self.hyper.config.target}, not {self.cfg.peft.target}"
                )
            return self.hyper.target.shaped_like(self.generated.phi)
        return super().build_target()

    def initialise(self, p) -> None:
        params = self.module.params
        if p.init == "shared":
            src = Path(p.init_from)
            shared = Adapter.from_pretrained(src)
            self.downstream.check_compatible(shared.spec, "shared PEFT checkpoint")
            if (shared.target, p.target) == ("prefix-mlp", "prefix"):
                params.load_phi(shared.phi)  # Prefix-Flat (Shared): the MLP's output prefixes (Table 6)
                return
            if shared.target != p.target:
                raise CheckpointError(f"{src} holds a {shared.target} adapter, not {p.target}")
            try:
                params.load_state_dict(read_safetensors(src / TRAINABLE_FILE))
            except RuntimeError as e:
                raise CheckpointError(f"{src / TRAINABLE_FILE} does not fit peft.options: {e}") from None
        elif p.init == "hyper":
            if p.target == "prefix-mlp":
                params.load_phi(self.generated.phi, self.hyper.heads)
            else:
                params.load_phi(self.generated.phi)

    def encode(self, examples):
        ds = self.downstream
        inputs = ds.encode_inputs([e.input for e in examples], stats=self.stats)
        targets = ds.encode_targets([e.target for e in examples], stats=self.stats)
        return ds.lm_batch(inputs, targets)

    def batch(self, indices):
        n = len(self.train_examples)
        return self.encode(
            [self.train_examples[epoch_item(n, i, self.cfg.seed, "peft_task")] for i in indices]
        )

    def validation(self, processes: int = 1):
        b = self.cfg.train.batch_size  # the task's fixed evaluation examples, whatever the process count
        ex = self.eval_examples
        return [self.encode(ex[i : i + b]) for i in range(0, len(ex), b)]
