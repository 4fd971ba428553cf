"""What differs between downstream model families, in one small class per family.

A family names the attention modules that take prefixes and LoRA deltas (as `Slot`s), and knows how to
score and generate with its architecture. Everything else (targets, the hypermodel) asks the family.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from .._registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Slot:
    """One attention module of the downstream model: its kind ("self", "encoder", "decoder", "cross") and layer."""

    kind: str
    layer: int


@dataclass
class KindSpec:
    """Shapes of one kind of attention in the downstream model."""

    num_layers: int
    kv_heads: int  # key/value heads (fewer than query heads under grouped-query attention)
    head_dim: int
    linears: dict[str, list[int]] = field(default_factory=dict)  # module name -> [in_features, out_features]
    # Discovered from the model by the family (decoder.py); None in specs saved before they were recorded.
    path: str | None = None  # the attention module's path in the model, "{}" for the layer index
    default_lora: list[str] | None = None  # LoRA's modules when none are named
    fan_in_fan_out: list[str] = field(
        default_factory=list
    )  # projections storing weight as [in, out] (Conv1D)
    rotary: str | None = None  # the model's rotary embedding class (transformers.models....)
    positions: str | None = None  # "rotary", "absolute" (learned, GPT-2), "relative" (T5) or "none"


@dataclass
class DownstreamSpec:
    """Everything a hypermodel or adapter must know about its downstream model, JSON-serialisable."""

    family: str
    model_type: str
    checkpoint: str  # what plain `transformers` can load (hub id or local directory)
    fingerprint: str  # hash of config and a sample of weights; differs between checkpoints
    kinds: dict[str, KindSpec]
    config: dict = field(default_factory=dict)  # the model config, to rebuild e.g. rotary embeddings

    def model_config(self):
        from transformers import AutoConfig

        d = {k: v for k, v in self.config.items() if k != "model_type"}
        return AutoConfig.for_model(self.model_type, **d)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DownstreamSpec:
        # The family's order of kinds decides which hypermodel queries feed which kind: never trust JSON order.
        family = FAMILIES.get(d["family"])
        kinds = {
            k: family.complete_kind(KindSpec(**d["kinds"][k]), k) for k in family.kinds if k in d["kinds"]
        }
        return cls(**{**d, "kinds": kinds})


class Family:
    """Base class: subclass, set the class attributes, and register with `FAMILIES.register(name)`."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    peft_task_type: ClassVar[str]
    hyper_backbone: ClassVar[str]  # "decoder-only" or "encoder-decoder"
    # Written between an input and its target. A decoder-only model continues the input, and in-context
    # prompts show "input target", so targets are trained and scored with that space; an encoder-decoder
    # model's decoder starts afresh.
    target_separator: ClassVar[str] = ""

    def __init__(self, model: PreTrainedModel):
        self.model = model

    @staticmethod
    def detect(config) -> bool:
        raise NotImplementedError

    def attention_modules(self) -> Iterator[tuple[Slot, nn.Module]]:
        raise NotImplementedError

    def kind_spec(self, kind: str) -> KindSpec:
        raise NotImplementedError

    @staticmethod
    def module_path(spec: DownstreamSpec, slot: Slot) -> str:
        """Dotted path of the slot's attention module inside the model (as peft names its keys)."""
        return spec.kinds[slot.kind].path.format(slot.layer)

    @classmethod
    def complete_kind(cls, ks: KindSpec, kind: str) -> KindSpec:
        """Fill what a spec saved by an older release did not record (the family's former fixed values)."""
        return ks

    # Prefix keys as peft stores them may live in another frame than ours (rotary offsets). keys: [L, Hkv, P, D]
    @classmethod
    def prefix_keys_to_peft(cls, spec, keys: torch.Tensor, num_virtual_tokens: int) -> torch.Tensor:
        return keys

    @classmethod
    def prefix_keys_from_peft(cls, spec, keys: torch.Tensor, num_virtual_tokens: int) -> torch.Tensor:
        return keys

    def loglikelihood_batch(
        self,
        tokenizer: PreTrainedTokenizerBase,
        contexts: list[list[int]],
        continuations: list[list[int]],
        phi,
    ) -> torch.Tensor:
        """Summed log-probability of each continuation given its context, shape [B]."""
        raise NotImplementedError

    def generate_batch(self, tokenizer, contexts: list[list[int]], phi, **generate_kwargs) -> list[list[int]]:
        raise NotImplementedError

    # Families that can score several continuations of one context from a single pass over the context
    # (its key/value cache repeated for each continuation) set this and implement `loglikelihood_shared`.
    shares_context: ClassVar[bool] = False

    def loglikelihood_shared(
        self, tokenizer, context: list[int], continuations: list[list[int]], phi=None
    ) -> torch.Tensor:
        """`loglikelihood_batch` for one context and its continuations under one task's phi (an ActivePhi
        with one row, or None). Shape [N]."""
        raise NotImplementedError


FAMILIES: Registry[type[Family]] = Registry("model family")


def detect_family(config) -> type[Family]:
    for _, fam in FAMILIES.items():
        if fam.detect(config):
            return fam
    from ..errors import HypertuningError

    raise HypertuningError(
        f"No model family handles model_type={config.model_type!r}. Supported families: "
        f"{', '.join(FAMILIES)}. Add one as a file in hypertuning/models/ with a detect() on config.model_type."
    )
