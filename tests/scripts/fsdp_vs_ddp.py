"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2`: the mtf_hyper objective's module
trained a few steps under torch's FSDP2 (`fully_shard`) and under DDP, from the same start and the same
global batches; the FSDP parameters gathered into a full state dict (`get_model_state_dict(...,
full_state_dict=True)`) and saved as a hypermodel. accelerate does not offer FSDP on CPU ranks (its FSDP
branch is for GPU-like device types only, so ACCELERATE_USE_FSDP is ignored under MULTI_CPU); this is the
same sharding, through torch directly.

usage: fsdp_vs_ddp.py CONFIG OUT_DIR [KEY=VALUE ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from hypertuning.train import load_config
from hypertuning.train.objectives import OBJECTIVES


def build(cfg):
    torch.manual_seed(cfg.seed)
    return OBJECTIVES.get(cfg.objective)(cfg)


def train(obj, module, steps, batch, rank, world):
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=obj.cfg.train.lr)
    losses = []
    for step in range(steps):
        base = step * world * batch + rank * batch
        loss_sum, n = module(**obj.batch(list(range(base, base + batch))))
        n_all = n.detach().clone()
        dist.all_reduce(n_all)
        # the loop's global token mean; both wrappers average gradients over the ranks
        (loss_sum * world / n_all.clamp(min=1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        total = loss_sum.detach().clone()
        dist.all_reduce(total)
        losses.append(float(total / n_all))
    return losses


def main() -> None:
    config, out = sys.argv[1], Path(sys.argv[2])
    cfg = load_config(config, [f"run_dir={out / 'unused'}", "sweep={}", *sys.argv[3:]])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    steps, batch = 3, cfg.train.batch_size

    ddp_obj = build(cfg)
    init = {k: v.detach().clone() for k, v in ddp_obj.module.state_dict().items()}
    ddp = DistributedDataParallel(ddp_obj.module)
    ddp_losses = train(ddp_obj, ddp, steps, batch, rank, world)
    ddp_state = {k: v.detach().clone() for k, v in ddp_obj.module.state_dict().items()}

    fsdp_obj = build(cfg)
    module = fsdp_obj.module
    fully_shard(module)
    sharded = [type(p).__name__ for p in module.parameters()]
    fsdp_losses = train(fsdp_obj, module, steps, batch, rank, world)
    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        diff = max((full[k].float() - ddp_state[k].float()).abs().max().item() for k in ddp_state)
        fsdp_obj.adopt_full_state(full)  # as the loop does after sharded training
        fsdp_obj.save_final(out / "fsdp_final", steps)
        json.dump(
            {
                "world": world,
                "sharded_parameter_types": sorted(set(sharded)),
                "max_abs_diff": diff,
                "keys_equal": sorted(full) == sorted(ddp_state),
                "moved_from_init": max((init[k] - ddp_state[k]).abs().max().item() for k in init),
                "ddp_losses": ddp_losses,
                "fsdp_losses": fsdp_losses,
            },
            open(out / "fsdp_vs_ddp.json", "w"),
        )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
