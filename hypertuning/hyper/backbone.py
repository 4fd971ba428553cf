"""Hypermodel backbones, both built from the downstream model's own pretrained weights (as the paper does).

- encoder-decoder (T5): the encoder reads the examples; the decoder reads learned query embeddings with
  its causal mask removed (a 4D all-visible mask), cross-attending to the examples.
- decoder-only (any causal LM): the examples, then the learned queries; the examples keep their causal
  mask, the queries see every example token and each other.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import AutoModel


def _visible(mask: torch.Tensor, impl: str, dtype) -> torch.Tensor:
    """bool [B, 1, Q, K] -> the 4D form the attention implementation expects (bool for sdpa, additive for eager)."""
    if impl == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    return mask


def backbone_attention(config, kind: str) -> str:
    """The attention implementation a backbone is built with: eager for T5 (its position bias lives
    there) and for architectures transformers gives no sdpa path (Gemma 2), sdpa otherwise."""
    if kind != "decoder-only":
        return "eager"
    try:
        return "sdpa" if AutoModel._model_mapping[type(config)]._supports_sdpa else "eager"
    except (KeyError, AttributeError):
        return "sdpa"


def build_backbone_model(downstream, layers: int | None, kind: str, vocab_size: int) -> nn.Module:
    """A fresh backbone with the first `layers` blocks of the downstream model and its weights."""
    cfg = copy.deepcopy(downstream.model.config)
    if kind == "decoder-only":
        if layers:
            # `num_hidden_layers` is every config's name for it (GPT-2's `n_layer` maps to it through
            # `attribute_map`); per-layer lists (`layer_types`, or any list with one entry per layer) are cut
            # to match, without naming one architecture's attributes
            total = cfg.num_hidden_layers
            cfg.num_hidden_layers = min(layers, total)
            for attr, value in cfg.to_dict().items():
                per_layer = isinstance(value, list) and len(value) == total and "token" not in attr
                if per_layer and hasattr(cfg, attr):
                    setattr(cfg, attr, value[: cfg.num_hidden_layers])
    else:
        if layers:
            cfg.num_layers = min(layers, cfg.num_layers)
            cfg.num_decoder_layers = min(layers, cfg.num_decoder_layers)
    impl = backbone_attention(cfg, kind)
    cfg.use_cache = False
    model = AutoModel.from_config(cfg, attn_implementation=impl)
    source = (
        downstream.model.base_model.state_dict() if kind == "decoder-only" else downstream.model.state_dict()
    )
    own = model.state_dict()
    model.load_state_dict(
        {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}, strict=False
    )
    model.resize_token_embeddings(vocab_size, mean_resizing=True)
    model.requires_grad_(True)
    return model


class DecoderOnlyBackbone(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def embed(self, input_ids):
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, input_ids, attention_mask, queries):  # queries: [Q, H]
        b, t = input_ids.shape
        q = queries.shape[0]
        tokens = self.embed(input_ids)
        x = torch.cat([tokens, queries[None].expand(b, -1, -1).to(tokens.dtype)], dim=1)
        real = attention_mask.bool()
        n = t + q
        idx = torch.arange(n, device=x.device)
        key_real = torch.cat([real, torch.ones(b, q, dtype=torch.bool, device=x.device)], dim=1)  # [B, N]
        causal = idx[None, :] <= idx[:, None]  # [N, N]
        is_query_row = (idx >= t)[:, None]
        allowed = (causal | is_query_row)[None] & key_real[:, None, :]  # queries see everything real
        mask = _visible(allowed[:, None], self.model.config._attn_implementation, x.dtype)
        lengths = real.sum(1, keepdim=True)
        positions = torch.cat(
            [torch.arange(t, device=x.device).expand(b, t), lengths + torch.arange(q, device=x.device)], dim=1
        )
        out = self.model(inputs_embeds=x, attention_mask=mask, position_ids=positions).last_hidden_state
        return out[:, t:]


class EncoderDecoderBackbone(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    def forward(self, input_ids, attention_mask, queries):
        b, q = input_ids.shape[0], queries.shape[0]
        enc = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        dec_in = queries[None].expand(b, -1, -1).to(enc.dtype)
        full = torch.ones(b, 1, q, q, dtype=torch.bool, device=enc.device)  # the causal mask removed
        mask = _visible(full, self.model.config._attn_implementation, enc.dtype)
        return self.model.decoder(
            inputs_embeds=dec_in,
            attention_mask=mask,
            encoder_hidden_states=enc,
            encoder_attention_mask=attention_mask,
        ).last_hidden_state


BACKBONES = {"decoder-only": DecoderOnlyBackbone, "encoder-decoder": EncoderDecoderBackbone}
