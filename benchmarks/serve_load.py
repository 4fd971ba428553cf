"""Load test of `hypertune serve` on 127.0.0.1: the same rank-classification traffic for several held-out
BIG-bench tasks served three ways, side by side against one live server:

- adapters:   each row names its task's generated adapter (rows of different tasks share forward passes);
- in-context: each row carries its task's K examples, written before the input (the base model);
- base:       the bare base model, no task information (a lower bound on cost).

For each concurrency level and way, `--requests` requests (one row each, tasks round-robin) are sent by
that many client threads, bounded by `--max-seconds`; reported: requests/s, p50 and p99 latency, and the
mean rows per model batch (from the server's /metrics). Adapter creation latency (POST /v1/adapters with
K examples) is reported too.

    python benchmarks/serve_load.py [--hypermodel runs/demo/hypermodel/final] [--concurrency 1 8]
        [--requests 48] [--k 16]

Without a trained hypermodel it creates an untrained one of the demo's size: serving cost does not depend
on what the hypermodel learned, only on its size and the adapters' shape.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hypertuning.demo import CPU_TASKS

MODES = ("adapters", "in-context", "base")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch_rows(client) -> tuple[float, float]:
    """(sum, count) of the server's rows-per-batch histogram for scoring."""
    text = client.http.get(client.url + "/metrics", headers=client.headers).text
    total = count = 0.0
    for line in text.splitlines():
        if m := re.match(r'hypertuning_batch_rows_(sum|count)\{op="score"\} (\S+)', line):
            total, count = (float(m.group(2)), count) if m.group(1) == "sum" else (total, float(m.group(2)))
    return total, count


def _run(url, rows, concurrency: int, max_seconds: float):
    from hypertuning.client import Client

    latencies: list[float] = []
    lock, nxt = threading.Lock(), iter(range(len(rows)))
    deadline = time.perf_counter() + max_seconds

    def worker():
        with Client(url) as c:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                c.score([rows[i]])
                with lock:
                    latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hypermodel", default="runs/demo/hypermodel/final")
    ap.add_argument("--tasks", nargs="+", default=CPU_TASKS)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--requests", type=int, default=48, help="requests per way and concurrency level")
    ap.add_argument("--max-seconds", type=float, default=150, help="bound on each way and level")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--batch-wait-ms", type=float, default=5)
    args = ap.parse_args()

    from hypertuning.client import Client
    from hypertuning.data.collections import get_collection
    from hypertuning.data.episodes import heldout_shots

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    hyper = Path(args.hypermodel)
    trained = (hyper / "hypermodel_config.json").is_file()
    if not trained:
        from _common import demo_sized_hypermodel

        from hypertuning import load_downstream

        ds = load_downstream("smollm2-135m-instruct")
        hyper = demo_sized_hypermodel(ds).save_pretrained(work / "hypermodel")
        del ds
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "hypertuning.cli", "serve", "--hypermodel", str(hyper), "--store",
        str(work / "store"), "--port", str(port), "--max-batch", str(args.max_batch), "--batch-wait-ms",
        str(args.batch_wait_ms), "--max-text-chars", "100000", "--max-request-bytes", str(8 << 20),
        "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(cmd, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    try:
        client = Client(url)
        for _ in range(600):
            try:
                client.health()
                break
            except Exception:
                if server.poll() is not None:
                    raise SystemExit("the server exited") from None
                time.sleep(0.5)
        bigbench = get_collection("bigbench")
        tasks = []
        for name in args.tasks:
            task = bigbench.load(name)
            shots, evaluation = heldout_shots(task, args.k, seed=0, up_to=True)
            tasks.append((name, task, shots, evaluation.examples))
        print(
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; hypermodel "
            f"{'trained: ' + str(hyper) if trained else 'untrained (demo size: 4 layers, LoRA rank 8)'}; "
            f"K={args.k}; tasks: {', '.join(args.tasks)}",
            flush=True,
        )

        create_ms, ids, used = [], {}, []
        for name, task, shots, _ in tasks:
            ex = [{"input": s.input, "output": s.target} for s in shots]
            t0 = time.perf_counter()
            info = client.create_adapter(ex, task.instruction, name=name)
            create_ms.append((time.perf_counter() - t0) * 1000)
            ids[name] = info["id"]
            used.append(f"{info['examples_used']}/{info['examples']}")
        print(
            f"adapter creation (HTTP round trip): median {statistics.median(create_ms):.0f} ms over "
            f"{len(create_ms)} tasks; {info['bytes'] / 1e6:.2f} MB of phi each; "
            f"examples within the hypermodel's budget: {', '.join(used)}",
            flush=True,
        )

        def rows_for(mode: str) -> list[dict]:
            rows = []
            for i in range(args.requests):
                name, task, shots, examples = tasks[i % len(tasks)]
                e = examples[(i // len(tasks)) % len(examples)]
                row = {"input": e.input, "choices": list(e.choices)}
                if mode == "adapters":
                    row["adapter"] = ids[name]
                elif mode == "in-context":
                    row["examples"] = [{"input": s.input, "output": s.target} for s in shots]
                    row["instruction"] = task.instruction
                rows.append(row)
            return rows

        print("\n| concurrency | way | requests | req/s | p50 (s) | p99 (s) | rows per batch | vs adapters |")
        print("|---|---|---|---|---|---|---|---|")
        for conc in args.concurrency:
            baseline = None
            for mode in MODES:
                rows = rows_for(mode)
                client.score(rows[:1])  # warm-up (and the adapter's phi into the cache)
                s0, n0 = _batch_rows(client)
                lat, wall = _run(url, rows, conc, args.max_seconds)
                s1, n1 = _batch_rows(client)
                rps = len(lat) / wall
                baseline = baseline or rps
                print(
                    f"| {conc} | {mode} | {len(lat)} | {rps:.2f} | {statistics.median(lat):.2f} | "
                    f"{_pct(lat, 0.99):.2f} | {(s1 - s0) / max(n1 - n0, 1):.1f} | {rps / baseline:.2f}x |",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
