"""Named recipes: the part of a training run that does not depend on its scale, in one place.

A YAML config names one with `recipe: NAME` (merged over its `base:` file and under its own values), and
`hypertune demo` builds its run from the same one, so the cpu-small default, the paper-scale decoder
config and the demo cannot drift apart. What a scale sets itself: lengths (and so the kept positions,
`readout_options.slots`), schedule, batch and precision.
"""

from __future__ import annotations

import copy

from .._registry import unknown_message
from ..errors import HypertuningError

RECIPES: dict[str, dict] = {
    # The default (BENCHMARKS.md, "the cpu-small default"): the select readout keeping every position of the
    # examples (slots = the readout's input), so the prefix is the frozen downstream model's own cache of
    # them and, untrained, in-context learning exactly; a rank-16 LoRA on the attention projections of its
    # reading pass trains on episodes that reward reading: half of the episodes of fixed-label tasks
    # relabelled with symbols drawn per episode, and 60% of all episodes from the `mustread` training
    # families.
    "reading": {
        "objective": "mtf_hyper",
        "hypermodel": {
            "init": None,
            "target": "prefix",
            "options": {},  # no target options: the prefix length is the readout's `slots`
            "layers": None,
            "readout": "select",
            "readout_options": {"keep": 6, "lora_rank": 16, "lora_modules": "all-linear"},
        },
        "data": {"k": 16, "remap": 0.5, "mustread": 0.6},
    },
}


def recipe(name: str) -> dict:
    """A copy of recipe `name`, as a config mapping to merge."""
    if name not in RECIPES:
        raise HypertuningError(unknown_message("recipe", str(name), RECIPES))
    return copy.deepcopy(RECIPES[name])
