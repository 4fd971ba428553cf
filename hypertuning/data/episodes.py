"""Few-shot episodes: a target example plus K other examples of the same task (section 5.1).

Episode `i` of a sampler is a pure function of (seed, i), drawn from a stable hash, so a sampler's whole
state is its position: resuming a run at step n gives exactly the episodes an uninterrupted run would
have seen, on any machine, with no RNG state to save.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import DataError
from .collections.base import check_enough
from .remap import fixed_labels, remap_episode
from .task import Example, Task, check_state, config_hash, rng_for, sample_shots

MIXING = ("proportional", "temperature", "uniform")


@dataclass(frozen=True)
class Episode:
    task: str  # task id, "collection:name"
    target: Example
    shots: tuple[Example, ...]
    instruction: str | None = None
    separator: str = "\n\n"  # the task's separator between in-context examples

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(s.input, s.target) for s in self.shots]


@dataclass
class EncodedEpisode:
    """Token ids for one episode. `hyper_ids` is empty when no hypermodel was given to the encoder."""

    task: str
    hyper_ids: list[int]
    input_ids: list[int]
    target_ids: list[int]
    in_context_ids: list[int] | None = None


def mixing_weights(
    sizes: Sequence[int], mixing: str = "proportional", temperature: float = 2.0
) -> list[float]:
    """Task sampling weights: by example count (after each task's cap), count^(1/T) (T5's temperature
    mixing: T=1 is proportional, large T tends to uniform), or uniform."""
    if mixing == "proportional":
        return [float(n) for n in sizes]
    if mixing == "temperature":
        if temperature <= 0:
            raise DataError(f"temperature must be > 0, got {temperature}")
        return [math.pow(n, 1.0 / temperature) for n in sizes]
    if mixing == "uniform":
        return [1.0] * len(sizes)
    raise DataError(f"Unknown mixing {mixing!r}; choose from {', '.join(MIXING)}")


class _Stream:
    """Iteration over `episode(position)`, for samplers whose episodes are a pure function of position."""

    position = 0

    def episode(self, index: int) -> Episode:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Episode]:
        while True:
            ep = self.episode(self.position)
            self.position += 1
            yield ep

    def take(self, n: int) -> list[Episode]:
        return list(itertools.islice(iter(self), n))


class EpisodeSampler(_Stream):
    """Endless, deterministic, resumable episodes over many tasks.

    `shots="sample"` draws K examples of the target's task other than the target itself;
    `remap=F` gives a share F of the episodes of tasks with a fixed label set labels drawn from the
    training symbols for that episode, the same in its shots and its target (symbol tuning: the label
    mapping can then only be read off the shots);
    `label_share=F` gives a share F of the episodes of tasks with a fixed label set shots drawn at a random
    label share (`shots_at_random_share`), independent of the target's label, so that how often a label
    appears among the shots says nothing of the target's and only the mapping is worth reading off them;
    `shots="demonstrations"` uses the task's fixed demonstrations (S-NI's Def+2Pos setting, K <= their
    number; K=0 with an instruction is the Def setting). Tasks with fewer than K+1 examples are reported
    and left out (`check_enough`).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        k: int = 16,
        seed: int = 0,
        mixing: str = "proportional",
        temperature: float = 2.0,
        shots: str = "sample",
        use_instruction: bool = True,
        remap: float = 0.0,
        label_share: float = 0.0,
    ):
        if k < 0:
            raise DataError(f"K must be >= 0, got {k}")
        if not 0.0 <= remap <= 1.0:
            raise DataError(
                f"remap is the share of episodes whose labels become symbols, in [0, 1]; got {remap}"
            )
        if not 0.0 <= label_share <= 1.0:
            raise DataError(
                "label_share is the share of episodes whose shots are drawn at a random label share, in "
                f"[0, 1]; got {label_share}"
            )
        if shots not in ("sample", "demonstrations"):
            raise DataError(f"shots must be 'sample' or 'demonstrations', got {shots!r}")
        if label_share and shots != "sample":
            raise DataError("label_share draws the shots, so it needs shots='sample'")
        if not tasks:
            raise DataError("EpisodeSampler needs at least one task")
        ids = [t.id for t in tasks]
        if len(set(ids)) != len(ids):
            raise DataError(f"duplicate tasks: {sorted(i for i, n in Counter(ids).items() if n > 1)}")
        self.tasks = check_enough(tasks, k if shots == "sample" else 0)
        if shots == "demonstrations":
            few = [t.id for t in self.tasks if len(t.demonstrations) < k]
            if few:
                raise DataError(
                    f"{len(few)} task(s) have fewer than K={k} demonstrations: {', '.join(few[:10])}"
                )
        self.k, self.seed, self.shots, self.use_instruction = k, seed, shots, use_instruction
        self.remap, self.label_share = remap, label_share
        # tasks with a fixed label set, which remapped episodes relabel (symbol tuning)
        self._labels = {t.id: fixed_labels(t) for t in self.tasks} if remap or label_share else {}
        weights = mixing_weights([len(t) for t in self.tasks], mixing, temperature)
        # what the episode stream depends on besides the seed: a resumed run must match it exactly
        parts = [[(t.id, len(t)) for t in self.tasks], k, mixing, temperature, shots, use_instruction]
        extra = [*([remap] if remap else []), *([("label_share", label_share)] if label_share else [])]
        self.fingerprint = config_hash(*parts, *extra)
        self._cum = list(itertools.accumulate(weights))
        self.position = 0

    def weights(self) -> dict[str, float]:
        """Each task's sampling probability."""
        prev = [0.0, *self._cum[:-1]]
        return {t.id: (c - p) / self._cum[-1] for t, c, p in zip(self.tasks, self._cum, prev, strict=True)}

    def episode(self, index: int) -> Episode:
        rng = rng_for(self.seed, "episode", index)
        task = self.tasks[bisect.bisect_right(self._cum, rng.random() * self._cum[-1])]
        t = rng.randrange(len(task))
        labels = self._labels.get(task.id)
        # streams of their own, so label_share=0 (and remap=0) leave every episode as it was
        share = self.label_share and labels and rng_for(self.seed, "share", index).random() < self.label_share
        if share:
            shots = shots_at_random_share(
                task.examples, labels, self.k, rng_for(self.seed, "share-shots", index), t
            )
        elif self.shots == "sample":
            shots = sample_shots(task.examples, self.k, self.seed, "episode", index, exclude=t)
        else:
            shots = list(task.demonstrations[: self.k])
        ep = Episode(
            task.id,
            task.examples[t],
            tuple(shots),
            task.instruction if self.use_instruction else None,
            task.shot_separator,
        )
        if labels and self.remap and rng_for(self.seed, "remap", index).random() < self.remap:
            ep = remap_episode(
                ep, labels, rng_for(self.seed, "remap-symbols", index), task.meta.get("choice_prefix")
            )
        return ep

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "position": self.position,
            "k": self.k,
            "tasks": len(self.tasks),
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: dict) -> None:
        check_state("sampler", state, self.state_dict(), ("seed", "k", "tasks", "fingerprint"))
        self.position = int(state["position"])


def shots_at_random_share(
    examples: Sequence[Example], labels: Sequence[str], k: int, rng, exclude: int
) -> list[Example]:
    """K examples other than the target (`exclude`) whose label counts do not depend on the target's label:
    every label once where K allows, the rest at a share drawn uniformly from the simplex (normalised
    exponentials) for this episode, capped by how many examples each label has (the target's own label has
    one fewer to give, the only way the target shows); in random order. An example counts under its first
    correct answer, which is what a shot shows unless the task gives a free-text output as well.

    Why: in-context learning, and a readout built on it, copies the labels' share in the shots as a prior.
    Drawn as `sample_shots` draws them, that share follows the task's, so training rewards copying it; on
    a held-out task whose shots are skewed against its evaluated items (BIG-bench's known_unknowns, 46
    examples: 69% "Unknown" among the shots, 35% among the items) the copy costs 28-31 points. At a random
    share the shots still give the mapping, but not the prior."""
    if k == 0:
        return []
    avoid = examples[exclude].input
    by = {lab: [] for lab in labels}
    for i, e in enumerate(examples):
        if i != exclude and e.input != avoid and e.answers:
            by.setdefault(e.choices[e.answers[0]], []).append(i)
    have = [lab for lab in labels if by[lab]]
    if sum(len(by[lab]) for lab in have) < k:
        raise DataError(f"asked for {k} examples but only {sum(len(by[x]) for x in have)} are available")
    weights = [rng.expovariate(1.0) for _ in have]
    counts = dict.fromkeys(have, 0)
    for lab in rng.sample(have, min(k, len(have))):
        counts[lab] = 1
    for lab in rng.choices(have, weights=weights, k=k - sum(counts.values())):
        counts[lab] += 1
    # a label asked for more often than it occurs gives the rest to labels with examples to spare
    spill = sum(max(0, counts[lab] - len(by[lab])) for lab in have)
    counts = {lab: min(c, len(by[lab])) for lab, c in counts.items()}
    for j in sorted(range(len(have)), key=lambda j: -weights[j]):
        lab = have[j]
        more = min(spill, len(by[lab]) - counts[lab])
        counts[lab], spill = counts[lab] + more, spill - more
    chosen = [i for lab in have for i in rng.sample(by[lab], counts[lab])]
    rng.shuffle(chosen)
    return [examples[i] for i in chosen]


class MixedSampler(_Stream):
    """Episode `i` from `extra` with probability `rate` (drawn per position), else from `main`: for instance
    `mustread` training families mixed into multi-task training. Like `EpisodeSampler`, a pure function
    of (seed, position), so resuming needs nothing but the position."""

    def __init__(
        self,
        main: EpisodeSampler,
        extra: EpisodeSampler,
        rate: float,
        seed: int = 0,
        options: dict | None = None,
    ):
        """`options`: what `extra`'s tasks were made with (a generated collection's seed, say), which its
        task names and sizes alone do not show; part of the fingerprint."""
        if not 0.0 <= rate <= 1.0:
            raise DataError(f"the mixing rate must be in [0, 1]; got {rate}")
        self.main, self.extra, self.rate, self.seed = main, extra, rate, seed
        self.tasks = [*main.tasks, *extra.tasks]
        self.fingerprint = config_hash(main.fingerprint, extra.fingerprint, rate, seed, options or {})
        self.position = 0

    def episode(self, index: int) -> Episode:
        from_extra = rng_for(self.seed, "mix", index).random() < self.rate
        return (self.extra if from_extra else self.main).episode(index)


def heldout_shots(
    task: Task, k: int, seed: int, pool_size: int = 64, up_to: bool = False, shots: str = "sample"
) -> tuple[list[Example], Task]:
    """The K examples shown for a held-out task (from its few-shot pool) and the evaluation examples.

    Every method evaluated with the same seed sees the same K examples: in-context, hypertuned, and
    PEFT initialised from the hypermodel. With `up_to`, a task whose pool is smaller than K shows its whole
    pool ("up to K examples", as the paper puts it) instead of raising. `shots="demonstrations"` shows the
    task's first K fixed demonstrations instead (S-NI's Def+2Pos, as the training sampler's option); the
    evaluation examples are the same either way.
    """
    if shots not in ("sample", "demonstrations"):
        raise DataError(f"shots must be 'sample' or 'demonstrations', got {shots!r}")
    pool, evaluation = task.split(pool_size=max(pool_size, k), seed=0)
    if shots == "demonstrations":
        if k and not task.demonstrations:
            raise DataError(f"{task.id}: has no demonstrations to show (shots=demonstrations)")
        if len(task.demonstrations) < k and not up_to:
            raise DataError(f"{task.id}: has {len(task.demonstrations)} demonstrations, fewer than K={k}")
        return list(task.demonstrations[:k]), evaluation
    if up_to:
        k = min(k, len(pool))
    if len(pool) < k:
        raise DataError(f"{task.id}: its few-shot pool has {len(pool)} examples, fewer than K={k}")
    return sample_shots(pool.examples, k, seed, "heldout", task.id), evaluation


class EpisodeEncoder:
    """Tokenises episodes for the downstream model (input, target), the hypermodel (its input format) and,
    when asked, an in-context prompt (the MetaICL-style baseline). Truncations and dropped examples are
    counted in `stats` rather than warned about one by one."""

    def __init__(self, downstream, hypermodel=None, in_context: bool = False):
        if hypermodel is not None:
            downstream.check_compatible(hypermodel.spec, "hypermodel")
        self.downstream, self.hypermodel, self.in_context = downstream, hypermodel, in_context
        self.stats: Counter = Counter()

    def __call__(self, ep: Episode) -> EncodedEpisode:
        d, st = self.downstream, self.stats
        st["episodes"] += 1
        st["shots"] += len(ep.shots)
        hyper = []
        if self.hypermodel is not None and (ep.shots or ep.instruction):
            hyper = self.hypermodel.encode_ids(ep.pairs, ep.instruction, stats=st)
        ctx = None
        if self.in_context:
            ctx = d.encode_in_context(ep.pairs, ep.instruction, ep.target.input, ep.separator, stats=st)
        (inp,) = d.encode_inputs([ep.target.input], stats=st)
        (tgt,) = d.encode_targets([ep.target.target], stats=st)
        return EncodedEpisode(ep.task, hyper, inp, tgt, ctx)
