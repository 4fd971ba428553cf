"""Making the hypermodel read (issue 18): the paper's heads and the key/value readout, trained on natural
BIG-bench episodes or on episodes that reward reading, beside zero-shot, in-context and MTF-LoRA, on
held-out `mustread` families, remapped and natural BIG-bench Lite, with the example-dependence figures.

    python benchmarks/reading_study.py                 # train what is missing, evaluate, report, write json
    python benchmarks/reading_study.py --report        # only the report and the json, from what is there
    python benchmarks/reading_study.py --rows kv_mix   # train and evaluate only some of the new rows
    python benchmarks/reading_study.py --runs runs/study-smoke --out runs/reading-smoke --configs configs/smoke \
        --downstream tiny-llama --steps 2 --max-examples 4 --seeds 0      # a dry run

The baselines are reading_baseline.py's (paper_study.py's runs, the same evaluation directories), so their
records are reused, not recomputed. Each training and evaluation is one ordinary `hypertune` command,
printed before it runs and resumable. `benchmarks/results/reading.json` is written from the evaluation
records, never typed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import fmean as mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_study import ROOT, TASKS, done, sh  # noqa: E402
from reading_baseline import ROWS as BASELINE_ROWS  # noqa: E402
from reading_baseline import eval_args, summarise  # noqa: E402

# New rows: key -> (label, how it is made, overrides); each lives in --out/RUN_DIRS[key]. "new": `hypertune
# new` (an untrained hypermodel, the directory itself); otherwise the config of `hypertune train`.
MIX = ["data.remap=0.5", "data.mustread=0.6"]
# the selection readout keeping every position, with a rank-16 LoRA on all four projections of its reading
# pass: configs/cpu-small/mtf_select.yaml (which names the modules `all-linear`, the same four on SmolLM2),
# spelled out so that the runs made before it was the config's resume under the same config
SELECT_ALL = [
    "hypermodel.readout_options={slots: 512, keep: 6, lora_rank: 16, lora_modules: [q_proj, k_proj, v_proj, o_proj]}",
    "train.lr=1.0e-3",
]
NEW_ROWS = {
    "kv_fresh": ("HyperKV (untrained)", "new", ["--target", "prefix", "--readout", "kv", "--slots", "16"]),
    # key/value selection (hyper/select.py): nothing trained; P = 16 examples x (3 tokens + separator)
    "select64": ("HyperKV-select P64 (untrained)", "new", ["--target", "prefix", "--readout", "select"]),
    "select32": (
        "HyperKV-select P32 keep1 (untrained)",
        "new",
        ["--target", "prefix", "--readout", "select", "--slots", "32", "--keep", "1"],
    ),
    "select128": (
        "HyperKV-select P128 keep6 (untrained)",
        "new",
        ["--target", "prefix", "--readout", "select", "--slots", "128", "--keep", "6"],
    ),
    "select512": (  # every position kept: in-context learning exactly (tests/test_select_readout.py)
        "HyperKV-select P512 (untrained)",
        "new",
        ["--target", "prefix", "--readout", "select", "--slots", "512", "--keep", "6"],
    ),
    "kv_mix": ("HyperKV (reading mix)", "mtf_kv", []),  # the config's own mix
    "kv_natural": ("HyperKV (natural)", "mtf_kv", ["data.remap=0", "data.mustread=0"]),
    "outer_mix": ("HyperLoRA-outer (reading mix)", "mtf_outer", []),
    "select_mix": (  # the third study's select config (P64, keep 3, LoRA 8 on q and v, lr 2e-3, 200 steps)
        "HyperKV-select P64 (reading mix, LoRA 8)",
        "mtf_select",
        [
            "hypermodel.readout_options={slots: 64, keep: 3, lora_rank: 8}",
            "train.lr=2.0e-3",
            "train.steps=200",
        ],
    ),
    # every position kept (P512 >= the examples' tokens): untrained, this is in-context learning exactly;
    # the LoRA on the reading pass (rank 16, all four attention projections) is then MetaICL's training
    # with only the examples' side adapted, the query read by the frozen model
    "select_all_mix": (
        "HyperKV-select P512 (reading mix, LoRA 16 qkvo)",
        "mtf_select",
        [*SELECT_ALL, "train.steps=200"],
    ),
    # the same recipe on half the schedule (100 steps, the config's), what fits the demo's 30 minutes
    "select_all_mix_100": (
        "HyperKV-select P512 (reading mix, LoRA 16 qkvo, 100 steps)",
        "mtf_select",
        [*SELECT_ALL, "train.steps=100"],
    ),
    # the default recipe with every fixed-label episode's shots drawn at a random label share
    # (data.label_share): does not rewarding the copy of the shots' label prior help on natural Lite?
    "select_all_share": (
        "HyperKV-select P512 (reading mix, random label share, 100 steps)",
        "mtf_select",
        [*SELECT_ALL, "train.steps=100", "data.label_share=1.0"],
    ),
    # the default recipe on must-read training families only (no BIG-bench): what the demo trains where
    # BIG-bench cannot be had; do the natural episodes cost the must-read score?
    "select_all_mustread": (
        "HyperKV-select P512 (must-read families only, 100 steps)",
        "mtf_select",
        [*SELECT_ALL, "train.steps=100", "data.collection=mustread", "data.mustread=0"],
    ),
    # the same trained on natural BIG-bench episodes only: does the readout or the reading mix make it read?
    "select_all_natural": (
        "HyperKV-select P512 (natural, LoRA 16 qkvo)",
        "mtf_select",
        [*SELECT_ALL, "train.steps=200", "data.remap=0", "data.mustread=0"],
    ),
    # context distillation (train.distill): half the loss is the KL to the frozen model reading the examples
    "kv_distill": ("HyperKV (reading mix, distilled)", "mtf_kv", ["train.distill=0.5"]),
    "outer_distill": ("HyperLoRA-outer (reading mix, distilled)", "mtf_outer", ["train.distill=0.5"]),
    "heads_mix": (
        "HyperPrefix (reading mix)",
        "mtf_hyper",
        ["hypermodel.init=null", "hypermodel.target=prefix", "hypermodel.options={prefix_len: 16}", *MIX],
    ),
}
RUN_DIRS = {
    "kv_fresh": "kv16_fresh",
    "select64": "select64",
    "select32": "select32",
    "select128": "select128",
    "select512": "select512",
    "kv_mix": "kv16",
    "kv_natural": "kv16_natural",
    "outer_mix": "outer8",
    "select_mix": "select64_mix",
    "select_all_mix": "select512_mix",
    "select_all_natural": "select512_natural",
    "select_all_mix_100": "select512_mix100",
    "select_all_share": "select512_share",
    "select_all_mustread": "select512_mustread",
    "kv_distill": "kv16_distill",
    "outer_distill": "outer8_distill",
    "heads_mix": "heads_mix",
}
DEFAULT = (
    "select_all_mix_100"  # configs/cpu-small/mtf_select.yaml, the cpu-small default; reading.json reports it
)
# Columns: eval directory -> (collection arguments, baseline rows evaluated there). In-context on remapped
# Lite costs about 8 CPU-minutes a record (long prompts), so that column has no in-context row here.
COLUMNS = {
    "mustread": (["--collection", "mustread"], None),
    "bbl-remap0": (["--collection", "bigbench", "--remap", "0"], ["Zero-shot", "MTF-LoRA"]),
    "bbl-natural": (["--collection", "bigbench", "--tasks", *TASKS], ["Zero-shot", "MTF-LoRA"]),
}


def make_rows(a) -> None:
    for key in a.rows:
        label, how, over = NEW_ROWS[key]
        run = Path(a.out) / RUN_DIRS[key]
        if how == "new":
            if not (ROOT / run).is_dir():
                sh(["hypertune", "new", "--downstream", a.downstream, *over, "--out", str(run)])
            continue
        if done(ROOT / run) or a.no_train:
            continue
        sh(
            ["hypertune", "train", "--resume", f"{a.configs}/{how}.yaml", f"run_dir={run}"]
            + [f"data.k={a.k}", f"downstream.max_input_tokens={a.input_tokens}"]
            + over
            + ([f"train.steps={a.steps}"] if a.steps else [])  # last: a dry run's --steps wins
        )


def methods(a, column: str) -> list[str]:
    _, base = COLUMNS[column]
    out = []
    for label, kind, run in BASELINE_ROWS:
        if base is not None and label not in base:
            continue
        if run is None or done(ROOT / a.runs / run):
            out += ["-m", f"{label}:{kind}" + (f"={a.runs}/{run}/final" if run else "")]
    for key in a.rows:
        label = NEW_ROWS[key][0]
        final = Path(a.out) / RUN_DIRS[key]
        final = final if NEW_ROWS[key][1] == "new" else final / "final"
        if (ROOT / final).is_dir():
            out += ["-m", f"{label}:hyper={final}"]
    return out


def eval_cmd(a, column: str) -> list[str]:
    cmd = ["hypertune", "eval", "--downstream", a.downstream, *COLUMNS[column][0], "--k", str(a.k)]
    cmd += ["--seeds", *map(str, a.seeds), "--max-examples", str(a.max_examples)]
    cmd += ["--max-input-tokens", str(a.input_tokens)]
    cmd += ["--max-in-context-tokens", str(a.hyper_tokens + a.input_tokens)]
    return [*cmd, "--quiet", "--out", f"{a.out}/{column}", *methods(a, column)]


def column_summary(a, column: str) -> dict | None:
    wanted = None
    if COLUMNS[column][1] is not None:
        wanted = {*COLUMNS[column][1], *(NEW_ROWS[k][0] for k in NEW_ROWS)}
    return summarise(ROOT / a.out / column, wanted)


def report(a) -> dict:
    from hypertuning.eval.dependence import FIGURES
    from hypertuning.eval.runner import AVG

    out = {}
    for column in COLUMNS:
        r = column_summary(a, column)
        if r is None:
            print(f"\n{column}: not evaluated yet")
            continue
        out[column] = r
        dep, chance = r["dependence"], r["chance"]
        choice = [c for c in r["columns"] if chance.get(c) is not None]
        print(f"\n## {column}: score (%), K={r['k']}, {len(r['tasks'])} tasks every method has")
        heads = ["AVG", "AVG choice", "other examples", "other task", "follows perm.", "adapt s"]
        print("| method | " + " | ".join(heads) + " |\n" + "|---" * (len(heads) + 1) + "|")
        if choice:
            print(f"| chance | | {mean(chance[c] for c in choice):.1f} | | | | |")
        for m, row in r["table"].items():
            figs = [dep[f].get(m, {}).get(AVG) for f in FIGURES]
            figs = ["-" if v is None else f"{v:.1f}" for v in figs]
            ch = f"{mean(row[c] for c in choice):.1f}" if choice else "-"
            t = r["adapt_seconds"].get(m)
            print(
                f"| {m} | {row[AVG]:.1f} ± {r['avg_std'].get(m, 0):.1f} | {ch} | {' | '.join(figs)} | "
                + ("-" if not t else f"{t:.2f}")
                + " |"
            )
        cols = [c for c in r["columns"] if c != AVG]
        print(f"\n{column}, per task family (%):\n| method | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for m, row in r["table"].items():
            print(
                f"| {m} | " + " | ".join("-" if row.get(c) is None else f"{row[c]:.1f}" for c in cols) + " |"
            )
    return out


def reading_json(a, out: dict) -> dict | None:
    """benchmarks/results/reading.json's shape, from the summaries (means in percent)."""
    from hypertuning.eval.runner import AVG

    label = NEW_ROWS[DEFAULT][0]
    mr, nat = out.get("mustread"), out.get("bbl-natural")
    if mr is None or label not in mr["table"]:
        return None
    choice = [c for c in mr["columns"] if mr["chance"].get(c) is not None]
    follows = mr["dependence"]["follows_label_permutation"]
    summary = {
        "mustread": {
            "hyper": mr["table"][label][AVG],
            "in_context": mr["table"].get("In-context", {}).get(AVG),
            "zero_shot": mr["table"]["Zero-shot"][AVG],
            "chance": mean(mr["chance"][c] for c in choice),  # over the multiple-choice families
            "follows_label_permutation": follows.get(label, {}).get(AVG),
            "multiple_choice": {m: mean(row[c] for c in choice) for m, row in mr["table"].items() if choice},
            "tasks": mr["tasks"],
        },
        "bigbench_lite": None,
        "method": label,
        # what produced the records (--report only re-reads them)
        "command": " ".join(
            ["python benchmarks/reading_study.py", *(x for x in sys.argv[1:] if x != "--report")]
        ),
        "records": {c: f"{a.out}/{c}/records.jsonl" for c in out},
    }
    if nat is not None and label in nat["table"]:
        summary["bigbench_lite"] = {
            "hyper": nat["table"][label][AVG],
            "mtf_lora": nat["table"].get("MTF-LoRA", {}).get(AVG),
            "zero_shot": nat["table"]["Zero-shot"][AVG],
            "tasks": nat["tasks"],
        }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="configs/cpu-small")
    ap.add_argument("--runs", default="runs/study", help="the baselines' training runs (paper_study.py's)")
    ap.add_argument("--out", default="runs/reading", help="evaluation directories and the new rows' runs")
    ap.add_argument(
        "--rows", nargs="+", default=["kv_fresh", "kv_mix", "outer_mix"], choices=sorted(NEW_ROWS)
    )
    ap.add_argument("--columns", nargs="*", default=list(COLUMNS), choices=list(COLUMNS))
    ap.add_argument("--downstream", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=None, help="default: each config's own")
    eval_args(ap)
    ap.add_argument("--report", action="store_true", help="only the report and the json")
    ap.add_argument("--json", default="benchmarks/results/reading.json")
    a = ap.parse_args()
    if not a.report:
        make_rows(a)
        for column in a.columns:
            sh(eval_cmd(a, column))
    summary = reading_json(a, report(a))
    if summary is not None:
        path = ROOT / a.json
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
