"""What the service computes, without HTTP: adapters from examples, and scores and generations for rows that
each name their own adapter (or none, or bring their examples in context), batched across requests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass

from ..adapter import Adapter
from ..data.format import normalise_examples
from ..errors import HypertuningError
from ..eval.scoring import option_logprobs
from .batcher import Batcher
from .metrics import Metrics
from .store import AdapterStore


@dataclass
class Limits:
    """What one request may ask for; over a limit is a 413 (body size) or a 422 naming the limit."""

    max_request_bytes: int = 1 << 20  # a request body
    max_examples: int = 64  # examples per adapter (or per in-context row)
    max_text_chars: int = 8192  # any one input, output, choice or instruction
    max_rows: int = 64  # rows per /v1/score or /v1/generate request
    max_choices: int = 32  # options per scored row
    max_new_tokens: int = 256  # generation length
    max_stop_strings: int = 8  # stop strings per generation request
    max_stop_chars: int = 64  # characters per stop string (transformers' stop-string table grows with both)


@dataclass
class Row:
    """One input to score or continue, already tokenised."""

    context: list[int]
    adapter: Adapter | None = None
    choices: list[str] | None = None  # scoring: options to rank (or one output to score)
    truncated: bool = False
    choice_ids: list[list[int]] | None = None  # the options tokenised (by the request, which validates them)


class Engine:
    """The hypermodel, the frozen downstream model, the adapter store and the batcher that feeds them."""

    def __init__(
        self,
        hypermodel,
        downstream,
        store: AdapterStore,
        max_batch: int = 32,
        wait_ms: float = 5.0,
        forward_batch: int | None = None,
    ):
        downstream.check_compatible(hypermodel.spec, "hypermodel")
        self.hypermodel, self.downstream, self.store = hypermodel, downstream, store
        self.hypermodel_id = hypermodel.fingerprint()
        if (store.hypermodel, store.downstream) != (self.hypermodel_id, downstream.spec.fingerprint):
            raise HypertuningError("The adapter store was opened for another hypermodel or downstream model")
        self.forward_batch = forward_batch or max_batch  # sequences per forward pass (a scored option is one)
        self.metrics = Metrics(store)
        self.batcher = Batcher(self._run, max_batch=max_batch, wait_ms=wait_ms, observe=self.metrics.batch)

    # -- called by request handlers (any thread) -----------------------------------------------------
    def encode(self, text: str, examples=None, instruction: str | None = None) -> tuple[list[int], bool]:
        """A row's downstream context: the input alone, or an in-context prompt with `examples` before it;
        whether it was cut to fit (input truncated or in-context examples dropped)."""
        stats: Counter = Counter()
        if examples:
            pairs = normalise_examples(examples)
            ids = self.downstream.encode_in_context(pairs, instruction, text, stats=stats)
        else:
            ids = self.downstream.encode_inputs([text], stats=stats)[0]
        return ids, any(stats.values())

    def submit_create(self, examples, instruction: str | None):
        return self.batcher.submit(("create",), [(examples, instruction)])[0]

    def submit_score(self, rows: list[Row], normalisation: str):
        return self.batcher.submit(("score", normalisation), rows)

    def submit_generate(self, rows: list[Row], max_new_tokens: int, stop: tuple[str, ...]):
        return self.batcher.submit(("generate", max_new_tokens, stop), rows)

    # -- the worker thread ---------------------------------------------------------------------------
    def _run(self, group: Hashable, payloads: list) -> list:
        op = group[0]
        if op == "create":
            tasks = [p[0] for p in payloads]
            stats = [Counter() for _ in payloads]
            adapters = self.hypermodel.generate_batch(tasks, [p[1] for p in payloads], stats)
            return [(a, len(t) - s["hyper_dropped"]) for a, t, s in zip(adapters, tasks, stats, strict=True)]
        rows: list[Row] = payloads
        adapters = [r.adapter for r in rows]
        if op == "score":
            return option_logprobs(
                self.downstream,
                [r.context for r in rows],
                [r.choices for r in rows],
                adapters,
                normalisation=group[1],
                batch_size=self.forward_batch,
                choice_ids=[r.choice_ids for r in rows],
            )
        _, max_new_tokens, stop = group
        return self.downstream.generate_ids(
            [r.context for r in rows],
            adapters,
            max_new_tokens=max_new_tokens,
            batch_size=self.forward_batch,
            stop=stop,
        )
