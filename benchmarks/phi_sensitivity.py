"""Does the hypermodel read the examples? How much its generated parameters (phi) change with the few-shot
examples of one task (another seed) against another task, and how often that changes the downstream
model's answers. A hypermodel that has collapsed to one task-agnostic adapter shows distances near zero and
the same predictions whatever it reads.

    python benchmarks/phi_sensitivity.py runs/study/hyperlora/final [more hypermodels] [--tasks ...]

Per hypermodel, with each task's evaluation examples (the same as `hypertune eval --max-examples`):
- phi distance: ||phi_a - phi_b|| / mean(||phi_a||, ||phi_b||) over all generated tensors
  (`hypertuning.hyper.diagnostics`, which training also logs), the median over pairs of seeds of one task
  ("same task") and over pairs of tasks at one seed ("other task");
- answers changed: the share of evaluation examples whose ranked answer differs between the adapters from
  seeds 0 and 1 of the task, between the task's adapter and another task's (seed 0; the next task in the
  list), and between the task's adapter and the base model with no adapter.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hypermodels", nargs="+")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=[
            "hindu_knowledge",
            "known_unknowns",
            "logical_deduction/three_objects",
            "novel_concepts",
            "winowhy",
        ],
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-examples", type=int, default=32)
    args = ap.parse_args()

    from hypertuning import HyperModel, load_downstream
    from hypertuning.data.collections import get_collection
    from hypertuning.data.episodes import heldout_shots
    from hypertuning.eval.scoring import rank_choices
    from hypertuning.hyper.diagnostics import flat_phi, relative_distance

    torch.set_grad_enabled(False)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; K={args.k}"
    )
    bigbench = get_collection("bigbench")
    tasks = [bigbench.load(t) for t in args.tasks]
    ds = None
    for path in args.hypermodels:
        hm = HyperModel.from_pretrained(path, ds)  # from the second on, checked against the first's model
        ds = ds or load_downstream(hm.spec.checkpoint)
        phi, adapters, evals = {}, {}, {}
        for task in tasks:
            for seed in args.seeds:
                shots, evaluation = heldout_shots(task, args.k, seed, up_to=True)
                a = hm.generate([(e.input, e.target) for e in shots], task.instruction)
                adapters[task.name, seed], phi[task.name, seed] = a, flat_phi(a.phi, batched=False)[0]
            evals[task.name] = evaluation.capped(args.max_examples, seed=0).examples
        same = [
            relative_distance(phi[t.name, s], phi[t.name, u])
            for t in tasks
            for s, u in itertools.combinations(args.seeds, 2)
        ]
        other = [
            relative_distance(phi[t.name, s], phi[v.name, s])
            for s in args.seeds
            for t, v in itertools.combinations(tasks, 2)
        ]
        print(f"\n## {path}")
        print(
            f"phi distance, same task (other seed): median {statistics.median(same):.4f} "
            f"(range {min(same):.4f}-{max(same):.4f}); other task: median {statistics.median(other):.4f} "
            f"(range {min(other):.4f}-{max(other):.4f})"
        )
        print(
            f"{'task':<34} {'examples':>8} {'seed 0 vs 1':>11} {'vs other task':>13} {'vs base':>8}  (answers changed, %)"
        )
        for i, task in enumerate(tasks):
            ex = evals[task.name]
            ctx = ds.encode_inputs([e.input for e in ex])
            choices = [e.choices for e in ex]
            other_task = tasks[(i + 1) % len(tasks)].name

            p0, p1, po, pb = (
                rank_choices(ds, ctx, choices, a)
                for a in (
                    adapters[task.name, args.seeds[0]],
                    adapters[task.name, args.seeds[1]],
                    adapters[other_task, args.seeds[0]],
                    None,
                )
            )

            def changed(a, b):
                return 100 * sum(x != y for x, y in zip(a, b, strict=True)) / len(a)

            print(
                f"{task.name:<34} {len(ex):>8} {changed(p0, p1):>11.1f} {changed(p0, po):>13.1f} {changed(p0, pb):>8.1f}"
            )


if __name__ == "__main__":
    main()
