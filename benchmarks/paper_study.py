"""The paper's claims at our scale (issue 8, part 4): every training run behind Table 1, the Figure 4 ablation,
the Table 6 initialisation study and prefix against LoRA, then one evaluation of them all on held-out
BIG-bench Lite tasks over several few-shot seeds, printed in the paper's shapes.

    python benchmarks/paper_study.py                      # train what is missing, evaluate, report
    python benchmarks/paper_study.py --report             # only the report, from what is there
    python benchmarks/paper_study.py --configs configs/smoke --runs runs/study-smoke --steps 4 ...  # a dry run

Everything is resumable: a finished run (its `final/` and `summary.json`) is skipped, an interrupted one
continues from its last checkpoint (`hypertune train --resume`), and `hypertune eval` continues its
results file. Each stage is the ordinary `hypertune train` / `hypertune eval` command, printed before it
runs, so any number can be reproduced on its own.

Figure 4 needs hypermodels after different amounts of hyperpretraining. Checkpoints are not hypermodel
directories, so CACLM runs in two legs (`caclm_a`, then `caclm` initialised from it); the second leg
restarts the learning-rate schedule (without warm-up), which a single run would not do.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Multiple-choice BIG-bench Lite tasks with short inputs (the CPU demo's), so in-context stays affordable.
TASKS = ["hindu_knowledge", "known_unknowns", "logical_deduction/three_objects", "novel_concepts", "winowhy"]


PREFIX = ["hypermodel.target=prefix", "hypermodel.options={prefix_len: 16}"]


def stages(a) -> list[tuple[str, str, list[str]]]:
    """(run name, config file, overrides): the order puts Table 1's core rows first."""
    r = a.runs
    half = max(1, a.caclm_steps // 2)
    return [
        ("caclm_a", "caclm", [f"train.steps={half}"]),
        (
            "caclm",
            "caclm",
            [
                f"hypermodel.init={r}/caclm_a/final",
                f"train.steps={a.caclm_steps - half}",
                "train.warmup_steps=0",
            ],
        ),
        ("hyperlora", "mtf_hyper", [f"hypermodel.init={r}/caclm/final", f"train.steps={a.steps}"]),
        ("mtf_lora", "mtf_peft", [f"train.steps={a.steps}"]),
        (
            "mtf_prefix",
            "mtf_peft",
            ["peft.target=prefix", "peft.options={prefix_len: 16}", f"train.steps={a.steps}"],
        ),
        ("hyperlora_nocaclm", "mtf_hyper", ["hypermodel.init=null", f"train.steps={a.steps}"]),
        (
            "hyperprefix_nocaclm",
            "mtf_hyper",
            [
                "hypermodel.init=null",
                *PREFIX,
                f"train.steps={a.steps}",
            ],
        ),
        ("mtf_full", "mtf_full", [f"train.steps={a.steps}"]),
        ("mtf_fewshot", "mtf_fewshot", [f"train.steps={a.steps}"]),
        (
            "hyperlora_caclm_half",
            "mtf_hyper",
            [f"hypermodel.init={r}/caclm_a/final", f"train.steps={a.steps}"],
        ),
        # HyperPrefix after hyperpretraining: a CACLM hypermodel emits one target, so prefixes get their own
        # CACLM run, in the same two legs as LoRA's
        ("caclm_prefix_a", "caclm", [*PREFIX, f"train.steps={half}"]),
        (
            "caclm_prefix",
            "caclm",
            [
                *PREFIX,
                f"hypermodel.init={r}/caclm_prefix_a/final",
                f"train.steps={a.caclm_steps - half}",
                "train.warmup_steps=0",
            ],
        ),
        (
            "hyperprefix",
            "mtf_hyper",
            [*PREFIX, f"hypermodel.init={r}/caclm_prefix/final", f"train.steps={a.steps}"],
        ),
    ]


# Trained last, after the first evaluation: MTF-Few-shot fine-tunes the whole downstream model on 960-token
# prompts, about 40 s a step on 2 CPU cores against 4-7 s for the other runs.
LAST = {"mtf_fewshot"}


INITS = (("random", None), ("shared", "mtf_lora"), ("hyper", "hyperlora"))


def peft_run(task: str, init: str, seed: int) -> str:
    """Seed 0 keeps the name of the study's first Table 6 runs."""
    return f"peft_task/{task.replace('/', '_')}/{init}" + (f"-seed{seed}" if seed else "")


def peft_stages(a) -> list[tuple[str, str, list[str]]]:
    """Table 6: single-task LoRA from random, shared (MTF-LoRA) and hyper (HyperLoRA) initialisation, one
    learning rate (the config's sweep of 3 learning rates x 3 seeds is 9x the time) and `--peft-seeds`
    (the training seed, which also picks the K examples the hypermodel reads; the evaluation examples stay
    the same)."""
    out = []
    for seed in a.peft_seeds:  # seed-major: every task and initialisation at one seed before the next
        for task in a.peft_tasks:
            for init, src in INITS:
                over = [
                    f"peft.task={a.collection}:{task}",
                    f"peft.init={init}",
                    f"seed={seed}",
                    f"train.steps={a.peft_steps}",
                    f"eval.every={max(1, a.peft_steps // 3)}",
                    "eval.metric=score",
                    f"train.lr={a.peft_lr}",
                    "sweep=null",
                ]
                over.append(f"peft.init_from={a.runs}/{src}/final" if src else "peft.init_from=null")
                out.append((peft_run(task, init, seed), "peft_task", over))
    return out


def common(a) -> list[str]:
    return [
        f"hypermodel.max_input_tokens={a.hyper_tokens}",
        f"data.k={a.k}",
        f"downstream.max_in_context_tokens={a.hyper_tokens + a.input_tokens}",
        f"downstream.max_input_tokens={a.input_tokens}",
    ]


def done(run: Path) -> bool:
    return (run / "final").is_dir() and (run / "summary.json").is_file()


def sh(cmd: list[str]) -> None:
    print("\n$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hypertuning.cli", *cmd[1:]], cwd=ROOT, check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def train_all(a, which) -> None:
    for name, config, over in which:
        run = Path(a.runs) / name
        if done(ROOT / run):
            print(f"{name}: done, skipped")
            continue
        sh(
            [
                "hypertune",
                "train",
                "--resume",
                f"{a.configs}/{config}.yaml",
                f"run_dir={run}",
                *common(a),
                *over,
            ]
        )


METHODS = [  # (label, kind, run): the rows of Table 1 and the ablations
    ("Zero-shot", "zero-shot", None),
    ("In-context", "in-context", None),
    ("MTF", "mtf", "mtf_full"),
    ("MTF-Few-shot", "mtf-fewshot", "mtf_fewshot"),
    ("MTF-Prefix", "peft", "mtf_prefix"),
    ("MTF-LoRA", "peft", "mtf_lora"),
    ("HyperPrefix (no CACLM)", "hyper", "hyperprefix_nocaclm"),
    ("HyperPrefix", "hyper", "hyperprefix"),
    ("HyperLoRA (no CACLM)", "hyper", "hyperlora_nocaclm"),
    ("HyperLoRA (half CACLM)", "hyper", "hyperlora_caclm_half"),
    ("HyperLoRA", "hyper", "hyperlora"),
]


def eval_cmd(a) -> list[str]:
    cmd = [
        "hypertune",
        "eval",
        "--downstream",
        a.downstream,
        "--collection",
        a.collection,
        "--k",
        str(a.k),
        "--seeds",
        *map(str, a.seeds),
        "--max-examples",
        str(a.max_examples),
        "--max-input-tokens",
        str(a.input_tokens),
        "--max-in-context-tokens",
        str(a.hyper_tokens + a.input_tokens),
        "--out",
        f"{a.runs}/eval",
    ]
    if a.tasks:
        cmd += ["--tasks", *a.tasks]
    for label, kind, run in METHODS:
        if run is None or done(ROOT / a.runs / run):
            cmd += ["-m", f"{label}:{kind}" + (f"={a.runs}/{run}/final" if run else "")]
        else:
            print(f"{label}: {run} is not trained yet, left out of this evaluation")
    return cmd


def summary(run: Path) -> dict:
    p = run / "summary.json"
    return json.loads(p.read_text()) if p.exists() else {}


def report(a) -> None:
    from hypertuning.eval.runner import AVG

    runs = ROOT / a.runs
    print(f"\nhost: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}")
    print("\n## Training runs (hypertune train; seconds are the run's own training time)")
    print(
        "(phi same / other: eval_phi_same_task / eval_phi_other_task at the end; hypermodel runs since they"
    )
    print(" were logged)")
    print(
        f"{'run':<30} {'steps':>5} {'minutes':>8} {'first loss':>10} {'last loss':>9} {'val loss':>8} "
        f"{'phi same':>8} {'phi other':>9}"
    )
    for name, _, _ in stages(a) + peft_stages(a):
        s = summary(runs / name)
        if s:
            ev = s.get("eval") or {}
            nan = float("nan")
            print(
                f"{name:<30} {s['steps']:>5} {s['elapsed_s'] / 60:>8.1f} {s['first_loss']:>10.3f} "
                f"{s['last_loss']:>9.3f} {ev.get('eval_loss', nan):>8.3f} "
                f"{ev.get('eval_phi_same_task', nan):>8.4f} {ev.get('eval_phi_other_task', nan):>9.4f}"
            )
    res = runs / "eval" / "results.json"
    r = json.loads(res.read_text()) if res.exists() else None
    if r:
        from hypertuning.eval.runner import format_table

        print(f"\n## Table 1 shape: held-out accuracy, mean over few-shot seeds {a.seeds} (± std of AVG)")
        print(format_table(r["columns"], r["table"], r["avg_std"]))
        rows, std = r["table"], r["avg_std"]

        def avg(label):
            return rows[label][AVG] if label in rows else float("nan")

        print("\n## Figure 4 shape: HyperLoRA's held-out AVG against hyperpretraining steps")
        for label, caclm in (
            ("HyperLoRA (no CACLM)", 0),
            ("HyperLoRA (half CACLM)", a.caclm_steps // 2),
            ("HyperLoRA", a.caclm_steps),
        ):
            if label in rows:
                print(f"  {caclm:>5} CACLM steps: {avg(label):.2f} ± {std[label]:.2f}")
        print("\n## Prefix against LoRA (held-out AVG)")
        pairs = (
            ("MTF-Prefix", "MTF-LoRA"),
            ("HyperPrefix (no CACLM)", "HyperLoRA (no CACLM)"),
            ("HyperPrefix", "HyperLoRA"),
        )
        for prefix, lora in pairs:
            print(f"  {prefix}: {avg(prefix):.2f}   {lora}: {avg(lora):.2f}")
    print("\n## Table 6 shape: single-task LoRA by initialisation (held-out task score by PEFT step)")
    for task in a.peft_tasks:
        for init, _ in INITS:
            curves = {}
            for seed in a.peft_seeds:
                m = runs / peft_run(task, init, seed) / "metrics.jsonl"
                if m.exists():
                    recs = [json.loads(x) for x in m.read_text().splitlines() if x.strip()]
                    curves[seed] = {x["step"]: x["eval_score"] for x in recs if "eval_score" in x}
                    curve = curves[seed].items()
                    print(
                        f"  {task:<32} {init:<7} seed {seed} "
                        + "  ".join(f"step {s}: {v:.1f}" for s, v in curve)
                    )
            if len(curves) > 1:  # the mean over the seeds that have every step
                steps = sorted(set.intersection(*(set(c) for c in curves.values())))
                mean = {s: statistics.mean(c[s] for c in curves.values()) for s in steps}
                print(
                    f"  {task:<32} {init:<7} mean of {len(curves)} "
                    + "  ".join(f"step {s}: {v:.1f}" for s, v in mean.items())
                )
    if r:
        secs = r.get("adapt_seconds", {})
        print(
            "\nmedian adaptation seconds per task: " + ", ".join(f"{k} {v:.2f}" for k, v in secs.items() if v)
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="configs/cpu-small")
    ap.add_argument("--runs", default="runs/study")
    ap.add_argument("--downstream", default="smollm2-135m-instruct")
    ap.add_argument("--collection", default="bigbench")
    ap.add_argument("--steps", type=int, default=100, help="multi-task fine-tuning steps of every MTF run")
    ap.add_argument("--caclm-steps", type=int, default=100, help="hyperpretraining steps (two equal legs)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--hyper-tokens", type=int, default=768, help="the hypermodel's input budget")
    ap.add_argument("--input-tokens", type=int, default=192, help="the downstream model's input budget")
    ap.add_argument("--tasks", nargs="*", default=TASKS, help="held-out tasks (none: all of BIG-bench Lite)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--max-examples", type=int, default=32)
    ap.add_argument("--peft-tasks", nargs="*", default=["logical_deduction/three_objects", "novel_concepts"])
    ap.add_argument("--peft-seeds", nargs="+", type=int, default=[0, 1, 2], help="Table 6 seeds")
    ap.add_argument("--peft-steps", type=int, default=30)
    ap.add_argument("--peft-lr", type=float, default=3e-4)
    ap.add_argument("--report", action="store_true", help="only print the report")
    ap.add_argument("--skip-eval", action="store_true")
    a = ap.parse_args()
    if not a.report:
        first = [s for s in stages(a) if s[0] not in LAST]
        train_all(a, first)
        if not a.skip_eval:
            sh(eval_cmd(a))
        train_all(a, peft_stages(a))
        train_all(a, [s for s in stages(a) if s[0] in LAST])
        if not a.skip_eval:
            sh(eval_cmd(a))  # adds the late runs; what is already evaluated is kept
    report(a)


if __name__ == "__main__":
    main()
