"""Dynamic batching: rows from concurrent requests are gathered for a short window and run together.

One worker thread owns the models (PyTorch inference is blocking, and one thread at a time keeps memory
bounded). Request handlers submit rows and await their futures; the worker takes the first waiting row,
gathers more for up to `wait_ms` or until `max_batch` rows, groups them by what must agree within a forward
pass (the operation and its options, e.g. generation length) and runs each group as one batch, in which
every row carries its own adapter. We write this by hand because serving libraries that batch (TGI, vLLM,
Triton) batch requests for one model, not rows that each bring their own generated parameters.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class _Job:
    group: Hashable  # rows of equal group run in one batch
    payload: Any
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


def _settle(job: _Job, result=None, error: BaseException | None = None) -> None:
    """Resolve a job's future once; a future already resolved (or cancelled) is left as it is."""
    if job.future.done():
        return
    try:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
    except InvalidStateError:
        pass


class Batcher:
    """`run(group, payloads) -> results` (one result per payload) is called from the worker thread;
    `observe(group, rows, seconds, waited)` after every batch (for metrics)."""

    def __init__(
        self,
        run: Callable[[Hashable, list], list],
        max_batch: int = 32,
        wait_ms: float = 5.0,
        observe: Callable[[Hashable, int, float, float], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run, self.max_batch, self.wait = run, max_batch, wait_ms / 1000
        self.observe = observe
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="hypertuning-batcher", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join(timeout=60)
            self._thread = None

    def submit(self, group: Hashable, payloads: list) -> list[Future]:
        self.start()
        jobs = [_Job(group, p) for p in payloads]
        for j in jobs:
            self._queue.put(j)
        return [j.future for j in jobs]

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, deadline = [first], time.perf_counter() + self.wait
        while len(jobs) < self.max_batch:
            left = deadline - time.perf_counter()
            try:  # rows already queued are taken even once the window has passed
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _one_by_one(self, group, members: list[_Job], error: Exception) -> None:
        """A failed batch is retried row by row, so that one bad row fails only its own request (the
        handlers turn the exception into an HTTP error)."""
        if len(members) == 1:
            _settle(members[0], error=error)
            return
        for j in members:
            try:
                _settle(j, self.run(group, [j.payload])[0])
            except Exception as e:
                _settle(j, error=e)

    def _run_group(self, group, members: list[_Job]) -> None:
        start = time.perf_counter()
        waited = start - min(j.queued for j in members)
        try:
            results = self.run(group, [j.payload for j in members])
            if len(results) != len(members):
                raise RuntimeError(f"{len(results)} results for {len(members)} rows")
        except Exception as e:
            log.debug("batch %r failed", group, exc_info=True)
            self._one_by_one(group, members, e)
            return
        for j, r in zip(members, results, strict=True):
            _settle(j, r)
        if self.observe is not None:
            self.observe(group, len(members), time.perf_counter() - start, waited)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            jobs, stopping = self._gather(first)
            # a caller that went away (cancelled its future) gets no compute
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            groups: dict[Hashable, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(j.group, []).append(j)
            for group, members in groups.items():
                try:
                    self._run_group(group, members)
                except BaseException as e:  # never die with futures unresolved: callers would wait forever
                    log.exception("batch %r could not be delivered", group)
                    for j in members:
                        _settle(j, error=e)
        # fail whatever is still queued rather than leave callers waiting forever
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                _settle(job, error=RuntimeError("the server is shutting down"))
