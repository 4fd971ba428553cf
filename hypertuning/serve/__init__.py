"""The adapter service: `hypertune serve` (FastAPI + uvicorn). Needs `pip install 'hypertuning[serve]'`."""

from __future__ import annotations

from pathlib import Path

from .._io import cache_dir
from .engine import Engine, Limits, Row
from .store import AdapterMismatch, AdapterNotFound, AdapterStore


def open_engine(
    hypermodel,
    downstream=None,
    store=None,
    device: str | None = None,
    dtype=None,
    cache_size: int = 256,
    cache_bytes: int | None = None,
    max_batch: int = 32,
    wait_ms: float = 5.0,
) -> Engine:
    """The hypermodel (a directory or a HyperModel), its downstream model (default: the one it was built
    for), and an adapter store (default: `<cache>/adapters`), ready for `create_app`."""
    from .. import Downstream, HyperModel, load_downstream

    ds = downstream if isinstance(downstream, Downstream) else None
    name = downstream if isinstance(downstream, str) else None
    if ds is None:
        spec = hypermodel.spec if isinstance(hypermodel, HyperModel) else HyperModel.read_spec(hypermodel)
        ds = load_downstream(name or spec.checkpoint, dtype=dtype, device=device)
    if not isinstance(hypermodel, HyperModel):
        hypermodel = HyperModel.from_pretrained(hypermodel, downstream=ds, device=device)
    # (Engine checks that the downstream model is the one the hypermodel was built for)
    root = Path(store) if store is not None else cache_dir() / "adapters"
    adapter_store = AdapterStore(
        root,
        hypermodel.fingerprint(),
        ds.spec.fingerprint,
        device=ds.device,
        cache_size=cache_size,
        cache_bytes=cache_bytes,
    )
    return Engine(hypermodel, ds, adapter_store, max_batch=max_batch, wait_ms=wait_ms)


def create_app(*args, **kwargs):
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = [
    "AdapterMismatch",
    "AdapterNotFound",
    "AdapterStore",
    "Engine",
    "Limits",
    "Row",
    "create_app",
    "open_engine",
]
