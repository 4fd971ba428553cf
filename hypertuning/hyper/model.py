"""HyperModel: few-shot examples (+ instruction) in, one task's PEFT parameters out, in one forward pass."""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .._io import atomic_write, read_json, read_safetensors, write_json
from .._registry import Registry
from ..adapter import Adapter
from ..data.format import SPECIAL_TOKENS, encode_examples, normalise_examples, pad_batch
from ..errors import CheckpointError, HypertuningError
from ..models.base import FAMILIES, DownstreamSpec
from ..peft import TARGETS, Phi
from .backbone import BACKBONES, backbone_attention, build_backbone_model

CONFIG_FILE, WEIGHTS_FILE = "hypermodel_config.json", "model.safetensors"
TOKENIZER_DIR, BACKBONE_CONFIG = "tokenizer", "backbone_config.json"
# How a hypermodel turns what it read into phi: "heads" (the paper's query outputs through learned heads,
# this file), "kv" (the downstream model's own keys/values at learned slots, kv.py) or "outer" (LoRA from
# normalised outer products of the downstream model's states on the examples, outer.py).
READOUTS: Registry[type] = Registry("hypermodel readout")


@dataclass
class HyperConfig:
    """Everything needed to rebuild a hypermodel without its downstream model."""

    target: str  # "lora", "prefix" or "prefix-mlp"
    target_options: dict  # e.g. rank/alpha/modules or prefix_len
    downstream: dict  # DownstreamSpec.to_dict(): the model phi is for
    backbone: str  # "decoder-only" or "encoder-decoder"
    layers: int | None  # backbone blocks kept from the downstream model (None = all)
    max_input_tokens: int = 1024  # the paper's hypermodel input limit (Appendix A)
    format_version: int = 1
    extra: dict = field(default_factory=dict)
    readout: str = "heads"  # a READOUTS name
    readout_options: dict = field(default_factory=dict)


class HyperModel(nn.Module):
    def __init__(self, config: HyperConfig, backbone_model: nn.Module, tokenizer, downstream=None):
        super().__init__()
        self.config = config
        self.spec = DownstreamSpec.from_dict(config.downstream)
        self.target = TARGETS.get(config.target)(self.spec, **config.target_options)
        self.tokenizer = tokenizer
        self.backbone = BACKBONES[config.backbone](backbone_model)
        hidden = self.backbone.hidden_size
        # Query embeddings start as randomly chosen rows of the (pretrained) token embedding matrix, the
        # vocabulary initialisation that works better than random for prompt tuning (Lester et al., 2021).
        emb = backbone_model.get_input_embeddings().weight.detach()
        rows = torch.randint(0, emb.shape[0] - len(SPECIAL_TOKENS), (self.target.num_queries(),))
        self.queries = nn.Parameter(emb[rows].clone().float())  # [Q, H]
        self.heads = self.target.build_heads(hidden, downstream)

    # -- building ------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        downstream,
        target: str = "lora",
        layers: int | None = None,
        backbone: str | None = None,
        max_input_tokens: int = 1024,
        readout: str = "heads",
        readout_options: dict | None = None,
        **target_options,
    ) -> HyperModel:
        """A new hypermodel for `downstream`, its backbone initialised from the downstream model's first
        `layers` blocks. Target options: lora -> rank, alpha, modules, gate_init; prefix -> prefix_len.

        Other readouts read the examples with the downstream model itself (no backbone copy) and take
        `readout_options` instead of target options: "kv" (`hyper/kv.py`, target prefix: slots,
        lora_rank, lora_modules, separator) and "outer" (`hyper/outer.py`, target lora: rank, alpha,
        modules, gate_init, separator)."""
        if readout == "heads" and readout_options:
            raise HypertuningError(
                f"readout_options {sorted(readout_options)} belong to another readout (readout='kv' or "
                "'outer'); the paper's heads take target options"
            )
        if readout != "heads":
            if target_options or layers or backbone:
                raise HypertuningError(
                    f"The {readout!r} readout takes readout_options, not target options, layers or backbone"
                )
            return READOUTS.get(readout).build(downstream, target, max_input_tokens, readout_options or {})
        opts = TARGETS.get(target)(downstream.spec, **target_options).options  # validates before heavy work
        kind = backbone or FAMILIES.get(downstream.spec.family).hyper_backbone
        if kind not in BACKBONES:
            raise HypertuningError(f"Unknown backbone {kind!r}; choose from {sorted(BACKBONES)}")
        if kind == "encoder-decoder" and downstream.family.name != "t5":
            raise HypertuningError(
                "The encoder-decoder backbone needs an encoder-decoder (T5) downstream model"
            )
        tokenizer = copy.deepcopy(downstream.tokenizer)
        tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)
        model = build_backbone_model(downstream, layers, kind, len(tokenizer))
        config = HyperConfig(target, opts, downstream.spec.to_dict(), kind, layers, max_input_tokens)
        return cls(config, model, tokenizer, downstream)

    @property
    def device(self) -> torch.device:
        return self.queries.device

    def trainable_backbones(self) -> list[nn.Module]:
        """Transformers models inside the hypermodel, for gradient checkpointing."""
        return [self.backbone.model]

    # -- the forward pass ------------------------------------------------------------------------------
    def encode_ids(self, examples, instruction: str | None = None, stats=None) -> list[int]:
        """One task's hypermodel input ids (the paper's format, within `max_input_tokens`)."""
        limit = self.config.max_input_tokens
        eos = self.tokenizer.eos_token_id if self.config.backbone == "encoder-decoder" else None
        ids = encode_examples(
            self.tokenizer,
            normalise_examples(examples, allow_empty=bool(instruction)),
            instruction,
            limit - (eos is not None),
            stats,
        )
        return ids + [eos] if eos is not None else ids

    def encode(self, tasks: Sequence, instructions: Sequence[str | None] | None = None, stats=None):
        """Format and tokenise each task's examples; right-padded ids and mask, [B, T]. Examples dropped to
        fit the budget are counted in `stats` when given: one Counter for all tasks, or a list of one per
        task."""
        instructions = instructions or [None] * len(tasks)
        if len(instructions) != len(tasks):
            raise HypertuningError(f"{len(instructions)} instructions for {len(tasks)} tasks")
        per_task = stats if isinstance(stats, list) else [stats] * len(tasks)
        seqs = [
            self.encode_ids(ex, ins, st) for ex, ins, st in zip(tasks, instructions, per_task, strict=True)
        ]
        ids, mask = pad_batch(seqs, self.tokenizer.pad_token_id or 0)
        return ids.to(self.device), mask.to(self.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Phi:
        """Batched phi ([B, ...] per key) from tokenised examples; differentiable (for training)."""
        hidden = self.backbone(input_ids, attention_mask, self.queries)  # [B, Q, H]
        return self.heads(hidden.float())

    @torch.no_grad()
    def generate_batch(
        self, tasks: Sequence, instructions: Sequence[str | None] | None = None, stats=None
    ) -> list[Adapter]:
        """One Adapter per task, all in one forward pass."""
        if len(tasks) == 0:
            raise HypertuningError("generate_batch needs at least one task")
        was_training = self.training
        self.eval()
        try:
            phi = self(*self.encode(tasks, instructions, stats))
        finally:
            self.train(was_training)
        adapter = Adapter(
            self.config.target,
            self.config.target_options,
            self.spec,
            {k: v.detach() for k, v in phi.items()},
            {"hypermodel": self.fingerprint()},
        )
        # each task's own adapter, without the padding a batch needed (a select readout's spare columns)
        return [adapter[i].compact() for i in range(len(tasks))]

    def generate(self, examples, instruction: str | None = None, stats=None) -> Adapter:
        """The adapter for one task from its few-shot examples (dicts with input/output, or pairs)."""
        return self.generate_batch([examples], [instruction], stats)[0]

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr(asdict(self.config)).encode())
        for p in self.fingerprint_tensors():
            h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def fingerprint_tensors(self) -> list[torch.Tensor]:
        """What the fingerprint samples besides the config (enough to tell trained states apart)."""
        return [self.queries, next(iter(self.heads.parameters()))]

    def backbone_config(self) -> dict | None:
        """The copied backbone's transformers config, saved beside the weights (None: no copy)."""
        return self.backbone.model.config.to_dict()

    # -- files ---------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        # Tied weights (e.g. T5's shared embedding) are stored once; safetensors refuses shared storage.
        seen, unique = {}, {}
        for k, v in state.items():
            key = (v.data_ptr(), v.shape, v.dtype)
            if key in seen:
                continue
            seen[key] = k
            unique[k] = v
        atomic_write(out / WEIGHTS_FILE, lambda p: save_file(unique, p, metadata={"format": "pt"}))
        self.tokenizer.save_pretrained(out / TOKENIZER_DIR)
        if (backbone := self.backbone_config()) is not None:
            write_json(out / BACKBONE_CONFIG, backbone)
        write_json(out / CONFIG_FILE, asdict(self.config))  # last: marks a complete directory
        return out

    @staticmethod
    def read_spec(directory: str | os.PathLike) -> DownstreamSpec:
        """The downstream model a saved hypermodel was built for, without loading the hypermodel (to load
        that model first and hand it to `from_pretrained`)."""
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such hypermodel directory")
        raw = read_json(d / CONFIG_FILE, "hypermodel config")
        try:
            return DownstreamSpec.from_dict(raw["downstream"])
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{d / CONFIG_FILE}: corrupt hypermodel config ({e!r})") from None

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, downstream=None, device: str | None = None
    ) -> HyperModel:
        """Load a hypermodel; pass `downstream` to check it was built for that model."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such hypermodel directory")
        raw = read_json(d / CONFIG_FILE, "hypermodel config")
        try:
            config = HyperConfig(**raw)
        except TypeError as e:
            raise CheckpointError(f"{d / CONFIG_FILE}: corrupt hypermodel config ({e})") from None
        spec = DownstreamSpec.from_dict(config.downstream)
        if downstream is not None:
            downstream.check_compatible(spec, "hypermodel")
        if config.readout != "heads":
            return READOUTS.get(config.readout).load(d, config, downstream, device)
        bcfg = read_json(d / BACKBONE_CONFIG, "backbone config")
        backbone_config = AutoConfig.for_model(bcfg.pop("model_type"), **bcfg)
        impl = backbone_attention(backbone_config, config.backbone)
        model = AutoModel.from_config(backbone_config, attn_implementation=impl)
        if not (d / TOKENIZER_DIR).is_dir():  # else transformers tries the hub with a local path
            raise CheckpointError(f"{d / TOKENIZER_DIR}: the hypermodel's tokenizer is missing")
        tokenizer = AutoTokenizer.from_pretrained(d / TOKENIZER_DIR)
        hm = cls(config, model, tokenizer)
        state = read_safetensors(d / WEIGHTS_FILE)
        missing, unexpected = hm.load_state_dict(state, strict=False)
        tied = {k for k in missing if k.endswith("embed_tokens.weight") or k.endswith("lm_head.weight")}
        if set(missing) - tied or unexpected:
            raise CheckpointError(
                f"{d / WEIGHTS_FILE} does not match its config: missing {sorted(set(missing) - tied)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        if device:
            hm.to(device)
        return hm.eval()


READOUTS.register("heads")(HyperModel)
