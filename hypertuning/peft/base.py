"""What every PEFT target provides, and the batched `phi` as the downstream model consumes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from .._registry import Registry
from ..errors import HypertuningError

if TYPE_CHECKING:
    from ..models.base import DownstreamSpec, Family, Slot

Phi = dict[str, torch.Tensor]  # every tensor has a leading batch (task) dimension


@dataclass
class ActivePhi:
    """A batched phi bound for one forward/generate call; the attention wrapper and LoRA hooks read it.

    prefix: kind -> [B, L, 2, Hkv, P, D]; lora: "kind.module" -> (A [B, L, r, in], B [B, L, out, r]),
    with LoRA scaling folded into B. `rows` ([B] bool, or None for all) says which rows phi applies to: a
    mixed batch (some rows on the base model) carries zeros in the other rows, which is exactly no change
    for LoRA, and whose prefix columns the attention wrapper hides.

    `columns` (kind -> [B, P], nonzero where a prefix column is real) hides the others from attention: a
    readout that found fewer than P positions to keep pads with columns that must not take attention mass
    (`hyper/select.py`). phi carries it as `"{kind}.mask"`; absent, every column is real.

    `capture` (a dict, or None) asks the attention wrapper to record, per slot, the keys (after rotary
    and any QK-norm) and values of the last `capture_last` positions as attention saw them: the key/value
    readout takes its prefixes from there (`hyper/kv.py`).
    """

    prefix: dict[str, torch.Tensor] = field(default_factory=dict)
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    rows: torch.Tensor | None = None
    columns: dict[str, torch.Tensor] = field(default_factory=dict)
    capture: dict | None = None
    capture_last: int = 0

    @property
    def batch_size(self) -> int:
        t = next(iter(self.prefix.values()), None)
        if t is None and not self.lora:
            raise HypertuningError("this ActivePhi holds no parameters")
        return t.shape[0] if t is not None else next(iter(self.lora.values()))[0].shape[0]

    def prefix_for(self, slot: Slot):
        t = self.prefix.get(slot.kind)
        if t is None or t.shape[-2] == 0:
            return None
        return t[:, slot.layer, 0], t[:, slot.layer, 1]

    def lora_for(self, slot: Slot, module: str):
        ab = self.lora.get(f"{slot.kind}.{module}")
        if ab is None:
            return None
        return ab[0][:, slot.layer], ab[1][:, slot.layer]


class Target:
    """A kind of PEFT parameters. Subclass, set `name`, register with `TARGETS.register(name)`."""

    name: ClassVar[str]
    peft_type: ClassVar[str]

    def __init__(self, spec: DownstreamSpec, unknown: dict | None = None, **options):
        if unknown:
            raise HypertuningError(
                f"Unknown {self.name} option(s) {sorted(unknown)}; this target takes {sorted(options)}"
            )
        self.spec = spec
        self.options = options

    def num_queries(self) -> int:
        """How many learned query embeddings the hypermodel reads out."""
        raise NotImplementedError

    def build_heads(self, hidden: int, downstream=None) -> nn.Module:
        """Module mapping query outputs [B, Q, hidden] to phi; `downstream` (if given) informs initialisation."""
        raise NotImplementedError

    def bind(self, phi: Phi) -> ActivePhi:
        raise NotImplementedError

    def zero_phi(self, batch: int = 1) -> Phi:
        """phi that leaves the downstream model's outputs unchanged."""
        raise NotImplementedError

    def trainable(self, downstream=None) -> nn.Module:
        """Ordinary (non-generated) PEFT parameters for one task or shared by all: a module whose forward()
        returns a batch-1 phi, with `load_phi(phi)` to start from generated values (hyper initialisation)."""
        raise NotImplementedError

    def to_peft(self, phi: Phi, family: Family) -> tuple[dict, dict[str, torch.Tensor]]:
        """One task's phi (batch 1) -> (adapter_config dict without base_model_name_or_path, state dict)."""
        raise NotImplementedError

    def from_peft(self, config: dict, state: dict[str, torch.Tensor], family: Family) -> Phi:
        raise NotImplementedError

    def missing_entry(self, phi: Phi, key: str) -> torch.Tensor:
        """What phi[key] means when one adapter of a stack lacks an entry the others hold; by default
        there is no such meaning."""
        raise HypertuningError(f"Adapters in one batch must hold the same tensors; one lacks phi[{key!r}]")

    def from_saved(self, phi: Phi) -> Phi:
        """phi read back from an adapter directory (peft file plus our extras) -> phi to use."""
        return phi

    def shaped_like(self, phi: Phi) -> Target:
        """The target whose trainable parameters (`trainable`) take one task's generated `phi` as it is."""
        return self

    def compact(self, phi: Phi) -> Phi:
        """The same adapter(s) without storage that changes nothing (a prefix's padding columns)."""
        return phi

    def stack(self, phis: list[Phi]) -> Phi:
        """Many tasks' phi as one batch, row i = phis[i]; an entry some lack means `missing_entry`."""
        keys = dict.fromkeys(k for phi in phis for k in phi)
        return {
            k: torch.cat([phi[k] if k in phi else self.missing_entry(phi, k) for phi in phis]) for k in keys
        }


TARGETS: Registry[type[Target]] = Registry("PEFT target")
