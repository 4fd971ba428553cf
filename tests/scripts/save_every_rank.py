"""Run under torchrun by tests/test_distributed.py: with the gloo process group up, every rank writes a tiny
checkpoint of its own (as a rank that builds a cache entry does) into OUT_DIR/rank-R.

usage: save_every_rank.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch.distributed as dist

from hypertuning.models.tiny import save_tiny

dist.init_process_group("gloo")
save_tiny("llama", Path(sys.argv[1]) / f"rank-{os.environ['RANK']}")
dist.barrier()
dist.destroy_process_group()
