"""Does a hypermodel read its examples? Distances between the parameters (phi) it generates.

A hypermodel can lower its training loss by emitting one task-agnostic adapter whatever it reads (a shared
MTF-LoRA reached by another route); our cpu-small study did exactly that (BENCHMARKS.md, issue 8 part 4).
Its sign is that phi barely moves: between two sets of examples of one task, and between tasks. Training
logs these two numbers (`eval_phi_same_task`, `eval_phi_other_task`) at each evaluation;
`benchmarks/phi_spread.py` recomputes them for finished runs and `benchmarks/phi_sensitivity.py` measures
the same distances, and the answers they change, on held-out tasks.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Hashable, Mapping, Sequence

import torch


def flat_phi(phi: Mapping[str, torch.Tensor], batched: bool = True) -> torch.Tensor:
    """[B, D]: every generated tensor of each row, flattened in name order. `batched=False` takes one
    adapter's phi (no batch dimension) and returns [1, D]."""
    rows = [t.detach().float() if batched else t.detach().float()[None] for _, t in sorted(phi.items())]
    return torch.cat([t.reshape(t.shape[0], -1) for t in rows], dim=1)


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / mean(||a||, ||b||): 0 for identical parameters, 2 for opposite ones."""
    scale = float(a.norm() + b.norm()) / 2
    return float((a - b).norm()) / scale if scale > 0 else 0.0


def phi_spread(rows: torch.Tensor, groups: Sequence[Hashable]) -> dict[str, float]:
    """Median relative distance between rows of the same group (`phi_same_task`: other examples of one
    task) and of different groups (`phi_other_task`). A key is left out when there is no such pair."""
    if rows.shape[0] != len(groups):
        raise ValueError(f"{rows.shape[0]} rows of phi but {len(groups)} groups")
    same, other = [], []
    for i, j in itertools.combinations(range(len(groups)), 2):
        (same if groups[i] == groups[j] else other).append(relative_distance(rows[i], rows[j]))
    out = {}
    if same:
        out["phi_same_task"] = statistics.median(same)
    if other:
        out["phi_other_task"] = statistics.median(other)
    return out
