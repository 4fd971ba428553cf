"""Decoder-only models of the Llama family (SmolLM2, Llama, Qwen2, Mistral): rotary positions, GQA."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import rotate_half

from ..data.format import pad_batch
from .attention import PHI_KWARG
from .base import FAMILIES, Family, KindSpec, Slot


@FAMILIES.register("llama")
class LlamaFamily(Family):
    name = "llama"
    kinds = ("self",)
    default_lora_modules = ("q_proj", "v_proj")
    peft_task_type = "CAUSAL_LM"
    hyper_backbone = "decoder-only"
    target_separator = " "
    kv_linears = ("k_proj", "v_proj")
    MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")

    @staticmethod
    def detect(config) -> bool:
        return config.model_type in LlamaFamily.MODEL_TYPES

    def attention_modules(self):
        for i, layer in enumerate(self.model.model.layers):
            yield Slot("self", i), layer.self_attn

    def kind_spec(self, kind: str) -> KindSpec:
        cfg = self.model.config
        attn = self.model.model.layers[0].self_attn
        linears = {
            n: [m.in_features, m.out_features] for n, m in attn.named_children() if hasattr(m, "in_features")
        }
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return KindSpec(cfg.num_hidden_layers, cfg.num_key_value_heads, head_dim, linears)

    @classmethod
    def module_path(cls, slot: Slot) -> str:
        return f"model.layers.{slot.layer}.self_attn"

    @staticmethod
    def _rotation(config, n: int, like: torch.Tensor):
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        pos = torch.full((1, 1), n, dtype=torch.long, device=like.device)
        cos, sin = LlamaRotaryEmbedding(config=config).to(like.device)(like.float(), pos)  # [1, 1, D]
        return cos[0, 0].to(like.dtype), sin[0, 0].to(like.dtype)

    # Our prefix keys meet queries at their true positions 0..T-1; peft offsets real tokens to P..P+T-1.
    # Rotary scores depend on the query's absolute angle against an unrotated prefix key, so the same
    # logits need the prefix keys rotated by P positions: R(P+t)q . k_peft == R(t)q . R(-P)k_peft, so k_peft = R(P) k_ours.
    @classmethod
    def prefix_keys_to_peft(cls, config, keys, num_virtual_tokens):
        cos, sin = cls._rotation(config, num_virtual_tokens, keys)
        return keys * cos + rotate_half(keys) * sin

    @classmethod
    def prefix_keys_from_peft(cls, config, keys, num_virtual_tokens):
        cos, sin = cls._rotation(config, num_virtual_tokens, keys)
        return keys * cos - rotate_half(keys) * sin

    def loglikelihood_batch(self, tokenizer, contexts, continuations, phi):
        seqs = [c + t for c, t in zip(contexts, continuations, strict=True)]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids, mask = pad_batch(seqs, pad)  # right padding: real tokens keep positions 0..T-1
        device = self.model.device
        kwargs = {PHI_KWARG: phi} if phi is not None else {}
        hidden = self.model.model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        rows = [i for i, t in enumerate(continuations) for _ in t]
        positions = [
            len(c) - 1 + j for c, t in zip(contexts, continuations, strict=True) for j in range(len(t))
        ]
        lp = self._token_logprobs(
            hidden.last_hidden_state, rows, positions, [x for t in continuations for x in t]
        )
        return torch.zeros(len(seqs), device=device).index_add_(0, torch.tensor(rows, device=device), lp)

    def _token_logprobs(self, hidden, rows, positions, tokens) -> torch.Tensor:
        """log p(token) predicted at each (row, position) of the hidden states. Only those positions go
        through the output layer: a [B, T, vocab] float copy of every position's logits was most of the
        cost of scoring short options (49k-word vocabulary, CPU)."""
        device = hidden.device
        h = hidden[torch.tensor(rows, device=device), torch.tensor(positions, device=device)]  # [N, H]
        logprobs = self.model.get_output_embeddings()(h).float().log_softmax(-1)  # [N, V]
        return logprobs.gather(-1, torch.tensor(tokens, device=device)[:, None]).squeeze(-1)

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
        first = F.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each continuation's first token
        cache = getattr(out, "cache", None) or out.past_key_values  # transformers >= 5.24 names it `cache`
        cache.batch_repeat_interleave(n)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids, mask = pad_batch(continuations, pad)  # right padding after the shared context
        mask = torch.cat([torch.ones(n, width, dtype=mask.dtype), mask], dim=1)
        positions = torch.arange(width, width + ids.shape[1]).expand(n, -1)
        hidden = self.model.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            **{_cache_kwarg(self.model.model): cache},
            use_cache=True,
            **kw,
        ).last_hidden_state
        rows = [i for i, t in enumerate(continuations) for _ in t[1:]]
        scores = first[torch.tensor([t[0] for t in continuations], device=device)]
        if rows:
            steps = [j for t in continuations for j in range(len(t) - 1)]
            rest = self._token_logprobs(hidden, rows, steps, [x for t in continuations for x in t[1:]])
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
        return [_strip(row[width:].tolist(), tokenizer) for row in out]


def _strip(tokens: list[int], tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is not None and eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    return tokens


def _cache_kwarg(model) -> str:
    """transformers 5.24 renamed the forward argument `past_key_values` to `cache` (the old name warns,
    then goes in 5.40); older 5.x releases only know the old one."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
