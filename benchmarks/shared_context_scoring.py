"""Rank classification after a long in-context prompt: every answer option batched with its own copy of the
prompt (`share_context=False`) against one pass over the prompt whose key/value cache the options share
(`share_context=True`, the default for prompts of 64 tokens or more). Real SmolLM2-135M, K=16 examples of
held-out BIG-bench Lite tasks within a 576-token prompt, side by side, alternating, median of --repeats.

    python benchmarks/shared_context_scoring.py [--tasks hindu_knowledge winowhy] [--examples 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["hindu_knowledge", "winowhy"])
    ap.add_argument("--examples", type=int, default=6, help="evaluation examples per task")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-in-context-tokens", type=int, default=576)
    args = ap.parse_args()

    from hypertuning.data.collections import get_collection
    from hypertuning.data.episodes import heldout_shots
    from hypertuning.eval import Models

    torch.set_grad_enabled(False)
    ds = Models("smollm2-135m-instruct", limits={"max_in_context_tokens": args.max_in_context_tokens}).base
    bigbench = get_collection("bigbench")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(
        "| task | options per example | rows | prompt tokens | plain (s, median) | shared (s, median) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.tasks:
        task = bigbench.load(name)
        shots, evaluation = heldout_shots(task, args.k, seed=0, up_to=True)
        pairs = [(s.input, s.target) for s in shots]
        ctx, cont = [], []
        for e in evaluation.examples[: args.examples]:
            prompt = ds.encode_in_context(pairs, task.instruction, e.input)
            for ids in ds.encode_targets(list(e.choices)):
                ctx.append(prompt)
                cont.append(ids)
        times: dict[bool, list[float]] = {False: [], True: []}
        results = {}
        for _ in range(args.repeats):
            for share in (False, True):
                t0 = time.perf_counter()
                results[share] = ds.loglikelihood_ids(ctx, cont, share_context=share)
                times[share].append(time.perf_counter() - t0)
        diff = (results[True] - results[False]).abs().max().item()
        plain, shared = statistics.median(times[False]), statistics.median(times[True])
        prompt_len = statistics.median(len(c) for c in ctx)
        print(
            f"| {name} | {len(cont) / args.examples:.1f} | {len(cont)} | {prompt_len:.0f} | {plain:.1f} | "
            f"{shared:.1f} | {plain / shared:.1f}x (max score difference {diff:.1e}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
