"""Training throughput (issue 8, part 3): the `mtf_hyper` step (hypermodel reads K examples, generates LoRA,
the frozen downstream model is trained through it) against a plain `mtf_peft` step (one LoRA shared by all
tasks) on the same model, batch and episodes: the `cpu-small` configs (real SmolLM2-135M, 4-layer
hypermodel, batch 4, K=8), without hyperpretraining (speed does not depend on it).

Each objective trains `--steps` steps, `--rounds` times, alternating; reported per objective: seconds per
step and tokens/s (median over 3-step windows of all rounds). Tokens are the real (unpadded) tokens the step
reads: for `mtf_hyper` the hypermodel's input as well as the downstream input and target.

    python benchmarks/train_throughput.py [--steps 9] [--rounds 2] [--objectives mtf_hyper mtf_peft]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "cpu-small"


def _run(objective: str, steps: int) -> list[dict]:
    from hypertuning.train import load_config, train

    run = Path(tempfile.mkdtemp(prefix=f"throughput-{objective}-"))
    overrides = [
        f"run_dir={run}",
        f"train.steps={steps}",
        "train.warmup_steps=0",
        "log.every=3",
        "log.progress=false",
        f"checkpoint.every={steps + 1}",
        "eval.every=0",
    ]
    if objective == "mtf_hyper":
        overrides.append("hypermodel.init=null")
    try:
        for _ in train(load_config(CONFIGS / f"{objective}.yaml", overrides)):
            pass
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r for r in recs if "tokens_per_s" in r and "loss" in r]
    finally:
        shutil.rmtree(run, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", nargs="+", default=["mtf_hyper", "mtf_peft"])
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; cpu-small configs, fp32"
    )
    windows: dict[str, list[dict]] = {o: [] for o in args.objectives}
    for _ in range(args.rounds):
        for objective in args.objectives:
            recs = _run(objective, args.steps)
            # windows of 3 steps: tokens and seconds of each from the cumulative counters
            prev_tok = prev_step = 0
            for r in recs:
                window_tokens, window_steps = r["tokens"] - prev_tok, r["step"] - prev_step
                prev_tok, prev_step = r["tokens"], r["step"]
                windows[objective].append(
                    {
                        "tok_s": r["tokens_per_s"],
                        "s_step": window_tokens / r["tokens_per_s"] / window_steps,
                        "tok_step": window_tokens / window_steps,
                    }
                )
    print(
        "\n| objective | windows | s per step (median) | tokens per step | tokens/s (median) | step time vs mtf_peft |"
    )
    print("|---|---|---|---|---|---|")
    ref = statistics.median(w["s_step"] for w in windows.get("mtf_peft", windows[args.objectives[-1]]))
    for objective, ws in windows.items():
        s_step = statistics.median(w["s_step"] for w in ws)
        print(
            f"| {objective} | {len(ws)} | {s_step:.2f} | {statistics.median(w['tok_step'] for w in ws):.0f} | "
            f"{statistics.median(w['tok_s'] for w in ws):.0f} | {s_step / ref:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
