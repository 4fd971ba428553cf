"""Adaptation cost (issue 8, part 1; issue 18 for the default recipe): one hypermodel forward pass against LoRA
fine-tuning by back-propagation on the same K=16 examples until it reaches the hypertuned score, on held-out
tasks (by default the must-read ones the demo shows, whose answers only the examples give).

Per task: the hypertuned score (the generated adapter, LoRA or prefix, scored on the task's evaluation
examples by the scorer `hypertune eval` uses); then a `peft_task` run from random LoRA initialisation
(peft's: B = 0, so step 0 is the zero-shot model) trained on exactly those 16 examples
(`peft.train_on=shots`), scored every `--eval-every` steps on the same evaluation examples, for at most
`--steps` steps. Reported: the step at which its score first reaches the hypertuned score (or that it never
did), wall time (training steps only, from the run's own clock) and FLOPs, counted with
`torch.utils.flop_counter.FlopCounterMode` for one hypermodel pass and for one training step (forward and
backward), against the hypermodel's.

    python benchmarks/adaptation_cost.py [--hypermodel runs/demo/hypermodel/final] [--tasks mustread:suffix/0 \
        bigbench:winowhy ...] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from hypertuning.demo import CPU_MUSTREAD

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "cpu-small" / "peft_task.yaml"


def _flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hypermodel", default="runs/demo/hypermodel/final")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=[f"mustread:{t}" for t in CPU_MUSTREAD],
        help="collection:task ids (a bare name is a BIG-bench task)",
    )
    ap.add_argument("--steps", type=int, default=100, help="back-propagation budget per task")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3, help="the largest of the paper's PEFT sweep")
    ap.add_argument("--eval-batches", type=int, default=8, help="evaluation examples = this x batch size 4")
    args = ap.parse_args()

    from hypertuning import HyperModel
    from hypertuning.eval.scoring import score_task
    from hypertuning.train import Trainer, load_config, train

    hyper = Path(args.hypermodel)
    if not (hyper / "hypermodel_config.json").is_file():
        raise SystemExit(f"{hyper}: no trained hypermodel (run `make demo` first, or pass --hypermodel)")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"hypermodel {hyper}; K=16; back-propagation: LoRA rank 8 (q, v), lr {args.lr}, batch 4, fp32",
        flush=True,
    )
    rows = []
    for task_id in args.tasks:
        name = task_id if ":" in task_id else f"bigbench:{task_id}"
        run = Path(tempfile.mkdtemp(prefix="adapt-cost-"))
        common = [
            f"peft.task={name}",
            "peft.train_on=shots",
            f"eval.batches={args.eval_batches}",
            "eval.metric=score",
            "sweep={}",
        ]
        # The shots and evaluation examples are the peft_task run's (heldout_shots, as `hypertune eval`
        # picks them); a probe of that run also gives one training step's FLOPs below.
        probe = Trainer(load_config(CONFIG, [f"run_dir={run / 'probe'}", "peft.init=random", *common]))
        obj = probe.objective
        ds, task, examples = obj.downstream, obj.task, list(obj.eval_examples)
        hm = HyperModel.from_pretrained(hyper, downstream=ds, device=str(ds.device))
        pairs = [(e.input, e.target) for e in obj.shots]

        def adapt(hm=hm, pairs=pairs, instruction=task.instruction):
            return hm.generate(pairs, instruction)

        with torch.no_grad():
            contexts = ds.encode_inputs([e.input for e in examples])
            hyper_score = score_task(ds, task, examples, contexts, adapt(), batch_size=4).score
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                adapt()
                times.append(time.perf_counter() - t0)
            hyper_s = statistics.median(times)
            hyper_flops = _flops(adapt)
        del hm, adapt

        rcfg = load_config(
            CONFIG,
            [
                f"run_dir={run / 'random'}",
                "peft.init=random",
                f"train.steps={args.steps}",
                f"train.lr={args.lr}",
                "log.every=1",
                "log.progress=false",
                f"eval.every={args.eval_every}",
                f"checkpoint.every={args.steps + 1}",
                *common,
            ],
        )
        # FLOPs of one training step (forward and backward of one batch), on the probe
        batch = obj.batch(list(range(4)))

        def step(module=obj.module, batch=batch):
            loss, n = module(**batch)
            (loss / n).backward()

        step_flops = _flops(step)
        del probe, obj, step, ds, batch, contexts  # train() below loads its own copy of the model
        for _ in train(rcfg):
            pass
        recs = [json.loads(x) for x in (run / "random" / "metrics.jsonl").read_text().splitlines()]
        elapsed = {0: 0.0} | {r["step"]: r["elapsed_s"] for r in recs if "elapsed_s" in r}
        # the loop scores step 0 too: peft's LoRA initialisation (B = 0) is the zero-shot model
        scores = [(r["step"], r["eval_score"]) for r in recs if "eval_score" in r]
        reached = next((s for s, v in scores if v >= hyper_score), None)
        per_step = elapsed[max(elapsed)] / max(elapsed)
        rows.append((name, hyper_score, hyper_s, hyper_flops, scores, reached, elapsed, per_step, step_flops))
        shutil.rmtree(run, ignore_errors=True)
        curve = ", ".join(f"{s}: {v:.1f}" for s, v in scores)
        print(f"{name}: hypertuned {hyper_score:.1f}; back-propagation score by step: {curve}", flush=True)

    print(
        "\n| task | hypertuned score | hypermodel pass | steps to reach it | back-prop time to reach | "
        "time ratio | FLOPs: hypermodel pass | FLOPs: one step | FLOPs ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, hs, hsec, hfl, scores, reached, elapsed, per_step, sfl in rows:
        if reached is None:
            budget = max(elapsed)
            reach = f"not within {budget} (best {max(v for _, v in scores):.1f})"
            t, ratio, fl = (
                f"> {elapsed[budget]:.0f} s",
                f"> {elapsed[budget] / hsec:.0f}x",
                f"> {budget * sfl / hfl:.0f}x",
            )
        elif reached == 0:
            reach, t, ratio, fl = "0: the zero-shot model already scores as well", "0 s", "n/a", "n/a"
        else:
            reach = str(reached)
            t_s = elapsed.get(reached, reached * per_step)
            t, ratio, fl = f"{t_s:.0f} s", f"{t_s / hsec:.0f}x", f"{reached * sfl / hfl:.0f}x"
        print(
            f"| {name} | {hs:.1f} | {hsec * 1000:.0f} ms | {reach} | {t} | {ratio} | {hfl / 1e9:.1f} GFLOP | "
            f"{sfl / 1e9:.1f} GFLOP | {fl} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
