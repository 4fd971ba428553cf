"""`hypertune`: a thin command line over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import HypertuningError


def _new(args) -> None:
    from . import HyperModel, load_downstream

    ds = load_downstream(args.downstream)
    opts = {}
    if args.rank is not None:
        opts["rank"] = args.rank
    if args.prefix_len is not None:
        opts["prefix_len"] = args.prefix_len
    hm = HyperModel.create(ds, target=args.target, layers=args.layers, **opts)
    hm.save_pretrained(args.out)
    n = sum(p.numel() for p in hm.parameters())
    print(f"Saved a new {args.target} hypermodel ({n / 1e6:.2f}M parameters) for {ds.name} to {args.out}")


def _adapt(args) -> None:
    from . import HyperModel
    from .data import read_jsonl

    examples = read_jsonl(args.examples, required=("input",))
    hm = HyperModel.from_pretrained(args.hypermodel)
    start = time.perf_counter()
    adapter = hm.generate(examples, instruction=args.instruction)
    took = time.perf_counter() - start
    adapter.save_pretrained(args.out)
    print(
        f"Generated a {adapter.target} adapter from {len(examples)} examples in {took * 1000:.0f} ms "
        f"({adapter.nbytes / 1024:.1f} KiB); saved to {args.out}"
    )


def _collection(args):
    from .data.collections import get_collection

    opts = {k: v for k, v in (("path", args.path), ("max_examples", args.max_examples)) if v is not None}
    return get_collection(args.collection, **opts)


def _tasks_list(args) -> None:
    coll = _collection(args)
    train, held = coll.split()
    role = {n: "train" for n in train} | {n: "held-out" for n in held}
    names = coll.task_names()
    print(f"{'task':<58} {'examples':>8}  {'type':<8} {'split':<9} metrics")
    for n in names:
        info = coll.describe(n)
        kind = "choice" if info["multiple_choice"] else "generate"
        metrics = ",".join(info["metrics"])
        print(f"{n:<58} {info['examples']:>8}  {kind:<8} {role.get(n, 'reserved'):<9} {metrics}")
    print(
        f"{len(names)} tasks in {coll.name}: {len(train)} train, {len(held)} held-out, "
        f"{len(names) - len(train) - len(held)} reserved"
    )


def _tasks_show(args) -> None:
    from .data.collections import parse_task_id
    from .data.episodes import EpisodeSampler
    from .data.format import hyper_pieces, in_context_pieces

    args.collection, name = parse_task_id(args.task, args.collection)
    task = _collection(args).load(name)
    ep = EpisodeSampler([task], k=args.k, seed=args.seed).episode(0)
    print(f"{task!r}\n")
    print(f"-- hypermodel input ({len(ep.shots)} examples) --")
    print(" ".join(hyper_pieces(ep.pairs, ep.instruction)))
    print("\n-- downstream input --")
    print(ep.target.input)
    print("\n-- target --")
    print(ep.target.target)
    if ep.target.choices:
        print(
            f"(choices: {list(ep.target.choices)}; correct: {[ep.target.choices[a] for a in ep.target.answers]})"
        )
    elif len(ep.target.references) > 1:
        print(f"(references: {list(ep.target.references)})")
    if args.in_context:
        print("\n-- in-context prompt --")
        print(ep.separator.join(in_context_pieces(ep.pairs, ep.instruction, ep.target.input)))


def _load_adapter(path):
    from . import Adapter, load_downstream

    adapter = Adapter.from_pretrained(path)
    ds = load_downstream(adapter.spec.checkpoint)
    ds.check_compatible(adapter.spec, "adapter")
    return adapter, ds


def _score(args) -> None:
    from .data import read_jsonl

    adapter, ds = _load_adapter(args.adapter)
    rows = read_jsonl(args.inputs, required=("input",))
    for n, row in enumerate(rows, start=1):
        if "choices" not in row and "output" not in row:
            raise HypertuningError(f"{args.inputs}:{n}: needs 'output' or 'choices' to score")
    for row in rows:
        if "choices" in row:
            choices = [str(c) for c in row["choices"]]
            lp = ds.loglikelihood([row["input"]] * len(choices), choices, adapter=adapter).tolist()
            best = max(range(len(choices)), key=lp.__getitem__)
            print(
                json.dumps(
                    {
                        "input": row["input"],
                        "choice_logprobs": lp,
                        "prediction": choices[best],
                        "argmax": best,
                    }
                )
            )
        else:
            lp = ds.loglikelihood([row["input"]], [str(row["output"])], adapter=adapter).item()
            print(json.dumps({"input": row["input"], "output": row["output"], "logprob": lp}))


def _generate(args) -> None:
    from .data import read_jsonl

    adapter, ds = _load_adapter(args.adapter)
    rows = read_jsonl(args.inputs, required=("input",))
    outs = ds.generate([r["input"] for r in rows], adapter=adapter, max_new_tokens=args.max_new_tokens)
    for row, out in zip(rows, outs, strict=True):
        print(json.dumps({"input": row["input"], "generation": out}))


def _train(args) -> None:
    from .train import load_config, train

    cfg = load_config(args.config, args.overrides)
    for final in train(cfg, resume=args.resume):
        print(f"Saved {final}")


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hypertune", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("new", help="create an untrained hypermodel for a downstream model")
    s.add_argument(
        "--downstream",
        required=True,
        help="hub id, local directory, .gguf file or alias (smollm2-135m-instruct)",
    )
    s.add_argument("--target", choices=["lora", "prefix", "prefix-mlp"], default="lora")
    s.add_argument("--layers", type=int, default=None, help="keep only the first N blocks in the hypermodel")
    s.add_argument("--rank", type=int, default=None, help="LoRA rank")
    s.add_argument("--prefix-len", type=int, default=None, help="prefix length P")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_new)

    s = sub.add_parser("adapt", help="turn a JSONL file of examples into a PEFT adapter (one forward pass)")
    s.add_argument("--hypermodel", required=True)
    s.add_argument("--examples", required=True, help="JSONL with input and output per line")
    s.add_argument("--instruction", default=None)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_adapt)

    s = sub.add_parser("score", help="log-probability of each output (or each choice) under an adapter")
    s.add_argument("--adapter", required=True)
    s.add_argument("--inputs", required=True)
    s.set_defaults(func=_score)

    s = sub.add_parser("generate", help="greedy generation with an adapter")
    s.add_argument("--adapter", required=True)
    s.add_argument("--inputs", required=True)
    s.add_argument("--max-new-tokens", type=int, default=32)
    s.set_defaults(func=_generate)

    t = sub.add_parser("tasks", help="list task collections' tasks, or show one formatted episode")
    tsub = t.add_subparsers(dest="tasks_command", required=True)
    for name, helptext in (
        ("list", "list the tasks of a collection"),
        ("show", "print one formatted episode"),
    ):
        s = tsub.add_parser(name, help=helptext)
        s.add_argument("--collection", default="bigbench", help="bigbench, p3, sni, metaicl or local")
        s.add_argument("--path", default=None, help="where the collection's files are (local dumps)")
        s.add_argument("--max-examples", type=int, default=None, help="cap examples per task")
        if name == "list":
            s.set_defaults(func=_tasks_list)
        else:
            s.add_argument("task", help="COLLECTION:TASK, e.g. bigbench:gem/xsum")
            s.add_argument("--k", type=int, default=4, help="examples shown to the hypermodel")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--in-context", action="store_true", help="also print the in-context prompt")
            s.set_defaults(func=_tasks_show)

    s = sub.add_parser(
        "train",
        help="train a hypermodel or a baseline from a YAML config (see configs/)",
        description="Train from a YAML config; KEY=VALUE arguments override it (e.g. train.lr=1e-4). "
        "Several processes or GPUs: `accelerate launch -m hypertuning.cli train CONFIG ...`.",
    )
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    s.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    s.set_defaults(func=_train)

    s = sub.add_parser("demo", help="the whole idea in one command on the embedded SmolLM2-135M")
    s.add_argument("--downstream", default="smollm2-135m-instruct")
    s.add_argument("--target", choices=["lora", "prefix", "prefix-mlp"], default="prefix")
    s.add_argument("--layers", type=int, default=4)
    s.add_argument("--out", default="runs/demo")
    s.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HypertuningError as e:
        print(f"hypertune: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `hypertune tasks list | head`
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
