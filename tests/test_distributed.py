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
# PYTHONFAULTHANDLER: a run that hangs is killed with SIGABRT, and every process prints where it stood
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONFAULTHANDLER": "1"}
# gloo binds to the address the hostname resolves to unless told an interface; where that address is not
# reachable from itself (a sandbox's firewall), the ranks wait on each other for the 30-minute default
if Path("/sys/class/net/lo").exists():
    ENV.setdefault("GLOO_SOCKET_IFNAME", "lo")


@pytest.fixture(autouse=True, scope="module")
def _fresh_cache(tmp_path_factory):
    """An empty cache for the 2-rank runs: the first one builds the tiny model with both ranks up, which
    must leave a whole checkpoint in the cache (under torchrun, rank 1 once cached the tokenizer alone)."""
    ENV["HYPERTUNING_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    ENV.pop("HYPERTUNING_CACHE")


@pytest.fixture(autouse=True, scope="module")
def _machine_runs_two_ranks():
    """A machine that cannot connect two gloo ranks over loopback (a sandbox without it) skips these tests
    with the launcher's own words, instead of each one hanging for its timeout; the probe imports nothing
    of ours, so a bug of ours still fails the tests below."""
    try:
        _run(_two_ranks(str(ROOT / "tests" / "scripts" / "gloo_ping.py")), timeout=90)
    except (pytest.fail.Exception, AssertionError) as e:
        pytest.skip(f"two gloo ranks over loopback do not run here: {str(e)[-2000:]}")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(*program: str) -> list[str]:
    """torchrun with 2 CPU ranks on a free port, running `program` (a script, or -m MODULE, and its args)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_port()),
        *program,
    ]


def _torchrun(run_dir: Path, *overrides: str, resume: bool = False) -> list[str]:
    cmd = _two_ranks("-m", "hypertuning.cli", "train", str(MTF), f"run_dir={run_dir}", *overrides)
    return cmd + (["--resume"] if resume else [])


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid`. torchrun starts each rank in a session of its own, so killing the
    launcher's process group leaves the ranks running, holding our pipes open (a hung run then hung the
    test, and CI with it)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(proc: subprocess.Popen, sig: int) -> None:
    """Signal the launcher and every process below it, ranks first (so each prints its own stack)."""
    for pid in [*reversed(_descendants(proc.pid)), proc.pid]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _run(cmd, timeout: float = 240):
    proc = subprocess.Popen(
        cmd,
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc, signal.SIGABRT)  # faulthandler: each rank and the launcher print their stacks
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_tree(proc, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"hung for {timeout} s; stdout: {out[-1000:]}\nstacks:\n{err[-12000:]}")
    except BaseException:  # pytest-timeout, ^C: leave no rank behind
        _kill_tree(proc, signal.SIGKILL)
        raise
    assert proc.returncode == 0, err[-4000:]
    return out


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
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if list((run / "checkpoints").glob("step-*/trainer_state.json")):
            break
        time.sleep(0.01)
    _kill_tree(proc, signal.SIGKILL)  # the launcher and both ranks (each rank has a session of its own)
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


def test_fsdp_gathered_hypermodel_equals_ddp(tmp_path):
    """accelerate does not shard on CPU ranks (its FSDP branch covers GPU-like device types only; under
    MULTI_CPU, ACCELERATE_USE_FSDP is ignored and the run is plain DDP), so FSDP2 is tested through torch
    directly on the objective's own module: trained 3 steps under `fully_shard` and under DDP from the same
    start on the same global batches, then gathered (`get_model_state_dict(full_state_dict=True)`), rebuilt
    unsharded (`Objective.adopt_full_state`, as the loop does) and saved; `HyperModel.from_pretrained` loads it."""
    from hypertuning import HyperModel, load_downstream

    script = ROOT / "tests" / "scripts" / "fsdp_vs_ddp.py"
    _run(_two_ranks(str(script), str(MTF), str(tmp_path), "train.batch_size=2"))
    got = json.loads((tmp_path / "fsdp_vs_ddp.json").read_text())
    assert got["world"] == 2 and got["sharded_parameter_types"] == ["DTensor"]  # really sharded
    assert got["keys_equal"] and got["max_abs_diff"] <= 1e-5
    assert got["moved_from_init"] > 1e-4  # training moved the weights, so the equality means something
    for a, b in zip(got["ddp_losses"], got["fsdp_losses"], strict=True):
        assert abs(a - b) <= 1e-5
    hm = HyperModel.from_pretrained(tmp_path / "fsdp_final", load_downstream("tiny-llama"))
    assert hm.generate([{"input": "a", "output": "b"}]).phi


@pytest.mark.parametrize(
    "name,kind", [("ddp", "MULTI_GPU"), ("fsdp2", "FSDP"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")]
)
def test_shipped_accelerate_configs_parse(name, kind):
    """The launch configs under configs/accelerate/ are what accelerate itself reads (GPU-only: DeepSpeed
    cannot run here, and accelerate shards nothing on CPU ranks, so they are parsed, not run)."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind
    if name == "fsdp2":
        assert (
            cfg.fsdp_config["fsdp_version"] == 2
            and cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        )
    if name.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "zero3":
        assert cfg.deepspeed_config["zero3_save_16bit_model"]  # get_state_dict gathers the whole model


def test_every_rank_writes_a_whole_checkpoint(tmp_path):
    """transformers writes a model's files only on global rank 0 once a process group is up; a checkpoint
    we build for a cache (tiny model, dequantised GGUF) must be whole on whichever rank builds it."""
    _run(_two_ranks(str(ROOT / "tests" / "scripts" / "save_every_rank.py"), str(tmp_path)))
    for r in (0, 1):
        assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / f"rank-{r}").iterdir()}


def test_each_rank_draws_its_own_dropout_masks(tmp_path):
    """Same initial parameters on every rank, different RNG streams after it (seed + rank): identical
    dropout masks on every rank would waste the extra processes' regularisation."""
    script = ROOT / "tests" / "scripts" / "rank_rng.py"
    _run(_two_ranks(str(script), str(MTF), str(tmp_path)))
    r0, r1 = (json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["processes"]) == (0, 1, 2)
    assert r0["params"] == r1["params"]
    assert r0["draw"] != r1["draw"]
    single = tmp_path / "single"
    single.mkdir()
    _run([sys.executable, str(script), str(MTF), str(single)])
    assert (
        json.loads((single / "rank-0.json").read_text())["draw"] == r0["draw"]
    )  # rank 0: the 1-process stream
