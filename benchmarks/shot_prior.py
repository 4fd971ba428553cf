"""Does a reader lose natural BIG-bench Lite tasks by following the label share of its examples?

For each task and few-shot seed, the K examples `hypertune eval` shows (heldout_shots), their most common
answer text, its share among the shots and among the evaluated items, and the accuracy of always answering
it where an item offers it. Then, from an evaluation directory's records, the share of each method's answers
that are that text. Tasks whose items share no answer text (each item its own options) have no such label.

    python benchmarks/shot_prior.py --records runs/reading/bbl-natural/records.jsonl [--k 16 --seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", required=True)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--max-examples", type=int, default=32)
    ap.add_argument("--pool-size", type=int, default=64)
    ap.add_argument("--methods", nargs="+", default=None)
    a = ap.parse_args()

    from hypertuning.data.collections import get_collection
    from hypertuning.data.episodes import heldout_shots

    recs = [json.loads(x) for x in Path(a.records).read_text().splitlines()]
    methods = a.methods or list(dict.fromkeys(r["method"] for r in recs))
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    print(
        "| task | seed | shots' most common answer | its share: shots | evaluated (= accuracy of always it) | "
        + " | ".join(f"{m}: acc / answers it" for m in methods)
        + " |"
    )
    print("|---" * (5 + len(methods)) + "|")
    for tid in tasks:
        collection, _, name = tid.partition(":")
        task = get_collection(collection).load(name)
        for seed in a.seeds:
            shots, evaluation = heldout_shots(task, a.k, seed, a.pool_size, up_to=True)
            items = evaluation.capped(a.max_examples, seed=0).examples
            label, n = Counter(s.target for s in shots).most_common(1)[0]
            offered = [e for e in items if e.choices and label in e.choices]
            if len(offered) < len(items) / 2:
                continue  # most items do not offer it: no shared label
            gold = [e.choices[e.answers[0]] for e in items]
            cells = []
            for m in methods:
                # methods that read no examples are recorded at the first seed only
                mine = [r for r in recs if (r["method"], r["task"]) == (m, tid)]
                r = next((r for r in mine if r["seed"] == seed or r["k"] == 0), None)
                if r is None:
                    cells.append("-")
                    continue
                if len(r["predictions"]) != len(items):
                    raise SystemExit(
                        f"{a.records}: {m} on {tid} scored {len(r['predictions'])} items, not "
                        f"{len(items)}: pass the evaluation's --max-examples and --pool-size"
                    )
                said = [
                    e.choices[p] if isinstance(p, int) else p
                    for e, p in zip(items, r["predictions"], strict=True)
                ]
                cells.append(f"{r['score']:.1f} / {100 * sum(x == label for x in said) / len(said):.0f}%")
            always = 100 * sum(g == label for g in gold) / len(gold)
            print(
                f"| {task.name} | {seed} | {label!r} | {100 * n / len(shots):.0f}% | {always:.1f}% | "
                + " | ".join(cells)
                + " |"
            )


if __name__ == "__main__":
    main()
