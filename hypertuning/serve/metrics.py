"""Prometheus counters for the service (`prometheus_client`, one registry per app so tests stay apart)."""

from __future__ import annotations

_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, store=None):
        # imported here so that `hypertune` works without the serve extra installed
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "hypertuning_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "hypertuning_request_seconds", "HTTP request latency", ["route"], buckets=_SECONDS, registry=r
        )
        self.batch_rows = Histogram(
            "hypertuning_batch_rows", "Rows per model batch", ["op"], buckets=_ROWS, registry=r
        )
        self.batch_seconds = Histogram(
            "hypertuning_batch_seconds", "Model time per batch", ["op"], buckets=_SECONDS, registry=r
        )
        self.queue_seconds = Histogram(
            "hypertuning_queue_seconds", "Wait of a batch's oldest row", ["op"], buckets=_SECONDS, registry=r
        )
        self.adapters_created = Counter("hypertuning_adapters_created", "Adapters generated", registry=r)
        if store is not None:
            Gauge("hypertuning_adapters_stored", "Adapters in the store", registry=r).set_function(
                store.count
            )
            hits = Gauge("hypertuning_phi_cache_hits", "phi LRU hits since start", registry=r)
            hits.set_function(lambda: store.hits)
            misses = Gauge("hypertuning_phi_cache_misses", "phi LRU misses (read from disk)", registry=r)
            misses.set_function(lambda: store.misses)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, group, rows: int, seconds: float, waited: float) -> None:
        op = group[0]
        self.batch_rows.labels(op).observe(rows)
        self.batch_seconds.labels(op).observe(seconds)
        self.queue_seconds.labels(op).observe(waited)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
