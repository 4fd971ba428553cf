"""Key/value prefixes injected through transformers' attention-function registry.

Why not `past_key_values`: a cache-carried prefix is dropped inside gradient-checkpointed layers, shifts
real-token positions, and must be rebuilt for every `generate()` call. Instead we register wrappers of the
stock `sdpa` and `eager` attention functions. The batched `phi` travels as a forward keyword argument
(`hypertuning_phi`), which transformers forwards down to every attention call, survives checkpoint
recomputation (it is part of the checkpointed call) and is re-sent by `generate()` at every step.
Without that argument the wrappers are the stock functions, so an attached model behaves exactly as before.
"""

from __future__ import annotations

import sys

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PHI_KWARG = "hypertuning_phi"
SUPPORTED_BASES = ("sdpa", "eager")


def _base_function(module: torch.nn.Module, base: str):
    if base == "eager":
        # Each modeling file has its own eager function (T5 adds its relative position bias there).
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def expand_rows(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat per-task rows when generate() expanded the batch (beams, num_return_sequences)."""
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        raise ValueError(f"phi has {t.shape[0]} rows but the model batch has {batch}")
    return t.repeat_interleave(batch // t.shape[0], dim=0)


def _extend_mask(mask, module, query, key_len: int, prefix_len: int, rows=None, columns=None):
    """Prepend `prefix_len` prefix columns to a 4D mask, materialising the implicit one if needed; they are
    visible to every row, or only to the rows where `rows` ([B] bool) is True, and only the columns where
    `columns` ([B, P] bool, or None for all) is True."""
    batch, q_len = query.shape[0], query.shape[2]
    if mask is None:
        # No mask means: causal without padding (decoder self-attention) or full attention (encoder, cross).
        k_idx = torch.arange(key_len, device=query.device)
        q_idx = torch.arange(q_len, device=query.device) + (key_len - q_len)
        if getattr(module, "is_causal", False):
            mask = (k_idx[None, :] <= q_idx[:, None])[None, None]
        else:
            mask = torch.ones(1, 1, q_len, key_len, dtype=torch.bool, device=query.device)
    if rows is None and columns is None:
        seen = torch.ones(mask.shape[0], 1, mask.shape[2], prefix_len, dtype=torch.bool, device=mask.device)
    else:
        seen = torch.ones(batch, 1, 1, prefix_len, dtype=torch.bool, device=mask.device)
        if rows is not None:
            seen = seen & expand_rows(rows.to(mask.device), batch)[:, None, None, None]
        if columns is not None:
            seen = seen & expand_rows(columns.to(mask.device) > 0, batch)[:, None, None, :]
        seen = seen.expand(-1, 1, mask.shape[2], prefix_len)
        mask = mask.expand(batch, *mask.shape[1:])
    if mask.dtype == torch.bool:
        visible = seen
    else:
        visible = torch.zeros(seen.shape, dtype=mask.dtype, device=mask.device)
        visible.masked_fill_(~seen, torch.finfo(mask.dtype).min)
    return torch.cat([visible, mask], dim=-1)


def _prefixed(base: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        active = kwargs.pop(PHI_KWARG, None)
        slot = getattr(module, "_hypertuning_slot", None)
        prefix = active.prefix_for(slot) if active is not None and slot is not None else None
        if active is not None and active.capture is not None and slot is not None:
            n = active.capture_last
            active.capture[slot] = (key[:, :, key.shape[2] - n :], value[:, :, value.shape[2] - n :])
        if prefix is not None:
            pk, pv = prefix  # [B, Hkv, P, D] each
            cols = active.columns.get(slot.kind)  # [B, P]: which columns are real (None: all)
            pk = expand_rows(pk, key.shape[0]).to(key.dtype)
            pv = expand_rows(pv, value.shape[0]).to(value.dtype)
            if attention_mask is None and base == "eager":
                # The stock eager functions add a float mask; build ours in that form.
                bool_mask = _extend_mask(None, module, query, key.shape[2], pk.shape[2], active.rows, cols)
                attention_mask = torch.zeros(bool_mask.shape, dtype=query.dtype, device=query.device)
                attention_mask.masked_fill_(~bool_mask, torch.finfo(query.dtype).min)
            else:
                attention_mask = _extend_mask(
                    attention_mask, module, query, key.shape[2], pk.shape[2], active.rows, cols
                )
            key = torch.cat([pk, key], dim=2)
            value = torch.cat([pv, value], dim=2)
            bias = kwargs.get("position_bias")
            if bias is not None:  # T5: prefixes carry no relative position
                pad = bias.new_zeros(*bias.shape[:-1], pk.shape[2])
                kwargs["position_bias"] = torch.cat([pad, bias], dim=-1)
        return _base_function(module, base)(module, query, key, value, attention_mask, **kwargs)

    return attention


for _base in SUPPORTED_BASES:
    AttentionInterface.register(f"hypertuning_{_base}", _prefixed(_base))
    AttentionMaskInterface.register(f"hypertuning_{_base}", ALL_MASK_ATTENTION_FUNCTIONS[_base])


def use_prefix_attention(model: torch.nn.Module) -> str | None:
    """Switch every config in `model` to our wrapper of its attention function; returns the base, or None
    when the model uses an implementation we do not wrap (flash attention, flex): then prefixes are refused."""
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    configs[id(model.config)] = model.config
    base = None
    for cfg in configs.values():
        impl = getattr(cfg, "_attn_implementation", None)
        if impl is None:
            continue
        if impl.startswith("hypertuning_"):
            impl = impl.removeprefix("hypertuning_")
        if impl not in SUPPORTED_BASES:
            return None
        cfg._attn_implementation = f"hypertuning_{impl}"
        base = impl
    return base
