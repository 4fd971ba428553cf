"""Run under torchrun by tests/test_distributed.py: after the Trainer is built, what each rank's torch RNG
draws next (dropout masks come from it), written to OUT_DIR/rank-R.json.

usage: rank_rng.py CONFIG OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from hypertuning.train import Trainer, load_config

config, out = sys.argv[1], Path(sys.argv[2])
trainer = Trainer(load_config(config, [f"run_dir={out / 'run'}", "sweep={}"]))
rank = trainer.accelerator.process_index
params = {
    k: v.detach().flatten()[:4].tolist() for k, v in list(trainer.objective.module.state_dict().items())[:3]
}
draw = {
    "rank": rank,
    "processes": trainer.accelerator.num_processes,
    "draw": torch.rand(4).tolist(),
    "params": params,
}
(out / f"rank-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(draw))
