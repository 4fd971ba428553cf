"""The key/value readout: a hypermodel whose prefix is the downstream model's own keys and values at P
learned slots placed after the examples (gisting, Mu et al. 2023; HyperLlama, arXiv 2402.16817).

Why a readout of its own: the paper's heads map a few query vectors to every layer's prefix through
learned linear maps whose bias alone can carry one shared adapter; after multi-task training ours did
exactly that (BENCHMARKS.md, "Does the hypermodel read the examples?"). Here there is no head: the prefix
of layer l *is* what layer l of the frozen downstream model computed at the slots while reading the
examples, so a fresh hypermodel already emits a compressed in-context representation and different
examples give different prefixes by construction.

- The backbone is the downstream model itself (its weights, not a copy): the hypermodel registers only the
  slot embeddings and, optionally, a LoRA applied to the readout pass (B starts at zero, so a fresh readout
  is the plain model). A saved hypermodel holds just those.
- The examples are written as the in-context baseline writes them (`x y` joined by `separator`, then the
  separator), in the downstream tokenizer, so the slots sit where the query would.
- Positions: the adapted model keeps its real tokens at positions 0..T-1, with the prefix before them. The
  readout pass therefore gives the slots positions -P..-1 and the examples the positions before those, so
  the rotary angle between a slot's key and a later query is the one the query would see in context.
  Rotary embeddings are relative, so negative positions are exact, not an approximation.
- Keys and values are taken where attention sees them (after rotary and any QK-norm), recorded by the
  attention wrapper the prefixes already go through (`ActivePhi.capture`), so no model's rotary or norms
  are re-implemented here.

Known limits: the readout pass builds its own 4D mask, so sliding-window layers see every earlier example
token there; decoder-only downstream models only (T5's encoder has no causal place for slots).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._io import read_safetensors
from ..data.format import _note, normalise_examples, pack_pieces
from ..errors import CheckpointError, HypertuningError
from ..models.base import Slot
from ..peft import TARGETS, ActivePhi, Phi
from .model import READOUTS, WEIGHTS_FILE, HyperConfig, HyperModel


class DownstreamReadout(HyperModel):
    """A hypermodel that reads the examples with the downstream model itself (no backbone copy): the
    shared machinery of the "kv" readout (here) and the "outer" LoRA readout (`outer.py`). Subclasses set
    `defaults` (their readout options) and `target_name`, build their parameters in `setup`, and implement
    `forward`."""

    defaults: dict = {}
    target_name = "?"

    def __init__(self, config: HyperConfig, downstream):
        nn.Module.__init__(self)
        if downstream is None:
            raise HypertuningError(
                f"The {config.readout} readout runs on its downstream model: pass `downstream`"
            )
        if list(downstream.spec.kinds) != ["self"]:
            raise HypertuningError(
                f"The {config.readout} readout needs a decoder-only downstream model (it reads the examples "
                f"as a prompt); this one has attention kinds {sorted(downstream.spec.kinds)}"
            )
        self.config = config
        self.spec = downstream.spec
        self.opts = {**self.defaults, **config.readout_options}
        self.target = TARGETS.get(config.target)(self.spec, **config.target_options)
        self.tokenizer = downstream.tokenizer
        self._downstream = (downstream,)  # a tuple: the downstream model is not a registered submodule
        self._sep_ids = self.tokenizer(self.opts["separator"], add_special_tokens=False)["input_ids"]
        self.setup(downstream)

    def setup(self, downstream) -> None:
        raise NotImplementedError

    @classmethod
    def target_options(cls, downstream, opts: dict) -> dict:
        raise NotImplementedError

    @classmethod
    def build(cls, downstream, target, max_input_tokens, readout_options):
        name = next(n for n, c in READOUTS.items() if c is cls)
        if downstream is None or not hasattr(downstream, "spec"):
            raise HypertuningError(
                f"The {name} readout runs on its downstream model: pass a loaded Downstream"
            )
        unknown = set(readout_options) - set(cls.defaults)
        if unknown:
            raise HypertuningError(
                f"Unknown {name} readout option(s) {sorted(unknown)}; it takes {sorted(cls.defaults)}"
            )
        if target != cls.target_name:
            what = "prefixes" if cls.target_name == "prefix" else "LoRA"
            raise HypertuningError(
                f"The {name} readout generates {what} (target {cls.target_name!r}), not {target!r}"
            )
        opts = {**cls.defaults, **readout_options}
        sep = len(downstream.tokenizer(opts["separator"], add_special_tokens=False)["input_ids"])
        if max_input_tokens < sep + 2:
            raise HypertuningError(
                f"max_input_tokens={max_input_tokens} leaves no room for an example after the separator"
            )
        config = HyperConfig(
            target,
            cls.target_options(downstream, opts),
            downstream.spec.to_dict(),
            "downstream",
            None,
            max_input_tokens,
            readout=name,
            readout_options=dict(readout_options),
        )
        return cls(config, downstream).to(downstream.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def trainable_backbones(self) -> list[nn.Module]:
        return []  # the downstream model is checkpointed (or not) by the objective itself

    def encode_ids(self, examples, instruction: str | None = None, stats=None) -> list[int]:
        """The examples as the in-context prompt writes them, ending with the separator a query would
        follow, within `max_input_tokens` (whole examples dropped)."""
        sep = self.opts["separator"]
        pieces = ([instruction] if instruction else []) + [
            f"{x} {y}" for x, y in normalise_examples(examples, allow_empty=bool(instruction))
        ]
        limit = self.config.max_input_tokens - len(self._sep_ids)
        lead = int(bool(instruction))
        ids = pack_pieces(
            self.tokenizer, pieces, limit, sep, stats=stats, key="hyper", lead=lead, cut_first=False
        )
        if not ids and len(pieces) > lead:
            # The first example alone is over budget: keep its end (the output and the end of its input),
            # never an input without its output.
            first = self.tokenizer(pieces[lead], add_special_tokens=False)["input_ids"]
            _note(
                stats, "hyper_truncated", f"The first example has {len(first)} tokens; kept its last {limit}"
            )
            ids = first[-limit:]
        return ids + self._sep_ids

    def fingerprint_tensors(self) -> list[torch.Tensor]:
        return [v for _, v in sorted(self.state_dict().items())]

    def backbone_config(self) -> None:
        return None  # the backbone is the downstream model: a saved readout holds only what trains

    @classmethod
    def load(cls, d: Path, config: HyperConfig, downstream, device: str | None):
        if downstream is None:
            from ..models.downstream import load_downstream

            downstream = load_downstream(config.downstream["checkpoint"], device=device)
            downstream.check_compatible(HyperModel.read_spec(d), "hypermodel")
        if device is not None and torch.device(device) != downstream.device:
            raise HypertuningError(
                f"This readout runs on its downstream model, which is on {downstream.device}; load it "
                f"there (device={str(downstream.device)!r}) or move the downstream model to {device} first"
            )
        hm = cls(config, downstream)
        state = read_safetensors(d / WEIGHTS_FILE)
        missing, unexpected = hm.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{d / WEIGHTS_FILE} does not match its config: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        return hm.to(downstream.device).eval()


@READOUTS.register("kv")
class KVReadout(DownstreamReadout):
    """Options (`readout_options`): `slots` (P, the prefix length), `lora_rank` (0 = no LoRA on the readout
    pass), `lora_modules` (default: the family's LoRA modules) and `separator` (between examples)."""

    defaults = {"slots": 16, "lora_rank": 0, "lora_modules": None, "separator": "\n"}
    target_name = "prefix"

    @classmethod
    def target_options(cls, downstream, opts):
        for key in ("slots", "lora_rank"):
            if not isinstance(opts[key], int) or isinstance(opts[key], bool):
                raise HypertuningError(f"kv readout option {key} must be an integer, got {opts[key]!r}")
        if opts["slots"] < 1 or opts["lora_rank"] < 0:
            raise HypertuningError(
                f"slots must be >= 1 and lora_rank >= 0, got {opts['slots']} and {opts['lora_rank']}"
            )
        return TARGETS.get("prefix")(downstream.spec, prefix_len=opts["slots"]).options

    def setup(self, downstream) -> None:
        if downstream.attention_base is None:
            raise HypertuningError(
                "The kv readout reads keys and values through the 'sdpa' or 'eager' attention "
                f"implementation; this model uses {downstream.model.config._attn_implementation!r}"
            )
        positions = self.spec.kinds["self"].positions
        if positions not in ("rotary", "none"):
            raise HypertuningError(
                f"The kv readout computes its slots at positions -P..-1 before the real tokens, which only "
                f"relative (rotary) positions allow; this {self.spec.model_type} model has {positions} "
                "positions. Use the heads readout (--readout heads) or the outer LoRA readout."
            )
        p = int(self.opts["slots"])
        # The slots start as randomly chosen rows of the token embedding matrix (Lester et al., 2021).
        emb = downstream.model.get_input_embeddings().weight.detach()
        rows = torch.randint(0, emb.shape[0], (p,))
        self.slots = nn.Parameter(emb[rows].clone().float())  # [P, H]
        self.lora = None
        if int(self.opts["lora_rank"] or 0):
            lora = TARGETS.get("lora")(
                self.spec, rank=int(self.opts["lora_rank"]), modules=self.opts["lora_modules"]
            )
            self._lora_target = lora
            self.lora = lora.trainable()  # peft's start: A kaiming-uniform, B zero (the plain model)

    # -- the forward pass ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Phi:
        """Right-padded example ids [B, T] -> phi {"self": [B, L, 2, Hkv, P, D]}; differentiable."""
        ds = self._downstream[0]
        model = ds.model
        b, t = input_ids.shape
        p = self.slots.shape[0]
        tokens = model.get_input_embeddings()(input_ids)
        x = torch.cat([tokens, self.slots[None].expand(b, -1, -1).to(tokens.dtype)], dim=1)
        real = attention_mask.bool()
        n = t + p
        idx = torch.arange(n, device=x.device)
        key_real = torch.cat([real, torch.ones(b, p, dtype=torch.bool, device=x.device)], dim=1)
        allowed = (idx[None, :] <= idx[:, None])[None] & key_real[:, None, :]
        allowed |= torch.eye(n, dtype=torch.bool, device=x.device)[None]  # padding rows: no empty row (NaN)
        mask = allowed[:, None]
        if ds.attention_base == "eager":
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(
                ~mask, torch.finfo(x.dtype).min
            )
        lengths = real.sum(1, keepdim=True)
        positions = torch.cat(
            [
                torch.arange(t, device=x.device)[None] - lengths - p,  # real tokens end at -P-1
                torch.arange(p, device=x.device).expand(b, p) - p,  # the slots: -P..-1
            ],
            dim=1,
        )
        lora = self._lora_target.bind(self.lora()).lora if self.lora is not None else {}
        active = ActivePhi(lora=lora, capture={}, capture_last=p)
        model.base_model(inputs_embeds=x, attention_mask=mask, position_ids=positions, hypertuning_phi=active)
        ks = self.spec.kinds["self"]
        layers = [torch.stack(active.capture[Slot("self", i)], dim=1) for i in range(ks.num_layers)]
        return {"self": torch.stack(layers, dim=1).float()}  # [B, L, 2, Hkv, P, D]
