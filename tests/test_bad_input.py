"""Bad input through the command line: one validating parser (`data.task.Record`) behind every command that
reads example or input records, so a malformed record is a `FILE:LINE` error and never a traceback or a
silently wrong answer; and one rule for every command that writes a directory."""

from __future__ import annotations

import json
import os

import pytest

from hypertuning import HyperModel
from hypertuning.cli import main

GOOD = {"input": "x", "output": "a", "choices": ["a", "b"], "label": 0}

# (record on line 2, what the message must say after FILE:2:)
MALFORMED = [
    ({"input": None, "output": "a"}, "'input' must be a string, got null"),
    ({"input": ["a"], "output": "a"}, "'input' must be a string, got a list"),
    ({"input": 3, "output": "a"}, "'input' must be a string, got a number"),
    ({"input": True, "output": "a"}, "'input' must be a string, got a boolean"),
    ({"output": "a"}, "needs an 'input' field"),
    ({"input": "x", "output": None}, "'output' must be a string or a list of strings, got null"),
    ({"input": "x", "output": 5}, "'output' must be a string or a list of strings, got a number"),
    ({"input": "x", "output": {"a": 1}}, "'output' must be a string or a list of strings, got an object"),
    ({"input": "x", "output": ["a", 1]}, "'output'[1] must be a string, got a number"),
    ({"input": "x", "output": []}, "'output' is empty"),
    ({"input": "x", "output": ""}, "'output' is blank"),
    ({"input": "x", "output": "  "}, "'output' is blank"),
    ({"input": "x", "choices": "yes", "label": 0}, "'choices' must be a list of strings, got a string"),
    ({"input": "x", "choices": None, "label": 0}, "'choices' must be a list of strings, got null"),
    ({"input": "x", "choices": [], "label": 0}, "'choices' is empty"),
    ({"input": "x", "choices": ["a", 2], "label": 0}, "'choices'[1] must be a string, got a number"),
    ({"input": "x", "choices": ["a", ""], "label": 0}, "'choices'[1] is blank"),
    ({"input": "x", "choices": ["a", "b"], "label": True}, "got a boolean"),
    ({"input": "x", "choices": ["a", "b"], "label": 1.5}, "got a number (1.5)"),
    ({"input": "x", "choices": ["a", "b"], "label": None}, "got null"),
    ({"input": "x", "choices": ["a", "b"], "label": 2}, "label 2 is out of range for 2 choices"),
    ({"input": "x", "choices": ["a", "b"], "label": -1}, "label -1 is out of range"),
    ({"input": "x", "choices": ["a", "b"], "label": "c"}, "label 'c' is not one of the choices"),
    ({"input": "x", "choices": ["a", "b"], "label": []}, "'label' is empty"),
    ({"input": "x", "output": "a", "label": 0}, "'label' needs 'choices'"),
    ([1, 2], "expected a JSON object"),
]


@pytest.fixture(scope="module")
def made(tiny_dirs, tmp_path_factory):
    """A tiny hypermodel and an adapter from it, through the CLI."""
    from hypertuning import load_downstream

    root = tmp_path_factory.mktemp("cli")
    hm = root / "hm"
    HyperModel.create(load_downstream(str(tiny_dirs["llama"])), "lora", layers=1).save_pretrained(hm)
    ex = root / "ex.jsonl"
    ex.write_text("".join(json.dumps({"input": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(3)))
    assert main(["adapt", "--hypermodel", str(hm), "--examples", str(ex), "--out", str(root / "ad")]) == 0
    return {"hm": hm, "adapter": root / "ad", "examples": ex}


def _commands(made, path, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "t.jsonl").write_text(path.read_text())
    out = str(tmp_path / "out")
    return {
        "adapt": ["adapt", "--hypermodel", str(made["hm"]), "--examples", str(path), "--out", out],
        "score": ["score", "--adapter", str(made["adapter"]), "--inputs", str(path)],
        "generate": ["generate", "--adapter", str(made["adapter"]), "--inputs", str(path)],
        "tasks show": ["tasks", "show", "local:t", "--path", str(local), "--k", "1"],
        "eval": ["eval", "--downstream", "tiny-llama", "--collection", "local", "--path", str(local)]
        + ["--tasks", "t", "-m", "zero-shot", "--quiet"],
    }, local / "t.jsonl"


@pytest.mark.parametrize("record,message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_every_command_refuses_a_malformed_record_with_file_and_line(made, tmp_path, capsys, record, message):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(record) + "\n")
    commands, local_file = _commands(made, path, tmp_path)
    for name, argv in commands.items():
        where = local_file if name in ("tasks show", "eval") else path
        assert main(argv) == 2, name  # an exception here would be the traceback a user sees
        err = capsys.readouterr().err
        assert f"{where}:2: " in err and message in err, (name, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_score_scores_each_reference_and_never_a_python_repr(made, tmp_path, capsys, llama):
    from hypertuning import Adapter

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"input": "x", "output": ["a b", "c"]}) + "\n")
    assert main(["score", "--adapter", str(made["adapter"]), "--inputs", str(path)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["output"] for r in rows] == ["a b", "c"]
    adapter = Adapter.from_pretrained(made["adapter"])
    want = llama.loglikelihood(["x", "x"], ["a b", "c"], adapter=adapter).tolist()
    assert [r["logprob"] for r in rows] == pytest.approx(want, abs=1e-5)


def test_out_directory_rule(made, tmp_path, capsys):
    argv = ["adapt", "--hypermodel", str(made["hm"]), "--examples", str(made["examples"]), "--out"]
    out = tmp_path / "ad"
    assert main([*argv, str(out)]) == 0
    before = (out / "adapter_model.safetensors").read_bytes()
    (out / "stale.txt").write_text("from before")
    assert main([*argv, str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "stale.txt").exists()  # untouched
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"input": "something else", "output": "entirely"}) + "\n")
    argv2 = ["adapt", "--hypermodel", str(made["hm"]), "--examples", str(other), "--out", str(out)]
    assert main([*argv2, "--overwrite"]) == 0
    assert not (out / "stale.txt").exists()  # replaced whole
    assert (out / "adapter_model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad", "other.jsonl"]  # no temporary left
    (tmp_path / "file").write_text("x")
    assert main([*argv, str(tmp_path / "file")]) == 2
    assert "is a file; give a directory" in capsys.readouterr().err
    for cmd in (["new", "--downstream", "tiny-llama"], ["adapters", "download", "some-id"]):
        assert main([*cmd, "--out", str(tmp_path / "file")]) == 2, cmd
        assert "is a file" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory(made, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    argv = ["adapt", "--hypermodel", str(made["hm"]), "--examples", str(made["examples"])]
    assert main([*argv, "--out", str(ro / "ad")]) == 2
    assert "cannot write in" in capsys.readouterr().err


def test_adapt_says_how_many_examples_it_used(made, tmp_path, capsys):
    path = tmp_path / "long.jsonl"
    rows = [{"input": "word " * 400, "output": "a"}] + [{"input": "b", "output": "c"}] * 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["adapt", "--hypermodel", str(made["hm"]), "--examples", str(path), "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "from 1 of 3 examples" in out, out


def test_examples_path_and_hypermodel_errors(made, tmp_path, capsys):
    argv = ["adapt", "--hypermodel", str(made["hm"]), "--out", str(tmp_path / "o"), "--examples"]
    assert main([*argv, str(tmp_path)]) == 2
    assert "is a directory; expected a JSONL file" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main([*argv, str(empty)]) == 2
    assert "holds no examples" in capsys.readouterr().err
    import shutil

    broken = tmp_path / "hm"
    shutil.copytree(made["hm"], broken)
    shutil.rmtree(broken / "tokenizer")
    argv = ["adapt", "--hypermodel", str(broken), "--examples", str(made["examples"])]
    assert main([*argv, "--out", str(tmp_path / "o2")]) == 2
    assert "the hypermodel's tokenizer is missing" in capsys.readouterr().err


@pytest.mark.parametrize("n", ["0", "-5", "two"])
def test_generate_max_new_tokens_must_be_positive(made, tmp_path, capsys, n):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"input": "x"}) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["generate", "--adapter", str(made["adapter"]), "--inputs", str(path), "--max-new-tokens", n])
    assert e.value.code == 2 and "--max-new-tokens" in capsys.readouterr().err


def test_generate_max_new_tokens_beyond_the_context_is_refused(made, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"input": "x"}) + "\n")
    argv = ["generate", "--adapter", str(made["adapter"]), "--inputs", str(path), "--max-new-tokens", "5000"]
    assert main(argv) == 2
    assert "can attend to (512 tokens)" in capsys.readouterr().err


def test_drop_message_names_the_budget_not_what_was_left(llama, caplog):
    hm = HyperModel.create(llama, "lora", layers=1, max_input_tokens=32)
    with caplog.at_level("WARNING"):
        hm.encode_ids([("word " * 100, "a"), ("b", "c")])  # the first fills the budget, cut
    assert "Dropped 1 of 2 hyper examples to fit 32 tokens" in caplog.text, caplog.text
    assert "to fit 0 tokens" not in caplog.text
