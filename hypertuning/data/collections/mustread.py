"""`mustread`: tasks whose answers cannot be known without reading their examples (nothing to fetch).

A task is one *family* (a kind of task with its own word lists) drawn at one seed: `review-symbols/3` is
the review-sentiment family whose two labels are the symbols drawn for seed 3. Every task is a pure
function of (family, seed), so training can have as many tasks as it wants (`train_tasks=` per training
family) and held-out tasks are fixed (`heldout_tasks=` per held-out family).

The split is by family: held-out families, their word lists and their symbols never appear in a training
task (`tests/data/test_mustread.py` checks the vocabularies over many seeds). Families:

- arbitrary symbols for natural labels (word categories, review sentiment), so the symbol of a class is
  only known from the examples;
- natural labels permuted (category names deranged) or flipped (sentiment);
- key-to-value recall: made-up keys with a value each, few keys so that the query's key is among K
  examples with high probability (1 - (1 - 1/4)^K: 99% at K=16, 90% at K=8);
- string rules: a made-up affix, a letter or word transformation, a fixed arbitrary word-to-code map.

Multiple-choice tasks list their labels as options, so a uniform guess scores `chance` = 1/options.
Inputs end in " ->" and targets follow it, one example per line in an in-context prompt.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import DataError
from ..task import Example, Task, rng_for
from .base import COLLECTIONS, Collection


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _symbols(initials: str) -> tuple[str, ...]:
    """Made-up consonant-vowel-consonant-vowel words; the initial consonants set the pool, so the training
    and held-out pools are disjoint by construction."""
    out = []
    for c1, v1, c2, v2 in itertools.product(initials, "aeiou", "bdgklmnprstvz", "aeiou"):
        if c1 != c2 and v1 != v2:
            out.append(c1 + v1 + c2 + v2)
    return tuple(out)


HELDOUT_CATEGORIES = {
    "animal": _words(
        "cat dog horse cow sheep goat pig lion tiger bear wolf fox rabbit mouse deer zebra monkey camel "
        "donkey elephant giraffe otter beaver squirrel"
    ),
    "fruit": _words(
        "apple banana cherry grape lemon mango melon peach pear plum kiwi lime apricot papaya guava fig "
        "coconut pineapple strawberry raspberry blueberry watermelon nectarine tangerine"
    ),
    "colour": _words(
        "red blue green yellow purple pink brown black white grey violet indigo crimson scarlet maroon "
        "beige turquoise teal navy magenta cyan ivory amber olive"
    ),
    "body part": _words(
        "arm leg hand foot head neck knee elbow shoulder finger toe ankle wrist chin nose ear eye mouth "
        "lip tooth tongue heart lung liver"
    ),
    "instrument": _words(
        "piano guitar violin drum flute trumpet cello harp saxophone clarinet trombone banjo ukulele oboe "
        "tuba accordion harmonica xylophone bagpipes mandolin organ tambourine cymbal bassoon"
    ),
}
TRAIN_CATEGORIES = {
    "vehicle": _words(
        "car bus train truck bicycle boat ship plane tram taxi van scooter tractor canoe yacht ferry "
        "helicopter jeep subway wagon sled kayak rocket motorcycle"
    ),
    "tool": _words(
        "hammer saw drill wrench screwdriver pliers chisel shovel rake axe ladder file clamp level trowel "
        "mallet spanner crowbar sander stapler scissors tape knife hoe"
    ),
    "furniture": _words(
        "table desk bed shelf cupboard wardrobe dresser bench stool couch armchair cabinet bookcase drawer "
        "ottoman crib futon recliner sideboard nightstand hammock cot mirror lamp"
    ),
    "weather": _words(
        "rain snow wind storm fog hail sleet thunder lightning drizzle frost breeze gale blizzard cloud "
        "sunshine mist tornado hurricane monsoon typhoon cyclone heatwave drought"
    ),
    "clothing": _words(
        "shirt trousers dress skirt coat hat scarf glove sock shoe boot sweater jacket vest tie belt "
        "blouse jeans shorts hoodie cap sandal pyjamas apron"
    ),
    "drink": _words(
        "tea coffee milk juice water soda beer wine cocoa lemonade cider smoothie espresso latte whisky "
        "vodka rum gin brandy champagne kombucha broth punch mocha"
    ),
}
HELDOUT_REVIEWS = {
    "nouns": _words(
        "movie film show play concert album novel song documentary musical opera episode series "
        "soundtrack performance"
    ),
    "positive": _words(
        "wonderful delightful superb brilliant charming moving gorgeous touching stunning masterful"
    ),
    "negative": _words("awful dreadful boring tedious dull clumsy painful lifeless forgettable pointless"),
    "templates": (
        "The {n} was {a}.",
        "I found the {n} {a}.",
        "This {n} is {a}.",
        "Honestly, the {n} felt {a}.",
        "Everyone said the {n} was {a}.",
    ),
    "labels": ("positive", "negative"),
}
TRAIN_REVIEWS = {
    "nouns": _words(
        "hotel phone laptop chair restaurant car bike camera printer sofa mattress blender jacket "
        "backpack tablet"
    ),
    "positive": _words("great excellent fantastic reliable comfortable solid lovely perfect sturdy helpful"),
    "negative": _words("bad poor horrible broken flimsy noisy useless cheap faulty rude"),
    "templates": ("Our {n} was {a}.", "My {n} seems {a}.", "We rated the {n} {a}.", "That {n}: {a}."),
    "labels": ("good", "bad"),
}
HELDOUT_CITIES = _words(
    "Paris London Tokyo Cairo Lima Oslo Rome Delhi Madrid Berlin Sydney Moscow Dublin Vienna"
)
TRAIN_JOBS = _words("doctor teacher baker farmer pilot nurse lawyer chef plumber painter singer dancer")
_LEXICON = {
    w.lower().strip(".,:")
    for group in (*HELDOUT_CATEGORIES.values(), *TRAIN_CATEGORIES.values(), HELDOUT_CITIES, TRAIN_JOBS)
    for w in group
} | {w for lex in (HELDOUT_REVIEWS, TRAIN_REVIEWS) for k in ("nouns", "positive", "negative") for w in lex[k]}
# symbols for labels, keys and affixes (real words among them dropped); the held-out pool is also what
# `remap=` writes over real tasks
HELDOUT_SYMBOLS = tuple(s for s in _symbols("lmnprsvz") if s not in _LEXICON)
TRAIN_SYMBOLS = tuple(s for s in _symbols("bdfghjk") if s not in _LEXICON)


@dataclass(frozen=True)
class Family:
    name: str
    split: str  # "train" or "heldout"
    kind: str  # "choice" or "generate"
    about: str  # one line for `hypertune tasks list`
    make: Callable[[random.Random, int], list[Example]]  # (rng, examples) -> the task's examples
    vocabulary: frozenset[str]  # every word its tasks may use, for the split check


def _draw(rng: random.Random, pool, n: int) -> list:
    return rng.sample(list(pool), n)


def _derangement(rng: random.Random, items: list) -> list:
    """A permutation of `items` that moves every one (so a natural label never keeps its own name)."""
    while True:
        out = rng.sample(items, len(items))
        if all(a != b for a, b in zip(items, out, strict=True)):
            return out


def _choice_examples(pairs: list[tuple[str, str]], labels: list[str]) -> list[Example]:
    return [Example(f"{x} ->", choices=tuple(labels), answers=(labels.index(y),)) for x, y in pairs]


def _categories(table: dict, symbols, n: int, permuted: bool):
    def make(rng, size):
        names = sorted(_draw(rng, table, n))
        labels = _derangement(rng, names) if permuted else _draw(rng, symbols, n)
        pairs = [(w, labels[i]) for i, c in enumerate(names) for w in table[c]]
        rng.shuffle(pairs)
        return _choice_examples(pairs[:size], labels)

    return make


def _reviews(lex: dict, symbols, flipped: bool):
    def make(rng, size):
        labels = list(reversed(lex["labels"])) if flipped else _draw(rng, symbols, 2)
        every = [
            (t.format(n=n, a=a), labels[s])
            for s, pol in enumerate(("positive", "negative"))
            for t in lex["templates"]
            for n in lex["nouns"]
            for a in lex[pol]
        ]
        return _choice_examples(rng.sample(every, min(size, len(every))), labels)

    return make


def _recall(keys_pool, values_pool, template: str, choice: bool, keys: int = 4):
    def make(rng, size):
        keys_ = [k.capitalize() for k in _draw(rng, keys_pool, keys)]
        values = _draw(rng, values_pool, keys)
        numbers = rng.sample(range(1, 1000), min(size, 999))
        pairs = [(template.format(i=i, k=keys_[j % keys]), values[j % keys]) for j, i in enumerate(numbers)]
        rng.shuffle(pairs)
        if choice:
            return _choice_examples(pairs, values)
        return [Example(f"{x} ->", outputs=(y,)) for x, y in pairs]

    return make


def _rule(words, rules: dict[str, Callable], symbols):
    """A string rule drawn per task from `rules`, each given the task's made-up symbol."""

    def make(rng, size):
        name = rng.choice(sorted(rules))
        sym = rng.choice(symbols)
        inputs = rules[name](rng, words, size)
        return [Example(f"{x} ->", outputs=(f(x, sym),)) for x, f in inputs]

    return make


def _single(fn):
    """A rule on one word: every word of the list once."""

    def draw(rng, words, size):
        return [(w, fn) for w in rng.sample(list(words), min(size, len(words)))]

    return draw


def _phrases(fn, n: int = 3):
    """A rule on phrases of `n` distinct words."""

    def draw(rng, words, size):
        seen, out = set(), []
        while len(out) < size:
            phrase = " ".join(rng.sample(list(words), n))
            if phrase not in seen:
                seen.add(phrase)
                out.append((phrase, fn))
        return out

    return draw


HELDOUT_RULES = {
    "suffix": _single(lambda w, s: w + s),
    "reverse-words-mark": _phrases(lambda p, s: " ".join(reversed(p.split())) + " " + s),
    "rotate-words-mark": _phrases(lambda p, s: " ".join(p.split()[1:] + [s, p.split()[0]])),
}
TRAIN_RULES = {
    "prefix": _single(lambda w, s: s + w),
    "reverse-letters": _single(lambda w, s: w[::-1]),
    "vowels-to-symbol-letter": _single(lambda w, s: "".join(s[0] if c in "aeiou" else c for c in w)),
    "first-letter-last": _single(lambda w, s: w[1:] + w[0] + s[-2:]),
    "double-last": _single(lambda w, s: w + w[-1] + s[:2]),
}


def _code_map(words, symbols, keys: int = 6):
    """A fixed arbitrary word-to-code map over a few words, shown as numbered queries."""

    def make(rng, size):
        ws, codes = _draw(rng, words, keys), _draw(rng, symbols, keys)
        numbers = rng.sample(range(1, 1000), min(size, 999))
        return [Example(f"#{i} {ws[j % keys]} ->", outputs=(codes[j % keys],)) for j, i in enumerate(numbers)]

    return make


def _vocab(*groups) -> frozenset[str]:
    out = set()
    for g in groups:
        for item in g.values() if isinstance(g, dict) else g:
            for w in item if isinstance(item, tuple) else (item,):
                out.update(w.lower().replace(".", " ").replace(",", " ").replace(":", " ").split())
    return frozenset(out)


_HC, _TC = HELDOUT_CATEGORIES, TRAIN_CATEGORIES
_HWORDS = tuple(w for c in ("animal", "fruit", "instrument") for w in _HC[c])
_TWORDS = tuple(w for ws in _TC.values() for w in ws)
_REVIEW_WORDS = ("nouns", "positive", "negative", "labels")
_HV = _vocab(_HC, list(_HC), HELDOUT_SYMBOLS, [HELDOUT_REVIEWS[k] for k in _REVIEW_WORDS], HELDOUT_CITIES)
_TV = _vocab(_TC, list(_TC), TRAIN_SYMBOLS, [TRAIN_REVIEWS[k] for k in _REVIEW_WORDS], TRAIN_JOBS)

FAMILIES = {
    f.name: f
    for f in [
        # held out: new families, with their own words and symbols
        Family("review-symbols", "heldout", "choice", "film/music review sentiment -> 2 made-up symbols",
               _reviews(HELDOUT_REVIEWS, HELDOUT_SYMBOLS, False), _HV),
        Family("review-flipped", "heldout", "choice", "film/music review sentiment, positive/negative swapped",
               _reviews(HELDOUT_REVIEWS, HELDOUT_SYMBOLS, True), _HV),
        Family("category-symbols", "heldout", "choice", "word (animal, fruit, colour...) -> its class's symbol, 3 classes",
               _categories(_HC, HELDOUT_SYMBOLS, 3, False), _HV),
        Family("category-permuted", "heldout", "choice", "word -> a class name, the 3 names deranged",
               _categories(_HC, HELDOUT_SYMBOLS, 3, True), _HV),
        Family("city-recall", "heldout", "choice", "made-up name -> its city, 4 names and cities",
               _recall(HELDOUT_SYMBOLS, HELDOUT_CITIES, "Note {i}: where does {k} live?", True), _HV),
        Family("suffix", "heldout", "generate", "word -> word + a made-up suffix",
               _rule(_HWORDS, {"suffix": HELDOUT_RULES["suffix"]}, HELDOUT_SYMBOLS), _HV),
        Family("word-order", "heldout", "generate", "3 words -> reordered, with a made-up marker",
               _rule(_HC["colour"] + _HC["body part"],
                     {k: v for k, v in HELDOUT_RULES.items() if k != "suffix"}, HELDOUT_SYMBOLS), _HV),
        Family("colour-codes", "heldout", "generate", "one of 6 colour words -> its made-up code",
               _code_map(_HC["colour"], HELDOUT_SYMBOLS), _HV),
        # training
        Family("polarity-symbols", "train", "choice", "product review polarity -> 2 made-up symbols",
               _reviews(TRAIN_REVIEWS, TRAIN_SYMBOLS, False), _TV),
        Family("polarity-flipped", "train", "choice", "product review polarity, good/bad swapped",
               _reviews(TRAIN_REVIEWS, TRAIN_SYMBOLS, True), _TV),
        Family("topic-symbols-2", "train", "choice", "word (vehicle, tool...) -> its class's symbol, 2 classes",
               _categories(_TC, TRAIN_SYMBOLS, 2, False), _TV),
        Family("topic-symbols-4", "train", "choice", "word -> its class's symbol, 4 classes",
               _categories(_TC, TRAIN_SYMBOLS, 4, False), _TV),
        Family("topic-permuted", "train", "choice", "word -> a class name, the 3 names deranged",
               _categories(_TC, TRAIN_SYMBOLS, 3, True), _TV),
        Family("job-recall", "train", "choice", "made-up name -> their job, 4 names and jobs",
               _recall(TRAIN_SYMBOLS, TRAIN_JOBS, "Card {i}: what does {k} do?", True), _TV),
        Family("password-recall", "train", "generate", "made-up name -> their made-up password",
               _recall(TRAIN_SYMBOLS, TRAIN_SYMBOLS, "Code {i}: password of {k}?", False), _TV),
        Family("letter-rules", "train", "generate", "word -> a letter rule (prefix, reversal, vowels...)",
               _rule(_TWORDS, TRAIN_RULES, TRAIN_SYMBOLS), _TV),
        Family("word-codes", "train", "generate", "one of 6 words -> its made-up code",
               _code_map(_TWORDS, TRAIN_SYMBOLS), _TV),
    ]
}  # fmt: skip


def chance(task: Task) -> float | None:
    """The expected accuracy (%) of a uniform guess over each example's options; None for generation."""
    if not task.is_multiple_choice:
        return None
    return 100 * sum(len(e.answers) / len(e.choices) for e in task.examples) / len(task)


@COLLECTIONS.register("mustread")
class MustRead(Collection):
    name = "mustread"

    def __init__(
        self,
        train_tasks: int = 64,
        heldout_tasks: int = 2,
        examples: int = 96,
        max_examples=None,
        seed: int = 0,
    ):
        """`train_tasks` / `heldout_tasks`: seeds drawn per training / held-out family; `examples` per task
        (fewer where a family has fewer distinct inputs)."""
        super().__init__(max_examples, seed)
        if train_tasks < 0 or heldout_tasks < 0 or examples < 2:
            raise DataError("mustread needs train_tasks >= 0, heldout_tasks >= 0 and examples >= 2")
        self.counts = {"train": train_tasks, "heldout": heldout_tasks}
        self.examples = examples

    def task_names(self) -> list[str]:
        return [f"{f.name}/{s}" for f in FAMILIES.values() for s in range(self.counts[f.split])]

    def default_heldout(self) -> list[str]:
        return [n for n in self.task_names() if FAMILIES[n.split("/")[0]].split == "heldout"]

    def family(self, name: str) -> Family:
        return FAMILIES[self.check_name(name).split("/")[0]]

    def describe(self, name: str) -> dict:
        f = self.family(name)
        task = self.load(name)
        return {
            "examples": len(task),
            "metrics": list(task.metrics),
            "multiple_choice": f.kind == "choice",
            "family": f.name,
            "chance": chance(task),
            "about": f.about,
        }

    def _load(self, name: str) -> Task:
        f = self.family(name)
        seed = int(name.split("/")[1])
        examples = f.make(rng_for(self.seed, "mustread", f.name, seed), self.examples)
        return Task(
            name,
            tuple(examples),
            collection="mustread",
            shot_separator="\n",
            stop=("\n",),
            meta={"must_read": True, "family": f.name, "split": f.split},
        )
