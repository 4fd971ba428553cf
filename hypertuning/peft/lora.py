"""LoRA: low-rank deltas on attention projections (q and v by default), one (A, B) per layer, gated per layer.

phi keys: "{kind}.{module}.lora_A" [B, L, r, in] and "{kind}.{module}.lora_B" [B, L, out, r] (gate applied).
The downstream update is W x + (alpha / r) * B (A x), exactly peft's LoRA.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import HypertuningError
from ._heads import init_last, mlp_head
from .base import TARGETS, ActivePhi, Phi, Target


class LoraHeads(nn.Module):
    def __init__(self, target: LoraTarget, hidden: int):
        super().__init__()
        self.t = target.layout()
        r = target.rank
        self.heads = nn.ModuleDict()
        self.raw_gates = nn.ParameterDict()
        # Initialisation (the paper is silent): generated A starts at kaiming-like scale 1/sqrt(in) and B at
        # 1/sqrt(r), so B(Ax) is O(1); the learned tanh gates start at `gate_init` (not 0, which would stop every
        # gradient to the heads and backbone) so a fresh hypermodel perturbs q/v by about that fraction.
        tanh_scale = 0.6  # typical magnitude of the head's tanh activations
        for key, (_kind, _module, layers, d_in, d_out) in self.t.items():
            head = mlp_head(hidden, r * (d_in + d_out))
            std = torch.cat(
                [torch.full((r * d_in,), 1 / math.sqrt(d_in)), torch.full((r * d_out,), 1 / math.sqrt(r))]
            )
            init_last(head, std / (tanh_scale * math.sqrt(hidden)))
            self.heads[key.replace(".", "__")] = head
            self.raw_gates[key.replace(".", "__")] = nn.Parameter(
                torch.full((layers,), math.atanh(target.gate_init))
            )
        self.rank = r

    def forward(self, queries: torch.Tensor) -> Phi:  # queries: [B, Q, H]
        phi, offset, b, r = {}, {}, queries.shape[0], self.rank
        start = 0
        for kind, layers in self.t.kinds.items():
            offset[kind] = (start, layers)
            start += layers
        for key, (kind, _module, _layers, d_in, d_out) in self.t.items():
            s, n = offset[kind]
            y = self.heads[key.replace(".", "__")](queries[:, s : s + n])  # [B, L, r*(in+out)]
            gate = torch.tanh(self.raw_gates[key.replace(".", "__")])[None, :, None, None]
            phi[f"{key}.lora_A"] = y[..., : r * d_in].reshape(b, n, r, d_in)
            phi[f"{key}.lora_B"] = y[..., r * d_in :].reshape(b, n, d_out, r) * gate
        return phi


class LoraParams(nn.Module):
    """Ordinary LoRA parameters, initialised as peft does: A kaiming-uniform, B zero (so training starts
    from the base model)."""

    def __init__(self, target: LoraTarget):
        super().__init__()
        self.ab = nn.ParameterDict()
        for key, (_kind, _module, layers, d_in, d_out) in target.layout().items():
            a = torch.empty(1, layers, target.rank, d_in)
            for i in range(layers):
                nn.init.kaiming_uniform_(a[0, i], a=math.sqrt(5))
            self.ab[f"{key}.lora_A".replace(".", "__")] = nn.Parameter(a)
            self.ab[f"{key}.lora_B".replace(".", "__")] = nn.Parameter(
                torch.zeros(1, layers, d_out, target.rank)
            )

    def forward(self) -> Phi:
        return {k.replace("__", "."): v for k, v in self.ab.items()}

    @torch.no_grad()
    def load_phi(self, phi: Phi) -> None:
        for k, p in self.ab.items():
            p.copy_(phi[k.replace("__", ".")][:1])


class _Layout(dict):
    kinds: dict[str, int]


ALL_LINEAR = "all-linear"


@TARGETS.register("lora")
class LoraTarget(Target):
    name = "lora"
    peft_type = "LORA"

    def __init__(
        self,
        spec,
        rank: int = 8,
        alpha: float | None = None,
        modules: list[str] | None = None,
        gate_init: float = 0.01,
        **options,
    ):
        first = next(iter(spec.kinds.values()))
        if modules == ALL_LINEAR:
            # peft's word, scoped to what this target adapts: every linear layer of the attention block
            # (peft's own "all-linear" takes the MLP's too; the exported adapter names the modules it has)
            modules = [m for m in first.linears if all(m in ks.linears for ks in spec.kinds.values())]
            if not modules:
                raise HypertuningError(
                    f"LoRA modules {ALL_LINEAR!r}: the attention kinds of this {spec.model_type} model "
                    f"({', '.join(spec.kinds)}) share no linear layer; name them instead"
                )
        elif isinstance(modules, str):
            raise HypertuningError(
                f"LoRA modules must be a list of names or {ALL_LINEAR!r} (every linear layer of the "
                f"attention block, not the MLP's); got {modules!r}"
            )
        modules = list(modules or first.default_lora)
        for kind, ks in spec.kinds.items():
            missing = [m for m in modules if m not in ks.linears]
            if missing:
                raise HypertuningError(
                    f"LoRA modules {missing} are not linear layers of the {kind} attention of this "
                    f"{spec.model_type} model; available: {sorted(ks.linears)}"
                )
        if rank < 1:
            raise HypertuningError(f"LoRA rank must be >= 1, got {rank}")
        if not 0 < gate_init < 1:
            raise HypertuningError(f"gate_init must be in (0, 1), got {gate_init}")
        alpha = float(alpha if alpha is not None else rank)
        super().__init__(spec, options, rank=rank, alpha=alpha, modules=modules, gate_init=gate_init)
        self.rank, self.alpha, self.modules, self.gate_init = rank, alpha, modules, gate_init

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def layout(self) -> _Layout:
        out = _Layout()
        out.kinds = {k: ks.num_layers for k, ks in self.spec.kinds.items()}
        for kind, ks in self.spec.kinds.items():
            for m in self.modules:
                d_in, d_out = ks.linears[m]
                out[f"{kind}.{m}"] = (kind, m, ks.num_layers, d_in, d_out)
        return out

    def num_queries(self) -> int:
        return sum(
            ks.num_layers for ks in self.spec.kinds.values()
        )  # the paper's 3L for T5, L for decoder-only

    def build_heads(self, hidden: int, downstream=None) -> nn.Module:
        return LoraHeads(self, hidden)

    def trainable(self, downstream=None) -> nn.Module:
        return LoraParams(self)

    def bind(self, phi: Phi) -> ActivePhi:
        lora = {}
        for key in self.layout():
            lora[key] = (phi[f"{key}.lora_A"], phi[f"{key}.lora_B"] * self.scaling)
        return ActivePhi(lora=lora)

    def zero_phi(self, batch: int = 1) -> Phi:
        phi = {}
        for key, (_, _, layers, d_in, d_out) in self.layout().items():
            phi[f"{key}.lora_A"] = torch.zeros(batch, layers, self.rank, d_in)
            phi[f"{key}.lora_B"] = torch.zeros(batch, layers, d_out, self.rank)
        return phi

    def to_peft(self, phi: Phi, family) -> tuple[dict, dict[str, torch.Tensor]]:
        from ..models import Slot

        state = {}
        for key, (kind, m, layers, _, _) in self.layout().items():
            for layer in range(layers):
                path = f"base_model.model.{family.module_path(self.spec, Slot(kind, layer))}.{m}"
                state[f"{path}.lora_A.weight"] = phi[f"{key}.lora_A"][0, layer].contiguous()
                state[f"{path}.lora_B.weight"] = phi[f"{key}.lora_B"][0, layer].contiguous()
        config = {
            "peft_type": "LORA",
            "task_type": family.peft_task_type,
            "r": self.rank,
            "lora_alpha": self.alpha,
            "target_modules": sorted(self.modules),
            "lora_dropout": 0.0,
            "bias": "none",
            # transformers' Conv1D (GPT-2) stores its weight as [in, out]; peft's lora_A/B keep Linear's shapes
            "fan_in_fan_out": any(
                m in ks.fan_in_fan_out for ks in self.spec.kinds.values() for m in self.modules
            ),
            "use_rslora": False,
            "inference_mode": True,
        }
        return config, state

    def from_peft(self, config, state, family) -> Phi:
        from ..models import Slot

        phi = {}
        for key, (kind, m, layers, _, _) in self.layout().items():
            a, b = [], []
            for layer in range(layers):
                path = f"base_model.model.{family.module_path(self.spec, Slot(kind, layer))}.{m}"
                try:
                    a.append(state[f"{path}.lora_A.weight"])
                    b.append(state[f"{path}.lora_B.weight"])
                except KeyError as e:
                    raise HypertuningError(f"adapter file lacks {e.args[0]}") from None
            phi[f"{key}.lora_A"] = torch.stack(a)[None]
            phi[f"{key}.lora_B"] = torch.stack(b)[None]
        return phi
