"""Training speed of the CPU demo's `mtf_hyper` step (SmolLM2-135M downstream, 4-layer HyperLoRA, batch 4
of K=16 episodes) in fp32 and under bf16 autocast: a few steps each, tokens/s per 3-step window.

    python benchmarks/demo_step_time.py                 # fp32 then bf16, 9 steps each
    python benchmarks/demo_step_time.py --precision no --steps 30
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", nargs="+", default=["no", "bf16"], choices=["no", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=9)
    args = ap.parse_args()

    from hypertuning.demo import SCALES, demo_config
    from hypertuning.train import train
    from hypertuning.train.config import RunConfig

    print("| precision | steps | s per step (median window) | tokens/s per window | wall (s) |")
    print("|---|---|---|---|---|")
    for precision in args.precision:
        run = Path(tempfile.mkdtemp(prefix=f"steptime-{precision}-"))
        cfg = demo_config("smollm2-135m-instruct", run, dict(SCALES["cpu"], steps=args.steps))
        cfg["train"]["mixed_precision"] = precision
        cfg["log"] = {"every": 3, "progress": False}
        cfg["checkpoint"]["every"] = args.steps + 1
        t0 = time.perf_counter()
        train(RunConfig.from_dict(cfg, "step-time benchmark"))
        wall = time.perf_counter() - t0
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        windows = [r for r in recs if "tokens_per_s" in r and "loss" in r]
        tok_s = [round(r["tokens_per_s"]) for r in windows]
        per_step = windows[-1]["tokens"] / windows[-1]["step"] / statistics.median(tok_s)
        print(f"| {precision} | {args.steps} | {per_step:.1f} | {tok_s} | {wall:.0f} |", flush=True)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
