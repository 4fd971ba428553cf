"""The cpu-small recipe: hyperpretraining (CACLM) then multi-task fine-tuning of a 4-layer hypermodel for
the real SmolLM2-135M on BIG-bench, timed, with its loss curves.

    python benchmarks/train_cpu_small.py            # runs (or resumes) both stages, then reports
    python benchmarks/train_cpu_small.py --report   # only the report, from runs/cpu-small
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["caclm", "mtf_hyper"]


def records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def base_model_loss(stage: str) -> float:
    """Validation loss of the downstream model with no phi at all, on the stage's own validation batches:
    the number a hypermodel has to beat."""
    import torch

    from hypertuning.train import OBJECTIVES, load_config

    cfg = load_config(ROOT / "configs" / "cpu-small" / f"{stage}.yaml", ["hypermodel.init=null"])
    obj = OBJECTIVES.get(cfg.objective)(cfg)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for b in obj.validation():
            lm = {k: v for k, v in b.items() if not k.startswith("hyper_")}
            loss, n = obj.downstream.lm_loss(lm)
            total, tokens = total + float(loss), tokens + int(n)
    return total / tokens


def report(runs: Path, every: int, baseline: bool = False) -> None:
    print(f"host: {platform.machine()}, {platform.processor() or '?'}; python {platform.python_version()}")
    for stage in STAGES:
        run = runs / stage
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        recs = records(run)
        train = [r for r in recs if "loss" in r]
        evals = [r for r in recs if "eval_loss" in r]
        print(
            f"\n## {stage}: {summary.get('steps', '?')} steps, {summary.get('elapsed_s', 0) / 60:.1f} min "
            f"in training steps, {summary.get('tokens_per_s', 0):.0f} tokens/s overall"
        )
        rates = sorted(r["tokens_per_s"] for r in train)
        if rates:
            print(
                f"tokens/s per logging window: median {rates[len(rates) // 2]:.0f}, "
                f"min {rates[0]:.0f}, max {rates[-1]:.0f}"
            )
        print("step  train loss (mean of the window)")
        for r in train:
            if r["step"] % every == 0 or r is train[-1]:
                print(f"{r['step']:>5}  {r['loss']:.3f}")
        print("step  validation loss")
        for r in evals:
            print(f"{r['step']:>5}  {r['eval_loss']:.3f}")
        if baseline:
            print(f"base model, no phi: {base_model_loss(stage):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", action="store_true", help="only print the report of existing runs")
    ap.add_argument("--every", type=int, default=50, help="print the train loss every N steps")
    ap.add_argument("--baseline", action="store_true", help="also the base model's loss (no phi)")
    args = ap.parse_args()
    runs = ROOT / "runs" / "cpu-small"
    if not args.report:
        for stage in STAGES:
            t0 = time.perf_counter()
            cmd = ["hypertune", "train", f"configs/cpu-small/{stage}.yaml", "--resume"]
            subprocess.run([sys.executable, "-m", "hypertuning.cli", *cmd[1:]], cwd=ROOT, check=True)
            print(f"{stage}: wall time {time.perf_counter() - t0:.0f} s ({' '.join(cmd)})")
    report(runs, args.every, args.baseline)


if __name__ == "__main__":
    main()
