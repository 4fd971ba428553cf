"""The must-read measurement: the `mustread` collection, `remap=` views, chance and the example-dependence
figures (on rigged methods whose behaviour is known), and `hypertune eval` carrying them."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import torch

from hypertuning.cli import main
from hypertuning.data import Example, Task, get_collection, heldout_shots
from hypertuning.data.collections.mustread import FAMILIES, HELDOUT_SYMBOLS, TRAIN_SYMBOLS
from hypertuning.data.remap import SkipTask
from hypertuning.errors import DataError
from hypertuning.eval import EvalSettings, evaluate
from hypertuning.eval.dependence import chance, dependence, label_permutations, other_task
from hypertuning.eval.methods import Adaptation, Method


def _words(task: Task) -> set[str]:
    texts = [task.instruction or ""]
    for e in task.examples:
        texts += [e.input, *e.outputs, *e.choices]
    return {w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)}


# -- the collection --------------------------------------------------------------------------------------
def test_mustread_is_a_pure_function_of_family_and_seed():
    a, b = get_collection("mustread", train_tasks=3), get_collection("mustread", train_tasks=5)
    for name in a.task_names():
        assert a.load(name).examples == b.load(name).examples  # another collection size: the same task
    assert a.load("review-symbols/0").examples != a.load("review-symbols/1").examples
    assert (
        a.load("review-symbols/0").examples
        != get_collection("mustread", seed=1).load("review-symbols/0").examples
    )
    assert len(a.task_names()) == 3 * sum(f.split == "train" for f in FAMILIES.values()) + 2 * sum(
        f.split == "heldout" for f in FAMILIES.values()
    )


def test_mustread_default_heldout_families():
    coll = get_collection("mustread")
    train, held = coll.split()
    families = {n.split("/")[0] for n in held}
    assert len(families) >= 6
    choice = [f for f in families if FAMILIES[f].kind == "choice"]
    assert len(choice) >= 3 and len(families) - len(choice) >= 1
    for n in held:
        info = coll.describe(n)
        assert (info["chance"] is not None) == (FAMILIES[info["family"]].kind == "choice")
        assert coll.load(n).meta["must_read"]
    assert not families & {n.split("/")[0] for n in train}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_mustread_split_never_leaks_words_or_symbols(seed):
    """Property over collection seeds and task seeds: no word or symbol of a held-out family appears in
    any training task, and none of the training families' in any held-out one."""
    coll = get_collection("mustread", train_tasks=12, heldout_tasks=6, seed=seed)
    train, held = coll.split()
    heldout_vocab = frozenset().union(*(f.vocabulary for f in FAMILIES.values() if f.split == "heldout"))
    train_vocab = frozenset().union(*(f.vocabulary for f in FAMILIES.values() if f.split == "train"))
    assert not heldout_vocab & train_vocab
    assert not set(HELDOUT_SYMBOLS) & set(TRAIN_SYMBOLS)
    train_words = set().union(*(_words(coll.load(n)) for n in train))
    held_words = set().union(*(_words(coll.load(n)) for n in held))
    assert not train_words & heldout_vocab
    assert not held_words & train_vocab
    # the check has teeth: held-out tasks do use their vocabulary, training tasks theirs
    assert len(held_words & heldout_vocab) > 100 and len(train_words & train_vocab) > 100


def test_mustread_tasks_need_their_examples():
    """Symbols are drawn per task: two seeds of one family give other labels for the same kind of input."""
    coll = get_collection("mustread")
    for fam in ("review-symbols", "category-symbols", "city-recall"):
        a, b = coll.load(f"{fam}/0"), coll.load(f"{fam}/1")
        assert set(a.examples[0].choices) != set(b.examples[0].choices)
    flipped = coll.load("review-flipped/0")
    assert all(("dull" in e.input) <= (e.target == "positive") for e in flipped.examples)
    from hypertuning.data.collections.mustread import HELDOUT_CATEGORIES

    true_class = {w: c for c, words in HELDOUT_CATEGORIES.items() for w in words}
    more = get_collection("mustread", heldout_tasks=4)
    for seed in range(4):  # every word carries a class name that is not its own
        permuted = more.load(f"category-permuted/{seed}")
        assert all(e.target != true_class[e.input[: -len(" ->")]] for e in permuted.examples)
        assert all(e.target in HELDOUT_CATEGORIES for e in permuted.examples)


def test_recall_key_is_among_the_examples_at_k16():
    coll = get_collection("mustread")
    task = coll.load("city-recall/0")
    shots, evaluation = heldout_shots(task, 16, 0, up_to=True)
    shown = {s.target for s in shots}
    covered = sum(e.target in shown for e in evaluation.examples) / len(evaluation)
    assert covered >= 0.9


# -- remapped views --------------------------------------------------------------------------------------
def _choice_tasks():
    labels = ("yes", "no", "maybe")
    return {
        "fixed": {
            "name": "fixed",
            "metrics": ["multiple_choice_grade"],
            "task_prefix": "Answer yes, no or maybe.",
            "examples": [
                {
                    "input": f"Is {i} big?",
                    "target_scores": {lab: int(j == i % 3) for j, lab in enumerate(labels)},
                }
                for i in range(40)
            ],
        },
        "varied": {
            "name": "varied",
            "metrics": ["multiple_choice_grade"],
            "examples": [
                {"input": f"Pick {i}", "target_scores": {f"o{i}": 1, f"p{i}": 0}} for i in range(30)
            ],
        },
        "gen": {
            "name": "gen",
            "metrics": ["exact_str_match"],
            "examples": [{"input": "a", "target": "b"}] * 3,
        },
    }


@pytest.fixture
def bb_choices(tmp_path, monkeypatch, bb_writer):
    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    return bb_writer(tmp_path / "bigbench-1.0.0.tar.gz", _choice_tasks(), ["fixed", "varied", "gen"])


def test_remap_replaces_labels_consistently_within_a_task(bb_choices):
    plain = get_collection("bigbench", path=str(bb_choices)).load("fixed")
    view = get_collection("bigbench", path=str(bb_choices), remap=0)
    task = view.load("fixed")
    mapping = task.meta["label_map"]
    assert sorted(mapping) == ["maybe", "no", "yes"] and len(set(mapping.values())) == 3
    assert set(mapping.values()) <= set(HELDOUT_SYMBOLS)
    assert task.id == "bigbench+remap0:fixed" and task.meta["must_read"]
    assert plain.instruction and task.instruction is None  # it names the labels: dropped, not rewritten
    for old, new in zip(plain.examples, task.examples, strict=True):
        assert new.choices == tuple(mapping[c] for c in old.choices) and new.answers == old.answers
        # the options listed in the prompt are the symbols, in the original's shuffled order
        listed = re.findall(r"choice: (\w+)", new.input)
        assert listed == [mapping[c] for c in re.findall(r"choice: (\w+)", old.input)] and len(listed) == 3
        assert not {"yes", "no", "maybe"} & set(re.findall(r"\w+", new.input))
    shots, evaluation = heldout_shots(task, 8, 0)
    assert {s.target for s in shots} | {e.target for e in evaluation.examples} == set(mapping.values())


def test_remap_differs_across_seeds_and_skips_tasks_without_a_label_set(bb_choices):
    a = get_collection("bigbench", path=str(bb_choices), remap=0).load("fixed").meta["label_map"]
    b = get_collection("bigbench", path=str(bb_choices), remap=1).load("fixed").meta["label_map"]
    assert a != b
    view = get_collection("bigbench", path=str(bb_choices), remap=0)
    with pytest.raises(SkipTask, match="no fixed label set: its examples offer 30 different sets"):
        view.load("varied")
    train, held = view.split()
    assert held == ["fixed"]
    assert set(view.skipped) == {"varied", "gen"} and "not multiple choice" in view.skipped["gen"]


def test_remap_of_a_collection_without_rendering_relabels_records(tmp_path):
    (tmp_path / "t.jsonl").write_text(
        "".join(
            json.dumps({"input": f"q{i}", "choices": ["red", "blue"], "label": i % 2}) + "\n"
            for i in range(9)
        )
    )
    task = get_collection("local", path=str(tmp_path), remap=3).load("t")
    m = task.meta["label_map"]
    assert [e.target for e in task.examples[:2]] == [m["red"], m["blue"]]
    assert task.examples[0].input == "q0"


def test_remap_rejects_a_non_integer_seed():
    with pytest.raises(Exception, match="remap must be an integer seed"):
        get_collection("toy", remap="zero")


# -- chance ----------------------------------------------------------------------------------------------
def test_chance_is_the_expected_accuracy_of_a_uniform_guess():
    ex = [
        Example("a", choices=("x", "y"), answers=(0,)),  # 1/2
        Example("b", choices=("x", "y", "z", "w"), answers=(1,)),  # 1/4
        Example("c", choices=("x", "y", "z", "w"), answers=(1, 2)),  # 2/4
    ]
    assert chance(ex) == pytest.approx(100 * (0.5 + 0.25 + 0.5) / 3)
    assert chance([Example("a", outputs=("b",))]) is None


# -- the dependence figures on rigged methods -------------------------------------------------------------
LABELS = ("zub", "kel", "mop", "rif")


def _label_task(name: str, n: int = 4, size: int = 400) -> Task:
    labels = LABELS[:n]
    return Task(
        name,
        tuple(Example(f"{name} item {i}", choices=labels, answers=((i * 7) % n,)) for i in range(size)),
        collection="rig",
        meta={"must_read": True},
    )


def ignore(task, shots, examples):
    return [0 for _ in examples]


def majority(task, shots, examples):
    """Copies the most common label of its examples (the first such label on a tie)."""
    counts = Counter(s.target for s in shots)
    best = max(counts.values())
    top = next(s.target for s in shots if counts[s.target] == best)
    return [e.choices.index(top) for e in examples]


def _figures(predict, task, tasks, k=7, seed=0):
    shots, evaluation = heldout_shots(task, k, seed, pool_size=64)
    examples = evaluation.examples
    return dependence(predict, task, shots, examples, predict(task, shots, examples), seed, tasks, k, 64)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_a_method_that_ignores_its_examples(n):
    tasks = [_label_task("a", n), _label_task("b", n)]
    out = _figures(ignore, tasks[0], tasks)
    assert out["changed_with_other_examples"] == 0 and out["changed_with_other_task"] == 0
    assert out["follows_label_permutation"] == pytest.approx(1 / n, abs=0.08)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_a_method_that_copies_the_majority_label_follows_the_permutation(n):
    tasks = [_label_task("a", n), _label_task("b", n)]
    out = _figures(majority, tasks[0], tasks)
    assert out["follows_label_permutation"] == 1.0
    assert out["dependence_info"]["permutations"] == len(
        {tuple(sorted(p.items())) for p in label_permutations(tasks[0], 336, 0)}
    )


def test_changed_with_other_examples_and_other_task_count_changed_answers():
    """A method that answers with the first shot's label: its answers change exactly when that label does."""

    def first(task, shots, examples):
        return [e.choices.index(shots[0].target) if shots[0].target in e.choices else 0 for e in examples]

    a, b = _label_task("a"), _label_task("b")
    tasks = [a, b]
    shots0, ev = heldout_shots(a, 7, 0, 64)
    shots1, _ = heldout_shots(a, 7, 1, 64)
    other, _ = heldout_shots(b, 7, 0, 64)
    out = _figures(first, a, tasks)
    assert out["changed_with_other_examples"] == float(shots0[0].target != shots1[0].target)
    assert out["changed_with_other_task"] == float(shots0[0].target != other[0].target)
    assert out["dependence_info"]["other_task"] == "rig:b"


def test_other_task_comes_from_another_family_first():
    """Two seeds of review-flipped share labels and mapping: the other task must be another family's."""
    coll = get_collection("mustread")
    tasks = [coll.load(n) for n in coll.default_heldout()]
    picked = {t.name: other_task(t, tasks) for t in tasks}
    for t in tasks:  # city-recall is the only 4-option family: its other seed is the fallback
        o = picked[t.name]
        assert (o.meta["family"] == t.meta["family"]) == (t.meta["family"] == "city-recall")
    assert picked["review-flipped/0"].meta["family"] == "review-symbols"  # the next 2-option family
    lone = [_label_task("a"), Task("a2", _label_task("a").examples, collection="rig", meta={"family": "a"})]
    lone[0].meta["family"] = "a"
    assert other_task(lone[0], lone).id == "rig:a2"  # its own family when nothing else qualifies


def test_other_examples_figure_is_none_when_the_pool_holds_only_k():
    task = _label_task("a", 2, size=32)  # a pool of 16: every seed shows the same 16
    shots, evaluation = heldout_shots(task, 16, 0, pool_size=16)
    ex = evaluation.examples
    out = dependence(majority, task, shots, ex, majority(task, shots, ex), 0, [task], 16, 16)
    assert (
        out["changed_with_other_examples"] is None and out["dependence_info"]["same_examples_at_other_seed"]
    )


def test_resuming_with_other_dependence_settings_is_refused(tmp_path):
    tasks = [_label_task("a", 3, 60)]
    methods = [_RiggedMethod("copies", majority)]
    off = EvalSettings(k=5, seeds=[0], max_examples=20, dependence="off")
    evaluate(methods, tasks, off, tmp_path, progress=False)
    with pytest.raises(Exception, match="dependence: 'off' -> 'auto'"):
        evaluate(methods, tasks, EvalSettings(k=5, seeds=[0, 1], max_examples=20), tmp_path, progress=False)
    legacy = json.loads((tmp_path / "eval_config.json").read_text())
    del legacy["dependence"]  # written before the setting existed: taken as auto
    (tmp_path / "eval_config.json").write_text(json.dumps(legacy))
    evaluate(methods, tasks, EvalSettings(k=5, seeds=[0], max_examples=20), tmp_path, progress=False)


def test_the_remap_view_copies():
    import copy

    view = get_collection("mustread", remap=0)
    assert copy.deepcopy(view).remap == 0


def test_other_task_prefers_the_same_label_set_then_the_option_count():
    a, b3, c = _label_task("a", 4), _label_task("b", 3), _label_task("c", 4)
    gen = Task("g", (Example("x", outputs=("y",)), Example("z", outputs=("w",))), collection="rig")
    gen2 = Task("h", (Example("x", outputs=("y",)), Example("z", outputs=("w",))), collection="rig")
    assert other_task(a, [a, b3, c]).id == "rig:c"
    assert other_task(b3, [a, b3, c]) is None
    assert other_task(gen, [a, gen, gen2]).id == "rig:h"


# -- through evaluate() ------------------------------------------------------------------------------------
class _Rigged:
    """A stand-in downstream model that scores the option whose id its context names highest."""

    def __init__(self):
        self.vocab = {lab: i for i, lab in enumerate(LABELS)}

    def encode_targets(self, texts, stats=None):
        return [[self.vocab[t]] for t in texts]

    def loglikelihood_ids(self, contexts, continuations, adapter=None, batch_size=8):
        return torch.tensor(
            [0.0 if ctx[0] == c[0] else -1.0 for ctx, c in zip(contexts, continuations, strict=True)]
        )


class _RiggedMethod(Method):
    uses_shots = True

    def __init__(self, label, rule):
        self.models, self.path, self.label, self.rule, self.ds = None, None, label, rule, _Rigged()

    def adapt(self, task, shots, examples):
        picks = self.rule(task, shots, examples)
        return Adaptation(
            self.ds, None, [[self.ds.vocab[e.choices[p]]] for e, p in zip(examples, picks, strict=True)]
        )


def test_evaluate_records_chance_and_dependence(tmp_path):
    tasks = [_label_task("a", 3, 90), _label_task("b", 3, 90)]
    methods = [_RiggedMethod("ignores", ignore), _RiggedMethod("copies", majority)]
    results = evaluate(
        methods, tasks, EvalSettings(k=5, seeds=[0, 1], max_examples=40), tmp_path, progress=False
    )
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for r in records:
        assert r["chance"] == pytest.approx(100 / 3) and len(r["predictions"]) == r["examples"] == 40
        if r["method"] == "ignores":
            assert r["changed_with_other_examples"] == 0 and r["changed_with_other_task"] == 0
        else:
            assert r["follows_label_permutation"] == 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["chance"]["a"] == pytest.approx(100 / 3)
    assert saved["dependence"]["follows_label_permutation"]["copies"]["AVG"] == 100.0
    off = evaluate(
        methods, tasks, EvalSettings(k=5, seeds=[0], max_examples=40, dependence="off"), progress=False
    )
    assert all(r["follows_label_permutation"] is None for r in off.records)
    assert results.figure_table("changed_with_other_task")["ignores"]["AVG"] == 0.0


def test_eval_cli_on_mustread_carries_chance_and_dependence(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "ev"
    tasks = ["review-symbols/0", "category-permuted/0", "suffix/0"]
    argv = ["eval", "--collection", "mustread", "-m", "zero-shot", "-m", "in-context", "--k", "8"]
    argv += [
        "--downstream",
        str(tiny_dirs["llama"]),
        "--tasks",
        *tasks,
        "--seeds",
        "0",
        "--max-examples",
        "8",
    ]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(chance)" in printed and "answers changed (%) with K other examples" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["chance"]["review-symbols"] == 50.0 and saved["chance"]["suffix"] is None
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    ic = [r for r in records if r["method"] == "in-context"]
    assert len(ic) == 3 and all(r["changed_with_other_examples"] is not None for r in ic)
    assert all(r["changed_with_other_examples"] is None for r in records if r["method"] == "zero-shot")
    assert {r["task"]: r["chance"] for r in ic}["mustread:category-permuted/0"] == pytest.approx(100 / 3)


# -- training episodes that reward reading (issue 18, item 1) ------------------------------------------------
def _bb_choice_task(bb_choices) -> Task:
    return get_collection("bigbench", path=str(bb_choices)).load("fixed")


def test_remapped_episodes_are_consistent_within_and_differ_across(bb_choices):
    from hypertuning.data.episodes import EpisodeSampler

    task = _bb_choice_task(bb_choices)
    plain = EpisodeSampler([task], k=6, seed=3)
    mixed = EpisodeSampler([task], k=6, seed=3, remap=0.5)
    remapped, mappings = 0, set()
    for i in range(60):
        a, b = plain.episode(i), mixed.episode(i)
        assert [s.input.split("\n")[0] for s in a.shots] == [s.input.split("\n")[0] for s in b.shots]
        if b == a:
            continue
        remapped += 1
        mapping = {}  # the same symbol for a label in every shot and the target
        for old, new in zip([*a.shots, a.target], [*b.shots, b.target], strict=True):
            assert new.answers == old.answers
            for o, n in zip(old.choices, new.choices, strict=True):
                assert mapping.setdefault(o, n) == n
            assert re.findall(r"choice: (\w+)", new.input) == [
                mapping[c] for c in re.findall(r"choice: (\w+)", old.input)
            ]
        assert set(mapping.values()) <= set(TRAIN_SYMBOLS) and len(set(mapping.values())) == 3
        assert a.instruction and b.instruction is None
        mappings.add(tuple(sorted(mapping.items())))
    assert 15 < remapped < 45 and len(mappings) == remapped  # about half, each with symbols of its own
    # resumes exactly: a fresh sampler at position n gives what an uninterrupted one gives
    again = EpisodeSampler([task], k=6, seed=3, remap=0.5)
    again.load_state_dict({**mixed.state_dict(), "position": 17})
    assert next(iter(again)) == mixed.episode(17)
    assert mixed.fingerprint != plain.fingerprint
    assert plain.fingerprint == EpisodeSampler([task], k=6, seed=3, remap=0.0).fingerprint  # old runs resume
    with pytest.raises(Exception, match=r"in \[0, 1\]"):
        EpisodeSampler([task], k=6, remap=1.5)


def _skewed_task() -> Task:
    """90% of the examples say "yes", 10% "no": drawn plainly, a target's label is the shots' majority."""
    ex = [Example(f"item {i}?", choices=("yes", "no"), answers=(int(i % 10 == 0),)) for i in range(200)]
    return Task("skew", ex, collection="toy")


def test_label_share_shots_say_nothing_of_the_target_label():
    """At label_share=1 how often the target's label appears among the shots no longer depends on which
    label the target has (drawn plainly it does: 90% "yes" shots for "yes" and "no" targets alike, so
    the shots' majority is the likely answer); every label appears; the shots are distinct, never the
    target; deterministic in (seed, position) and resumable."""
    from statistics import fmean

    from hypertuning.data.episodes import EpisodeSampler

    task = _skewed_task()
    plain = EpisodeSampler([task], k=8, seed=5)
    shared = EpisodeSampler([task], k=8, seed=5, label_share=1.0)

    def yes_share(ep):
        return sum(s.target == "yes" for s in ep.shots) / len(ep.shots)

    def own_share(eps, label):  # the mean share of the target's own label among its shots
        return fmean(
            sum(s.target == label for s in e.shots) / len(e.shots) for e in eps if e.target.target == label
        )

    eps, plain_eps = shared.take(400), plain.take(400)
    assert [e.target for e in eps] == [e.target for e in plain_eps]  # the same targets
    for e in eps:
        assert len({s.input for s in e.shots}) == 8 and e.target.input not in {s.input for s in e.shots}
        assert {s.target for s in e.shots} == {"yes", "no"}  # the mapping is always there to read
    assert fmean(yes_share(e) for e in plain_eps) > 0.8
    # plainly drawn, a "yes" target sees about 90% "yes" shots and a "no" target about 10% "no" ones
    assert own_share(plain_eps, "yes") > 0.8 and own_share(plain_eps, "no") < 0.2
    # at a random share, either target sees its own label about as often as the other (one fewer to give)
    assert 0.35 < own_share(eps, "yes") < 0.65 and 0.3 < own_share(eps, "no") < 0.65
    assert 0.35 < fmean(yes_share(e) for e in eps) < 0.65  # a share drawn from the simplex, not the task's
    shares = sorted(yes_share(e) for e in eps)
    assert shares[40] <= 0.25 and shares[-40] >= 0.75  # spread: skewed both ways
    assert eps == EpisodeSampler([task], k=8, seed=5, label_share=1.0).take(400)
    again = EpisodeSampler([task], k=8, seed=5, label_share=1.0)
    again.load_state_dict({**shared.state_dict(), "position": 123})
    assert next(iter(again)) == shared.episode(123)
    assert shared.fingerprint != plain.fingerprint
    assert shared.fingerprint != EpisodeSampler([task], k=8, seed=5, remap=1.0).fingerprint
    assert plain.fingerprint == EpisodeSampler([task], k=8, seed=5, label_share=0.0).fingerprint
    half = EpisodeSampler([task], k=8, seed=5, label_share=0.5).take(400)
    same = sum(a == b for a, b in zip(half, plain_eps, strict=True))
    assert 150 < same < 250  # about half the episodes keep their plain shots


def test_label_share_leaves_tasks_without_a_label_set_alone(bb_choices):
    from hypertuning.data.episodes import EpisodeSampler

    varied = get_collection("bigbench", path=str(bb_choices)).load("varied")
    assert EpisodeSampler([varied], k=4, seed=1, label_share=1.0).take(30) == EpisodeSampler(
        [varied], k=4, seed=1
    ).take(30)
    with pytest.raises(DataError, match=r"label_share .* in \[0, 1\]"):
        EpisodeSampler([varied], k=4, label_share=2.0)


def test_label_share_with_a_rare_label_or_fewer_shots_than_labels():
    """A label drawn more often than it occurs gives the rest to the others, so K shots still come, all
    distinct; with K below the number of labels, K different labels."""
    from hypertuning.data.episodes import shots_at_random_share
    from hypertuning.data.task import rng_for

    rare = [Example(f"q{i}", choices=("yes", "no"), answers=(int(i < 2),)) for i in range(102)]
    for index in range(50):
        shots = shots_at_random_share(rare, ("no", "yes"), 8, rng_for(0, "t", index), exclude=50)
        assert len({s.input for s in shots}) == 8 and "q50" not in {s.input for s in shots}
        assert 1 <= sum(s.target == "no" for s in shots) <= 2  # both "no" examples at most, at least one
        assert shots == shots_at_random_share(rare, ("no", "yes"), 8, rng_for(0, "t", index), exclude=50)
    three = [Example(f"q{i}", choices=("a", "b", "c"), answers=(i % 3,)) for i in range(30)]
    for index in range(20):
        shots = shots_at_random_share(three, ("a", "b", "c"), 2, rng_for(1, "t", index), exclude=0)
        assert len({s.target for s in shots}) == 2
    assert shots_at_random_share(three, ("a", "b", "c"), 0, rng_for(1, "t", 0), exclude=0) == []


def test_mustread_families_mix_into_training_at_their_rate(bb_choices):
    from hypertuning.data.episodes import EpisodeSampler, MixedSampler

    main_ = EpisodeSampler([_bb_choice_task(bb_choices)], k=4, seed=0)
    coll = get_collection("mustread", train_tasks=2)
    extra = EpisodeSampler([coll.load(n) for n in coll.split()[0]], k=4, seed=0)
    mixed = MixedSampler(main_, extra, 0.3, seed=0)
    eps = [mixed.episode(i) for i in range(400)]
    share = sum(e.task.startswith("mustread:") for e in eps) / len(eps)
    assert 0.22 < share < 0.38
    assert eps == MixedSampler(main_, extra, 0.3, seed=0).take(400)
    assert all(e == main_.episode(i) for i, e in enumerate(eps) if not e.task.startswith("mustread:"))


def test_mtf_hyper_trains_on_remapped_and_mustread_episodes(tmp_path):
    from pathlib import Path

    from hypertuning.train import load_config, train
    from hypertuning.train.objectives import OBJECTIVES

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke" / "mtf_hyper.yaml"
    over = [f"run_dir={tmp_path}", "train.steps=3", "eval.every=3", "eval.phi_probes=0"]
    over += ["data.remap=0.5", "data.mustread=0.3", "data.mustread_options={train_tasks: 2}"]
    cfg = load_config(smoke, over)
    objective = OBJECTIVES.get("mtf_hyper")(cfg)
    eps = [objective.sampler.episode(i) for i in range(200)]
    from_mustread = [e for e in eps if e.task.startswith("mustread:")]
    labelled = [e for e in eps if e.task.startswith("toy:label-")]
    assert 30 < len(from_mustread) < 90
    assert any(set(e.target.choices) <= set(TRAIN_SYMBOLS) for e in labelled)
    assert any(set(e.target.choices) == {"yes", "no", "maybe", "never"} for e in labelled)
    assert not any(
        e.task.split(":")[1].split("/")[0] in FAMILIES
        and FAMILIES[e.task.split(":")[1].split("/")[0]].split == "heldout"
        for e in from_mustread
    )
    with pytest.raises(Exception, match="data.remap=SHARE"):
        OBJECTIVES.get("mtf_hyper")(load_config(smoke, [*over, "data.options={remap: 0}"]))
    seeded = load_config(smoke, [*over, "data.mustread_options={train_tasks: 2, seed: 1}"])
    assert OBJECTIVES.get("mtf_hyper")(seeded).stream_fingerprint != objective.stream_fingerprint
    finals = list(train(cfg))
    assert len(finals) == 1 and json.loads((tmp_path / "summary.json").read_text())["steps"] == 3


def test_tasks_list_shows_family_split_and_chance(capsys, bb_choices):
    assert main(["tasks", "list", "--collection", "mustread"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("city-recall/0 "))
    assert "held-out" in line and " 25.0 " in line and "[city-recall]" in line
    assert "16 held-out" in out
    assert main(["tasks", "list", "--path", str(bb_choices), "--remap", "0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^varied +skipped +no fixed label set", out, re.M)
    assert "2 skipped (no fixed label set to remap)" in out
