"""The paper's input formats (Appendix A.1) and the padding every batch goes through.

Hypermodel input: `<x> input <y> target <x> input <y> target ...`, with an instruction as a first `<x>` item.
`<x>` and `<y>` are special tokens of the hypermodel only (its embedding grows; the downstream model is
untouched). CACLM hypermodel input: `<before> A <after> D` (the paper's "sentinel tokens", footnote 4).

Budgets drop whole examples, never cut one in the middle: a cut example would show the hypermodel (or the
in-context model) an input paired with the wrong target. Counts of what was dropped or cut go to a
`collections.Counter` when one is given (training), else to a warning (interactive use).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import torch

from ..errors import DataError

log = logging.getLogger(__name__)
X_TOKEN, Y_TOKEN = "<x>", "<y>"
BEFORE_TOKEN, AFTER_TOKEN = "<before>", "<after>"
SPECIAL_TOKENS = [X_TOKEN, Y_TOKEN, BEFORE_TOKEN, AFTER_TOKEN]


def normalise_examples(examples, allow_empty: bool = False) -> list[tuple[str, str]]:
    """Accept Examples, dicts in our JSONL shape (see `Example.from_dict`) or (input, output) pairs.
    `allow_empty`: no examples is fine (an instruction alone, the paper's S-NI "Def" setting)."""
    from .task import Example

    if examples is None or len(examples) == 0:
        if allow_empty:
            return []
        raise DataError(
            "The example list is empty: a hypermodel needs at least one (input, output) example or an "
            "instruction"
        )
    out = []
    for i, ex in enumerate(examples):
        if isinstance(ex, dict):
            ex = Example.from_dict(ex, f"examples[{i}]")
        if isinstance(ex, Example):
            out.append((ex.input, ex.target))
        elif isinstance(ex, (tuple, list)) and len(ex) == 2:
            ex = Example.from_dict({"input": ex[0], "output": ex[1]}, f"examples[{i}]")
            out.append((ex.input, ex.target))
        else:
            raise DataError(f"examples[{i}] must be a dict with 'input'/'output' or an (input, output) pair")
    return out


def hyper_pieces(examples: Sequence[tuple[str, str]], instruction: str | None) -> list[str]:
    """The pieces are joined with no space: a space before a special token would be a token of its own."""
    return ([f"{X_TOKEN} {instruction.strip()}"] if instruction else []) + [
        f"{X_TOKEN} {x.strip()}{Y_TOKEN} {y.strip()}" for x, y in examples
    ]


def pack_pieces(
    tokenizer,
    pieces: Sequence[str],
    max_tokens: int,
    joiner: str = " ",
    keep_last: bool = False,
    stats: Counter | None = None,
    key: str = "examples",
    cut_first: bool = True,
    lead: int = 0,
    placed: int = 0,
    limit: int | None = None,
) -> list[int]:
    """Token ids of the pieces joined by `joiner`, dropping whole pieces that would overflow `max_tokens`.

    Pieces are kept in order until the budget runs out; with `keep_last` the last piece (the query of an
    in-context prompt) is always kept and earlier ones fill what is left. A single piece longer than the
    whole budget is truncated (with a warning) rather than returning nothing. Counts go to
    `stats[f"{key}_dropped"]` and `stats[f"{key}_truncated"]`.

    The count and the message are about examples: `lead` leading pieces are not examples (an instruction;
    dropping it counts as `{key}_instruction_dropped`) and `placed` examples were already placed by the
    caller before these pieces, so "Dropped 3 of 16" means 3 of the caller's 16 examples; `limit` is the
    caller's whole budget, which messages name (default `max_tokens`, what is left for these pieces).
    Examples keep their order (the first is what a truncated prompt keeps): the first that does not fit
    ends the list, shorter ones after it included.
    """
    limit = max_tokens if limit is None else limit
    toks = [
        tokenizer(p if n == 0 else joiner + p, add_special_tokens=False)["input_ids"]
        for n, p in enumerate(pieces)
    ]
    budget = max_tokens
    tail: list[int] = []
    if keep_last and toks:
        tail = toks.pop()
        if len(tail) > budget:
            _note(stats, f"{key}_truncated", f"The query has {len(tail)} tokens; kept its last {budget}")
            tail = tail[-budget:]
        budget -= len(tail)
    ids: list[int] = []
    kept = 0
    for t in toks:
        if len(ids) + len(t) > budget:
            if not ids and not tail and cut_first:
                msg = f"The first of the {key} has {len(t)} tokens; cut to {budget}"
                _note(stats, f"{key}_truncated", msg)
                ids, kept = t[:budget], 1
            break
        ids += t
        kept += 1
    dropped = len(toks) - max(kept, lead)  # examples only
    total = placed + len(toks) - lead
    if kept < lead:
        msg = f"Dropped the instruction and all {total - placed} {key} examples to fit {limit} tokens"
        _note(stats, f"{key}_instruction_dropped", msg)
    if dropped:
        msg = (
            f"Dropped {dropped} of {total} {key} examples to fit {limit} tokens (examples keep their order: "
            "those after the first that does not fit are dropped too)"
        )
        _note(stats, f"{key}_dropped", msg, dropped)
    return ids + tail


def dropped_examples(stats: Counter) -> int:
    """How many examples `pack_pieces` dropped, over every key it counted them under."""
    return sum(v for k, v in stats.items() if k.endswith("_dropped"))


def _note(stats: Counter | None, key: str, message: str, n: int = 1) -> None:
    if stats is None:
        log.warning(message)
    else:
        stats[key] += n


def encode_examples(
    tokenizer,
    examples: Sequence[tuple[str, str]],
    instruction: str | None,
    max_tokens: int,
    stats: Counter | None = None,
) -> list[int]:
    """Hypermodel input ids for (input, target) pairs, whole trailing examples dropped over `max_tokens`.

    When the first example alone is over budget, its input is shortened from the left (where long
    contexts usually start) and its `<y> target` kept, so the hypermodel never sees an input without
    its target.
    """
    if examples and not instruction:
        x, y = examples[0]
        head = tokenizer(f"{X_TOKEN} {x.strip()}", add_special_tokens=False)["input_ids"]
        tail = tokenizer(f"{Y_TOKEN} {y.strip()}", add_special_tokens=False)["input_ids"][: max_tokens // 2]
        if len(head) + len(tail) > max_tokens:
            _note(
                stats,
                "hyper_truncated",
                f"The first example has {len(head) + len(tail)} tokens; shortened its input",
            )
            first = head[:1] + head[1:][len(head) + len(tail) - max_tokens :] + tail
            rest = hyper_pieces(examples[1:], None)
            if not rest:
                return first
            budget = max_tokens - len(first)
            return first + pack_pieces(
                tokenizer,
                rest,
                budget,
                "",
                stats=stats,
                key="hyper",
                cut_first=False,
                placed=1,
                limit=max_tokens,
            )
    return pack_pieces(
        tokenizer,
        hyper_pieces(examples, instruction),
        max_tokens,
        "",
        stats=stats,
        key="hyper",
        lead=int(bool(instruction)),
    )


def in_context_pieces(examples: Sequence[tuple[str, str]], instruction: str | None, query: str) -> list[str]:
    """The downstream prompt with the examples written in (zero-shot when `examples` is empty); join them
    with the task's separator through `pack_pieces(..., keep_last=True)`, which drops whole examples."""
    return ([instruction] if instruction else []) + [f"{x} {y}" for x, y in examples] + [query]


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right", min_width: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids and attention mask. Right padding keeps real tokens at positions 0..T-1 (scoring, training);
    left padding puts every row's last token at the end (generation)."""
    width = max(min_width, max((len(s) for s in seqs), default=0))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        sl = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, sl] = torch.as_tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask
