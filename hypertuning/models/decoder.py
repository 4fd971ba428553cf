"""Any decoder-only `transformers` causal LM whose attention goes through the attention interface.

Nothing here lists architectures. At load, one probe forward pass (one token) runs with a recording
attention function swapped in, and the model itself tells us:

- its attention modules, in call order, and the decoder-layer list that holds them (one per layer);
- their projections (`nn.Linear`, or GPT-2's `Conv1D`), and which of them read the attention's input
  (query/key/value, separate or fused: Phi-3's `qkv_proj`, GPT-2's `c_attn`);
- key/value heads and head dimension, from the key tensor attention receives;
- how positions enter: a rotary embedding module (its class is recorded, so a saved adapter can rotate
  prefix keys with each layer's own rotary, Gemma 3's local and global bases included), or an absolute
  position embedding (GPT-2: prefixes then shift real positions by P, as peft's cache does).

QK-norm, sliding windows, embedding scaling, attention and final-logit soft-capping all stay inside the
model's own modules: prefixes are injected where attention is computed (`attention.py`), LoRA deltas on
the projections' outputs, and scores come from the model's own head (`logits_to_keep`).
"""

from __future__ import annotations

import importlib
import inspect
import sys

import torch
from torch import nn

from ..data.format import pad_batch
from ..errors import HypertuningError
from . import attention as _attention
from .attention import PHI_KWARG, expand_rows
from .base import FAMILIES, Family, KindSpec, Slot

LAYER_FIELD = "{}"  # where the layer index goes in a module path template


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a linear projection: `nn.Linear`, or transformers' `Conv1D` (GPT-2),
    whose weight is stored transposed ([in, out])."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.nf
    return None


def _probe(model) -> dict:
    """One forward pass on one token with a recording attention function: which modules attention runs
    in (in order), the key shape each sees, and which projections read each attention module's input."""
    seen: list = []

    def record(module, query, key, value, attention_mask, **kwargs):
        seen.append((module, tuple(key.shape)))
        return _attention._base_function(module, "eager")(module, query, key, value, attention_mask, **kwargs)

    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register("hypertuning_probe", record)
    AttentionMaskInterface.register("hypertuning_probe", ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    configs[id(model.config)] = model.config
    saved = {i: getattr(c, "_attn_implementation", None) for i, c in configs.items()}
    inputs: dict = {}  # attention module -> the tensor it was called on
    readers: dict = {}  # attention module -> names of projections called on that tensor
    handles = []
    for module in model.modules():
        if any(linear_shape(c) for c in module.children()):

            def pre(mod, args, kwargs):
                x = args[0] if args else kwargs.get("hidden_states")
                inputs[mod] = x

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            for name, child in module.named_children():
                if linear_shape(child):

                    def hook(lin, args, out, owner=module, name=name):
                        if args and inputs.get(owner) is args[0]:
                            readers.setdefault(owner, []).append(name)

                    handles.append(child.register_forward_hook(hook))
    try:
        for c in configs.values():
            if getattr(c, "_attn_implementation", None) is not None:
                c._attn_implementation = "hypertuning_probe"
        token = model.config.bos_token_id if isinstance(model.config.bos_token_id, int) else 0
        device = next(model.parameters()).device
        with torch.no_grad():
            model(input_ids=torch.tensor([[token]], device=device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
        for i, c in configs.items():
            if saved[i] is not None:
                c._attn_implementation = saved[i]
    return {"seen": seen, "readers": readers}


def _rotary_class(base: nn.Module) -> type | None:
    for m in base.modules():
        if type(m).__name__.endswith("RotaryEmbedding"):
            return type(m)
    return None


def _import(qualname: str):
    module, _, name = qualname.rpartition(".")
    if not module.startswith("transformers."):
        raise HypertuningError(f"refusing to import {qualname!r}: not a transformers class")
    return getattr(importlib.import_module(module), name)


@FAMILIES.register("decoder")
class DecoderFamily(Family):
    name = "decoder"
    kinds = ("self",)
    peft_task_type = "CAUSAL_LM"
    hyper_backbone = "decoder-only"
    target_separator = " "

    @staticmethod
    def detect(config) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return not getattr(config, "is_encoder_decoder", False) and (
            config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        )

    def __init__(self, model):
        super().__init__(model)
        self.base = model.base_model
        probe = _probe(model)
        names = {m: n for n, m in model.named_modules()}
        seen = probe["seen"]
        what = f"{type(model).__name__} (model_type={model.config.model_type!r})"
        if not seen:
            raise HypertuningError(
                f"{what} does not compute attention through transformers' attention interface "
                "(ALL_ATTENTION_FUNCTIONS), which is where hypertuning injects prefixes: it cannot be a "
                "downstream model. Models whose attention code calls the interface work unchanged."
            )
        attn = [m for m, _ in seen]
        if len(set(map(id, attn))) != len(attn):
            raise HypertuningError(f"{what}: an attention module ran twice in one forward pass")
        layer_lists = {names[m].rsplit(".", 2)[0] for m in attn}
        if len(layer_lists) != 1 or any(not names[m].rsplit(".", 2)[1].isdigit() for m in attn):
            raise HypertuningError(
                f"{what}: attention runs in {sorted(names[m] for m in attn)}, not in one module per decoder "
                "layer; hypertuning supports decoder-only models with one self-attention per layer"
            )
        layers = model.get_submodule(layer_lists.pop())
        index = {id(layer): i for i, layer in enumerate(layers)}
        parents = [model.get_submodule(names[m].rsplit(".", 1)[0]) for m in attn]
        missing = sorted(set(range(len(layers))) - {index[id(p)] for p in parents})
        if missing:
            raise HypertuningError(
                f"{what}: decoder layers {missing} compute no attention through the attention interface "
                "(a hybrid with recurrent or linear-attention layers); prefixes and LoRA need every layer's"
            )
        self.slot_modules = [(Slot("self", index[id(p)]), m) for p, m in zip(parents, attn, strict=True)]
        self.slot_modules.sort(key=lambda s: s[0].layer)
        # one path template for every layer: "<layers>.{}.<attention>"
        first = names[self.slot_modules[0][1]]
        head, _, rest = first.partition(f".{self.slot_modules[0][0].layer}.")
        self.path = f"{head}.{LAYER_FIELD}.{rest}"
        for slot, m in self.slot_modules:
            if names[m] != self.path.format(slot.layer):
                raise HypertuningError(f"{what}: attention modules sit at different paths ({names[m]})")
        shapes = {(k[1], k[3]) for _, k in seen}
        if len(shapes) > 1:
            raise HypertuningError(
                f"{what}: attention layers have different key/value shapes (heads, head size) {sorted(shapes)}; "
                "prefixes and LoRA need one shape for every layer"
            )
        _, hkv, _, head_dim = seen[0][1]
        self.key_shape = (hkv, head_dim)
        a0 = self.slot_modules[0][1]
        self.readers = probe["readers"].get(a0, [])
        from transformers.pytorch_utils import Conv1D

        self.linears = {n: list(linear_shape(c)) for n, c in a0.named_children() if linear_shape(c)}
        self.fan_in_fan_out = sorted(n for n, c in a0.named_children() if isinstance(c, Conv1D))
        rotary = _rotary_class(self.base)
        self.rotary = f"{rotary.__module__}.{rotary.__qualname__}" if rotary else None
        self.position_embedding = None if rotary else _absolute_positions(self.base, model.config)
        if self.position_embedding is not None:
            self._shift_positions(self.position_embedding)

    # -- what the targets read ------------------------------------------------------------------------
    def attention_modules(self):
        yield from self.slot_modules

    def kind_spec(self, kind: str) -> KindSpec:
        hkv, head_dim = self.key_shape
        return KindSpec(
            len(self.slot_modules),
            hkv,
            head_dim,
            self.linears,
            path=self.path,
            default_lora=self._default_lora(),
            fan_in_fan_out=self.fan_in_fan_out,
            rotary=self.rotary,
            positions="rotary" if self.rotary else ("absolute" if self.position_embedding else "none"),
        )

    def _default_lora(self) -> list[str]:
        """peft's default LoRA modules for this model type where peft has them (q and v, or the fused
        projection), else the projections that read the attention input: q and v by name when separate."""
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

        known = PEFT_DEFAULTS.get(self.model.config.model_type)
        if known and all(m in self.linears for m in known):
            return list(known)
        readers = [n for n in self.readers if n in self.linears] or list(self.linears)
        qv = [n for n in readers if n.lower().startswith(("q", "v"))]
        return qv if len(readers) > 1 and qv else readers

    @classmethod
    def complete_kind(cls, ks: KindSpec, kind: str) -> KindSpec:
        # specs saved when this family was "llama" (llama, mistral, qwen2, qwen3 only)
        if ks.path is None:
            ks.path = f"model.layers.{LAYER_FIELD}.self_attn"
            ks.default_lora = ks.default_lora or ["q_proj", "v_proj"]
            ks.rotary = "transformers.models.llama.modeling_llama.LlamaRotaryEmbedding"
            ks.positions = "rotary"
        return ks

    # -- prefix keys in peft's frame --------------------------------------------------------------------
    # Our prefix keys meet queries at their true positions 0..T-1; peft's cache offsets real tokens to
    # P..P+T-1. Rotary scores depend on the query's angle against an unrotated prefix key, so the same
    # logits need the keys rotated by P: R(P+t)q . k_peft == R(t)q . R(-P)k_peft, so k_peft = R(P) k_ours.
    # Each layer is rotated by its own rotary embedding (Gemma 3: local and global bases), through the
    # model's own rotary class and `apply_rotary_pos_emb` (partial rotary, as in Phi-3, included).
    # Absolute positions (GPT-2) need no change: our real tokens are shifted by P as peft's are.
    @classmethod
    def _rotate(cls, spec, keys: torch.Tensor, n: int, sign: int) -> torch.Tensor:
        ks = spec.kinds["self"]
        if not ks.rotary:
            return keys
        config = spec.model_config()
        rotary_cls = _import(ks.rotary)
        apply = sys.modules[rotary_cls.__module__].apply_rotary_pos_emb
        rotary = rotary_cls(config=config)
        takes_type = "layer_type" in inspect.signature(rotary.forward).parameters
        pos = torch.tensor([[0, n]], dtype=torch.long)
        out = []
        for layer in range(keys.shape[0]):
            extra = (config.layer_types[layer],) if takes_type else ()
            cos, sin = rotary(keys.float(), pos, *extra)  # [1, 2, D_rot]
            # YaRN and LongRoPE fold an attention scaling into cos and sin (cos at position 0 is that
            # factor): a pure rotation of the cached keys by n divides it out again
            cos, sin = cos[:, 1:] / cos[:, :1], sin[:, 1:] / cos[:, :1]
            k = keys[layer][None].float()  # [1, Hkv, P, D]
            try:
                out.append(apply(k, k, cos, sign * sin)[1][0].to(keys.dtype))
            except (RuntimeError, TypeError) as e:  # a rotary function of another form (Phi, GPT-J)
                raise HypertuningError(
                    f"cannot rotate prefix keys into peft's frame with {ks.rotary} ({e}); the adapter is "
                    "saved in hypertuning's own format"
                ) from None
        return torch.stack(out)

    @classmethod
    def prefix_keys_to_peft(cls, spec, keys, num_virtual_tokens):
        return cls._rotate(spec, keys, num_virtual_tokens, 1)

    @classmethod
    def prefix_keys_from_peft(cls, spec, keys, num_virtual_tokens):
        return cls._rotate(spec, keys, num_virtual_tokens, -1)

    def _shift_positions(self, embedding: nn.Module) -> None:
        """Absolute positions: peft's prefix cache moves real tokens to positions P..P+T-1; ours do the
        same for the rows a prefix applies to, by shifting the ids the position embedding reads."""

        def remember(module, args, kwargs):
            embedding._hypertuning_active = kwargs.get(PHI_KWARG)

        def shift(module, args):
            active = getattr(module, "_hypertuning_active", None)
            t = active.prefix.get("self") if active is not None else None
            if t is None or t.shape[-2] == 0:
                return None
            (positions,) = args
            rows = active.rows
            offset = torch.full((t.shape[0],), t.shape[-2], dtype=positions.dtype, device=positions.device)
            if rows is not None:
                offset = offset * rows.to(positions.device)
            batch = max(positions.shape[0], offset.shape[0])
            offset = expand_rows(offset, batch) if offset.shape[0] != batch else offset
            shifted = positions.expand(batch, -1) + offset[:, None]
            if shifted.numel() and int(shifted.max()) >= module.num_embeddings:
                p, n = t.shape[-2], module.num_embeddings
                raise HypertuningError(
                    f"A prefix of {p} tokens moves this model's real tokens {p} positions on, to position "
                    f"{int(shifted.max())}, and its learned position embedding has {n}: keep the input and "
                    f"what is generated within {n - p} tokens, or use a LoRA adapter"
                )
            return (shifted,)

        self.base.register_forward_pre_hook(remember, with_kwargs=True)
        embedding.register_forward_pre_hook(shift)

    # -- scoring and generation ---------------------------------------------------------------------------
    def _labelled_logprobs(self, out_logits, tokens) -> torch.Tensor:
        lp = out_logits.float().log_softmax(-1)
        return lp.gather(-1, torch.tensor(tokens, device=lp.device)[:, None]).squeeze(-1)

    def _logits_at(self, keep: torch.Tensor, **inputs) -> torch.Tensor:
        """Logits at the True positions of `keep` [B, T], row-major, through the model's own head and
        whatever it does after it (Gemma 2's soft-capping, Granite's scaling): `logits_to_keep` with a
        boolean mask runs the head only there."""
        out = self.model(**inputs, logits_to_keep=keep.to(self.model.device)).logits
        return out if out.dim() == 2 else out[keep.to(out.device)]

    def loglikelihood_batch(self, tokenizer, contexts, continuations, phi):
        seqs = [c + t for c, t in zip(contexts, continuations, strict=True)]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids, mask = pad_batch(seqs, pad)  # right padding: real tokens keep positions 0..T-1
        device = self.model.device
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for i, (c, t) in enumerate(zip(contexts, continuations, strict=True)):
            keep[i, len(c) - 1 : len(c) - 1 + len(t)] = True
        kwargs = {PHI_KWARG: phi} if phi is not None else {}
        logits = self._logits_at(keep, input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        lp = self._labelled_logprobs(logits, [x for t in continuations for x in t])
        rows = [i for i, t in enumerate(continuations) for _ in t]
        return torch.zeros(len(seqs), device=device).index_add_(0, torch.tensor(rows, device=device), lp)

    shares_context = True

    def loglikelihood_shared(self, tokenizer, context, continuations, phi=None):
        # Rank classification with a long prompt (K in-context examples) scores every answer option after
        # the same context; running that context once and repeating its key/value cache for the options
        # divides the cost by the number of options. transformers' `Cache` does the bookkeeping.
        device = self.model.device
        # phi (one row) applies to both passes: LoRA and prefixes repeat it for the n options themselves
        n, width = len(continuations), len(context)
        kw = {PHI_KWARG: phi} if phi is not None else {}
        out = self.model(
            input_ids=torch.tensor([context], device=device), use_cache=True, logits_to_keep=1, **kw
        )
        first = out.logits[0, -1].float().log_softmax(-1)  # predicts each continuation's first token
        cache = getattr(out, "cache", None) or out.past_key_values  # transformers >= 5.24 names it `cache`
        cache.batch_repeat_interleave(n)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids, mask = pad_batch(continuations, pad)  # right padding after the shared context
        mask = torch.cat([torch.ones(n, width, dtype=mask.dtype), mask], dim=1)
        positions = torch.arange(width, width + ids.shape[1]).expand(n, -1)
        scores = first[torch.tensor([t[0] for t in continuations], device=device)]
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for i, t in enumerate(continuations):
            keep[i, : len(t) - 1] = True
        if keep.any():
            logits = self._logits_at(
                keep,
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                **{_cache_kwarg(self.model): cache},
                use_cache=True,
                **kw,
            )
            rest = self._labelled_logprobs(logits, [x for t in continuations for x in t[1:]])
            rows = [i for i, t in enumerate(continuations) for _ in t[1:]]
            scores = scores.index_add(0, torch.tensor(rows, device=device), rest)
        return scores

    def lm_batch(self, tokenizer, contexts, continuations) -> dict:
        """Training batch: context + continuation in one right-padded sequence; labels mark the continuation
        (-100 elsewhere), aligned with the tokens (the loss shifts them)."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        seqs = [c + t for c, t in zip(contexts, continuations, strict=True)]
        ids, mask = pad_batch(seqs, pad)
        labels = pad_batch([[-100] * len(c) + t for c, t in zip(contexts, continuations, strict=True)], -100)[
            0
        ]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def generate_batch(self, tokenizer, contexts, phi, **generate_kwargs):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids, mask = pad_batch(contexts, pad, side="left")  # generate() derives positions from the mask
        width = ids.shape[1]
        kwargs = {PHI_KWARG: phi} if phi is not None else {}
        out = self.model.generate(
            input_ids=ids.to(self.model.device),
            attention_mask=mask.to(self.model.device),
            pad_token_id=pad,
            **generate_kwargs,
            **kwargs,
        )
        return [strip_eos(row[width:].tolist(), tokenizer) for row in out]


def _absolute_positions(base: nn.Module, config) -> nn.Module | None:
    """The learned absolute position embedding (GPT-2's `wpe`): an embedding of the context length other
    than the token embedding."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    tokens = base.get_input_embeddings()
    for m in base.modules():
        if isinstance(m, nn.Embedding) and m is not tokens and m.num_embeddings == n:
            return m
    return None


def strip_eos(tokens: list[int], tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is not None and eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    return tokens


def _cache_kwarg(model) -> str:
    """transformers 5.24 renamed the forward argument `past_key_values` to `cache` (the old name warns,
    then goes in 5.40); older 5.x releases only know the old one."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


# Specs saved before the generic family name it "llama"; they read as this family.
FAMILIES.register("llama")(DecoderFamily)
