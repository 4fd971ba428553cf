"""Encoder-decoder T5 models (v1.1 and LM-adapted): encoder self-, decoder self- and cross-attention."""

from __future__ import annotations

import torch.nn.functional as F

from ..data.format import pad_batch
from .attention import PHI_KWARG
from .base import FAMILIES, Family, KindSpec, Slot
from .decoder import strip_eos


@FAMILIES.register("t5")
class T5Family(Family):
    name = "t5"
    kinds = ("encoder", "decoder", "cross")
    peft_task_type = "SEQ_2_SEQ_LM"
    hyper_backbone = "encoder-decoder"

    @staticmethod
    def detect(config) -> bool:
        return config.model_type in ("t5", "mt5", "umt5")

    def attention_modules(self):
        for i, block in enumerate(self.model.encoder.block):
            yield Slot("encoder", i), block.layer[0].SelfAttention
        for i, block in enumerate(self.model.decoder.block):
            yield Slot("decoder", i), block.layer[0].SelfAttention
            yield Slot("cross", i), block.layer[1].EncDecAttention

    PATHS = {
        "encoder": "encoder.block.{}.layer.0.SelfAttention",
        "decoder": "decoder.block.{}.layer.0.SelfAttention",
        "cross": "decoder.block.{}.layer.1.EncDecAttention",
    }

    @classmethod
    def complete_kind(cls, ks: KindSpec, kind: str) -> KindSpec:
        ks.path = ks.path or cls.PATHS[kind]
        ks.default_lora = ks.default_lora or ["q", "v"]
        ks.positions = ks.positions or "relative"
        return ks

    def kind_spec(self, kind: str) -> KindSpec:
        cfg = self.model.config
        stack = self.model.encoder if kind == "encoder" else self.model.decoder
        block = stack.block[0]
        attn = block.layer[1].EncDecAttention if kind == "cross" else block.layer[0].SelfAttention
        linears = {
            n: [attn.__getattr__(n).in_features, attn.__getattr__(n).out_features]
            for n in ("q", "k", "v", "o")
        }
        return KindSpec(
            len(stack.block),
            cfg.num_heads,
            cfg.d_kv,
            linears,
            path=self.PATHS[kind],
            default_lora=["q", "v"],
            positions="relative",
        )

    def _encode(self, tokenizer, seqs, pad):
        ids, mask = pad_batch(seqs, pad)
        return ids.to(self.model.device), mask.to(self.model.device)

    def loglikelihood_batch(self, tokenizer, contexts, continuations, phi):
        pad = tokenizer.pad_token_id
        ids, mask = self._encode(tokenizer, contexts, pad)
        labels, label_mask = self._encode(tokenizer, continuations, pad)
        kwargs = {PHI_KWARG: phi} if phi is not None else {}
        logits = self.model(
            input_ids=ids, attention_mask=mask, labels=labels.masked_fill(label_mask == 0, -100), **kwargs
        ).logits
        logprobs = F.log_softmax(logits.float(), dim=-1)
        token_lp = logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return (token_lp * label_mask).sum(-1)

    def lm_batch(self, tokenizer, contexts, continuations) -> dict:
        """Training batch: the encoder reads the context, the decoder is trained on the continuation."""
        ids, mask = pad_batch(contexts, tokenizer.pad_token_id)
        labels = pad_batch(continuations, -100)[0]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def generate_batch(self, tokenizer, contexts, phi, **generate_kwargs):
        ids, mask = self._encode(tokenizer, contexts, tokenizer.pad_token_id)
        kwargs = {PHI_KWARG: phi} if phi is not None else {}
        out = self.model.generate(input_ids=ids, attention_mask=mask, **generate_kwargs, **kwargs)
        start = self.model.config.decoder_start_token_id
        return [strip_eos(row.tolist()[1:] if row[0] == start else row.tolist(), tokenizer) for row in out]
