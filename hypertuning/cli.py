"""`hypertune`: a thin command line over the Python API."""

from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from .errors import HypertuningError


def _new(args) -> None:
    from . import HyperModel, load_downstream

    if args.keep is not None and args.readout != "select":
        raise HypertuningError("--keep belongs to --readout select")
    ds = load_downstream(args.downstream)
    opts = {}
    if args.rank is not None:
        opts["rank"] = args.rank
    if args.prefix_len is not None:
        opts["prefix_len"] = args.prefix_len
    if args.readout in ("kv", "select"):
        if args.target != "prefix" or opts or args.layers:
            raise HypertuningError(
                f"--readout {args.readout} generates prefixes from the downstream model itself: use "
                "--target prefix and --slots / --readout-lora-rank, not --rank, --prefix-len or --layers"
            )
        ropts = {"lora_rank": args.readout_lora_rank or 0}
        if args.slots is not None:
            ropts["slots"] = args.slots
        if args.keep is not None:
            ropts["keep"] = args.keep
        hm = HyperModel.create(ds, target="prefix", readout=args.readout, readout_options=ropts)
    elif args.readout == "outer":
        if args.target != "lora" or args.prefix_len or args.layers or args.slots or args.readout_lora_rank:
            raise HypertuningError(
                "--readout outer generates LoRA from the downstream model itself: use --target lora and "
                "--rank, not --prefix-len, --layers, --slots or --readout-lora-rank"
            )
        ropts = {"rank": args.rank} if args.rank is not None else {}
        hm = HyperModel.create(ds, target="lora", readout="outer", readout_options=ropts)
    else:
        if args.slots is not None or args.readout_lora_rank is not None:
            raise HypertuningError("--slots and --readout-lora-rank belong to --readout kv or select")
        hm = HyperModel.create(ds, target=args.target, layers=args.layers, **opts)
    _save_dir(args, hm.save_pretrained)
    n = sum(p.numel() for p in hm.parameters())
    print(
        f"Saved a new {args.target} hypermodel ({args.readout} readout, {n / 1e6:.2f}M trainable "
        f"parameters) for {ds.name} to {args.out}"
    )


def _out_dir(args) -> Path:
    """The rule for every command that writes a directory (--out): never into a file, refuse an existing
    directory unless --overwrite (which replaces it whole, once the new one is complete), and say so before
    any work when its parent cannot be written."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise HypertuningError(f"--out {out} is a file; give a directory to write")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise HypertuningError(f"--out {out} already exists; pass --overwrite to replace it")
    parent = next(p for p in out.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise HypertuningError(f"--out {out}: cannot write in {parent}")
    return out


def _save_dir(args, save) -> Path:
    """`save(directory)` into --out, atomically (see `_out_dir`)."""
    from ._io import atomic_dir

    return atomic_dir(_out_dir(args), save, replace=args.overwrite)


def _adapt(args) -> None:
    from . import HyperModel
    from .data import read_examples
    from .data.format import dropped_examples

    _out_dir(args)  # before loading anything
    examples = read_examples(args.examples)
    hm = HyperModel.from_pretrained(args.hypermodel)
    stats = Counter()
    start = time.perf_counter()
    adapter = hm.generate(examples, instruction=args.instruction, stats=stats)
    took = time.perf_counter() - start
    _save_dir(args, adapter.save_pretrained)
    used = len(examples) - dropped_examples(stats)
    print(
        f"Generated a {adapter.target} adapter from {used} of {len(examples)} examples in "
        f"{took * 1000:.0f} ms ({adapter.nbytes / 1024:.1f} KiB); saved to {args.out}"
    )


def _collection(args):
    from .data.collections import get_collection

    given = (
        ("path", args.path),
        ("max_examples", args.max_examples),
        ("remap", getattr(args, "remap", None)),
    )
    opts = {k: v for k, v in given if v is not None}
    return get_collection(args.collection, **opts)


def _tasks_list(args) -> None:
    coll = _collection(args)
    train, held = coll.split()
    # a remap= view: the split's tasks without a fixed label set (a copy: describing reserved ones adds more)
    skipped = dict(getattr(coll, "skipped", {}))
    role = {n: "train" for n in train} | {n: "held-out" for n in held} | dict.fromkeys(skipped, "skipped")
    names = coll.task_names()
    print(f"{'task':<58} {'examples':>8}  {'type':<8} {'split':<9} {'chance':>6}  metrics / notes")
    for n in names:
        if n in skipped:
            print(f"{n:<58} {'':>8}  {'':<8} {'skipped':<9} {'':>6}  {skipped[n]}")
            continue
        info = coll.describe(n)
        kind = "choice" if info["multiple_choice"] else "generate"
        chance = info.get("chance")
        notes = ",".join(info["metrics"])
        if "family" in info:
            notes += f"  [{info['family']}] {info['about']}"
        if "label_map" in info:
            notes += "  " + ", ".join(f"{a}->{b}" for a, b in info["label_map"].items())
        shown = "" if chance is None else f"{chance:.1f}"
        print(f"{n:<58} {info['examples']:>8}  {kind:<8} {role.get(n, 'reserved'):<9} {shown:>6}  {notes}")
    print(
        f"{len(names)} tasks in {coll.name}: {len(train)} train, {len(held)} held-out, "
        f"{len(names) - len(train) - len(held) - len(skipped)} reserved"
        + (f", {len(skipped)} skipped (no fixed label set to remap)" if skipped else "")
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
    from .adapter import plain_peft_base

    base = plain_peft_base(path)
    if base is not None:  # a plain PEFT adapter made elsewhere: checked against the model it names
        ds = load_downstream(base)
        return Adapter.from_pretrained(path, downstream=ds), ds
    adapter = Adapter.from_pretrained(path)
    ds = load_downstream(adapter.spec.checkpoint)
    ds.check_compatible(adapter.spec, "adapter")
    return adapter, ds


def _score(args) -> None:
    from .data import read_records

    rows = read_records(args.inputs, "score")  # checked before the model loads
    adapter, ds = _load_adapter(args.adapter)
    for row in rows:
        if row.choices:
            choices = list(row.choices)
            lp = ds.loglikelihood([row.input] * len(choices), choices, adapter=adapter).tolist()
            best = max(range(len(choices)), key=lp.__getitem__)
            out = {"input": row.input, "choice_logprobs": lp, "prediction": choices[best], "argmax": best}
            if row.answers:
                out["correct"] = best in row.answers
            print(json.dumps(out))
        else:
            for output in row.outputs:  # one line per reference
                lp = ds.loglikelihood([row.input], [output], adapter=adapter).item()
                print(json.dumps({"input": row.input, "output": output, "logprob": lp}))


def _generate(args) -> None:
    from .data import read_records

    rows = read_records(args.inputs, "generate")
    adapter, ds = _load_adapter(args.adapter)
    limit = ds.context_length
    if limit is not None and args.max_new_tokens > limit:
        raise HypertuningError(
            f"--max-new-tokens {args.max_new_tokens} is more than {ds.name} can attend to ({limit} tokens)"
        )
    outs = ds.generate([r.input for r in rows], adapter=adapter, max_new_tokens=args.max_new_tokens)
    for row, out in zip(rows, outs, strict=True):
        print(json.dumps({"input": row.input, "generation": out}))


def _train(args) -> None:
    import os

    from .train import load_config, train

    cfg = load_config(args.config, args.overrides)
    finals = train(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the run, not one per rank
        for final in finals:
            print(f"Saved {final}")


def _eval(args) -> None:
    from .data.collections import parse_task_id
    from .data.remap import SkipTask
    from .eval import EvalSettings, Models, build_methods, evaluate
    from .eval.runner import format_results

    limits = {
        "max_input_tokens": args.max_input_tokens,
        "max_target_tokens": args.max_target_tokens,
        "max_in_context_tokens": args.max_in_context_tokens,
    }
    models = Models(args.downstream, device=args.device, dtype=args.dtype, limits=limits)
    methods = build_methods(args.method, models)
    if models.base_name is None:  # zero-shot and in-context run on the model the others were built for
        named = [m.downstream().name for m in methods if m.kind in ("hyper", "peft")]
        models.base_name = named[0] if named else "smollm2-135m-instruct"
    coll = _collection(args)
    # a remap= view's own split would first load every training task to find the remappable ones
    names = args.tasks or getattr(coll, "inner", coll).split()[1]
    tasks, skipped = [], {}
    for n in names:
        c, name = parse_task_id(n, coll.name)
        if c != coll.name:
            raise HypertuningError(f"task {n!r} is not in collection {coll.name!r} (--collection)")
        try:
            tasks.append(coll.load(name))
        except SkipTask as e:
            skipped[f"{coll.name}:{name}"] = str(e)
    if not tasks:
        raise HypertuningError(f"no task to evaluate: {len(skipped)} skipped (see --remap)")
    settings = EvalSettings(
        k=args.k,
        seeds=args.seeds,
        max_examples=args.max_examples_eval,
        pool_size=args.pool_size,
        normalisation=args.normalisation,
        batch_size=args.batch_size,
        dependence=args.dependence,
        shots=args.shots,
    )
    results = evaluate(methods, tasks, settings, args.out, progress=not args.quiet, skipped=skipped)
    print(format_results(results, group=not args.no_group))
    for task, why in results.skipped.items():
        print(f"skipped {task}: {why}")
    if args.out:
        print(f"results in {args.out}/results.json, results.csv, records.jsonl")


def _report(args) -> None:
    from .eval.report import report

    print(report(args.dirs, args.out))


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(args)


def _serve(args) -> None:
    import ipaddress
    import os

    try:
        import uvicorn

        from .serve import Limits, create_app, open_engine
    except ImportError as e:
        raise HypertuningError(f"`hypertune serve` needs `pip install 'hypertuning[serve]'` ({e})") from None
    token = args.token or os.environ.get("HYPERTUNE_TOKEN")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and not token:
        print(
            f"hypertune: warning: serving on {args.host} without a token: anyone who can reach port "
            f"{args.port} can create adapters and run the model. Set --token or HYPERTUNE_TOKEN.",
            file=sys.stderr,
        )
    engine = open_engine(
        args.hypermodel,
        downstream=args.downstream,
        store=args.store,
        device=args.device,
        dtype=args.dtype,
        cache_size=args.cache_size,
        cache_bytes=None if args.cache_mb is None else int(args.cache_mb * 2**20),
        max_batch=args.max_batch,
        wait_ms=args.batch_wait_ms,
    )
    limits = Limits(**{f: getattr(args, f) for f in Limits.__dataclass_fields__})
    app = create_app(engine, limits, token=token)
    print(
        f"Serving hypermodel {engine.hypermodel_id} for {engine.downstream.name}; adapters in "
        f"{engine.store.root} ({engine.store.count()} stored). "
        + (
            f"Docs at http://{args.host}:{args.port}/docs"
            if token is None
            else f"Schema at http://{args.host}:{args.port}/openapi.json (with the token)"
        ),
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


def _client(args):
    from .client import Client

    return Client(args.url, args.token)


def _adapters(args) -> None:
    from .data import Record, read_examples, read_jsonl

    c = _client(args)
    cmd = args.adapters_command
    if cmd == "create":
        examples = [{"input": e.input, "output": e.target} for e in read_examples(args.examples)]
        print(json.dumps(c.create_adapter(examples, args.instruction, args.name)))
    elif cmd == "list":
        rows = c.list_adapters(limit=10000)
        print(f"{'id':<24} {'name':<24} {'created':<19} {'bytes':>10} {'examples':>8}  usable")
        for r in rows:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
            name = (r["name"] or "")[:24]
            print(
                f"{r['id']:<24} {name:<24} {created:<19} {r['bytes']:>10} "
                f"{r['examples_used']:>3}/{r['examples']:<4}  {'yes' if r['compatible'] else 'no'}"
            )
        print(f"{len(rows)} adapters")
    elif cmd == "show":
        print(json.dumps(c.get_adapter(args.id), indent=2))
    elif cmd == "download":
        _out_dir(args)
        print(f"Saved {c.download_peft(args.id, args.out, overwrite=args.overwrite)}")
    elif cmd == "delete":
        c.delete_adapter(args.id)
        print(f"Deleted {args.id}")
    else:  # score / generate: one JSON line in, one out, sent in requests of 32 rows
        rows = []
        for n, raw in read_jsonl(args.inputs, with_lines=True):  # checked here: FILE:LINE, not a 422
            rec = Record.parse(raw, f"{args.inputs}:{n}")
            row = {k: raw[k] for k in ("adapter", "examples", "instruction") if k in raw}
            row["input"] = rec.input
            if "examples" not in row:
                row.setdefault("adapter", args.adapter)
            if cmd == "generate":
                rows.append(row)
            elif rec.choices:
                rows.append({**row, "choices": list(rec.choices)})
            elif rec.outputs:
                rows += [{**row, "output": o} for o in rec.outputs]  # one row per reference
            else:
                raise HypertuningError(f"{args.inputs}:{n}: needs 'output' or 'choices' to score")
        stop = [codecs.decode(s, "unicode_escape") for s in args.stop] if cmd == "generate" else None
        for s in range(0, len(rows), 32):
            chunk = rows[s : s + 32]
            if cmd == "score":
                results = c.score(chunk, args.normalisation)
            else:
                results = [{"text": t} for t in c.generate(chunk, args.max_new_tokens, stop)]
            for row, res in zip(chunk, results, strict=True):
                print(json.dumps({"input": row["input"], **res}), flush=True)


REMAP_HELP = (
    "replace the labels of tasks with a fixed label set by made-up symbols drawn with this seed "
    "(a must-read view; other tasks are skipped)"
)


def out_args(s) -> None:
    s.add_argument("--out", required=True, help="the directory to write")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


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
    s.add_argument(
        "--readout",
        choices=["heads", "kv", "outer", "select"],
        default="heads",
        help="heads: the paper's; kv: the downstream model's own keys/values at learned slots (prefix); "
        "outer: LoRA from outer products of the downstream model's states on the examples; select: the "
        "downstream model's own keys/values where each example ends (prefix; nothing to train)",
    )
    s.add_argument("--slots", type=int, default=None, help="kv, select readouts: the prefix length")
    s.add_argument("--keep", type=int, default=None, help="select readout: tokens kept before each separator")
    s.add_argument("--readout-lora-rank", type=int, default=None, help="kv, select: LoRA on the reading pass")
    out_args(s)
    s.set_defaults(func=_new)

    s = sub.add_parser("adapt", help="turn a JSONL file of examples into a PEFT adapter (one forward pass)")
    s.add_argument("--hypermodel", required=True)
    s.add_argument("--examples", required=True, help="JSONL with input and output per line")
    s.add_argument("--instruction", default=None)
    out_args(s)
    s.set_defaults(func=_adapt)

    s = sub.add_parser("score", help="log-probability of each output (or each choice) under an adapter")
    s.add_argument("--adapter", required=True)
    s.add_argument("--inputs", required=True)
    s.set_defaults(func=_score)

    s = sub.add_parser("generate", help="greedy generation with an adapter")
    s.add_argument("--adapter", required=True)
    s.add_argument("--inputs", required=True)
    s.add_argument("--max-new-tokens", type=positive_int, default=32)
    s.set_defaults(func=_generate)

    t = sub.add_parser("tasks", help="list task collections' tasks, or show one formatted episode")
    tsub = t.add_subparsers(dest="tasks_command", required=True)
    for name, helptext in (
        ("list", "list the tasks of a collection"),
        ("show", "print one formatted episode"),
    ):
        s = tsub.add_parser(name, help=helptext)
        s.add_argument(
            "--collection", default="bigbench", help="bigbench, mustread, p3, sni, metaicl or local"
        )
        s.add_argument("--path", default=None, help="where the collection's files are (local dumps)")
        s.add_argument("--max-examples", type=int, default=None, help="cap examples per task")
        s.add_argument("--remap", type=int, default=None, metavar="SEED", help=REMAP_HELP)
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

    s = sub.add_parser(
        "eval",
        help="score methods on held-out tasks: a table shaped like the paper's Tables 1-3",
        description="Each --method is [LABEL:]KIND[=PATH]; kinds: zero-shot, in-context, mtf=DIR, "
        "mtf-fewshot=DIR, peft=ADAPTER_DIR, hyper=HYPERMODEL_DIR. Results are appended to --out as they "
        "finish; running the same command again continues an interrupted evaluation.",
    )
    s.add_argument("--method", "-m", action="append", required=True, metavar="[LABEL:]KIND[=PATH]")
    s.add_argument(
        "--downstream", default=None, help="model for zero-shot/in-context (default: the hypermodel's)"
    )
    s.add_argument("--collection", default="bigbench", help="bigbench, mustread, p3, sni, metaicl or local")
    s.add_argument("--path", default=None, help="where the collection's files are (local dumps)")
    s.add_argument("--remap", type=int, default=None, metavar="SEED", help=REMAP_HELP)
    s.add_argument(
        "--dependence",
        choices=["auto", "all", "off"],
        default="auto",
        help="how much answers change with the examples (extra passes): auto = on must-read tasks "
        "(mustread, --remap), all, off",
    )
    s.add_argument(
        "--tasks", nargs="+", default=None, help="task names (default: the held-out list, BIG-bench Lite)"
    )
    s.add_argument(
        "--k", type=int, default=16, help="examples per task shown to in-context and hypertuned methods"
    )
    s.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="few-shot seeds (which K examples)"
    )
    s.add_argument(
        "--max-examples", dest="max_examples_eval", type=int, default=100, help="evaluated examples per task"
    )
    s.add_argument("--pool-size", type=int, default=64, help="few-shot pool per task; the rest is evaluated")
    s.add_argument(
        "--shots",
        choices=["sample", "demonstrations"],
        default="sample",
        help="sample: K examples from each task's pool per seed; demonstrations: the task's fixed ones "
        "(S-NI's Def+2Pos)",
    )
    s.add_argument(
        "--normalisation",
        choices=["none", "token", "char"],
        default="none",
        help="option log-likelihood normalisation (none = T0's summed log-likelihood)",
    )
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--max-input-tokens", type=int, default=None)
    s.add_argument("--max-target-tokens", type=int, default=None)
    s.add_argument("--max-in-context-tokens", type=int, default=None)
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1...")
    s.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    s.add_argument("--no-group", action="store_true", help="one column per subtask instead of per task")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--out", default=None, help="directory for results.json, results.csv, records.jsonl")
    s.set_defaults(func=_eval, max_examples=None)

    s = sub.add_parser("report", help="join evaluations into one table; plot Figures 4-5 and loss curves")
    s.add_argument("dirs", nargs="+", help="evaluation --out directories and training run directories")
    s.add_argument("--out", default=None, help="write table.csv and PNG figures here")
    s.set_defaults(func=_report)

    s = sub.add_parser(
        "demo",
        help="the whole idea in one command: train a small hypermodel for SmolLM2-135M, adapt, compare",
    )
    s.add_argument("--downstream", default="smollm2-135m-instruct")
    s.add_argument("--device", default=None, help="cpu (default) or cuda: a larger configuration")
    s.add_argument("--hypermodel", default=None, help="use this trained hypermodel instead of training one")
    s.add_argument(
        "--steps", type=int, default=None, help="training steps (default: 100 on CPU, 2000 on GPU)"
    )
    s.add_argument(
        "--collection", default="bigbench", help="task collection to train on and score (default: bigbench)"
    )
    s.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="held-out tasks to score (default: 5 short BIG-bench Lite tasks)",
    )
    s.add_argument("--out", default="runs/demo")
    s.set_defaults(func=_demo)

    s = sub.add_parser(
        "serve",
        help="an HTTP service: examples in, a stored adapter out; many adapters served in one batch",
        description="Serve a hypermodel (FastAPI + uvicorn; OpenAPI docs at /docs). Listens on loopback "
        "unless --host says otherwise; --token (or HYPERTUNE_TOKEN) requires `Authorization: Bearer`.",
    )
    s.add_argument("--hypermodel", required=True, help="a trained hypermodel directory")
    s.add_argument("--downstream", default=None, help="its downstream model (default: the one it names)")
    s.add_argument("--store", default=None, help="adapter store directory (default: <cache>/adapters)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token", default=None, help="bearer token required on every call but /health")
    s.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1...")
    s.add_argument("--dtype", default=None, help="downstream dtype: float32 (default), bfloat16, float16")
    s.add_argument("--max-batch", type=int, default=32, help="rows per dynamically gathered batch")
    s.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for more rows")
    s.add_argument("--cache-size", type=int, default=256, help="adapters whose phi stays on the device")
    s.add_argument(
        "--cache-mb",
        type=float,
        default=None,
        help="and at most this many MiB of their phi (adapters differ in size; default: no bound)",
    )
    from .serve import Limits

    for f in Limits.__dataclass_fields__.values():
        s.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default)
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=_serve)

    a = sub.add_parser("adapters", help="talk to a running `hypertune serve`: create, list, download...")
    asub = a.add_subparsers(dest="adapters_command", required=True)

    def client_parser(name, helptext):
        s = asub.add_parser(name, help=helptext)
        s.add_argument("--url", default=None, help="service URL (default: $HYPERTUNE_URL or 127.0.0.1:8000)")
        s.add_argument("--token", default=None, help="bearer token (default: $HYPERTUNE_TOKEN)")
        s.set_defaults(func=_adapters)
        return s

    s = client_parser("create", "generate and store an adapter from a JSONL file of examples")
    s.add_argument("--examples", required=True, help="JSONL with input and output per line")
    s.add_argument("--instruction", default=None)
    s.add_argument("--name", default=None)
    client_parser("list", "list stored adapters")
    for name, helptext in (("show", "one adapter's metadata"), ("delete", "delete an adapter")):
        client_parser(name, helptext).add_argument("id")
    s = client_parser("download", "save an adapter as a PEFT directory")
    s.add_argument("id")
    out_args(s)
    for name, helptext in (
        ("score", "log-probabilities of each line's choices or output"),
        ("generate", "greedy continuations"),
    ):
        s = client_parser(name, helptext)
        s.add_argument("--inputs", required=True, help="JSONL: input (+ choices/output, adapter) per line")
        s.add_argument("--adapter", default=None, help="adapter id for lines that do not name one")
        if name == "score":
            s.add_argument("--normalisation", choices=["none", "token", "char"], default="none")
        else:
            s.add_argument(
                "--max-new-tokens", type=positive_int, default=None, help="default: the server's (32)"
            )
            s.add_argument("--stop", nargs="*", default=["\\n"], help="stop strings (default: \\n)")
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
