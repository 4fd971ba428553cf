"""One task's generated parameters (phi), saved in the Hugging Face PEFT format where that format can hold them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ._io import atomic_write, read_json, read_safetensors, write_json
from .errors import CheckpointError, HypertuningError
from .models.base import FAMILIES, DownstreamSpec
from .peft import TARGETS, ActivePhi, Phi, Target

META_FILE = "hypertuning.json"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
OWN_WEIGHTS = "hypertuning_phi.safetensors"  # for phi that peft's format cannot hold (T5 prefixes, extras)
FORMAT_VERSION = 1


@dataclass
class Adapter:
    """phi for one or more tasks (leading batch dimension), with the downstream model it belongs to."""

    target: str
    options: dict
    spec: DownstreamSpec
    phi: Phi
    meta: dict = field(default_factory=dict)  # e.g. the hypermodel that generated it

    @property
    def target_obj(self) -> Target:
        return TARGETS.get(self.target)(self.spec, **self.options)

    @property
    def num_tasks(self) -> int:
        return next(iter(self.phi.values())).shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.phi.values())

    def bind(self) -> ActivePhi:
        return self.target_obj.bind(self.phi)

    def to(self, device=None, dtype=None) -> Adapter:
        """This adapter with phi on `device` (and in `dtype`), e.g. cached on the GPU by a server."""
        phi = {k: v.to(device=device, dtype=dtype) for k, v in self.phi.items()}
        return Adapter(self.target, self.options, self.spec, phi, self.meta)

    def clone(self) -> Adapter:
        """A copy with its own storage (a row of a batch is a view of the whole batch's tensors)."""
        return Adapter(
            self.target, self.options, self.spec, {k: v.clone() for k, v in self.phi.items()}, self.meta
        )

    def zeros_like(self) -> Adapter:
        """phi of the same shapes, all zero (a placeholder row in a batch; see `ActivePhi.rows`)."""
        phi = {k: torch.zeros_like(v) for k, v in self.phi.items()}
        return Adapter(self.target, self.options, self.spec, phi, self.meta)

    def __getitem__(self, i: int) -> Adapter:
        return Adapter(
            self.target, self.options, self.spec, {k: v[i : i + 1] for k, v in self.phi.items()}, self.meta
        )

    @staticmethod
    def stack(adapters: list[Adapter]) -> Adapter:
        """Many tasks' adapters as one batch (row i = adapter i); they must share target, options and model."""
        if not adapters:
            raise HypertuningError("No adapters to stack")
        a0 = adapters[0]
        for a in adapters[1:]:
            if (a.target, a.options, a.spec.fingerprint) != (a0.target, a0.options, a0.spec.fingerprint):
                raise HypertuningError(
                    "Adapters in one batch must share target, options and downstream model; got "
                    f"{a0.target} {a0.options} and {a.target} {a.options}"
                )
        if len(adapters) == 1:
            return a0
        return Adapter(
            a0.target,
            a0.options,
            a0.spec,
            {k: torch.cat([a.phi[k] for a in adapters]) for k in a0.phi},
            a0.meta,
        )

    # -- files -----------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write adapter_config.json + adapter_model.safetensors (PEFT format) when the target can, plus
        hypertuning.json naming the downstream model (fingerprint) and target options."""
        if self.num_tasks != 1:
            raise HypertuningError(
                f"save_pretrained saves one task; this adapter holds {self.num_tasks} (index it)"
            )
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        family = FAMILIES.get(self.spec.family)
        phi = {k: v.detach().float().cpu().contiguous() for k, v in self.phi.items()}
        try:
            config, state = self.target_obj.to_peft(phi, family)
        except HypertuningError:
            config = None
        files = []
        if config is not None:
            config["base_model_name_or_path"] = self.spec.checkpoint
            atomic_write(out / PEFT_WEIGHTS, lambda p: save_file(state, p, metadata={"format": "pt"}))
            write_json(out / PEFT_CONFIG, config)
            files.append(PEFT_WEIGHTS)
            extras = {k: v for k, v in phi.items() if "." in k and not k.endswith(("lora_A", "lora_B"))}
        else:
            extras = phi
        if extras:
            atomic_write(out / OWN_WEIGHTS, lambda p: save_file(extras, p, metadata={"format": "pt"}))
            files.append(OWN_WEIGHTS)
        meta = {
            "format_version": FORMAT_VERSION,
            "target": self.target,
            "options": self.options,
            "downstream": self.spec.to_dict(),
            "files": files,
            "meta": self.meta,
        }
        write_json(out / META_FILE, meta)  # written last: its presence marks a complete adapter
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> Adapter:
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such adapter directory")
        meta = read_json(d / META_FILE, "hypertuning adapter metadata")
        try:
            spec = DownstreamSpec.from_dict(meta["downstream"])
            target = TARGETS.get(meta["target"])(spec, **meta["options"])
            files = meta["files"]
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{d / META_FILE}: corrupt metadata ({e!r})") from None
        family = FAMILIES.get(spec.family)
        phi: Phi = {}
        if PEFT_WEIGHTS in files:
            config = read_json(d / PEFT_CONFIG, "PEFT adapter config")
            phi.update(target.from_peft(config, read_safetensors(d / PEFT_WEIGHTS), family))
        if OWN_WEIGHTS in files:
            phi.update(read_safetensors(d / OWN_WEIGHTS))
        expected = target.zero_phi(1)
        for k, z in expected.items():
            if k not in phi:
                raise CheckpointError(f"{d}: adapter lacks phi[{k!r}]")
            if k in spec.kinds and meta["target"].startswith("prefix"):
                continue  # prefix length is free
            if phi[k].shape != z.shape:
                raise CheckpointError(
                    f"{d}: phi[{k!r}] has shape {tuple(phi[k].shape)}, expected {tuple(z.shape)}"
                )
        return cls(meta["target"], meta["options"], spec, phi, meta.get("meta", {}))
