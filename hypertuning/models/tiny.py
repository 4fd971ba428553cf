"""Tiny randomly initialised Llama and T5 checkpoints (hidden size 32, 2 layers, a 320-token byte-level BPE).

They make the `smoke` configs and the test suite run in seconds with nothing fetched: `load_downstream`
accepts the aliases `tiny-llama` and `tiny-t5`, built once (deterministically) into the cache.
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


def tiny_model(kind: str, tokenizer, seed: int = 0):
    """A tiny random `transformers` model of `kind` ("llama" or "t5")."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

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
    raise ValueError(f"no tiny model of kind {kind!r}; choose llama or t5")


def save_tiny(kind: str, directory: Path, seed: int = 0) -> Path:
    tok = tiny_tokenizer()
    tiny_model(kind, tok, seed).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def tiny_checkpoint(kind: str) -> Path:
    """The cached directory of tiny model `kind`, built on first use."""
    out = cache_dir() / "models" / f"tiny-{kind}-v{TINY_VERSION}"
    if (out / "config.json").exists():
        return out
    return atomic_dir(out, lambda tmp: save_tiny(kind, tmp))
