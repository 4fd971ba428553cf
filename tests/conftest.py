"""Tiny randomly initialised Llama and T5 checkpoints (hidden size 32-64, 2 layers, byte-level vocab)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

CORPUS = [
    "The cat sat on the mat. Translate to French: the cat -> le chat.",
    "Question: what is two plus two? Answer: four. Sentiment of 'great movie': positive.",
    "hypertuning turns a few examples into adapter parameters in one forward pass.",
] * 20


def _tokenizer(kind: str):
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


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    tok = _tokenizer("llama")
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
    model = LlamaForCausalLM(cfg)
    out["llama"] = root / "llama"
    model.save_pretrained(out["llama"])
    tok.save_pretrained(out["llama"])

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
    model = T5ForConditionalGeneration(cfg)
    out["t5"] = root / "t5"
    model.save_pretrained(out["t5"])
    tok.save_pretrained(out["t5"])
    # a second Llama with other weights, for mismatch errors
    torch.manual_seed(1)
    other = LlamaForCausalLM(LlamaConfig(**{**json.loads((out["llama"] / "config.json").read_text())}))
    out["llama_other"] = root / "llama_other"
    other.save_pretrained(out["llama_other"])
    tok.save_pretrained(out["llama_other"])
    return out


@pytest.fixture(scope="session")
def llama(tiny_dirs):
    from hypertuning import load_downstream

    return load_downstream(str(tiny_dirs["llama"]))


@pytest.fixture(scope="session")
def t5(tiny_dirs):
    from hypertuning import load_downstream

    return load_downstream(str(tiny_dirs["t5"]))


@pytest.fixture(params=["llama", "t5"])
def downstream(request):
    return request.getfixturevalue(request.param)


EXAMPLES = [
    {"input": "the cat", "output": "le chat"},
    {"input": "two plus two", "output": "four"},
    {"input": "great movie", "output": "positive"},
]


@pytest.fixture
def examples():
    return list(EXAMPLES)


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
