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
        phi = a0.target_obj.stack([a.phi for a in adapters])
        return Adapter(a0.target, a0.options, a0.spec, phi, a0.meta)

    def compact(self) -> Adapter:
        """This adapter without the storage that changes nothing (a select readout's padding columns):
        what `HyperModel.generate` returns and a server keeps."""
        return Adapter(self.target, self.options, self.spec, self.target_obj.compact(self.phi), self.meta)

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
    def from_pretrained(cls, directory: str | os.PathLike, downstream=None) -> Adapter:
        """Load an adapter we saved, or a plain PEFT LoRA / prefix-tuning adapter made elsewhere (no
        `hypertuning.json`): that one is checked against `downstream`, or against the model its
        `base_model_name_or_path` names, which is then loaded."""
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such adapter directory")
        if not (d / META_FILE).exists() and (d / PEFT_CONFIG).exists():
            return cls.from_peft_dir(d, downstream)
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
        try:
            phi = target.from_saved(phi)
        except HypertuningError as e:
            raise CheckpointError(f"{d}: {e}") from None
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

    @classmethod
    def from_peft_dir(cls, directory: str | os.PathLike, downstream=None) -> Adapter:
        """A plain PEFT adapter directory (adapter_config.json + adapter_model.safetensors), for our
        downstream model: what peft would apply, as phi, or an error saying what does not match."""
        d = Path(directory)
        config = read_json(d / PEFT_CONFIG, "PEFT adapter config")
        where = d / PEFT_CONFIG
        if downstream is None:
            base = config.get("base_model_name_or_path")
            if not base:
                raise CheckpointError(f"{where}: names no base_model_name_or_path; pass the downstream model")
            from .models.downstream import load_downstream

            downstream = load_downstream(base)
        spec = downstream.spec
        target, options = _peft_target(config, where)
        try:
            t = TARGETS.get(target)(spec, **options)
        except HypertuningError as e:
            raise CheckpointError(f"{where}: does not fit {downstream.name}: {e}") from None
        state = read_safetensors(d / PEFT_WEIGHTS)
        try:
            phi = t.from_peft(config, state, FAMILIES.get(spec.family))
        except (HypertuningError, RuntimeError) as e:  # a missing tensor; a reshape of the wrong size
            raise CheckpointError(f"{d / PEFT_WEIGHTS}: does not fit {downstream.name}: {e}") from None
        for k, z in t.zero_phi(1).items():
            same = phi[k].shape == z.shape or (target == "prefix" and phi[k].shape[:-2] == z.shape[:-2])
            if not same:
                raise CheckpointError(
                    f"{d / PEFT_WEIGHTS}: {k} has shape {tuple(phi[k].shape)}; {downstream.name} needs "
                    f"{tuple(z.shape)}"
                )
        phi = {k: v.float() for k, v in phi.items()}
        return cls(target, t.options, spec, phi, {"source": "peft", "path": str(d)})


def plain_peft_base(directory: str | os.PathLike) -> str | None:
    """The base model a plain PEFT adapter directory (one without hypertuning.json) names; None for ours."""
    d = Path(directory)
    if not d.is_dir() or (d / META_FILE).exists() or not (d / PEFT_CONFIG).exists():
        return None
    base = read_json(d / PEFT_CONFIG, "PEFT adapter config").get("base_model_name_or_path")
    if not base:
        raise CheckpointError(f"{d / PEFT_CONFIG}: names no base_model_name_or_path")
    return base


def _peft_target(config: dict, where) -> tuple[str, dict]:
    """Our target and its options for a PEFT config, refusing what peft would apply differently."""
    kind = config.get("peft_type")
    if kind == "LORA":
        unsupported = {
            "use_dora": config.get("use_dora"),
            "bias": config.get("bias") not in (None, "none") and config.get("bias"),
            "fan_in_fan_out": config.get("fan_in_fan_out"),
            "layers_to_transform": config.get("layers_to_transform"),
            "rank_pattern": config.get("rank_pattern"),
            "alpha_pattern": config.get("alpha_pattern"),
            "modules_to_save": config.get("modules_to_save"),
        }
        bad = {k: v for k, v in unsupported.items() if v}
        if bad:
            raise CheckpointError(f"{where}: LoRA options we do not apply: {bad}")
        modules = config.get("target_modules")
        if not isinstance(modules, list) or not modules:
            raise CheckpointError(
                f"{where}: target_modules must be a list of module names (got {modules!r}); a regex cannot "
                "be checked against the attention projections we adapt"
            )
        r, alpha = int(config["r"]), float(config.get("lora_alpha", 8))
        if config.get("use_rslora"):
            alpha *= r**0.5  # rsLoRA scales by alpha / sqrt(r); ours is alpha / r
        return "lora", {"rank": r, "alpha": alpha, "modules": sorted(modules)}
    if kind == "PREFIX_TUNING":
        if config.get("prefix_projection"):
            raise CheckpointError(
                f"{where}: prefix_projection adapters hold an MLP, not prefixes; not supported"
            )
        return "prefix", {"prefix_len": int(config["num_virtual_tokens"])}
    raise CheckpointError(f"{where}: peft_type {kind!r} is not supported (LORA, PREFIX_TUNING)")
