"""What several benchmark scripts share (importable because `python benchmarks/X.py` puts this folder first
on sys.path)."""

from __future__ import annotations


def demo_sized_hypermodel(downstream):
    """An untrained hypermodel of the demo's size (4 layers, LoRA rank 8, 384 input tokens): the fallback of
    the cost benchmarks, whose figures depend on shapes, not on what the hypermodel has learnt."""
    from hypertuning import HyperModel

    return HyperModel.create(downstream, target="lora", rank=8, layers=4, max_input_tokens=384)
