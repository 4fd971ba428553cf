"""Training on 2 CPU processes (torchrun, gloo): each run asserts inside itself that it really had two ranks
(summary.json records `processes` and the distributed type), because `accelerate launch --cpu` would
silently start one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hypertuning.train import load_config, train

ROOT = Path(__file__).resolve().parents[1]
MTF = ROOT / "configs" / "smoke" / "mtf_hyper.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(run_dir: Path, *overrides: str, resume: bool = False) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_port()),
    ]
    cmd += ["-m", "hypertuning.cli", "train", str(MTF), f"run_dir={run_dir}", *overrides]
    return cmd + (["--resume"] if resume else [])


def _run(cmd):
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir: Path) -> dict:
    return load_file(run_dir / "final" / "model.safetensors")


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    common = ["train.steps=12", "eval.every=6", "eval.batches=2", "log.every=3"]
    _run(_torchrun(tmp_path / "two", "train.batch_size=2", *common))
    s = _summary(tmp_path / "two")
    assert (s["processes"], s["distributed_type"]) == (2, "MULTI_CPU")
    overrides = [f"run_dir={tmp_path / 'one'}", "sweep={}", "train.batch_size=4", *common]
    train(load_config(MTF, overrides))
    assert _summary(tmp_path / "one")["processes"] == 1

    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for r1, r2 in zip(one, two, strict=True):
        for key in ("loss", "eval_loss", "lr"):
            assert (key in r1) == (key in r2)
            if key in r1:
                assert abs(r1[key] - r2[key]) <= 1e-5, (r1["step"], key, r1[key], r2[key])
        if "eval_loss" in r1:
            # the same validation rows, each computed once: 4 batches of 2 split 2 + 2 over the ranks,
            # where one process runs 2 batches of 4
            assert r1["eval_tokens"] == r2["eval_tokens"]
            assert r2["eval_batches_per_process"] == [2, 2] and r1["eval_batches_per_process"] == [2]


def test_two_process_run_killed_and_resumed_equals_an_uninterrupted_one(tmp_path):
    # T5 (dropout 0.1 in both models): per-rank RNG streams must be restored for the runs to agree
    args = ["train.steps=120", "checkpoint.every=10", "log.every=20", "eval.every=40", "train.batch_size=2"]
    args += ["downstream.model=tiny-t5"]
    _run(_torchrun(tmp_path / "ref", *args))
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _torchrun(run, *args),
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the launcher and both ranks die together
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if list((run / "checkpoints").glob("step-*/trainer_state.json")):
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if (run / "final").exists():
        pytest.skip("the run finished before it could be killed")
    assert list((run / "checkpoints").glob("step-*"))
    _run(_torchrun(run, *args, resume=True))
    assert _summary(run)["processes"] == 2
    a, b = _weights(tmp_path / "ref"), _weights(run)
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def curve(d):
        return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in _metrics(d)]

    assert curve(run) == curve(tmp_path / "ref")


def test_checkpoint_of_two_processes_refuses_one(tmp_path):
    from hypertuning import CheckpointError
    from hypertuning.train import Trainer

    _run(_torchrun(tmp_path / "two", "train.steps=4", "checkpoint.every=2", "train.batch_size=2"))
    (tmp_path / "two" / "summary.json").unlink()
    shutil.rmtree(tmp_path / "two" / "final")  # as if it had died after its last checkpoint
    over = [
        f"run_dir={tmp_path / 'two'}",
        "sweep={}",
        "train.steps=4",
        "checkpoint.every=2",
        "train.batch_size=2",
    ]
    cfg = load_config(MTF, over)
    with pytest.raises(CheckpointError, match="written by 2 process.*--nproc_per_node 2"):
        Trainer(cfg).fit(resume=True)
