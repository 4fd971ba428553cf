"""Tiny randomly initialised Llama and T5 checkpoints (hidden size 32-64, 2 layers, byte-level vocab)."""

from __future__ import annotations

import io
import json
import os
import tarfile
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


# -- a BIG-bench sdist in miniature ----------------------------------------------------------------------
def _bb_tasks() -> dict[str, dict]:
    return {
        "arith": {"name": "arith", "description": "parent of subtasks, no examples"},
        "arith/add": {
            "name": "add",
            "metrics": ["exact_str_match"],
            "task_prefix": "Add the numbers.",
            "example_input_prefix": "\nQuestion: ",
            "example_output_prefix": "\nAnswer: ",
            "few_shot_example_separator": "\n\n",
            "examples": [{"input": f"{i} + 1 =", "target": [str(i + 1), f"n{i + 1}"]} for i in range(30)],
        },
        "arith/mul": {
            "name": "mul",
            "metrics": ["exact_str_match", "bleurt"],
            "examples": [{"input": f"{i} * 2 =", "target": str(2 * i)} for i in range(20)]
            + [{"target": "skipped: no input field"}, {"input": "0 * 0 =", "target": "  "}],
        },
        "lite_task": {
            "name": "lite_task",
            "metrics": ["multiple_choice_grade"],
            "examples": [
                {"input": f"Is {i} even?", "target_scores": {"yes": int(i % 2 == 0), "no": int(i % 2 == 1)}}
                for i in range(25)
            ]
            + [{"input": "Both?", "target_scores": {"a": 1, "b": 1, "c": 0}}]
            + [{"input": "", "target_scores": {"This makes sense.": 1, "Sense this makes.": 0}}],
        },
        "gem/xsum": {
            "name": "xsum",
            "metrics": ["rouge", "bleu"],
            "examples": [
                {"input": f"Long article number {i} about the weather.", "target": "s"} for i in range(20)
            ],
        },
    }


@pytest.fixture
def bb_sdist(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    return write_bb_sdist(tmp_path / "bigbench-1.0.0.tar.gz", _bb_tasks(), ["lite_task"])


@pytest.fixture
def bb_writer():
    """`write_bb_sdist`, for tests that build a BIG-bench sdist of their own tasks."""
    return write_bb_sdist


def write_bb_sdist(path: Path, tasks: dict[str, dict], lite: list[str]) -> Path:
    """A tar.gz with bigbench-1.0.0.tar.gz's layout: task.json files, a task.py, the Lite list."""
    names = "".join(f'      "{n}",\n' for n in lite)
    lite_py = 'BIGBENCH_LITE_TASK_NAMES = {\n    "bigbench_lite_v1": [\n' + names + "    ]\n}\n"
    files = {f"bigbench/benchmark_tasks/{k}/task.json": json.dumps(v) for k, v in tasks.items()}
    files["bigbench/benchmark_tasks/prog_task/task.py"] = "# programmatic task: not read"
    files["bigbench/bbseqio/bigbench_lite.py"] = '"""BIG-bench Lite task names."""\n' + lite_py
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# -- the architecture matrix's outcomes, for README's table (benchmarks/architectures.py) -------------------
_ARCH_OUTCOMES: dict[str, dict[str, str]] = {}


def pytest_runtest_logreport(report):
    if not os.environ.get("HYPERTUNING_ARCH_TABLE") or "test_architectures.py::" not in report.nodeid:
        return
    if report.when == "call" or report.outcome != "passed":  # a failed or skipped setup counts too
        name, _, params = report.nodeid.split("::")[1].partition("[")
        cell = _ARCH_OUTCOMES.setdefault(name, {})
        key = params.rstrip("]") or "-"
        if cell.get(key) != "failed":
            cell[key] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("HYPERTUNING_ARCH_TABLE")
    if path and _ARCH_OUTCOMES:
        Path(path).write_text(json.dumps(_ARCH_OUTCOMES, indent=1, sort_keys=True) + "\n")
