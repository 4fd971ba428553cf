"""`hypertune demo`: the idea end to end on the embedded SmolLM2-135M, in a couple of minutes on a CPU.

The hypermodel here is freshly created (training lands with the training issue), so its adapters are not
expected to help yet; the demo shows the mechanics and timings honestly.
"""

from __future__ import annotations

import time
from pathlib import Path

EXAMPLES = [
    {"input": "I loved this film, the acting was superb.", "output": "positive"},
    {"input": "A boring, predictable plot.", "output": "negative"},
    {"input": "What a wonderful surprise!", "output": "positive"},
    {"input": "The food was cold and the service slow.", "output": "negative"},
]
TESTS = [
    {"input": "An absolute delight from start to finish.", "choices": ["positive", "negative"], "label": 0},
    {"input": "I want my money back.", "choices": ["positive", "negative"], "label": 1},
]


def run_demo(args) -> None:
    from . import HyperModel, load_downstream

    t0 = time.perf_counter()
    ds = load_downstream(args.downstream)
    print(
        f"Loaded {ds.name} ({ds.family.name} family) in {time.perf_counter() - t0:.1f} s from {ds.spec.checkpoint}"
    )
    hm = HyperModel.create(ds, target=args.target, layers=args.layers)
    print(
        f"Created an untrained {args.target} hypermodel from the first {args.layers} blocks "
        f"({sum(p.numel() for p in hm.parameters()) / 1e6:.1f}M parameters)"
    )
    t0 = time.perf_counter()
    adapter = hm.generate(EXAMPLES)
    took = time.perf_counter() - t0
    out = Path(args.out) / "adapter"
    adapter.save_pretrained(out)
    print(
        f"Generated an adapter from {len(EXAMPLES)} examples in {took * 1000:.0f} ms "
        f"({adapter.nbytes / 1024:.0f} KiB), saved in PEFT format to {out}"
    )
    for name, a in (("zero-shot", None), ("hypertuned (untrained hypermodel)", adapter)):
        correct = 0
        for t in TESTS:
            lp = ds.loglikelihood([t["input"]] * len(t["choices"]), t["choices"], adapter=a)
            correct += int(lp.argmax()) == t["label"]
        print(f"  {name:36s} accuracy {correct}/{len(TESTS)}")
