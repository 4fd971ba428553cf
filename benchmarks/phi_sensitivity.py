"""Does the hypermodel read the examples? How far its generated parameters (phi) move with the few-shot
examples, and how often that changes the downstream model's answers.

    python benchmarks/phi_sensitivity.py runs/study/hyperlora/final [more hypermodels] [--tasks ...]

A thin caller of the library's own measures: the answer figures are `hypertune eval`'s example-dependence
columns (`hypertuning.eval.dependence`, here for every task: `dependence="all"`), and the phi distances are
the ones training logs (`hypertuning.hyper.diagnostics`): ||phi_a - phi_b|| / mean(||phi_a||, ||phi_b||),
the median over pairs of seeds of one task ("same task") and over pairs of tasks at one seed ("other
task"). "vs base" is the share of answers that differ from the zero-shot model's. A hypermodel that has
collapsed to one task-agnostic adapter shows distances near zero and the same answers whatever it reads.
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
    ap.add_argument("--collection", default="bigbench")
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

    from hypertuning import Adapter
    from hypertuning.data import get_collection
    from hypertuning.data.episodes import heldout_shots
    from hypertuning.eval import EvalSettings, Models, build_methods, evaluate
    from hypertuning.eval.dependence import changed
    from hypertuning.hyper.diagnostics import flat_phi, relative_distance

    torch.set_grad_enabled(False)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; K={args.k}"
    )
    coll = get_collection(args.collection)
    tasks = [coll.load(t) for t in args.tasks]
    models = Models()
    methods = build_methods(["zero-shot", *(f"hyper={p}" for p in args.hypermodels)], models)
    models.base_name = methods[1].downstream().name
    settings = EvalSettings(k=args.k, seeds=args.seeds, max_examples=args.max_examples, dependence="all")
    results = evaluate(methods, tasks, settings, progress=False)
    base = {r["task"]: r["predictions"] for r in results.records if r["method"] == "zero-shot"}

    def pairs(task, seed):  # the K examples every method saw at this seed
        return [(e.input, e.target) for e in heldout_shots(task, args.k, seed, up_to=True)[0]]

    for m in methods[1:]:
        keys = [(t.id, s) for t in tasks for s in args.seeds]
        adapters = [m.hypermodel.generate(pairs(t, s), t.instruction) for t in tasks for s in args.seeds]
        # one batch: compact prefixes of different lengths are padded alike (zero, masked columns)
        rows = flat_phi(Adapter.stack(adapters).phi)
        phi = dict(zip(keys, rows, strict=True))
        same = [
            relative_distance(phi[t.id, s], phi[t.id, u])
            for t in tasks
            for s, u in itertools.combinations(args.seeds, 2)
        ]
        other = [
            relative_distance(phi[t.id, s], phi[v.id, s])
            for s in args.seeds
            for t, v in itertools.combinations(tasks, 2)
        ]
        print(f"\n## {m.path}")
        print(
            f"phi distance, same task (other seed): median {statistics.median(same):.4f} "
            f"(range {min(same):.4f}-{max(same):.4f}); other task: median {statistics.median(other):.4f} "
            f"(range {min(other):.4f}-{max(other):.4f})"
        )
        print(
            f"{'task':<34} {'examples':>8} {'other seed':>10} {'other task':>10} {'vs base':>8}  (answers changed, %, mean over seeds)"
        )
        for t in tasks:
            recs = [r for r in results.records if r["method"] == m.label and r["task"] == t.id]

            def mean(key, recs=recs):
                values = [r[key] for r in recs if r[key] is not None]
                return f"{100 * statistics.fmean(values):.1f}" if values else "-"

            vs_base = statistics.fmean(changed(r["predictions"], base[t.id]) for r in recs)
            print(
                f"{t.name:<34} {recs[0]['examples']:>8} {mean('changed_with_other_examples'):>10} "
                f"{mean('changed_with_other_task'):>10} {100 * vs_base:>8.1f}"
            )


if __name__ == "__main__":
    main()
