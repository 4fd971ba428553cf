"""The outer-product LoRA readout: LoRA with no input-independent path (after Generative Adapter, Chen et
al. 2024, chentong0/generative-adapter `fastlora/model.py`).

Why: the paper's LoRA heads end in a bias that can carry one shared adapter by itself, and after
multi-task training ours did (BENCHMARKS.md). Here, for each LoRA module m of layer l,

    delta W = s * B · N(sum_t (P x_t)(Q x_t)^T) · A

where x_t are the inputs module m itself receives while the frozen downstream model reads the examples
(captured by a forward hook, so whatever norm precedes the module is the model's own), P and Q [r, in]
project them, N divides by the Frobenius norm (an r x r core of norm 1), A [r, in] and B [out, r] are
shared, and s is a per-layer scale that starts small (`gate_init`) but not at zero. Every generated
adapter passes through the examples' core: a constant adapter is not representable unless the examples'
statistics are, and a fresh hypermodel's LoRA already differs between tasks.

The result is an ordinary rank-r LoRA (lora_A = core · A, lora_B = s · B), so peft export is the LoRA
target's own. The readout pass has no trainable parameters, so it runs without gradients: training
costs one forward of the examples plus the downstream step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import HypertuningError
from ..peft import TARGETS, Phi
from .kv import DownstreamReadout
from .model import READOUTS


@READOUTS.register("outer")
class OuterLoraReadout(DownstreamReadout):
    """Options (`readout_options`): `rank`, `alpha`, `modules` (the LoRA's), `gate_init` (the scale s at
    the start) and `separator` (between examples)."""

    defaults = {"rank": 8, "alpha": None, "modules": None, "gate_init": 0.05, "separator": "\n"}
    target_name = "lora"

    @classmethod
    def target_options(cls, downstream, opts):
        if not isinstance(opts["rank"], int) or isinstance(opts["rank"], bool):
            raise HypertuningError(f"outer readout option rank must be an integer, got {opts['rank']!r}")
        if not isinstance(opts["gate_init"], (int, float)) or not 0 < opts["gate_init"] < 1:
            raise HypertuningError(f"gate_init must be in (0, 1), got {opts['gate_init']}")
        lora = TARGETS.get("lora")(
            downstream.spec, rank=int(opts["rank"]), alpha=opts["alpha"], modules=opts["modules"]
        )
        return lora.options

    def setup(self, downstream) -> None:
        r = self.target.rank
        self.layout = self.target.layout()
        self.proj = nn.ParameterDict()  # P and Q: [L, 2, r, in]
        self.ab = nn.ParameterDict()
        self.raw_gates = nn.ParameterDict()
        for key, (_kind, _m, layers, d_in, d_out) in self.layout.items():
            name = key.replace(".", "__")
            self.proj[name] = nn.Parameter(torch.randn(layers, 2, r, d_in) / math.sqrt(d_in))
            a = torch.empty(layers, r, d_in)
            for i in range(layers):
                nn.init.kaiming_uniform_(a[i], a=math.sqrt(5))  # peft's A
            self.ab[f"{name}__A"] = nn.Parameter(a)
            self.ab[f"{name}__B"] = nn.Parameter(torch.randn(layers, d_out, r) / math.sqrt(r))
            self.raw_gates[name] = nn.Parameter(
                torch.full((layers,), math.atanh(float(self.opts["gate_init"])))
            )
        self._linears = {}
        for slot, module in downstream.family.attention_modules():
            for key, (kind, m, *_rest) in self.layout.items():
                if kind == slot.kind:
                    self._linears[(key, slot.layer)] = getattr(module, m)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Phi:
        """Right-padded example ids [B, T] -> LoRA phi; differentiable in the readout's parameters."""
        ds = self._downstream[0]
        got, handles = {}, []
        for where, linear in self._linears.items():

            def hook(mod, args, where=where):
                got[where] = args[0].detach()

            handles.append(linear.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                ds.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        real = attention_mask.to(self.device, torch.float32)[:, :, None]  # [B, T, 1]
        phi = {}
        for key, (_kind, _m, layers, _d_in, _d_out) in self.layout.items():
            name = key.replace(".", "__")
            x = torch.stack([got[(key, i)] for i in range(layers)], dim=1).float()  # [B, L, T, in]
            x = x * real[:, None]
            pq = torch.einsum("bltd,lkrd->blktr", x, self.proj[name])  # [B, L, 2, T, r]
            core = pq[:, :, 0].transpose(-1, -2) @ pq[:, :, 1]  # sum_t (P x_t)(Q x_t)^T: [B, L, r, r]
            core = core / core.flatten(-2).norm(dim=-1).clamp_min(1e-6)[..., None, None]
            gate = torch.tanh(self.raw_gates[name])[None, :, None, None]
            b = self.ab[f"{name}__B"][None].expand(x.shape[0], -1, -1, -1)
            phi[f"{key}.lora_A"] = core @ self.ab[f"{name}__A"][None]  # [B, L, r, in]
            phi[f"{key}.lora_B"] = b * gate  # [B, L, out, r]
        return phi
