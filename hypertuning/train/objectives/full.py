"""Baselines that train the downstream model itself: mtf_full (T5-MTF) and mtf_fewshot (MetaICL-style)."""

from __future__ import annotations

from torch import nn

from .base import (
    OBJECTIVES,
    EpisodeObjective,
)


class PlainLM(nn.Module):
    """The downstream model itself, trained (T5-MTF and MetaICL-style baselines)."""

    def __init__(self, downstream):
        super().__init__()
        self.downstream_model = downstream.model
        self._downstream = (downstream,)

    def forward(self, **lm):
        return self._downstream[0].lm_loss(lm)


@OBJECTIVES.register("mtf_full")
class MtfFull(EpisodeObjective):
    """T5-MTF: the downstream model fine-tuned on x -> y of every training task."""

    trains_downstream = True
    reads_shots = False

    def build_module(self):
        return PlainLM(self.downstream)

    def save_final(self, directory, step):
        self.downstream.model.save_pretrained(directory)
        self.downstream.tokenizer.save_pretrained(directory)


@OBJECTIVES.register("mtf_fewshot")
class MtfFewshot(MtfFull):
    """MetaICL-style: the downstream model fine-tuned with the K examples written before x."""

    in_context = True
    reads_shots = True

    def collate(self, items):
        return self.downstream.lm_batch([it.in_context_ids for it in items], [it.target_ids for it in items])
