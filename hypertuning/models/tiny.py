"""Tiny randomly initialised checkpoints (hidden size 32, 2 layers, a 320-token byte-level BPE): Llama, T5
and one of each decoder-only architecture in `ARCHITECTURES`.

They make the `smoke` configs and the test suite run in seconds with nothing fetched: `load_downstream`
accepts the aliases `tiny-llama`, `tiny-t5` and `tiny-<model_type>` (e.g. `tiny-gemma3_text`), built once
(deterministically) into the cache.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._io import atomic_dir, cache_dir

TINY_VERSION = 1
CORPUS = [
    "The cat sat on the mat. Translate to French: the cat -> le chat.",
    "Question: what is two plus two? Answer: four. Sentiment of 'great movie': positive.",
    "hypertuning turns a few examples into adapter parameters in one forward pass.",
] * 20


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    )


# The decoder-only architectures the test matrix checks (tests/test_architectures.py), with what their tiny
# configs need beyond the shared sizes. Gemma 3 alternates a local (sliding, its own rotary base) and a
# global layer, so per-layer rotary and sliding-window layers are both exercised.
ARCHITECTURES: dict[str, dict] = {
    "llama": {},
    "qwen2": {},
    "qwen3": {"head_dim": 8},
    "mistral": {"sliding_window": 256},
    "gemma2": {"head_dim": 8, "sliding_window": 256, "layer_types": ["sliding_attention", "full_attention"]},
    "gemma3_text": {
        "head_dim": 8,
        "sliding_window": 256,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    },
    "phi3": {},
    "olmo2": {},
    "granite": {"embedding_multiplier": 2.0, "logits_scaling": 2.0, "attention_multiplier": 0.2},
    "gpt2": {},
}
# Architectures whose transformers code has no sdpa path: loaded with the eager attention function.
EAGER_ONLY = ("gemma2",)


def tiny_model(kind: str, tokenizer, seed: int = 0):
    """A tiny random `transformers` model of `kind` ("t5", or a model type in `ARCHITECTURES`)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(seed)
    tok = tokenizer
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
            tie_word_embeddings=True,
        )
        return LlamaForCausalLM(cfg)
    if kind == "t5":
        cfg = T5Config(
            vocab_size=len(tok),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id,
            relative_attention_num_buckets=8,
        )
        return T5ForConditionalGeneration(cfg)
    if kind in ARCHITECTURES:
        ids = {
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.bos_token_id,
        }
        if kind == "gpt2":
            sizes = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 512}
        else:
            sizes = {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
            }
        cfg = AutoConfig.for_model(
            kind, vocab_size=len(tok), tie_word_embeddings=True, **sizes, **ids, **ARCHITECTURES[kind]
        )
        return AutoModelForCausalLM.from_config(cfg)
    raise ValueError(f"no tiny model of kind {kind!r}; choose t5 or one of {', '.join(ARCHITECTURES)}")


def save_tiny(kind: str, directory: Path, seed: int = 0) -> Path:
    from .loading import save_checkpoint

    tok = tiny_tokenizer()
    return save_checkpoint(tiny_model(kind, tok, seed), tok, directory)


def tiny_checkpoint(kind: str) -> Path:
    """The cached directory of tiny model `kind`, built on first use."""
    out = cache_dir() / "models" / f"tiny-{kind}-v{TINY_VERSION}"
    if (out / "config.json").exists():
        return out
    return atomic_dir(out, lambda tmp: save_tiny(kind, tmp))
