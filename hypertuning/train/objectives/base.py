"""What every objective shares: the registry, model building, the episode streams."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

from ..._registry import Registry
from ...data.collections import get_collection
from ...data.episodes import EpisodeEncoder, EpisodeSampler, MixedSampler
from ...data.format import pad_batch
from ...data.task import check_state, rng_for
from ...errors import HypertuningError
from ...hyper import HyperModel
from ...models.downstream import load_downstream
from ..config import RunConfig

log = logging.getLogger(__name__)
OBJECTIVES: Registry[type[Objective]] = Registry("training objective")
TRAINABLE_FILE = "trainable.safetensors"


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

    def validation(self, processes: int = 1) -> list[dict]:
        """The fixed validation batches, of train.batch_size rows: eval.batches *global* batches (that many
        times `processes` per-process batches), so N processes x batch B validate on the rows 1 process x
        batch N*B does; the evaluator splits them across the ranks."""
        raise NotImplementedError

    has_diagnostics = False  # True where `diagnostics` computes something (the loop gathers for it)

    def diagnostics(self, device) -> dict:
        """Extra numbers logged beside every evaluation (the loop adds them to the evaluator's)."""
        return {}

    def save_final(self, directory: Path, step: int) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def unsharded(self, state: dict):
        """For the duration of the block, the trained module (and hypermodel) rebuilt unsharded from a
        gathered full state dict (FSDP, ZeRO-3), for what reads parameters outside the wrapped forward:
        the phi probes and the peft_task evaluator. The training module is put back after; building the
        copy draws no random numbers from the training streams."""
        saved = self.downstream, getattr(self, "hypermodel", None), self.module
        # build_hypermodel seeds with torch.manual_seed, which also reseeds the CUDA generators: fork this
        # process's GPU stream too, or dropout on the GPU would restart after every probe
        gpu = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=gpu):
            self.adopt_full_state(state, reload_downstream=False)
        try:
            yield self.module
        finally:
            self.downstream, self.hypermodel, self.module = saved

    def adopt_full_state(self, state: dict, reload_downstream: bool = True) -> None:
        """After sharded training (FSDP, ZeRO-3): rebuild the trained module unsharded, from the gathered
        full state dict, so `save_final` writes what an unsharded run would. The sharded module cannot
        simply take the full tensors back (FSDP2's load hooks expect its DTensor shards)."""
        if self.trains_downstream and reload_downstream:
            self.downstream = build_downstream(self.cfg, True)
        if getattr(self, "hypermodel", None) is not None:
            self.hypermodel = self.build_hypermodel()
        self.module = self.build_module()
        self.module.load_state_dict(state)

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
        share = {"label_share": d.label_share} if d.label_share else {}  # training episodes only
        self.sampler = EpisodeSampler(self.tasks, seed=cfg.seed, remap=d.remap, **share, **kw)
        if d.mustread:  # must-read training families mixed in (they never share a word with held-out ones)
            extra = get_collection("mustread", **d.mustread_options)
            extra_tasks = [extra.load(n) for n in extra.split()[0]]
            self.sampler = MixedSampler(
                self.sampler,
                EpisodeSampler(extra_tasks, seed=cfg.seed, **share, **kw),
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

    def validation(self, processes: int = 1):
        b, n = self.cfg.train.batch_size, self.cfg.eval.batches * processes
        return [self.collate(self.items(self.val_sampler, range(i * b, (i + 1) * b))) for i in range(n)]
