"""What several benchmark scripts share (importable because `python benchmarks/X.py` puts this folder first
on sys.path)."""

from __future__ import annotations


def demo_sized_hypermodel(downstream):
    """An untrained hypermodel of the demo's recipe and size (hypertuning/demo.py's cpu scale: the select
    readout keeping every position of 512 input tokens, a rank-16 LoRA on its reading pass): the fallback
    of the cost benchmarks, whose figures depend on shapes, not on what the hypermodel has learnt."""
    from pathlib import Path

    from hypertuning import HyperModel
    from hypertuning.demo import SCALES, demo_config

    h = demo_config(downstream.name, Path("unused"), SCALES["cpu"])["hypermodel"]
    return HyperModel.create(
        downstream,
        target=h["target"],
        layers=h["layers"],
        max_input_tokens=h["max_input_tokens"],
        readout=h["readout"],
        readout_options=h["readout_options"],
        **h["options"],
    )
