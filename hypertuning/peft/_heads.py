"""Parameter-generation heads (the paper's Figures 7-8) and their initialisation."""

from __future__ import annotations

import torch
from torch import nn


def mlp_head(hidden: int, out: int) -> nn.Sequential:
    """LayerNorm -> Linear -> Tanh -> Linear, as in the paper's pseudo-code."""
    return nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, out))


def init_last(head: nn.Sequential, std: float | torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Scale the head's last Linear so generated values start at a chosen size; std may vary per output."""
    last = head[-1]
    with torch.no_grad():
        w = torch.randn_like(last.weight)
        std = torch.as_tensor(std, dtype=w.dtype)
        last.weight.copy_(w * (std.reshape(-1, 1) if std.ndim else std))
        if bias is None:
            last.bias.zero_()
        else:
            last.bias.copy_(bias.reshape(-1).to(last.bias.dtype))
