"""Training objectives: what is trained, on which data, and with which loss. The loop (`loop.py`) is shared.

An objective builds its models and data from the run config and provides:
- `module`: the nn.Module handed to accelerate; its forward(**batch) returns (summed token loss, tokens);
  frozen models are kept out of it (not registered), so checkpoints and DDP hold only what is trained;
- `batch(indices)`: the tensors for examples `indices` of its stream (a pure function: resuming at step n
  recomputes exactly the batches an uninterrupted run would have seen);
- `validation()`: fixed batches for the evaluation hook;
- `save_final(directory)`: the artefact users load (a hypermodel, a downstream checkpoint or a PEFT adapter).

A new objective is one class here plus its `@OBJECTIVES.register(name)` line.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .._io import atomic_write, read_safetensors
from .._registry import Registry
from ..adapter import Adapter
from ..data.caclm import CaclmCorpus, CaclmEncoder, Segments, bigbench_prose, documents_from_files
from ..data.collections import get_collection
from ..data.collections.toy import toy_documents
from ..data.episodes import EpisodeEncoder, EpisodeSampler, MixedSampler, heldout_shots
from ..data.format import pad_batch
from ..data.task import check_state, config_hash, rng_for, sample_shots
from ..errors import CheckpointError, HypertuningError
from ..hyper import HyperModel
from ..hyper.diagnostics import flat_phi, phi_spread
from ..models.downstream import _fingerprint, load_downstream
from ..peft import TARGETS
from .config import RunConfig

log = logging.getLogger(__name__)
OBJECTIVES: Registry[type[Objective]] = Registry("training objective")
TRAINABLE_FILE = "trainable.safetensors"


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


class PlainLM(nn.Module):
    """The downstream model itself, trained (T5-MTF and MetaICL-style baselines)."""

    def __init__(self, downstream):
        super().__init__()
        self.downstream_model = downstream.model
        self._downstream = (downstream,)

    def forward(self, **lm):
        return self._downstream[0].lm_loss(lm)


class PeftLM(nn.Module):
    """Ordinary PEFT parameters (one set for every row) on the frozen downstream model."""

    def __init__(self, target, downstream):
        super().__init__()
        self.target = target
        self.params = target.trainable(downstream)
        self._downstream = (downstream,)

    def forward(self, **lm):
        return self._downstream[0].lm_loss(lm, self.target.bind(self.params()))


# -- shared building blocks --------------------------------------------------------------------------------
def build_downstream(cfg: RunConfig, trainable: bool):
    d = cfg.downstream
    ds = load_downstream(
        d.model, dtype=d.dtype, attn_implementation=d.attn_implementation, freeze=not trainable
    )
    ds.max_input_tokens, ds.max_target_tokens = d.max_input_tokens, d.max_target_tokens
    ds.max_in_context_tokens = d.max_in_context_tokens
    return ds


def build_hypermodel(cfg: RunConfig, downstream) -> HyperModel:
    h = cfg.hypermodel
    if h.init:
        hm = HyperModel.from_pretrained(h.init, downstream)
        if hm.config.target != h.target:
            log.warning(
                "hypermodel.init %s generates %s; hypermodel.target and .options are ignored",
                h.init,
                hm.config.target,
            )
        return hm.train()
    torch.manual_seed(cfg.seed)  # the heads' and queries' initialisation
    hm = HyperModel.create(
        downstream,
        h.target,
        layers=h.layers,
        backbone=h.backbone,
        max_input_tokens=h.max_input_tokens,
        readout=h.readout,
        readout_options=h.readout_options,
        **h.options,
    )
    return hm.train()


def epoch_item(n: int, index: int, seed: int, key: str) -> int:
    """Item `index` of an endless stream over n items, visiting each once per pass in an order shuffled per
    pass (a pure function, like the episode samplers)."""
    epoch, i = divmod(index, n)
    order = list(range(n))
    rng_for(seed, key, epoch).shuffle(order)
    return order[i]


def lm_collate(downstream, items, hyper_pad: int | None = None) -> dict:
    batch = downstream.lm_batch([it.input_ids for it in items], [it.target_ids for it in items])
    if hyper_pad is not None:
        batch["hyper_ids"], batch["hyper_mask"] = pad_batch([it.hyper_ids for it in items], hyper_pad)
    return batch


def training_lineage(cfg: RunConfig, step: int, previous: list | None = None) -> list:
    entry = {"objective": cfg.objective, "steps": step, "run_dir": str(cfg.run_dir), "seed": cfg.seed}
    return [*(previous or []), entry]


# -- objectives --------------------------------------------------------------------------------------------
class Objective:
    name = "?"
    trains_downstream = False
    distills = False  # has an in-context teacher for train.distill

    def __init__(self, cfg: RunConfig):
        w = cfg.train.distill
        if not 0 <= w <= 1:
            raise HypertuningError(f"train.distill is a weight between 0 and 1, got {w}")
        if w and not self.distills:
            raise HypertuningError(
                f"train.distill: objective {cfg.objective!r} has no in-context teacher; only mtf_hyper "
                "distils (the teacher is the frozen downstream model reading the examples)"
            )
        self.cfg = cfg
        self.downstream = build_downstream(cfg, self.trains_downstream)
        self.module: nn.Module
        self.stream_fingerprint: str = ""

    def batch(self, indices: list[int]) -> dict:
        raise NotImplementedError

    def validation(self) -> list[dict]:
        raise NotImplementedError

    def diagnostics(self, device) -> dict:
        """Extra numbers logged beside every evaluation (the loop adds them to the evaluator's)."""
        return {}

    def save_final(self, directory: Path, step: int) -> None:
        raise NotImplementedError

    def data_state(self, position: int) -> dict:
        return {"position": position, "fingerprint": self.stream_fingerprint}

    def check_data_state(self, state: dict) -> int:
        check_state("data stream", state, self.data_state(0), ("fingerprint",))
        return int(state["position"])

    def gradient_checkpointing(self) -> None:
        kw = {"activation_checkpointing_kwargs": {"use_reentrant": False}}
        for m in self.checkpointable():
            m.activation_checkpointing_enable(**kw)
        if not self.trains_downstream:
            # transformers checkpoints a layer only in training mode, and a frozen downstream model sits in
            # eval mode outside the trained module: switch it to training mode with its dropout layers kept
            # in eval mode, so it computes exactly as before and its activations are recomputed.
            model = self.downstream.model
            model.train()
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.eval()

    def checkpointable(self) -> list[nn.Module]:
        return [self.downstream.model]


class EpisodeObjective(Objective):
    """Shared by the multi-task objectives: episodes of the training tasks, validation on held-out ones."""

    in_context = False
    reads_shots = True  # False: only the target example is used (K = 0)

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        d = cfg.data
        if "remap" in d.options:  # the view's symbols are the held-out pool: training must not see them
            raise HypertuningError(
                "data.options.remap is an evaluation view (held-out symbols); to train on remapped labels "
                "use data.remap=SHARE (training symbols, drawn per episode)"
            )
        collection = get_collection(d.collection, **d.options)
        train, held = collection.split(heldout=d.heldout, exclude=d.exclude)
        names = d.tasks if d.tasks is not None else train
        self.tasks = [collection.load(n) for n in names]
        self.heldout = [collection.load(n) for n in held if n not in set(names)]
        self.hypermodel = self.build_hypermodel()
        kw = dict(k=d.k if self.reads_shots else 0, mixing=d.mixing, temperature=d.temperature, shots=d.shots)
        kw["use_instruction"] = d.use_instruction
        self.sampler = EpisodeSampler(self.tasks, seed=cfg.seed, remap=d.remap, **kw)
        if d.mustread:  # must-read training families mixed in (they never share a word with held-out ones)
            extra = get_collection("mustread", **d.mustread_options)
            extra_tasks = [extra.load(n) for n in extra.split()[0]]
            self.sampler = MixedSampler(
                self.sampler,
                EpisodeSampler(extra_tasks, seed=cfg.seed, **kw),
                d.mustread,
                cfg.seed,
                options=d.mustread_options,
            )
        val_tasks = self.heldout or self.tasks
        self.val_sampler = EpisodeSampler(val_tasks, seed=cfg.seed + 1, **{**kw, "mixing": "uniform"})
        self.encoder = EpisodeEncoder(self.downstream, self.hypermodel, self.in_context)
        self.stream_fingerprint = self.sampler.fingerprint
        self.module = self.build_module()

    def build_hypermodel(self):
        return None

    def build_module(self) -> nn.Module:
        raise NotImplementedError

    def items(self, sampler, indices):
        return [self.encoder(sampler.episode(i)) for i in indices]

    def collate(self, items) -> dict:
        return lm_collate(self.downstream, items)

    def batch(self, indices):
        return self.collate(self.items(self.sampler, indices))

    def validation(self):
        b, n = self.cfg.train.batch_size, self.cfg.eval.batches
        return [self.collate(self.items(self.val_sampler, range(i * b, (i + 1) * b))) for i in range(n)]


class HyperObjective(EpisodeObjective):
    _probes: tuple | None = None

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


@OBJECTIVES.register("mtf_full")
class MtfFull(EpisodeObjective):
    """T5-MTF: the downstream model fine-tuned on x -> y of every training task."""

    trains_downstream = True
    reads_shots = False

    def build_module(self):
        return PlainLM(self.downstream)

    def save_final(self, directory, step):
        self.downstream.model.save_pretrained(directory)
        self.downstream.tokenizer.save_pretrained(directory)


@OBJECTIVES.register("mtf_fewshot")
class MtfFewshot(MtfFull):
    """MetaICL-style: the downstream model fine-tuned with the K examples written before x."""

    in_context = True
    reads_shots = True

    def collate(self, items):
        return self.downstream.lm_batch([it.in_context_ids for it in items], [it.target_ids for it in items])


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


@OBJECTIVES.register("caclm")
class Caclm(Objective):
    """Hyperpretraining (section 4.2): the hypermodel reads A and D, the frozen downstream model reads B and
    is trained to predict C through the generated phi."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        c = cfg.caclm
        if cfg.hypermodel.readout != "heads":
            raise HypertuningError(
                f"caclm hyperpretrains the paper's hypermodel (its <before>/<after> input format); the "
                f"{cfg.hypermodel.readout!r} readout reads examples with the downstream model itself and has "
                "no such input. Train it with mtf_hyper directly."
            )
        self.hypermodel = build_hypermodel(cfg, self.downstream)
        docs = self.documents()
        n_val = min(c.validation_documents, len(docs) // 10)
        seg = Segments(**c.segments)
        tok = self.downstream.tokenizer
        self.corpus = CaclmCorpus(docs[: len(docs) - n_val], tok, seg, cfg.seed)
        self.val_corpus = CaclmCorpus(docs[len(docs) - n_val :], tok, seg, cfg.seed + 1) if n_val else None
        self.encoder = CaclmEncoder(self.downstream, self.hypermodel)
        self.stream_fingerprint = self.corpus.fingerprint
        self.module = HyperLM(self.hypermodel, self.downstream, False)

    def documents(self) -> list[str]:
        c = self.cfg.caclm
        if c.source == "bigbench_prose":
            docs = bigbench_prose()
        elif c.source == "files":
            if not c.files:
                raise HypertuningError("caclm.source=files needs caclm.files: [paths]")
            docs = list(documents_from_files(c.files, c.text_field))
        elif c.source == "toy":
            docs = toy_documents(seed=self.cfg.seed)
        else:
            raise HypertuningError(f"caclm.source must be bigbench_prose, files or toy; got {c.source!r}")
        return docs[: c.max_documents] if c.max_documents else docs

    def collate(self, samples):
        return lm_collate(self.downstream, [self.encoder(s) for s in samples], self.pad)

    @property
    def pad(self):
        return self.hypermodel.tokenizer.pad_token_id or 0

    def batch(self, indices):
        return self.collate([self.corpus.sample(i) for i in indices])

    def validation(self):
        if self.val_corpus is None:
            return []
        b = self.cfg.train.batch_size
        n = min(self.cfg.eval.batches, max(1, len(self.val_corpus) // b))
        return [
            self.collate([self.val_corpus.sample(i) for i in range(j * b, (j + 1) * b)]) for j in range(n)
        ]

    def checkpointable(self):
        return [*self.hypermodel.trainable_backbones(), self.downstream.model]

    def save_final(self, directory, step):
        save_hypermodel(self, directory, step)


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
        self.hyper = HyperModel.from_pretrained(p.init_from, self.downstream) if p.init == "hyper" else None
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
            return self.hyper.target
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
            adapter = self.hyper.generate([(e.input, e.target) for e in self.shots], self.task.instruction)
            if p.target == "prefix-mlp":
                params.load_phi(adapter.phi, self.hyper.heads)
            else:
                params.load_phi(adapter.phi)

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

    def validation(self):
        b = self.cfg.train.batch_size
        ex = self.eval_examples
        return [self.encode(ex[i : i + b]) for i in range(0, len(ex), b)]


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
    from ..eval.scoring import score_task

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
