"""Prefix tuning: learned key/value prefixes for every attention layer (Figure 2B, Figure 7), and the
Prefix-MLP variant of Appendix D (generated embeddings passed through peft's reparameterisation MLP).

phi keys: one per attention kind ("self" for decoder-only; "encoder", "decoder", "cross" for T5),
each [B, L, 2, Hkv, P, D] (2 = key, value).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import HypertuningError
from ._heads import init_last, mlp_head
from .base import TARGETS, ActivePhi, Phi, Target

INIT_TEXT = "The following examples show what the task is and how it should be answered."


def real_kv_means(downstream, kinds: dict) -> dict[str, torch.Tensor]:
    """Mean key and value per layer of the downstream model on a neutral sentence, as attention sees them
    (after rotary and any QK-norm; recorded by the attention wrapper, so no architecture is special-cased):
    [L, 2, Hkv, D] per kind."""
    from ..models.attention import PHI_KWARG
    from ..models.base import Slot

    active = ActivePhi(capture={}, capture_last=1 << 30)  # every position
    ids = downstream.tokenizer(INIT_TEXT, return_tensors="pt")["input_ids"].to(downstream.device)
    extra = {"decoder_input_ids": ids} if downstream.spec.family == "t5" else {}
    with torch.no_grad():
        downstream.model(input_ids=ids, **extra, **{PHI_KWARG: active})
    out = {}
    for kind, ks in kinds.items():
        layers = []
        for i in range(ks.num_layers):
            k, v = active.capture[Slot(kind, i)]  # [1, Hkv, T, D]
            layers.append(torch.stack([k.float().mean((0, 2)), v.float().mean((0, 2))]))
        out[kind] = torch.stack(layers)
    return out


class PrefixHeads(nn.Module):
    """Per kind, a key head and a value head mapping each of P query outputs to all layers' prefixes."""

    def __init__(self, target: PrefixTarget, hidden: int, downstream=None):
        super().__init__()
        self.spec, self.p = target.spec, target.prefix_len
        self.heads = nn.ModuleDict()
        means = real_kv_means(downstream, self.spec.kinds) if downstream is not None else None
        for kind, ks in self.spec.kinds.items():
            for j, kv in enumerate(("k", "v")):
                head = mlp_head(hidden, ks.num_layers * ks.kv_heads * ks.head_dim)
                # Initialisation (the paper is silent): the bias is the downstream model's mean real key/value
                # per layer, so a fresh hypermodel emits in-distribution prefixes (Li & Liang found real-activation
                # initialisation better than random); small weights let positions and tasks differ.
                bias = means[kind][:, j] if means is not None else None
                init_last(head, 0.02 / math.sqrt(hidden), bias)
                self.heads[f"{kind}_{kv}"] = head

    def forward(self, queries: torch.Tensor) -> Phi:
        b, phi = queries.shape[0], {}
        for i, (kind, ks) in enumerate(self.spec.kinds.items()):
            rep = queries[:, i * self.p : (i + 1) * self.p]  # [B, P, H]
            kv = [
                self.heads[f"{kind}_{n}"](rep).reshape(b, self.p, ks.num_layers, ks.kv_heads, ks.head_dim)
                for n in ("k", "v")
            ]
            phi[kind] = torch.stack(kv, dim=3).permute(0, 2, 3, 4, 1, 5)  # [B, L, 2, Hkv, P, D]
        return phi


class PrefixMLPHeads(nn.Module):
    """Appendix D's HyperT5-Prefix-MLP: query outputs -> 'embeddings' -> peft's PrefixEncoder MLP -> prefixes.
    The MLP has peft's layout (Linear(token_dim, hidden) -> Tanh -> Linear(hidden, L*2*token_dim)), so it can
    initialise ordinary Prefix-MLP tuning."""

    def __init__(self, target: PrefixTarget, hidden: int, downstream=None):
        super().__init__()
        self.spec, self.p = target.spec, target.prefix_len
        self.embed = nn.ModuleDict()
        self.transform = nn.ModuleDict()
        means = real_kv_means(downstream, self.spec.kinds) if downstream is not None else None
        for kind, ks in self.spec.kinds.items():
            token_dim = ks.kv_heads * ks.head_dim
            mlp_hidden = target.mlp_hidden or token_dim
            self.embed[kind] = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, token_dim))
            mlp = nn.Sequential(
                nn.Linear(token_dim, mlp_hidden),
                nn.Tanh(),
                nn.Linear(mlp_hidden, ks.num_layers * 2 * token_dim),
            )
            init_last(mlp, 0.02 / math.sqrt(mlp_hidden), means[kind] if means is not None else None)
            self.transform[kind] = mlp

    def forward(self, queries: torch.Tensor) -> Phi:
        b, phi = queries.shape[0], {}
        for i, (kind, ks) in enumerate(self.spec.kinds.items()):
            emb = self.embed[kind](queries[:, i * self.p : (i + 1) * self.p])  # [B, P, token_dim]
            out = self.transform[kind](emb).reshape(b, self.p, ks.num_layers, 2, ks.kv_heads, ks.head_dim)
            phi[kind] = out.permute(0, 2, 3, 4, 1, 5)  # [B, L, 2, Hkv, P, D]
            phi[f"{kind}.embeddings"] = emb
        return phi


def mask_key(kind: str) -> str:
    """The phi entry ([B, P], nonzero where a column is real) that marks a prefix's padding columns."""
    return f"{kind}.mask"


class FlatPrefix(nn.Module):
    """Prefix-Flat tuning: the prefixes themselves are the parameters. Random initialisation is the
    downstream model's mean real key/value per layer plus small noise (Li & Liang's real-activation init)."""

    def __init__(self, target: PrefixTarget, downstream=None):
        super().__init__()
        means = real_kv_means(downstream, target.spec.kinds) if downstream is not None else None
        self.prefix = nn.ParameterDict()
        for kind, ks in target.spec.kinds.items():
            shape = (1, ks.num_layers, 2, ks.kv_heads, target.prefix_len, ks.head_dim)
            init = torch.randn(shape) * 0.02
            if means is not None:
                init += means[kind][None, :, :, :, None, :]
            self.prefix[kind] = nn.Parameter(init)

    def forward(self) -> Phi:
        return dict(self.prefix.items())

    @torch.no_grad()
    def load_phi(self, phi: Phi) -> None:
        for kind, p in self.prefix.items():
            p.copy_(phi[kind][:1])


class MlpPrefix(nn.Module):
    """Prefix-MLP tuning (peft's prefix_projection): embeddings [1, P, token_dim] through an MLP per kind,
    laid out as PrefixMLPHeads.transform so a hypermodel's MLP and embeddings can initialise it."""

    def __init__(self, target: PrefixTarget, downstream=None):
        super().__init__()
        heads = PrefixMLPHeads(target, 8, downstream)  # the same MLP layout and initialisation
        self.transform = heads.transform
        self.spec, self.p = target.spec, target.prefix_len
        self.embeddings = nn.ParameterDict(
            {
                kind: nn.Parameter(torch.randn(1, target.prefix_len, ks.kv_heads * ks.head_dim))
                for kind, ks in target.spec.kinds.items()
            }
        )

    def forward(self) -> Phi:
        phi = {}
        for kind, ks in self.spec.kinds.items():
            emb = self.embeddings[kind]
            out = self.transform[kind](emb).reshape(1, self.p, ks.num_layers, 2, ks.kv_heads, ks.head_dim)
            phi[kind] = out.permute(0, 2, 3, 4, 1, 5)
            phi[f"{kind}.embeddings"] = emb
        return phi

    @torch.no_grad()
    def load_phi(self, phi: Phi, heads: nn.Module | None = None) -> None:
        """Start from generated embeddings; `heads` (a hypermodel's PrefixMLPHeads) also gives the MLP."""
        for kind, p in self.embeddings.items():
            p.copy_(phi[f"{kind}.embeddings"][:1])
        if heads is not None:
            self.transform.load_state_dict(heads.transform.state_dict())


@TARGETS.register("prefix")
class PrefixTarget(Target):
    name = "prefix"
    peft_type = "PREFIX_TUNING"
    heads_class = PrefixHeads

    def __init__(self, spec, prefix_len: int = 16, mlp_hidden: int | None = None, **options):
        if prefix_len < 1:
            raise HypertuningError(f"prefix_len must be >= 1, got {prefix_len}")
        super().__init__(
            spec, options, prefix_len=prefix_len, **({"mlp_hidden": mlp_hidden} if mlp_hidden else {})
        )
        self.prefix_len, self.mlp_hidden = prefix_len, mlp_hidden

    def num_queries(self) -> int:
        return self.prefix_len * len(self.spec.kinds)  # the paper uses P per kind (2P for encoder + decoder)

    def build_heads(self, hidden: int, downstream=None) -> nn.Module:
        return self.heads_class(self, hidden, downstream)

    def bind(self, phi: Phi) -> ActivePhi:
        columns = {k: phi[mask_key(k)] for k in self.spec.kinds if mask_key(k) in phi}
        return ActivePhi(prefix={k: phi[k] for k in self.spec.kinds}, columns=columns)

    def trainable(self, downstream=None) -> nn.Module:
        return FlatPrefix(self, downstream)

    def zero_phi(self, batch: int = 1) -> Phi:
        # An empty prefix (P = 0) is the only prefix with no effect at all.
        return {
            k: torch.zeros(batch, ks.num_layers, 2, ks.kv_heads, 0, ks.head_dim)
            for k, ks in self.spec.kinds.items()
        }

    def to_peft(self, phi: Phi, family):
        if list(self.spec.kinds) != ["self"]:
            raise HypertuningError(
                "peft's prefix-tuning format holds decoder self-attention prefixes only (and maps T5 layers "
                "differently), so encoder and cross-attention prefixes cannot be stored in it; "
                "T5 prefix adapters are saved in hypertuning's own format."
            )
        ks = self.spec.kinds["self"]
        prefix = phi["self"][0]  # [L, 2, Hkv, P, D]
        if mask_key("self") in phi:
            # peft attends to every virtual token, so padding columns are left out of its file (exact; a
            # compact adapter has none); `from_saved` checks them against the mask saved beside it
            prefix = prefix[..., phi[mask_key("self")][0] > 0, :]
        p = prefix.shape[-2]
        keys = family.prefix_keys_to_peft(self.spec, prefix[:, 0], p)
        prefix = torch.stack([keys, prefix[:, 1]], dim=1)
        emb = prefix.permute(3, 0, 1, 2, 4).reshape(p, -1).contiguous()  # [P, L*2*Hkv*D]
        token_dim = ks.kv_heads * ks.head_dim
        config = {
            "peft_type": "PREFIX_TUNING",
            "task_type": family.peft_task_type,
            "num_virtual_tokens": p,
            "num_layers": ks.num_layers,
            "token_dim": token_dim,
            "num_attention_heads": ks.kv_heads,
            "num_transformer_submodules": 1,
            "encoder_hidden_size": token_dim,
            "prefix_projection": False,
            "inference_mode": True,
        }
        return config, {"prompt_embeddings": emb}

    def missing_entry(self, phi: Phi, key: str) -> torch.Tensor:
        """A prefix without a column mask has every column real (a kv or heads prefix stacked with a
        select one)."""
        for kind in self.spec.kinds:
            if key == mask_key(kind) and kind in phi:
                return phi[kind].new_ones(phi[kind].shape[0], phi[kind].shape[-2])
        return super().missing_entry(phi, key)

    def from_saved(self, phi: Phi) -> Phi:
        """phi as `Adapter.from_pretrained` read it -> phi to use: a peft file that left a prefix's padding
        columns out (`to_peft`) is checked against the mask saved beside it, which then has no more to say."""
        for kind in self.spec.kinds:
            mask = phi.get(mask_key(kind))
            if mask is None or phi[kind].shape[-2] == mask.shape[-1]:
                continue
            real = int((mask[0] > 0).sum())
            if mask.shape[0] != 1 or real != phi[kind].shape[-2]:
                raise HypertuningError(
                    f"prefix of {phi[kind].shape[-2]} columns but its mask marks {real} of {mask.shape[-1]} as real"
                )
            phi = {k: v for k, v in phi.items() if k != mask_key(kind)}
        return self.compact(phi)

    def shaped_like(self, phi: Phi) -> PrefixTarget:
        """A compact select-readout prefix has as many columns as its examples had positions to keep."""
        lengths = {phi[kind].shape[-2] for kind in self.spec.kinds}
        if any(mask_key(kind) in phi for kind in self.spec.kinds) or len(lengths) != 1:
            raise HypertuningError(
                "an ordinary prefix attends to every column: generate one task's adapter (compact, every "
                "column real) to give it its start"
            )
        (length,) = lengths
        if length == self.prefix_len:
            return self
        return type(self)(self.spec, **{**self.options, "prefix_len": length})

    def compact(self, phi: Phi) -> Phi:
        """Leave out the columns no row attends to (a select readout pads its prefix to P with them: 23.6 MB
        of SmolLM2 cache at P = 512, most of it padding on short examples). Exact: a key carries its rotary
        position in itself, so the real columns mean the same wherever they stand, and a padding column takes
        no attention mass. The mask goes too when every column left is real in every row."""
        out = dict(phi)
        for kind in self.spec.kinds:
            mask = phi.get(mask_key(kind))
            if mask is None:
                continue
            real = (mask > 0).any(0)
            if not bool(real.all()):
                out[kind] = phi[kind][..., real, :]
                out[mask_key(kind)] = mask[:, real]
            if bool((out[mask_key(kind)] > 0).all()):
                del out[mask_key(kind)]
        return out

    def stack(self, phis: list[Phi]) -> Phi:
        """Prefixes of different lengths in one batch: each padded to the longest with columns its mask
        hides (as a select readout pads its own), so every row computes what it computes alone."""
        for kind, ks in self.spec.kinds.items():
            longest = max(phi[kind].shape[-2] for phi in phis)
            if all(phi[kind].shape[-2] == longest for phi in phis):
                continue
            if ks.positions == "absolute":
                # the real tokens' positions start after the prefix (as peft's), so a padded row would read
                # its input at other positions than alone
                raise HypertuningError(
                    f"Prefixes of different lengths ({sorted({phi[kind].shape[-2] for phi in phis})} columns) "
                    f"cannot share a batch on this {self.spec.model_type} model (absolute positions): batch "
                    "adapters of one length together"
                )
            padded = []
            for phi in phis:
                t = phi[kind]
                key = mask_key(kind)
                mask = phi[key] if key in phi else self.missing_entry(phi, key)
                spare = longest - t.shape[-2]
                padded.append(
                    {
                        **phi,
                        kind: nn.functional.pad(t, (0, 0, 0, spare)),
                        key: nn.functional.pad(mask, (0, spare)),
                    }
                )
            phis = padded
        return super().stack(phis)

    def from_peft(self, config, state, family) -> Phi:
        ks = self.spec.kinds["self"]
        p = config["num_virtual_tokens"]
        emb = state["prompt_embeddings"].reshape(p, ks.num_layers, 2, ks.kv_heads, ks.head_dim)
        prefix = emb.permute(1, 2, 3, 0, 4)  # [L, 2, Hkv, P, D]
        keys = family.prefix_keys_from_peft(self.spec, prefix[:, 0], p)
        return {"self": torch.stack([keys, prefix[:, 1]], dim=1)[None]}


@TARGETS.register("prefix-mlp")
class PrefixMLPTarget(PrefixTarget):
    name = "prefix-mlp"
    heads_class = PrefixMLPHeads

    def trainable(self, downstream=None) -> nn.Module:
        return MlpPrefix(self, downstream)
