"""Task collections, splits, episodes, formatting and the CACLM corpus, on fixture files (no network).

The fixtures under tests/fixtures/ are small files written in the public shapes of each dataset's dumps:
P3 (hub fields per dataset-prompt), Super-NaturalInstructions (tasks/*.json + splits/default), MetaICL
(data/{task}/{task}_{k}_{seed}_{split}.jsonl + config/), and our own JSONL. The BIG-bench sdist is built
on the fly as a tar.gz with the same layout as bigbench-1.0.0.tar.gz.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypertuning import DataError, HyperModel, HypertuningError
from hypertuning.cli import main
from hypertuning.data import (
    CaclmCorpus,
    CaclmEncoder,
    EpisodeEncoder,
    EpisodeSampler,
    Example,
    Segments,
    Task,
    documents_from_files,
    get_collection,
    heldout_shots,
    load_task,
    mixing_weights,
    read_jsonl,
)
from hypertuning.data.caclm import looks_english
from hypertuning.data.collections.bigbench import LAYOUT, BigBench
from hypertuning.data.format import AFTER_TOKEN, BEFORE_TOKEN, X_TOKEN, Y_TOKEN

FIXTURES = Path(__file__).parent / "fixtures"


def test_bigbench_reads_json_tasks_subtasks_and_lite_split(bb_sdist):
    bb = BigBench(path=str(bb_sdist))
    assert bb.task_names() == ["arith/add", "arith/mul", "gem/xsum", "lite_task"]  # leaves only, no task.py
    train, held = bb.split()
    assert held == ["lite_task"] and train == ["arith/add", "arith/mul"]  # gem/xsum reserved for CACLM
    assert bb.split(include_reserved=True)[0] == ["arith/add", "arith/mul", "gem/xsum"]
    assert bb.split(heldout=["arith"])[1] == ["arith/add", "arith/mul"]  # a parent covers its subtasks
    assert bb.split(exclude=["arith/mul"])[0] == ["arith/add"]
    with pytest.raises(DataError, match="Did you mean 'arith/add'"):
        bb.split(heldout=["arith/ad"])
    # the second use reads the extracted cache, not the archive
    bb_sdist.unlink()
    assert BigBench().task_names() == bb.task_names()


def test_bigbench_prefixes_references_and_metrics(bb_sdist):
    bb = BigBench(path=str(bb_sdist))
    add = bb.load("arith/add")
    assert add.id == "bigbench:arith/add" and add.instruction == "Add the numbers."
    assert add.examples[3].input == "Question: 3 + 1 =\nAnswer:"
    assert add.examples[3].references == ("4", "n4") and add.examples[3].target == "4"
    assert add.metrics == ("exact_match",) and add.shot_separator == "\n\n"

    mul = bb.load("arith/mul")
    assert len(mul) == 20 and mul.meta["skipped_examples"] == 2  # no input, blank target
    assert mul.examples[0].input == "Q: 0 * 2 =\nA:"  # json_task.py's default prefixes
    assert mul.metrics == ("exact_match",)  # bleurt is not computed: dropped, kept in meta
    assert mul.meta["bigbench_metrics"] == ["exact_str_match", "bleurt"]

    lite = bb.load("lite_task")
    assert lite.is_multiple_choice and lite.metrics == ("accuracy",)
    assert len(lite) == 27
    assert lite.examples[-1].input.startswith(
        "Q: \n  choice: "
    )  # empty input: the choices carry the question
    ex = lite.examples[4]
    assert ex.choices == ("yes", "no") and ex.answers == (0,) and ex.target == "yes"
    body = ex.input.split("\n  choice: ")
    assert body[0] == "Q: Is 4 even?" and sorted(c.removesuffix("\nA:") for c in body[1:]) == ["no", "yes"]
    tie = lite.examples[-2]
    assert tie.answers == (0, 1)  # several correct options (a tie at the top score)
    assert BigBench(path=str(bb_sdist)).load("lite_task").examples[4].input == ex.input  # deterministic


def test_bigbench_cap_is_deterministic_subset(bb_sdist):
    a = BigBench(path=str(bb_sdist), max_examples=7).load("arith/add")
    b = BigBench(path=str(bb_sdist), max_examples=7).load("arith/add")
    full = BigBench(path=str(bb_sdist), max_examples=None).load("arith/add")
    assert len(a) == 7 and a.examples == b.examples and set(a.examples) <= set(full.examples)
    assert BigBench(path=str(bb_sdist), max_examples=7, seed=1).load("arith/add").examples != a.examples


def test_bigbench_corrupt_sdist_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bigbench-1.0.0.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="not a readable BIG-bench sdist"):
        BigBench(path=str(bad)).task_names()
    assert not list((tmp_path / "cache" / "datasets").iterdir())  # no half-built cache


def test_bigbench_from_a_checkout_or_archive_of_the_repository(bb_sdist, tmp_path, monkeypatch):
    """Where the index does not serve the sdist: a checkout of google/BIG-bench (the same files under
    bigbench/) and a source archive with another top folder give the same tasks as the sdist, each
    extracted once into a cache of its own; $HYPERTUNING_BIGBENCH makes one the default."""
    import tarfile

    checkout = tmp_path / "BIG-bench"
    with tarfile.open(bb_sdist) as tf:
        for m in tf:
            rel = m.name.split("/", 1)[1]
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            (checkout / rel).write_bytes(tf.extractfile(m).read())
    archive = tmp_path / "BIG-bench-main.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(checkout, arcname="BIG-bench-main")

    def tasks(bb):
        return {n: bb.load(n).examples for n in bb.task_names()}, bb.default_heldout()

    want = tasks(BigBench(path=str(bb_sdist)))
    roots = set()
    for source in (checkout, archive):
        bb = BigBench(path=str(source))
        assert tasks(bb) == want
        roots.add(bb.root)
    monkeypatch.setenv("HYPERTUNING_BIGBENCH", str(checkout))
    assert BigBench().root in roots and tasks(BigBench()) == want
    assert len(roots | {BigBench(path=str(bb_sdist)).root}) == 3  # no source reuses another's extraction
    extracted = BigBench(path=str(archive)).root
    monkeypatch.setenv("HYPERTUNING_BIGBENCH", str(extracted))  # an extraction, copied elsewhere say
    assert BigBench().root == extracted and tasks(BigBench()) == want

    # a checkout that changed is extracted again; an archive with no top folder is read too
    new = checkout / "bigbench" / "benchmark_tasks" / "fresh_task" / "task.json"
    new.parent.mkdir()
    new.write_text(json.dumps({"examples": [{"input": "1", "target": "2"}] * 3}))
    assert "fresh_task" in BigBench(path=str(checkout)).task_names()
    flat = tmp_path / "flat.tgz"
    with tarfile.open(flat, "w:gz") as tf:
        tf.add(checkout / "bigbench", arcname="bigbench")
    assert "fresh_task" in BigBench(path=str(flat)).task_names()
    (tmp_path / "BIG-bench-main.zip").write_bytes(b"PK\x03\x04 not a tar")
    with pytest.raises(DataError, match="a zip archive is not read: unpack it"):
        BigBench(path=str(tmp_path / "BIG-bench-main.zip")).task_names()

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither index.json .* nor bigbench/benchmark_tasks/"):
        BigBench(path=str(tmp_path / "empty")).task_names()
    with pytest.raises(DataError, match="BIG-bench source not found"):
        BigBench(path=str(tmp_path / "nowhere")).task_names()


def test_bigbench_unavailable_from_the_index_says_how_else_to_give_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYPERTUNING_BIGBENCH", raising=False)

    def lists_only_0_0_1(project, filename):
        raise HypertuningError(f"the index lists no file {filename} (it lists bigbench-0.0.1.tar.gz)")

    monkeypatch.setattr("hypertuning.data.collections.bigbench.fetch_pypi_file", lists_only_0_0_1)
    with pytest.raises(DataError, match="lists no file bigbench-1.0.0.tar.gz .* set HYPERTUNING_BIGBENCH"):
        BigBench().task_names()


# -- splits and episodes ---------------------------------------------------------------------------------
def _task(n: int, name: str = "t", collection: str = "local") -> Task:
    return Task(name, tuple(Example(f"{name} input {i}", (f"out {i}",)) for i in range(n)), collection)


def test_split_is_deterministic_and_disjoint():
    t = _task(50)
    pool, ev = t.split(pool_size=16, seed=3)
    pool2, ev2 = t.split(pool_size=16, seed=3)
    assert pool.examples == pool2.examples and ev.examples == ev2.examples
    assert len(pool) == 16 and len(ev) == 34 and not set(pool.examples) & set(ev.examples)
    assert t.split(pool_size=16, seed=4)[0].examples != pool.examples
    assert len(_task(10).split(pool_size=64)[0]) == 5  # never more than half the task
    with pytest.raises(DataError, match="at least 2"):
        _task(1).split()


def test_split_keeps_repeated_inputs_on_one_side_and_load_deduplicates(tmp_path):
    pool, ev = _dup_task(60, "d", 3).split(pool_size=16)
    assert not {e.input for e in pool.examples} & {e.input for e in ev.examples}
    assert len(pool) + len(ev) == 60
    (tmp_path / "t.jsonl").write_text(
        '{"input": "a", "output": "b"}\n' * 3 + '{"input": "c", "output": "d"}\n'
    )
    t = get_collection("local", path=str(tmp_path)).load("t")
    assert len(t) == 2 and t.meta["duplicates_removed"] == 2


def test_heldout_shots_are_the_same_for_every_method_with_one_seed():
    t = _task(40)
    shots, ev = heldout_shots(t, k=8, seed=1)
    again, ev2 = heldout_shots(t, k=8, seed=1)
    assert shots == again and ev.examples == ev2.examples and len(set(shots)) == 8
    assert not set(shots) & set(ev.examples)
    other, ev3 = heldout_shots(t, k=8, seed=2)
    assert other != shots and ev3.examples == ev.examples  # the evaluation examples do not move with the seed


def _dup_task(n: int, name: str, repeat: int) -> Task:
    """n examples whose inputs repeat every `repeat` (BIG-bench has such tasks), targets all different."""
    return Task(name, tuple(Example(f"{name} input {i // repeat}", (f"out {i}",)) for i in range(n)))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 30), min_size=1, max_size=5),
    repeat=st.integers(1, 3),
    k=st.integers(0, 16),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10_000),
)
def test_episode_shots_never_include_the_target(sizes, repeat, k, seed, index):
    tasks = [_dup_task(n, f"task{i}", repeat) for i, n in enumerate(sizes)]
    if all(len({e.input for e in t.examples}) < k + 1 for t in tasks):
        with pytest.raises(DataError, match="K\\+1"):
            EpisodeSampler(tasks, k=k, seed=seed)
        return
    sampler = EpisodeSampler(tasks, k=k, seed=seed)
    ep = sampler.episode(index)
    assert len(ep.shots) == k and len(set(ep.shots)) == k
    assert ep.target not in ep.shots and ep.target.input not in {x.input for x in ep.shots}
    prefix = ep.task.split(":")[1] + " input "
    assert all(s.input.startswith(prefix) for s in ep.shots) and ep.target.input.startswith(prefix)
    assert sampler.episode(index) == ep  # a pure function of (seed, index)


def test_sampler_resumes_exactly_and_rejects_other_state():
    tasks = [_task(20, "a"), _task(40, "b"), _task(5, "c")]
    full = EpisodeSampler(tasks, k=3, seed=7).take(12)
    first = EpisodeSampler(tasks, k=3, seed=7)
    first.take(5)
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint round trip
    resumed = EpisodeSampler(tasks, k=3, seed=7)
    resumed.load_state_dict(state)
    assert resumed.take(7) == full[5:]
    with pytest.raises(DataError, match="seed"):
        EpisodeSampler(tasks, k=3, seed=8).load_state_dict(state)
    other = [_task(20, "a"), _task(41, "b"), _task(5, "c")]  # same count, one size differs
    with pytest.raises(DataError, match="different fingerprint"):
        EpisodeSampler(other, k=3, seed=7).load_state_dict(state)
    with pytest.raises(DataError, match="different fingerprint"):
        EpisodeSampler(tasks, k=3, seed=7, mixing="uniform").load_state_dict(state)


def test_short_tasks_are_reported_not_silently_skipped(caplog):
    with caplog.at_level(logging.WARNING):
        sampler = EpisodeSampler([_task(20, "big"), _task(3, "small")], k=4)
    assert [t.name for t in sampler.tasks] == ["big"]
    assert "local:small (3)" in caplog.text and "K+1=5" in caplog.text


def test_mixing_weights():
    assert mixing_weights([100, 1], "proportional") == [100.0, 1.0]
    assert mixing_weights([100, 1], "temperature", temperature=2.0) == [10.0, 1.0]
    assert mixing_weights([100, 1], "uniform") == [1.0, 1.0]
    with pytest.raises(DataError, match="Unknown mixing"):
        mixing_weights([1], "bogus")
    sampler = EpisodeSampler([_task(90, "a"), _task(10, "b")], k=1, seed=0, mixing="proportional")
    counts = Counter(sampler.episode(i).task for i in range(2000))
    assert 0.85 < counts["local:a"] / 2000 < 0.95


def test_demonstration_shots_for_sni_settings():
    sni = get_collection("sni", path=str(FIXTURES / "sni"))
    tasks = list(sni.tasks())
    ep = EpisodeSampler(tasks, k=2, shots="demonstrations").episode(0)
    assert [s.input for s in ep.shots] == ["pos in 0", "pos in 1"] and ep.instruction.startswith("Answer")
    with pytest.raises(DataError, match="fewer than K=5 demonstrations"):
        EpisodeSampler(tasks, k=5, shots="demonstrations")


# -- formatting and truncation ---------------------------------------------------------------------------
def test_hypermodel_format_tokens_and_budget(llama):
    hm = HyperModel.create(llama, target="lora", layers=1)
    tok = hm.tokenizer
    x_id, y_id = tok.convert_tokens_to_ids(X_TOKEN), tok.convert_tokens_to_ids(Y_TOKEN)
    task = Task(
        "fmt", tuple(Example(f"question {i} " + "word " * (i % 5), (f"answer {i}",)) for i in range(40))
    )
    task.instruction = "Answer the question."
    ep = EpisodeSampler([task], k=16, seed=0).episode(0)
    stats = Counter()
    ids = hm.encode_ids(ep.pairs, ep.instruction, stats=stats)
    assert (
        ids[0] == x_id and ids.count(x_id) == 17 and ids.count(y_id) == 16
    )  # instruction is a first <x> item
    assert tok.decode(ids[1 : ids.index(x_id, 1)]).strip() == "Answer the question."
    assert x_id not in llama.tokenizer.get_vocab().values()  # the downstream vocabulary is untouched

    pieces = hm.tokenizer.convert_ids_to_tokens(ids)
    before_special = [pieces[i - 1] for i in range(1, len(ids)) if ids[i] in (x_id, y_id)]
    assert all(p.strip("Ġ▁ ") for p in before_special)  # no lone space token before <x>/<y>

    huge = [("word " * 200, "the answer"), ("short", "b")]
    ids = hm.encode_ids(huge, None, stats=(st_ := Counter()))
    hm.config.max_input_tokens = 1024
    assert len(ids) <= 1024 and ids[0] == x_id and y_id in ids  # input shortened, its target kept
    assert tok.decode(ids[ids.index(y_id) + 1 :]).strip().startswith("the answer")
    hm.config.max_input_tokens = 40
    ids = hm.encode_ids(huge, None, stats=st_)
    assert len(ids) <= 40 and ids.count(y_id) == 1 and st_["hyper_truncated"] == 1
    assert tok.decode(ids[ids.index(y_id) + 1 :]).strip() == "the answer"

    hm.config.max_input_tokens = 60
    stats = Counter()
    enc = EpisodeEncoder(llama, hm)
    out = enc(ep)
    assert len(out.hyper_ids) <= 60
    kept = out.hyper_ids.count(y_id)  # whole examples only: every kept <x> input has its <y> target
    assert out.hyper_ids.count(x_id) == kept + 1 and enc.stats["hyper_dropped"] == 16 - kept > 0
    assert out.hyper_ids[-1] != y_id  # never ends between an input and its target


def test_downstream_limits_and_in_context_drops_whole_examples(llama):
    long = Task("long", tuple(Example("w " * 50 + f"q{i}", ("t " * 30 + "end",)) for i in range(20)))
    ep = EpisodeSampler([long], k=16, seed=0).episode(3)
    llama.max_input_tokens, llama.max_target_tokens, llama.max_in_context_tokens = 24, 8, 200
    try:
        enc = EpisodeEncoder(llama, in_context=True)
        out = enc(ep)
        query = llama.tokenizer(ep.target.input, add_special_tokens=False)["input_ids"]
        assert out.input_ids == query[-24:]  # the end of an over-long input is kept
        assert (
            len(out.target_ids) == 8
            and enc.stats["inputs_truncated"] == 1
            and enc.stats["targets_truncated"] == 1
        )
        assert len(out.in_context_ids) <= 200 and enc.stats["in_context_dropped"] > 0
        text = llama.tokenizer.decode(out.in_context_ids)
        assert text.rstrip().endswith(ep.target.input.rstrip()[-20:])  # the query is always kept, whole
    finally:
        llama.max_input_tokens, llama.max_target_tokens, llama.max_in_context_tokens = 384, 128, 1408


def test_t5_inputs_end_with_eos_within_limits(t5):
    long = Task("l", tuple(Example("w " * 40 + str(i), ("t " * 40,)) for i in range(5)))
    ep = EpisodeSampler([long], k=2).episode(0)
    t5.max_input_tokens, t5.max_target_tokens = 10, 5
    try:
        out = EpisodeEncoder(t5)(ep)
    finally:
        t5.max_input_tokens, t5.max_target_tokens = 384, 128
    eos = t5.tokenizer.eos_token_id
    assert out.input_ids[-1] == eos and out.target_ids[-1] == eos
    assert len(out.input_ids) == 10 and len(out.target_ids) == 5  # </s> counted in the limit


# -- CACLM -----------------------------------------------------------------------------------------------
def _docs(n=30):
    return [" ".join(f"doc{d} word{i}" for i in range(40)) for d in range(n)]


def test_caclm_segments(llama):
    seg = Segments(a=20, b=8, c=12, d=24)
    corpus = CaclmCorpus(_docs(), llama.tokenizer, seg, seed=0)
    stream = corpus.tokens.flatten().tolist()
    s = corpus.sample(0)
    assert [len(s.a), len(s.b), len(s.c), len(s.d)] == [20, 8, 12, 24]
    window = s.a + s.b + s.c + s.d
    starts = [i for i in range(0, len(stream), seg.window) if stream[i : i + seg.window] == window]
    assert starts  # A, B, C, D are consecutive pieces of one window of the token stream

    hm = HyperModel.create(llama, target="lora", layers=1)
    out = CaclmEncoder(llama, hm)(s)
    before, after = (hm.tokenizer.convert_tokens_to_ids(t) for t in (BEFORE_TOKEN, AFTER_TOKEN))
    assert out.hyper_ids == [before, *s.a, after, *s.d]
    assert out.input_ids == s.b and out.target_ids == s.c

    seen = [corpus.sample(i) for i in range(len(corpus))]
    rows = sorted(map(tuple, corpus.tokens.tolist()))
    assert sorted(tuple(x.a + x.b + x.c + x.d) for x in seen) == rows  # one pass visits every window once
    assert seen != [corpus.sample(i) for i in range(len(corpus), 2 * len(corpus))]  # the next pass reshuffles
    resumed = CaclmCorpus(_docs(), llama.tokenizer, seg, seed=0)
    resumed.load_state_dict({**corpus.state_dict(), "position": 3})
    assert next(iter(resumed)) == corpus.sample(3)
    assert Segments().window == 512 and Segments().b == 32  # the paper's window and B


def test_caclm_t5_and_errors(t5, llama, tmp_path):
    hm = HyperModel.create(t5, target="lora", layers=1)
    corpus = CaclmCorpus(_docs(5), t5.tokenizer, Segments(4, 4, 4, 4))
    out = CaclmEncoder(t5, hm)(corpus.sample(0))
    eos = t5.tokenizer.eos_token_id
    assert out.hyper_ids[-1] == eos and out.input_ids[-1] == eos and out.target_ids[-1] == eos
    with pytest.raises(DataError, match="fewer than one 512-token window"):
        CaclmCorpus(["tiny"], llama.tokenizer)
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(DataError, match="corpus.jsonl:2"):
        list(documents_from_files([bad]))
    (tmp_path / "a.txt").write_text("plain text document")
    assert list(documents_from_files([tmp_path / "a.txt"])) == ["plain text document"]


def test_looks_english():
    assert looks_english("The cat sat on the mat and looked at the door of the house.")
    assert not looks_english("Eine Skyline ist die Teilansicht oder das Panorama einer Stadt.")


# -- the other collections' fixtures ---------------------------------------------------------------------
def test_p3_fixture():
    p3 = get_collection("p3", path=str(FIXTURES / "p3"))
    assert "super_glue_rte_GPT_3_style" in p3.default_heldout()
    train, held = p3.split()
    assert train == ["ag_news_classify_with_choices", "samsum_Summarize_this_dialogue_"]  # T0-train only
    assert "super_glue_boolq_GPT_3_Style" not in train + held  # T0+ prompts: in neither list by default
    rte = p3.load("super_glue_rte_GPT_3_style")
    ex = rte.examples[1]
    assert (
        ex.target == "True" and ex.choices == ("True", "False") and ex.answers == (0,)
    )  # leading space gone
    assert rte.is_multiple_choice
    summ = p3.load("samsum_Summarize_this_dialogue_")
    assert not summ.is_multiple_choice and summ.examples[0].target == "They greet 0."
    scored = get_collection("p3", path=str(FIXTURES / "p3"), split="validation").load(
        "super_glue_rte_GPT_3_style_score_eval"
    )
    assert (
        len(scored) == 3
        and scored.examples[1].choices == ("True", "False")
        and scored.examples[1].answers == (1,)
    )


def test_sni_fixture():
    sni = get_collection("sni", path=str(FIXTURES / "sni"))
    assert sni.task_names() == [
        "task001_quoref_question_generation",
        "task002_quoref_answer_generation",
        "task003_mctaco_question_generation",
    ]  # the English track; the French task is not listed
    assert sni.split() == (sni.task_names()[:2], ["task003_mctaco_question_generation"])
    t = sni.load("task001_quoref_question_generation")
    assert t.instruction == "Answer the question for task001_quoref_question_generation."
    assert t.examples[2].references == ("answer 2", "reply 2") and len(t.demonstrations) == 3
    assert (
        get_collection("sni", path=str(FIXTURES / "sni"), max_examples=2).load(t.name).examples
        == t.examples[:2]
    )


def test_metaicl_fixture():
    m = get_collection("metaicl", path=str(FIXTURES / "metaicl"), setting="hr_to_lr", fewshot_seed=13)
    assert m.split() == (["glue-sst2", "squad-no_context"], ["superglue-rte"])
    rte = m.load("superglue-rte")
    assert len(rte) == 5 and len(rte.demonstrations) == 16 and rte.metrics == ("macro_f1",)
    assert rte.demonstrations[0].input == "superglue-rte input 113"  # the seed-13 k-shot file
    assert rte.examples[1].choices == ("entailment", "not_entailment") and rte.examples[1].answers == (1,)
    assert m.load("squad-no_context").metrics == ("rouge_l",)
    with pytest.raises(DataError, match="found hr_to_lr"):
        get_collection("metaicl", path=str(FIXTURES / "metaicl"), setting="class_to_class")


def test_local_fixture_dir_and_single_file(tmp_path):
    local = get_collection("local", path=str(FIXTURES / "local"))
    assert local.task_names() == ["qa/capitals", "sentiment"]
    assert local.split() == (["sentiment"], ["qa/capitals"])
    s = local.load("sentiment")
    assert s.instruction == "Classify the review." and s.is_multiple_choice and s.metrics == ("accuracy",)
    assert local.load("qa/capitals").examples[0].references == ("city 0", "town 0")

    one = tmp_path / "all.jsonl"
    one.write_text(
        "".join(
            json.dumps({"task": t, "input": f"{t}{i}", "output": "o"}) + "\n" for t in "ab" for i in range(3)
        )
    )
    assert [len(t) for t in get_collection("local", path=str(one)).tasks()] == [3, 3]
    assert len(load_task("local:a", path=str(one))) == 3


# -- bad input -------------------------------------------------------------------------------------------
def test_bad_input_errors(tmp_path):
    bad = tmp_path / "tasks"
    bad.mkdir()
    (bad / "t.jsonl").write_text('{"input": "a", "output": "b"}\n\n{"input": "c", "output": "d",}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:3: not valid JSON"):
        get_collection("local", path=str(bad)).load("t")
    (bad / "t.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "c"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:2: has no 'output'"):
        get_collection("local", path=str(bad)).load("t")
    (bad / "t.jsonl").write_text('{"input": "a", "choices": ["x", "y"], "label": "z"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:1: label 'z' is not one of the choices"):
        get_collection("local", path=str(bad)).load("t")
    with pytest.raises(DataError, match="Did you mean 'sentiment'"):
        get_collection("local", path=str(FIXTURES / "local")).load("sentimant")
    with pytest.raises(DataError, match="Unknown task collection 'bigbnech'. Did you mean 'bigbench'"):
        get_collection("bigbnech")
    with pytest.raises(DataError, match="needs path="):
        get_collection("sni")
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_loading_never_modifies_data_files():
    def digest():
        return {
            p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(FIXTURES.rglob("*")) if p.is_file()
        }

    before = digest()
    for name, opts in [("p3", {}), ("sni", {}), ("metaicl", {}), ("local", {})]:
        coll = get_collection(name, path=str(FIXTURES / name), **opts)
        for t in coll.tasks():
            EpisodeSampler([t], k=1).take(3)
    assert digest() == before


def test_tasks_cli(capsys):
    assert main(["tasks", "list", "--collection", "local", "--path", str(FIXTURES / "local")]) == 0
    out = capsys.readouterr().out
    assert "qa/capitals" in out and "held-out" in out and "2 tasks in local: 1 train, 1 held-out" in out
    assert main(["tasks", "show", "local:sentiment", "--path", str(FIXTURES / "local"), "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("<x>") == 3 and out.count("<y>") == 2 and "Classify the review." in out
    assert main(["tasks", "show", "local:nope", "--path", str(FIXTURES / "local")]) == 2
    assert "Unknown task in local 'nope'" in capsys.readouterr().err


# -- the real BIG-bench sdist, when it is in the cache ---------------------------------------------------
@pytest.mark.real_data
def test_real_bigbench_has_many_usable_tasks():
    from hypertuning._io import cache_dir

    cached = cache_dir() / "datasets" / f"bigbench-1.0.0-v{LAYOUT}" / "index.json"
    sdist = cache_dir() / "downloads" / "bigbench-1.0.0.tar.gz"
    if not cached.exists() and not sdist.exists():
        pytest.skip(
            f"the BIG-bench sdist is not in the cache ({sdist}); "
            "run `hypertune tasks list` once to fetch it (about 360 MB) and enable this test"
        )
    bb = BigBench(path=str(sdist) if not cached.exists() else None)
    train, held = bb.split()
    usable = [n for n in train + held if bb.describe(n)["examples"] >= 17]
    assert len(usable) >= 150
    assert {n.split("/")[0] for n in held} == set(bb.default_heldout()) and len(bb.default_heldout()) == 24
    for name in ("gem/xsum", "gem/wikilingua_en", "paragraph_segmentation"):
        assert name in bb.task_names() and name not in train + held
    task = bb.load(held[0])
    ep = EpisodeSampler([task], k=16).episode(0)
    assert len(ep.shots) == 16
