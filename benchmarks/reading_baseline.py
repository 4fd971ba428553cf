"""Reading the examples: where we start (issue 17). Every method of Table 1 that we have trained, on
held-out tasks whose answers only the examples reveal, with chance and the share of answers that change
when the examples change.

    python benchmarks/reading_baseline.py                  # train what is missing, evaluate, report
    python benchmarks/reading_baseline.py --report         # only the report, from what is there
    python benchmarks/reading_baseline.py --runs runs/study-smoke --configs configs/smoke \
        --downstream tiny-llama --steps 2 --max-examples 4 --seeds 0   # a dry run in a minute

Columns: the held-out `mustread` families, and BIG-bench Lite remapped (`--remap 0`: the tasks with a fixed
label set, their labels replaced by made-up symbols). The trainings are paper_study.py's own runs (same
names, configs and overrides, in the same `--runs` directory, so a run either script finished is reused);
each evaluation is one ordinary `hypertune eval` command, printed before it runs and resumable.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean as mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_study import ROOT, done, sh, stages, train_all  # noqa: E402  (the same runs, not copies)

ROWS = [  # (label, kind, run); MTF-Few-shot last: 40 s a step here, 6x the others
    ("Zero-shot", "zero-shot", None),
    ("In-context", "in-context", None),
    ("MTF-LoRA", "peft", "mtf_lora"),
    ("HyperLoRA (no CACLM)", "hyper", "hyperlora_nocaclm"),
    ("HyperPrefix (no CACLM)", "hyper", "hyperprefix_nocaclm"),
    ("MTF-Few-shot", "mtf-fewshot", "mtf_fewshot"),
]
COLUMNS = {  # eval directory -> the collection arguments of `hypertune eval`
    "mustread": ["--collection", "mustread"],
    "bbl-remap0": ["--collection", "bigbench", "--remap", "0"],
}


def eval_cmd(a, name: str) -> list[str]:
    cmd = ["hypertune", "eval", "--downstream", a.downstream, *COLUMNS[name], "--k", str(a.k)]
    cmd += ["--seeds", *map(str, a.seeds), "--max-examples", str(a.max_examples)]
    cmd += [
        "--max-input-tokens",
        str(a.input_tokens),
        "--max-in-context-tokens",
        str(a.hyper_tokens + a.input_tokens),
    ]
    cmd += ["--quiet", "--out", f"{a.out}/{name}"]
    for label, kind, run in ROWS:
        if run is None or done(ROOT / a.runs / run):
            cmd += ["-m", f"{label}:{kind}" + (f"={a.runs}/{run}/final" if run else "")]
        else:
            print(f"{label}: {a.runs}/{run} is not trained, left out")
    return cmd


def read_records(out: Path) -> list[dict]:
    from hypertuning.eval.runner import RECORDS

    return (
        [json.loads(x) for x in (out / RECORDS).read_text().splitlines()] if (out / RECORDS).exists() else []
    )


def summarise(out: Path, methods: set | None = None) -> dict | None:
    """The tables from `records.jsonl` (so an evaluation still running reports the tasks it has finished
    for every method), in results.json's shape; only `methods` (labels) when given."""
    from hypertuning.eval.runner import Results

    records = read_records(out)
    if methods is not None:
        records = [r for r in records if r["method"] in methods]
    if not records:
        return None
    methods = list(dict.fromkeys(r["method"] for r in records))
    tasks = list(dict.fromkeys(r["task"] for r in records))
    res = Results(records, methods, tasks)
    columns, rows, spread = res.table()
    done = [t for t in tasks if t not in res.incomplete()]
    return {
        "columns": columns,
        "table": rows,
        "avg_std": spread,
        "chance": res.chance(),
        "dependence": res.dependence(),
        "k": json.loads((out / "eval_config.json").read_text())["k"],
        "adapt_seconds": res.median("adapt_seconds"),
        "records": len(records),
        "tasks": done,
    }


def report(a) -> None:
    from hypertuning.eval.dependence import FIGURES
    from hypertuning.eval.runner import AVG

    print(f"\nhost: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}")
    short = {
        "changed_with_other_examples": "other examples",
        "changed_with_other_task": "other task",
        "follows_label_permutation": "follows perm.",
    }
    labels = [label for label, _, _ in ROWS]
    for name in COLUMNS:
        out = ROOT / a.out / name
        # the evaluation directories are shared with reading_study.py: report this table's rows only, and
        # set aside a row that has not finished every task instead of shrinking the table to its tasks
        tasks = defaultdict(set)
        for rec in read_records(out):
            tasks[rec["method"]].add(rec["task"])
        every = set().union(*(tasks[m] for m in labels))
        short_rows = [m for m in labels if tasks[m] and tasks[m] != every]
        r = summarise(out, {m for m in labels if tasks[m] and m not in short_rows})
        if r is None:
            print(f"\n{name}: not evaluated yet")
            continue
        for m in short_rows:
            print(f"{name}: {m} left out of the table: {len(tasks[m])} of its {len(every)} tasks evaluated")
        dep, chance = r["dependence"], r["chance"]
        print(f"\n## {name}: AVG score (%) and example dependence (% of answers; K={r['k']})")
        print(f"({r['records']} records; tasks every method has: {len(r['tasks'])})")
        choice = [c for c in r["columns"] if chance.get(c) is not None]
        heads = [*r["columns"], "AVG", "AVG choice", *short.values()]
        print("| method | " + " | ".join(heads) + " |")
        print("|---" * (len(heads) + 1) + "|")
        cells = [f"{chance[c]:.1f}" if chance.get(c) is not None else "-" for c in r["columns"]]
        print(f"| chance | {' | '.join(cells)} | | {mean(chance[c] for c in choice):.1f} | | | |")
        for m, row in r["table"].items():
            std = r["avg_std"].get(m, 0.0)
            figs = [dep[f].get(m, {}).get(AVG) for f in FIGURES]
            figs = ["-" if v is None else f"{v:.1f}" for v in figs]
            scores = " | ".join(f"{row[c]:.1f}" for c in r["columns"])
            avg_choice = f"{mean(row[c] for c in choice):.1f}"
            print(
                f"| {m} | {scores} | {row[AVG]:.1f} ± {std:.1f} | {avg_choice} | " + " | ".join(figs) + " |"
            )


def eval_args(ap) -> None:
    """The evaluation settings every reading benchmark shares (reading_study.py too)."""
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--hyper-tokens", type=int, default=768)
    ap.add_argument("--input-tokens", type=int, default=192)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--max-examples", type=int, default=32)
    ap.add_argument("--no-train", action="store_true", help="evaluate only what is trained")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="configs/cpu-small")
    ap.add_argument("--runs", default="runs/study", help="training runs (paper_study.py's)")
    ap.add_argument("--out", default="runs/reading", help="evaluation directories")
    ap.add_argument("--downstream", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--caclm-steps", type=int, default=100)
    eval_args(ap)
    ap.add_argument("--report", action="store_true", help="only print the report")
    a = ap.parse_args()
    if not a.report:
        wanted = {run for _, _, run in ROWS if run}
        first = [s for s in stages(a) if s[0] in wanted and s[0] != "mtf_fewshot"]
        if not a.no_train:
            train_all(a, first)
        for name in COLUMNS:
            sh(eval_cmd(a, name))
        if not a.no_train:
            train_all(a, [s for s in stages(a) if s[0] == "mtf_fewshot"])
            for name in COLUMNS:
                sh(eval_cmd(a, name))  # adds MTF-Few-shot; what is evaluated is kept
    report(a)


if __name__ == "__main__":
    main()
