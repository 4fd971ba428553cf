"""The paper's S-NI settings (Table 3): "Def" (the instruction alone, K=0) and "Def+2Pos" (the instruction
and the task's two positive examples), trained and evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypertuning.cli import main
from hypertuning.data.collections import get_collection
from hypertuning.eval.methods import shots_hash
from hypertuning.train import train

from .test_train import smoke

SNI = Path(__file__).parent / "fixtures" / "sni"
HELD = "task003_mctaco_question_generation"


@pytest.mark.parametrize("setting,k,shots", [("def", 0, "sample"), ("def2pos", 2, "demonstrations")])
def test_sni_setting_trains_and_evaluates(tmp_path, capsys, setting, k, shots):
    run = tmp_path / "run"
    over = ["data.collection=sni", f"data.options={{path: {SNI}}}", f"data.k={k}", f"data.shots={shots}"]
    over += ["data.use_instruction=true", "train.steps=1", "checkpoint.every=0", "eval.every=0"]
    over += ["eval.phi_probes=0"]
    list(train(smoke("mtf_hyper", run, *over)))
    out = tmp_path / "eval"
    argv = ["eval", "--downstream", "tiny-llama", "--collection", "sni", "--path", str(SNI), "--tasks", HELD]
    argv += ["--k", str(k), "--shots", shots, "--seeds", "0", "--pool-size", "1", "--quiet"]
    argv += ["-m", f"hyper={run / 'final'}", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    (rec,) = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    task = get_collection("sni", path=str(SNI)).load(HELD)
    shown = list(task.demonstrations[:k]) if shots == "demonstrations" else []
    assert rec["k"] == k and rec["shots"] == shots_hash(shown, task.instruction)
    assert rec["score"] is not None
