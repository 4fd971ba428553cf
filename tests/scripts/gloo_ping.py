"""Run under torchrun by tests/test_distributed.py before anything else there: can this machine run two gloo
ranks over loopback at all? Imports nothing of ours, so a failure here is the machine's, not the library's.

usage: gloo_ping.py
"""

from __future__ import annotations

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
x = torch.ones(1)
dist.all_reduce(x)
assert x.item() == dist.get_world_size() == 2, x
dist.destroy_process_group()
