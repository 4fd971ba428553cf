"""Where does a hypermodel stop reading its examples? The training-time phi spread (`eval_phi_same_task`,
`eval_phi_other_task`, see `hypertuning/hyper/diagnostics.py`) of finished multi-task runs, at their start
(the hypermodel they were initialised from: random heads or a CACLM hypermodel) and at their end.

    python benchmarks/phi_spread.py runs/study/hyperlora_nocaclm runs/study/hyperlora [more run dirs]

Each run's objective is rebuilt from its `config.json`, so the probes (validation tasks, two sets of K
examples each) are exactly those its training logs use; runs trained before the diagnostic existed get the
numbers they would have logged. "start" is the hypermodel as that config builds it before any step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="mtf_hyper run directories")
    args = ap.parse_args()

    from hypertuning import HyperModel
    from hypertuning.train.config import RunConfig
    from hypertuning.train.objectives import OBJECTIVES

    torch.set_grad_enabled(False)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'run':<34} {'init':<34} {'start: same':>11} {'other':>7} {'end: same':>9} {'other':>7}")
    for run in map(Path, args.runs):
        cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()), str(run / "config.json"))
        if cfg.objective != "mtf_hyper":  # joint's final hypermodel belongs to its own fine-tuned downstream
            raise SystemExit(f"{run}: a {cfg.objective} run; this script probes mtf_hyper runs")
        obj = OBJECTIVES.get(cfg.objective)(cfg)
        start = obj.diagnostics("cpu")
        trained = HyperModel.from_pretrained(run / "final", obj.downstream)
        obj.hypermodel.load_state_dict(trained.state_dict())
        end = obj.diagnostics("cpu")
        init = cfg.hypermodel.init or f"random ({cfg.hypermodel.target})"
        print(
            f"{run.name:<34} {str(init)[-34:]:<34} {start['eval_phi_same_task']:>11.4f} "
            f"{start['eval_phi_other_task']:>7.4f} {end['eval_phi_same_task']:>9.4f} "
            f"{end['eval_phi_other_task']:>7.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
