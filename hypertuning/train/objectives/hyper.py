"""Objectives that train a hypermodel: mtf_hyper (optionally distilled from the in-context model) and
joint."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ...data.format import pad_batch
from ...data.task import sample_shots
from ...errors import HypertuningError
from ...hyper import HyperModel
from ...hyper.diagnostics import flat_phi, phi_spread
from ...models.downstream import _fingerprint
from .base import (
    OBJECTIVES,
    EpisodeObjective,
    build_hypermodel,
    lm_collate,
    training_lineage,
)


# -- trainable modules -------------------------------------------------------------------------------------
class HyperLM(nn.Module):
    """Hypermodel -> phi -> downstream LM loss. The downstream model is registered (trained) only for `joint`."""

    def __init__(self, hypermodel: HyperModel, downstream, train_downstream: bool, distill: float = 0.0):
        super().__init__()
        self.hypermodel = hypermodel
        if train_downstream:
            self.downstream_model = downstream.model
        self._downstream = (downstream,)  # a tuple: not a registered submodule
        self.distill = distill

    def forward(self, hyper_ids, hyper_mask, **batch):
        lm = {k: v for k, v in batch.items() if not k.startswith(TEACHER)}
        phi = self.hypermodel(hyper_ids, hyper_mask)
        ds, bound = self._downstream[0], self.hypermodel.target.bind(phi)
        if not (self.distill and self.training):  # validation reports the plain LM loss
            return ds.lm_loss(lm, bound)
        teacher = {k[len(TEACHER) :]: v for k, v in batch.items() if k.startswith(TEACHER)}
        return distillation_loss(ds, lm, bound, teacher, self.distill)


TEACHER = "teacher_"  # batch keys of the in-context teacher's inputs (train.distill)


def distillation_loss(downstream, lm: dict, phi, teacher: dict, weight: float):
    """(1 - weight) x the summed LM loss + weight x the summed KL(teacher || student) over the labelled
    tokens, and their number. The teacher is the same frozen downstream model with the episode's examples
    written before the query (the in-context prompt), without phi; both batches end in the same targets, so
    their labelled tokens align row by row (checked). Context distillation (Snell et al. 2022; Doc-to-LoRA's
    KL loss): it rewards the adapter for what the examples change in the model's whole next-token
    distribution, not only for the gold token."""
    logits, labels = downstream.labelled_logits(lm, phi)
    with torch.no_grad():
        t_logits, t_labels = downstream.labelled_logits(teacher)
    if not torch.equal(labels, t_labels):
        raise HypertuningError("distillation: the teacher's labelled tokens differ from the student's")
    logp = nn.functional.log_softmax(logits, -1)
    kl = nn.functional.kl_div(logp, nn.functional.log_softmax(t_logits, -1), log_target=True, reduction="sum")
    ce = nn.functional.nll_loss(logp, labels, reduction="sum")
    return (1 - weight) * ce + weight * kl, labels.new_tensor(len(labels))


class HyperObjective(EpisodeObjective):
    _probes: tuple | None = None
    has_diagnostics = True

    def build_hypermodel(self):
        return build_hypermodel(self.cfg, self.downstream)

    def diagnostics(self, device) -> dict:
        """eval_phi_same_task / eval_phi_other_task (see `hyper/diagnostics.py`): how far phi moves with
        another set of examples of one validation task, and with another task. Both near 0 mean the
        hypermodel ignores its examples, whatever the loss says."""
        if not self.cfg.eval.phi_probes:
            return {}
        if self._probes is None:
            self._probes = self.phi_probes(self.cfg.eval.phi_probes)
        ids, mask, groups = self._probes
        hm = self.hypermodel
        was = hm.training
        hm.eval()
        try:
            with torch.no_grad():
                phi = hm(ids.to(device), mask.to(device))
        finally:
            hm.train(was)
        return {f"eval_{k}": v for k, v in phi_spread(flat_phi(phi), groups).items()}

    def phi_probes(self, n: int):
        """Hypermodel inputs for `n` validation tasks spread over the list, two sets of K examples each
        (one set when K=0 or with fixed demonstrations, which cannot differ); fixed for the whole run."""
        s = self.val_sampler
        m = min(n, len(s.tasks))
        tasks = [s.tasks[i * len(s.tasks) // m] for i in range(m)]
        sets = 2 if s.k and s.shots == "sample" else 1
        seqs, groups = [], []
        for t in tasks:
            for j in range(sets):
                if s.shots == "sample":
                    shots = sample_shots(t.examples, s.k, self.cfg.seed, "phi_probe", t.id, j)
                else:
                    shots = list(t.demonstrations[: s.k])
                pairs = [(e.input, e.target) for e in shots]
                instruction = t.instruction if s.use_instruction else None
                seqs.append(self.hypermodel.encode_ids(pairs, instruction, stats=Counter()))
                groups.append(t.id)
        ids, mask = pad_batch(seqs, self.hypermodel.tokenizer.pad_token_id or 0)
        return ids, mask, groups

    @property
    def in_context(self) -> bool:  # the distillation teacher reads the examples in context
        return bool(self.cfg.train.distill)

    def build_module(self):
        return HyperLM(self.hypermodel, self.downstream, self.trains_downstream, self.cfg.train.distill)

    def collate(self, items):
        batch = lm_collate(self.downstream, items, self.hypermodel.tokenizer.pad_token_id or 0)
        if self.in_context:
            teacher = self.downstream.lm_batch(
                [it.in_context_ids for it in items], [it.target_ids for it in items]
            )
            batch.update({TEACHER + k: v for k, v in teacher.items()})
        return batch

    def checkpointable(self):
        return [*self.hypermodel.trainable_backbones(), self.downstream.model]

    def save_final(self, directory, step):
        save_hypermodel(self, directory, step)


def save_hypermodel(obj, directory: Path, step: int) -> None:
    hm = obj.hypermodel
    saved = copy.copy(hm.config)
    hm.config = replace(hm.config, extra={**hm.config.extra})
    hm.config.extra["training"] = training_lineage(obj.cfg, step, saved.extra.get("training"))
    try:
        if obj.trains_downstream:
            # The fine-tuned downstream model goes beside the hypermodel, which now belongs to it.
            sub = directory / "downstream"
            obj.downstream.model.save_pretrained(sub)
            obj.downstream.tokenizer.save_pretrained(sub)
            # `directory` is a temporary name renamed into RUN_DIR/final: name the final place
            final = (Path(obj.cfg.run_dir) / "final" / "downstream").resolve()
            spec = replace(
                obj.downstream.spec,
                checkpoint=str(final),
                fingerprint=_fingerprint(obj.downstream.model),
            )
            hm.config.downstream = spec.to_dict()
        hm.save_pretrained(directory)
    finally:
        hm.config = saved


@OBJECTIVES.register("mtf_hyper")
class MtfHyper(HyperObjective):
    """Multi-task fine-tuning of the hypermodel on few-shot episodes; the downstream model is frozen (and,
    with train.distill, reads the examples in context as the teacher)."""

    distills = True


@OBJECTIVES.register("joint")
class Joint(HyperObjective):
    """HyperTuning with the downstream model trained too (the paper's HyperT5-Prefix+ / LoRA+)."""

    trains_downstream = True
