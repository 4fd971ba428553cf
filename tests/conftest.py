"""Tiny randomly initialised Llama and T5 checkpoints (hidden size 32-64, 2 layers, byte-level vocab)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    from hypertuning.models.tiny import save_tiny

    root = tmp_path_factory.mktemp("tiny")
    out = {kind: save_tiny(kind, root / kind) for kind in ("llama", "t5")}
    # a second Llama with other weights, for mismatch errors
    out["llama_other"] = save_tiny("llama", root / "llama_other", seed=1)
    return out


@pytest.fixture(scope="session")
def llama(tiny_dirs):
    from hypertuning import load_downstream

    return load_downstream(str(tiny_dirs["llama"]))


@pytest.fixture(scope="session")
def t5(tiny_dirs):
    from hypertuning import load_downstream

    return load_downstream(str(tiny_dirs["t5"]))


@pytest.fixture(params=["llama", "t5"])
def downstream(request):
    return request.getfixturevalue(request.param)


EXAMPLES = [
    {"input": "the cat", "output": "le chat"},
    {"input": "two plus two", "output": "four"},
    {"input": "great movie", "output": "positive"},
]


@pytest.fixture
def examples():
    return list(EXAMPLES)


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
