"""Evaluation: metrics on hand-made cases, rank classification on a rigged model, the eval runner and report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from hypertuning import HyperModel, HypertuningError
from hypertuning.cli import main
from hypertuning.data.collections import get_collection
from hypertuning.data.task import Example, Task
from hypertuning.eval import (
    EvalSettings,
    Models,
    accuracy,
    bleu,
    build_methods,
    evaluate,
    exact_match,
    macro_f1,
    parse_method,
    rank_choices,
    rouge_l,
    score_task,
    task_metrics,
)
from hypertuning.eval.report import caclm_steps, report
from hypertuning.models.downstream import Downstream, _cut_at_stop, load_downstream
from hypertuning.train import train
from hypertuning.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]


# -- metrics -----------------------------------------------------------------------------------------
def test_accuracy_counts_any_correct_option():
    assert accuracy([0, 2, 1], [(0,), (1, 2), (0,)]) == pytest.approx(200 / 3)


def test_exact_match_takes_the_best_of_several_references():
    # BIG-bench lists several references; surrounding whitespace is ignored, case is not
    preds = ["Paris", " 4 ", "x", "paris"]
    refs = [("paris", "Paris"), ("four", "4"), ("y",), ("Paris",)]
    assert exact_match(preds, refs) == pytest.approx(50.0)


def test_rouge_l_is_the_best_f_measure_over_references():
    # LCS 3 of 3 predicted and 6 reference tokens: P = 1, R = 0.5, F = 2/3
    assert rouge_l(["the cat sat"], [("a dog barked", "the cat sat on the mat")]) == pytest.approx(200 / 3)
    assert rouge_l(["completely different"], [("the cat",)]) == 0.0


def test_bleu_multiple_references():
    assert bleu(["the cat is on the mat"], [("a dog", "the cat is on the mat")]) == pytest.approx(100.0)
    assert bleu(["nothing alike here at all"], [("the cat is on the mat",)]) < 10


def test_macro_f1_with_a_class_never_predicted():
    gold = [("a",), ("a",), ("b",), ("b",), ("c",)]
    pred = ["a", "a", "a", "b", "z"]  # c is never predicted; z is not a gold class
    # a: P 2/3 R 1 F 0.8; b: P 1 R 1/2 F 2/3; c: F 0 -> mean 0.4889
    assert macro_f1(pred, gold) == pytest.approx(100 * (0.8 + 2 / 3 + 0) / 3)
    assert macro_f1(["a", "b"], [("a",), ("b",)]) == 100.0


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        exact_match(["a", "b"], [("a",)])
    with pytest.raises(ValueError, match="no predictions"):
        accuracy([], [])


def test_task_metrics_prefer_the_tasks_preferred_score():
    gen = Task("t", (Example("x", ("y",)),), metrics=("bleu", "rouge_l", "exact_match"))
    gen.meta["preferred_score"] = "rougeLsum"
    assert task_metrics(gen)[0] == "rouge_l"
    mc = Task("m", (Example("x", choices=("a", "b"), answers=(1,)),), metrics=("accuracy", "bleu"))
    assert task_metrics(mc) == ("accuracy",)


# -- rank classification -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rigged(tiny_dirs):
    """A tiny Llama whose every position predicts the tokens made of "a" (and spaces) with a large logit."""
    ds = load_downstream(str(tiny_dirs["llama"]))
    tok = ds.tokenizer
    favoured = [i for i in range(len(tok)) if (s := tok.decode([i])).strip() and set(s) <= {"a", " "}]
    hidden, vocab = ds.model.config.hidden_size, ds.model.config.vocab_size
    head = nn.Linear(hidden, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[favoured] = 12.0
    ds.model.lm_head = head.requires_grad_(False)
    return ds


def test_rank_classification_picks_the_rigged_option(rigged):
    ctx = rigged.encode_inputs(["which one?", "and now?"])
    # " aaa" is made of favoured tokens, " bbb" is not; the answer moves with the option order
    assert rank_choices(rigged, ctx, [("bbb", "aaa"), ("aaa", "bbb")]) == [1, 0]
    task = Task("rig", (Example("q", choices=("bbb", "aaa"), answers=(1,)),) * 2)
    assert score_task(rigged, task, task.examples, ctx).metrics == {"accuracy": 100.0}


class _FixedScores:
    """Stands in for a Downstream: option i has `lengths[i]` tokens and summed log-likelihood `lps[i]`."""

    def __init__(self, lengths, lps):
        self.lengths, self.lps = lengths, lps

    def encode_targets(self, texts):
        return [[0] * self.lengths[int(t)] for t in texts]

    def loglikelihood_ids(self, contexts, continuations, adapter=None, batch_size=8):
        return torch.tensor(self.lps, dtype=torch.float32)


@pytest.mark.parametrize(("normalisation", "best"), [("none", 0), ("token", 1), ("char", 0)])
def test_length_normalisation(normalisation, best):
    # option "0": 1 token, lp -2; option "1": 4 tokens, lp -4; both one character long
    ds = _FixedScores([1, 4], [-2.0, -4.0])
    assert rank_choices(ds, [[1]], [("0", "1")], normalisation=normalisation) == [best]


def test_char_normalisation_divides_by_characters():
    ds = _FixedScores([1, 1], [-2.0, -3.0])
    # lengths in characters: "0" -> 1, "1" + padding spaces -> 5; -3/5 beats -2/1
    assert rank_choices(ds, [[1]], [("0", "1    ")], normalisation="char") == [1]
    with pytest.raises(HypertuningError, match="normalisation must be one of"):
        rank_choices(ds, [[1]], [("0", "1")], normalisation="bytes")


def test_generation_stops_at_stop_strings(rigged):
    ctx = rigged.encode_inputs(["go"])
    free = rigged.generate_ids(ctx, max_new_tokens=6)[0]
    assert free.strip(" ") and set(free) <= {"a", " "}
    stopped = rigged.generate_ids(ctx, max_new_tokens=6, stop=[free[:2]])[0]
    assert stopped == ""
    assert _cut_at_stop("yes\nno", ["\n"]) == "yes" and _cut_at_stop("abc", ["x"]) == "abc"


def test_loglikelihood_ids_restores_row_order_with_per_row_adapters(llama, examples):
    hm = HyperModel.create(llama, "lora", rank=4)
    with torch.no_grad():
        for p in hm.parameters():
            p.add_(0.05 * torch.randn_like(p))  # nonzero gates and up-projections: adapters differ
    a, b = hm.generate_batch([examples[:1], examples[1:]])
    ctx = llama.encode_inputs(["short", "a much longer input than the others here", "mid length"])
    cont = llama.encode_targets(["x", "yy", "zzz"])
    batched = llama.loglikelihood_ids(ctx, cont, adapter=[a, b, a], batch_size=2)
    alone = [
        llama.loglikelihood_ids([c], [t], adapter=ad)[0]
        for c, t, ad in zip(ctx, cont, [a, b, a], strict=True)
    ]
    torch.testing.assert_close(batched, torch.stack(alone), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", [None, "lora", "prefix"])
def test_shared_context_scoring_equals_the_plain_batch(llama, target):
    """Options after one long prompt reuse its key/value cache (under the row's adapter, if any); the scores
    must not change."""
    adapter = None
    if target:
        adapter = HyperModel.create(llama, target=target, layers=1).generate([("a", "b")])
        if target == "lora":
            adapter.phi = {k: v * 20 if k.endswith("lora_B") else v for k, v in adapter.phi.items()}
    prompts = llama.encode_inputs(["a long in-context prompt " * 6, "another prompt, also long " * 5, "solo"])
    options = [["yes", "no", "maybe not"], ["x", "a much longer option"], ["z"]]
    ctx = [prompts[i] for i, opts in enumerate(options) for _ in opts]
    cont = llama.encode_targets([o for opts in options for o in opts])
    assert len(set(map(len, cont))) > 1  # ragged continuations exercise the padding
    plain = llama.loglikelihood_ids(ctx, cont, adapter, batch_size=3, share_context=False)
    calls = []
    real = llama.family.loglikelihood_shared
    llama.family.loglikelihood_shared = lambda *a: calls.append(len(a[2])) or real(*a)
    try:
        shared = llama.loglikelihood_ids(ctx, cont, adapter, batch_size=2, share_context=True)
        assert sorted(calls) == [1, 2, 2]  # prompt 0: 3 options in chunks of 2; prompt 1: 2; "solo" plain
        # per-row adapters: rows share a context only under the same adapter
        per_row = [adapter if i % 2 else None for i in range(len(ctx))]
        calls.clear()
        mixed = llama.loglikelihood_ids(ctx, cont, per_row, batch_size=2, share_context=True)
        if target:
            assert calls == [2]  # prompt 0's options 0 and 2 share the base model; the rest run alone
    finally:
        del llama.family.loglikelihood_shared
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    assert llama.loglikelihood_ids(ctx, cont, adapter, batch_size=3).tolist() == pytest.approx(
        plain.tolist(), abs=1e-5
    )
    base = llama.loglikelihood_ids(ctx, cont, share_context=False)
    want = torch.where(torch.tensor([i % 2 == 1 for i in range(len(ctx))]), plain, base)
    torch.testing.assert_close(mixed, want, atol=1e-5, rtol=1e-5)
    if target:
        assert (plain - base).abs().max() > 1e-3  # the adapter matters


# -- the evaluation runner ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hyper_dir(tiny_dirs, tmp_path_factory):
    ds = load_downstream(str(tiny_dirs["llama"]))
    return str(HyperModel.create(ds, "lora", rank=4).save_pretrained(tmp_path_factory.mktemp("hm") / "hm"))


@pytest.fixture(scope="module")
def toy_tasks():
    coll = get_collection("toy", label_tasks=2, examples=40)
    return [coll.load("label-0"), coll.load("copy")]


def test_in_context_and_hypertuned_see_the_same_examples(tiny_dirs, hyper_dir, toy_tasks, monkeypatch):
    seen: dict[str, list] = {"hyper": [], "in-context": []}
    generate, in_context = HyperModel.generate, Downstream.encode_in_context

    def spy_generate(self, pairs, instruction=None, stats=None):
        seen["hyper"].append(tuple(pairs))
        return generate(self, pairs, instruction, stats)

    def spy_in_context(self, pairs, instruction, query, separator="\n\n", stats=None):
        if not seen["in-context"] or seen["in-context"][-1] != tuple(pairs):
            seen["in-context"].append(tuple(pairs))
        return in_context(self, pairs, instruction, query, separator, stats)

    monkeypatch.setattr(HyperModel, "generate", spy_generate)
    monkeypatch.setattr(Downstream, "encode_in_context", spy_in_context)
    models = Models(str(tiny_dirs["llama"]))
    methods = build_methods(["in-context", f"hyper={hyper_dir}"], models)
    res = evaluate(methods, toy_tasks, EvalSettings(k=4, seeds=[0, 1], max_examples=3), progress=False)
    assert len(seen["hyper"]) == 4 and seen["hyper"] == seen["in-context"]  # 2 tasks x 2 seeds
    assert seen["hyper"][0] != seen["hyper"][1]  # another seed, other examples
    by_key = {}
    for r in res.records:
        by_key.setdefault((r["task"], r["seed"]), set()).add(r["shots"])
    assert all(len(v) == 1 for v in by_key.values()) and len(by_key) == 4


def _eval_cli(tiny_dirs, hyper_dir, out, *extra):
    return main(
        [
            "eval",
            "-m",
            "zero-shot",
            "-m",
            "in-context",
            "-m",
            f"HyperLoRA:hyper={hyper_dir}",
            "--downstream",
            str(tiny_dirs["llama"]),
            "--collection",
            "toy",
            "--tasks",
            "label-0",
            "copy",
            "--k",
            "4",
            "--seeds",
            "0",
            "1",
            "--max-examples",
            "4",
            "--quiet",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_eval_cli_writes_tables_and_resumes(tiny_dirs, hyper_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    assert _eval_cli(tiny_dirs, hyper_dir, out) == 0
    printed = capsys.readouterr().out
    header, *rows = printed.splitlines()[:4]
    assert header.split() == ["label-0", "copy", "AVG"]
    assert [r.split()[0] for r in rows] == ["zero-shot", "in-context", "HyperLoRA"]
    res = json.loads((out / "results.json").read_text())
    assert res["columns"] == ["label-0", "copy"] and set(res["table"]) == {
        "zero-shot",
        "in-context",
        "HyperLoRA",
    }
    assert (out / "results.csv").read_text().splitlines()[0] == "method,label-0,copy,AVG,AVG_std"
    records = (out / "records.jsonl").read_text().splitlines()
    # zero-shot reads no examples: one seed; in-context and HyperLoRA: two seeds; 2 tasks
    assert len(records) == 2 * (1 + 2 + 2)
    for rec in map(json.loads, records):
        assert 0 <= rec["score"] <= 100 and rec["examples"] == 4
        assert rec["metric"] == ("accuracy" if rec["task"] == "toy:label-0" else "exact_match")

    # a kill mid-write leaves a cut last line; the rerun redoes only what is missing
    (out / "records.jsonl").write_text("\n".join(records[:-2]) + "\n" + records[-2][:20])
    calls = []
    import hypertuning.eval.runner as runner

    real = runner.score_task
    monkeypatch.setattr(runner, "score_task", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert _eval_cli(tiny_dirs, hyper_dir, out) == 0
    assert len(calls) == 2
    again = (out / "records.jsonl").read_text()
    assert [json.loads(x)["score"] for x in again.splitlines() if x.startswith("{") and x.endswith("}")][
        :8
    ] == [json.loads(x)["score"] for x in records[:8]]
    assert _eval_cli(tiny_dirs, hyper_dir, out) == 0 and len(calls) == 2  # complete: nothing recomputed


def test_eval_refuses_other_settings_and_relabelled_paths(tiny_dirs, hyper_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _eval_cli(tiny_dirs, hyper_dir, out) == 0
    assert _eval_cli(tiny_dirs, hyper_dir, out, "--normalisation", "token") == 2
    assert "normalisation: 'none' -> 'token'" in capsys.readouterr().err
    other = tmp_path / "other-hm"
    shutil.copytree(hyper_dir, other)
    assert _eval_cli(tiny_dirs, str(other), out) == 2  # the same label, another hypermodel
    assert "'HyperLoRA' was evaluated from" in capsys.readouterr().err
    assert _eval_cli(tiny_dirs, str(tiny_dirs["llama"]), tmp_path / "e2") == 2  # not a hypermodel
    assert "hypermodel config" in capsys.readouterr().err


def test_method_specs():
    assert parse_method("zero-shot") == (None, "zero-shot", None)
    assert parse_method("HyperLoRA:hyper=runs/a/final") == ("HyperLoRA", "hyper", "runs/a/final")
    models = Models("tiny-llama")
    with pytest.raises(HypertuningError, match="Unknown evaluation method 'hyperr'"):
        build_methods(["hyperr=x"], models)
    with pytest.raises(HypertuningError, match="needs a path"):
        build_methods(["mtf"], models)[0].downstream()
    with pytest.raises(HypertuningError, match="two methods are labelled"):
        build_methods(["zero-shot", "zero-shot"], models)


# -- Figure 5 data and the report --------------------------------------------------------------------
def test_peft_task_logs_the_task_score_and_report_plots(tmp_path, tiny_dirs, hyper_dir, capsys):
    runs = tmp_path / "runs"
    for init in ("random", "hyper"):
        over = [f"run_dir={runs / init}", "sweep={}", "train.steps=4", "eval.every=2", "eval.metric=score"]
        if init == "hyper":
            over += [
                "peft.init=hyper",
                f"peft.init_from={hyper_dir}",
                f"downstream.model={tiny_dirs['llama']}",
            ]
        else:
            over += [f"downstream.model={tiny_dirs['llama']}"]
        train(load_config(ROOT / "configs/smoke/peft_task.yaml", over))
    recs = [json.loads(x) for x in (runs / "random" / "metrics.jsonl").read_text().splitlines()]
    scores = [(r["step"], r["eval_score"]) for r in recs if "eval_score" in r]
    assert [s for s, _ in scores] == [0, 2, 4] and all(0 <= v <= 100 for _, v in scores)
    assert all("eval_accuracy" in r for r in recs if "eval_score" in r)  # toy:label-0 is multiple choice

    assert _eval_cli(tiny_dirs, hyper_dir, tmp_path / "eval") == 0
    capsys.readouterr()
    figures = tmp_path / "report"
    text = report([tmp_path / "eval", runs], figures)
    assert "HyperLoRA" in text and "AVG" in text
    for name in ("table.csv", "fig4_hyperpretraining.png", "fig5_peft_init.png", "loss_curves.png"):
        assert (figures / name).is_file(), name
    assert (figures / "fig5_peft_init.png").read_bytes()[:4] == b"\x89PNG"


def test_peft_task_step_0_reproduces_the_evaluation_table(tmp_path, tiny_dirs, hyper_dir, monkeypatch):
    """Figure 5's curves start where Table 1 stands: under hyper initialisation, a peft_task's score before
    any step is `hypertune eval`'s score for that hypermodel, on the same subset of evaluation examples."""
    import hypertuning.eval.runner as runner
    import hypertuning.eval.scoring as scoring

    scored: dict[str, list] = {}
    real = scoring.score_task

    def spy(downstream, task, examples, *a, **kw):
        scored.setdefault("current", []).append([e.input for e in examples])
        return real(downstream, task, examples, *a, **kw)

    monkeypatch.setattr(scoring, "score_task", spy)
    monkeypatch.setattr(runner, "score_task", spy)
    coll = dict(name="toy", options={"label_tasks": 2, "examples": 60})
    over = [
        f"run_dir={tmp_path / 'p'}",
        "sweep={}",
        "train.steps=1",
        "eval.every=1",
        "eval.metric=score",
        "eval.batches=2",
        "peft.task=toy:label-0",
        "peft.k=4",
        "peft.pool_size=16",
        "peft.init=hyper",
        f"peft.init_from={hyper_dir}",
        f"downstream.model={tiny_dirs['llama']}",
        # a training cap that must not apply to the held-out task
        f"data.options={json.dumps({**coll['options'], 'max_examples': 30})}",
    ]
    train(load_config(ROOT / "configs/smoke/peft_task.yaml", over))
    recs = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    step0 = next(r["eval_score"] for r in recs if r.get("step") == 0 and "eval_score" in r)
    peft_examples = scored.pop("current")[0]

    models = Models(str(tiny_dirs["llama"]))
    task = get_collection("toy", **coll["options"]).load("label-0")
    settings = EvalSettings(k=4, seeds=[0], max_examples=8, pool_size=16, batch_size=4)
    res = evaluate(build_methods([f"H:hyper={hyper_dir}"], models), [task], settings, progress=False)
    assert scored["current"] == [peft_examples] and len(peft_examples) == 8  # of 60 - 16 evaluated
    assert res.records[0]["score"] == pytest.approx(step0)


def test_score_evaluator_is_only_for_peft_task(tmp_path):
    cfg = load_config(
        ROOT / "configs/smoke/mtf_peft.yaml",
        [f"run_dir={tmp_path / 'r'}", "train.steps=2", "eval.every=1", "eval.metric=score"],
    )
    with pytest.raises(HypertuningError, match="eval.metric=score is for peft_task"):
        train(cfg)


def test_caclm_steps_from_lineage():
    info = {
        "kind": "hyper",
        "training": [{"objective": "caclm", "steps": 300}, {"objective": "mtf_hyper", "steps": 9}],
    }
    assert caclm_steps(info) == 300
    assert caclm_steps({"kind": "hyper", "training": [{"objective": "mtf_hyper", "steps": 9}]}) == 0
    assert caclm_steps({"kind": "in-context"}) is None


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_every_method_kind_runs_and_baselines_agree(kind, tiny_dirs, toy_tasks, tmp_path):
    base = str(tiny_dirs[kind])
    ds = load_downstream(base)
    hm = HyperModel.create(ds, "prefix" if kind == "t5" else "lora")
    hm.save_pretrained(tmp_path / "hm")
    hm.generate([("a b", "b a")]).save_pretrained(tmp_path / "adapter")
    models = Models(base)
    specs = [
        "zero-shot",
        "in-context",
        f"mtf={base}",  # the base checkpoint stands in for a fine-tuned one: same scores as zero-shot
        f"mtf-fewshot={base}",
        f"peft={tmp_path / 'adapter'}",
        f"hyper={tmp_path / 'hm'}",
    ]
    methods = build_methods(specs, models)
    res = evaluate(methods, toy_tasks, EvalSettings(k=3, seeds=[0], max_examples=3), progress=False)
    got = {(r["method"], r["task"]): r["metrics"] for r in res.records}
    assert len(got) == len(specs) * len(toy_tasks)
    for t in toy_tasks:
        assert got[(f"mtf({kind})", t.id)] == got[("zero-shot", t.id)]
        assert got[(f"mtf-fewshot({kind})", t.id)] == got[("in-context", t.id)]
    assert len(models._loaded) == 1  # every method shares the one loaded model


def test_demo_trains_adapts_scores_and_reuses_everything(tiny_dirs, tmp_path, capsys, monkeypatch):
    """`hypertune demo` end to end on the tiny Llama, the toy tasks and one must-read task; the second run
    trains nothing and scores nothing again."""
    import hypertuning.demo as demo

    small = {"max_examples": 6, "mustread": ["category-permuted/0"], "lengths": (384, 192, 48, 576)}
    monkeypatch.setitem(demo.SCALES, "cpu", {**demo.SCALES["cpu"], **small})
    argv = ["demo", "--downstream", str(tiny_dirs["llama"]), "--collection", "toy", "--steps", "2"]
    argv += ["--tasks", "label-0", "reverse", "--out", str(tmp_path)]  # multiple choice and generative
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "[2/4] training a hypermodel" in first
    assert (tmp_path / "hypermodel" / "final").is_dir()
    adapter = tmp_path / "adapters" / "label-0"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "PREFIX_TUNING"
    lines = first.splitlines()
    methods = (["zero-shot"], ["in-context"], ["hypertuned"])
    toy_at = lines.index(next(x for x in lines if x.startswith("Score (%")))
    must_at = lines.index(next(x for x in lines if x.startswith("Held-out must-read tasks")))
    toy_table = [x for x in lines[toy_at:must_at] if x.split()[:1] in methods]
    assert len(toy_table) == 3  # the toy tasks are not must-read: no dependence figures
    must_block = lines[must_at:]
    assert any(x.startswith("(chance)") for x in must_block)  # chance shown for the must-read task
    assert any("follow a permutation" in x for x in must_block)  # and the dependence figures
    records = (tmp_path / "eval" / "records.jsonl").read_text()
    assert len(records.splitlines()) == 3 * 2
    must_records = [
        json.loads(x) for x in (tmp_path / "eval-mustread" / "records.jsonl").read_text().splitlines()
    ]
    assert {r["method"] for r in must_records} == {"zero-shot", "in-context", "hypertuned"}
    assert all(r["chance"] is not None for r in must_records)
    assert all(r["follows_label_permutation"] is not None for r in must_records if r["method"] != "zero-shot")
    # the byte-level tiny tokenizer fits only 13 of reverse's 16 examples into the hypermodel's 384 tokens:
    # what a budget cut is recorded for the hypermodel as for the in-context prompt
    cut = {(r["method"], r["task"]): r["truncation"] for r in map(json.loads, records.splitlines())}
    assert cut[("hypertuned", "toy:reverse")] == {"hyper_dropped": 3}

    monkeypatch.setattr("hypertuning.train.train", None)  # a retrain would fail loudly
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "trained by an earlier demo" in second and "[2/4] training" not in second
    assert (tmp_path / "eval" / "records.jsonl").read_text() == records
    assert (
        second[second.index("Score (%") :].split("Done in")[0]
        == first[first.index("Score (%") :].split("Done in")[0]
    )
    # a demo with other settings (an earlier version's recipe, or another --steps) is not reused as this one
    other = [*argv[:6], "3", *argv[7:]]  # --steps 3
    assert main(other) == 2
    assert "other settings (train.steps)" in capsys.readouterr().err


def test_demo_without_bigbench_goes_on_with_the_must_read_tasks(tiny_dirs, tmp_path, capsys, monkeypatch):
    """An index that does not serve BIG-bench's sdist stops no demo at its first step: it says why, trains
    on the must-read training families alone and shows the must-read table, in directories of its own.
    A source the user named that fails is an error, not a quiet substitution."""
    import hypertuning.demo as demo

    def lists_only_0_0_1(project, filename):
        raise HypertuningError(f"the index lists no file {filename} (it lists bigbench-0.0.1.tar.gz)")

    small = {"max_examples": 6, "mustread": ["category-permuted/0"], "lengths": (384, 192, 48, 576)}
    monkeypatch.setitem(demo.SCALES, "cpu", {**demo.SCALES["cpu"], **small})
    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYPERTUNING_BIGBENCH", raising=False)
    monkeypatch.setattr("hypertuning.data.collections.bigbench.fetch_pypi_file", lists_only_0_0_1)
    out = tmp_path / "d"
    argv = ["demo", "--downstream", str(tiny_dirs["llama"]), "--steps", "2", "--out", str(out)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "lists no file bigbench-1.0.0.tar.gz" in said and "Set HYPERTUNING_BIGBENCH" in said
    assert "must-read training families, half of them relabelled" in said
    cfg = json.loads((out / "hypermodel-mustread-only" / "config.json").read_text())
    assert cfg["data"]["collection"] == "mustread" and cfg["data"]["mustread"] == 0.0
    assert (
        "Score (%" not in said and "Held-out must-read tasks" in said
    )  # no natural table, the must-read one
    assert "held-out mustread:category-permuted/0" in said  # the adapter shown is a must-read task's
    assert sorted(p.name for p in out.iterdir()) == [
        "adapters",
        "eval-mustread-only",
        "hypermodel-mustread-only",
    ]
    # naming tasks, or a source, asks for BIG-bench itself
    assert main([*argv, "--tasks", "winowhy"]) == 2
    assert "lists no file bigbench-1.0.0.tar.gz" in capsys.readouterr().err
    monkeypatch.setenv("HYPERTUNING_BIGBENCH", str(tmp_path / "typo"))
    assert main(argv) == 2
    assert "BIG-bench source not found" in capsys.readouterr().err
    # the must-read collection named outright is the same demo; --tasks then names must-read tasks
    argv = ["demo", "--downstream", str(tiny_dirs["llama"]), "--steps", "2", "--out", str(out)]
    assert main([*argv, "--collection", "mustread", "--tasks", "suffix/0"]) == 0
    said = capsys.readouterr().out
    assert "trained by an earlier demo" in said and "held-out mustread:suffix/0" in said


def test_demo_trains_the_cpu_small_default_recipe():
    """The demo's training run is configs/cpu-small/mtf_select.yaml, the default recipe, at the demo's
    lengths: the two cannot drift apart."""
    import hypertuning.demo as demo
    from hypertuning.train.config import RunConfig

    shipped = load_config(ROOT / "configs/cpu-small/mtf_select.yaml")
    scale = demo.SCALES["cpu"]
    ours = RunConfig.from_dict(demo.demo_config(shipped.downstream.model, Path("x"), scale), "demo")
    assert ours.hypermodel == shipped.hypermodel
    assert ours.data == shipped.data
    for key in ("steps", "batch_size", "lr", "warmup_steps"):
        assert getattr(ours.train, key) == getattr(shipped.train, key), key
    for key in ("model", "max_input_tokens", "max_target_tokens"):
        assert getattr(ours.downstream, key) == getattr(shipped.downstream, key), key
    assert (ours.objective, ours.seed) == (shipped.objective, shipped.seed)
    # the in-context baseline reads the examples the hypermodel reads, and the query
    assert (
        ours.downstream.max_in_context_tokens
        == ours.hypermodel.max_input_tokens + ours.downstream.max_input_tokens
    )


def test_metaicl_classification_reports_macro_f1_over_the_ranked_options(llama):
    """MetaICL (and the paper) score classification with macro-F1: over the chosen options' text, beside
    accuracy; with one dominant prediction the two differ."""
    from pathlib import Path

    from hypertuning.data.collections import get_collection
    from hypertuning.eval.metrics import accuracy, macro_f1, task_metrics
    from hypertuning.eval.scoring import score_task

    fixtures = Path(__file__).parent / "fixtures" / "metaicl"
    rte = get_collection("metaicl", path=str(fixtures), setting="hr_to_lr", fewshot_seed=13).load(
        "superglue-rte"
    )
    assert task_metrics(rte) == ("macro_f1", "accuracy")
    examples = list(rte.examples)
    contexts = llama.encode_inputs([e.input for e in examples])
    got = score_task(llama, rte, examples, contexts)
    assert list(got.metrics) == ["macro_f1", "accuracy"]
    chosen = [e.choices[p] for e, p in zip(examples, got.predictions, strict=True)]
    gold = [[e.choices[e.answers[0]]] for e in examples]
    assert got.metrics["macro_f1"] == macro_f1(chosen, gold)
    assert got.metrics["accuracy"] == accuracy(got.predictions, [e.answers for e in examples])
    # the same predictions, scored both ways, differ when one class dominates
    assert macro_f1(["a", "a", "a", "a"], [["a"], ["a"], ["a"], ["b"]]) != 75.0


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in sorted((ROOT / "configs").glob("*/*.yaml"))
        if p.name != "base.yaml" and p.parent.name != "accelerate"
    ],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_shipped_run_configs_parse(path):
    """Every training config shipped (the bases are read through them; accelerate's launch configs are
    tests/test_distributed.py's) loads: no unknown key, no bad value."""
    cfg = load_config(path)
    assert cfg.run_dir and cfg.objective


def test_every_scale_takes_the_default_recipe():
    """cpu-small, the paper-scale decoder config and the demo's --device cuda scale train the same recipe;
    only the lengths (and so the kept positions) and the schedule differ."""
    import hypertuning.demo as demo
    from hypertuning.train.config import RunConfig

    def recipe(cfg):
        opts = {k: v for k, v in cfg.hypermodel.readout_options.items() if k != "slots"}
        assert cfg.hypermodel.readout_options["slots"] == cfg.hypermodel.max_input_tokens  # every position
        h = cfg.hypermodel
        return (h.target, h.readout, h.layers, h.init, opts, cfg.data.k, cfg.data.remap, cfg.data.mustread)

    cpu = load_config(ROOT / "configs/cpu-small/mtf_select.yaml")
    paper = load_config(ROOT / "configs/paper-decoder/mtf_select.yaml")
    cuda = RunConfig.from_dict(demo.demo_config("m", Path("x"), demo.SCALES["cuda"]), "demo cuda")
    assert recipe(cpu) == recipe(paper) == recipe(cuda)
