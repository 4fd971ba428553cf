"""Per-task state and batched mixed-task inference (issue 8, part 2; issue 18 for the default recipe), in-process
on the real SmolLM2-135M.

1. Bytes a server keeps per task: the hypermodel's generated phi (as held in memory, and as its PEFT file
   on disk: a select-readout prefix keeps its real columns only; the readout's own batch output, padded to
   P columns with a mask, is what memory held before `Adapter.compact`), and a 16-token prefix from its shapes,
   against the key/value cache of the same K=16 examples written in context, measured from the
   `DynamicCache` transformers returns for each task's in-context prompt.
2. Throughput of one batched forward pass scoring a one-token continuation, with every row on a different
   task's adapter (compact, and padded to P as before), with every row carrying its task's in-context
   prompt, and on the bare base model, at
   several batch sizes and input lengths; the three ways run side by side, alternating, median of
   --repeats.

    python benchmarks/state_and_throughput.py [--hypermodel runs/demo/hypermodel/final] [--batch-sizes 1 4 16]
        [--lengths 64 256] [--repeats 3] [--tasks bigbench:winowhy mustread:suffix/0 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hypertuning.demo import CPU_MUSTREAD, CPU_TASKS


def _kv_bytes(cache) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hypermodel", default="runs/demo/hypermodel/final")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=[f"bigbench:{t}" for t in CPU_TASKS] + [f"mustread:{t}" for t in CPU_MUSTREAD],
        help="collection:task ids (a bare name is a BIG-bench task)",
    )
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 256], help="input tokens per row")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from hypertuning import Adapter, HyperModel, load_downstream
    from hypertuning.data.collections import get_collection
    from hypertuning.data.episodes import heldout_shots

    torch.set_grad_enabled(False)
    trained = (Path(args.hypermodel) / "hypermodel_config.json").is_file()
    if trained:
        hm = HyperModel.from_pretrained(args.hypermodel)
        ds = load_downstream(hm.spec.checkpoint)
    else:
        ds = load_downstream("smollm2-135m-instruct")
        from _common import demo_sized_hypermodel

        hm = demo_sized_hypermodel(ds)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"hypermodel {'trained: ' + args.hypermodel if trained else 'untrained, demo size'}; fp32"
    )
    prompts, adapters, padded, inputs = [], [], [], []
    print(
        "\n| task | in-context prompt tokens (K=16) | KV cache | phi in memory | phi padded to P | "
        "phi PEFT file | prefix phi (P=16) | KV / phi file |"
    )
    print("|---|---|---|---|---|---|---|---|")
    # fp32 key and value vectors of 16 virtual tokens in every layer (its zero phi has P=0, so from shapes)
    prefix_bytes = sum(
        ks.num_layers * 2 * ks.kv_heads * 16 * ks.head_dim * 4 for ks in ds.spec.kinds.values()
    )
    for task_id in args.tasks:
        collection, _, name = (task_id if ":" in task_id else f"bigbench:{task_id}").partition(":")
        task = get_collection(collection).load(name)
        shots, evaluation = heldout_shots(task, args.k, seed=0, up_to=True)
        pairs = [(s.input, s.target) for s in shots]
        query = evaluation.examples[0].input
        prompt = ds.encode_in_context(pairs, task.instruction, query)
        kv = _kv_bytes(ds.model(input_ids=torch.tensor([prompt]), use_cache=True).past_key_values)
        adapter = hm.generate(pairs, task.instruction)
        # the readout's batch output as it is, before compaction (P columns, spare ones masked)
        whole = {k: v.detach() for k, v in hm(*hm.encode([pairs], [task.instruction])).items()}
        padded.append(Adapter(adapter.target, adapter.options, adapter.spec, whole, adapter.meta))
        with tempfile.TemporaryDirectory() as where:
            adapter.save_pretrained(where)
            on_disk = (Path(where) / "adapter_model.safetensors").stat().st_size
        prompts.append(ds.encode_in_context(pairs, task.instruction, ""))
        adapters.append(adapter)
        inputs.extend(ds.encode_inputs([e.input for e in evaluation.examples[:20]]))
        print(
            f"| {task.id} | {len(prompt)} | {kv / 1e6:.2f} MB | {adapter.nbytes / 1e6:.2f} MB | "
            f"{padded[-1].nbytes / 1e6:.2f} MB | {on_disk / 1e6:.2f} MB | {prefix_bytes / 1e6:.2f} MB | "
            f"{kv / on_disk:.2f}x |",
            flush=True,
        )
    stream = [t for ids in inputs for t in ids]  # real task text, cut into rows of exact lengths

    print("\n| input tokens | batch | way | tokens per row | rows/s (median) | vs base |")
    print("|---|---|---|---|---|---|")
    target = ds.encode_targets(["yes"])[0]
    for length in args.lengths:
        for b in args.batch_sizes:
            rows = [stream[(i * length) % (len(stream) - length) :][:length] for i in range(b)]
            ways = {
                "base": (rows, None),
                "adapters": (rows, [adapters[i % len(adapters)] for i in range(b)]),
                "adapters padded to P": (rows, [padded[i % len(padded)] for i in range(b)]),
                "in-context": ([prompts[i % len(prompts)] + r for i, r in enumerate(rows)], None),
            }
            times: dict[str, list[float]] = {w: [] for w in ways}
            for _ in range(args.repeats):
                for way, (ctx, ad) in ways.items():
                    t0 = time.perf_counter()
                    ds.loglikelihood_ids(ctx, [target] * b, ad, batch_size=b, share_context=False)
                    times[way].append(time.perf_counter() - t0)
            base = b / statistics.median(times["base"])
            for way, (ctx, _) in ways.items():
                rps = b / statistics.median(times[way])
                tokens = statistics.median(len(c) for c in ctx)
                print(
                    f"| {length} | {b} | {way} | {tokens:.0f} | {rps:.2f} | {rps / base:.2f}x |", flush=True
                )


if __name__ == "__main__":
    main()
