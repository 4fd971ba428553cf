"""The paper's few-shot format (Appendix A.1): `<x> input <y> target <x> input <y> target ...`,
with an instruction as a first `<x>` item. `<x>` and `<y>` are special tokens of the hypermodel only."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import DataError

log = logging.getLogger(__name__)
X_TOKEN, Y_TOKEN = "<x>", "<y>"


def normalise_examples(examples) -> list[tuple[str, str]]:
    """Accept dicts with input/output (or choices + label) or (input, output) pairs; reject anything else."""
    if examples is None or len(examples) == 0:
        raise DataError("The example list is empty: a hypermodel needs at least one (input, output) example")
    out = []
    for i, ex in enumerate(examples):
        if isinstance(ex, dict):
            if "input" not in ex:
                raise DataError(f"example {i} has no 'input'")
            target = ex.get("output")
            if target is None and "choices" in ex and "label" in ex:
                target = ex["choices"][ex["label"]]
            if isinstance(target, list):  # several references: show the first
                target = target[0] if target else None
            if target is None:
                raise DataError(f"example {i} has no 'output' (or 'choices' with 'label')")
            out.append((str(ex["input"]), str(target)))
        elif isinstance(ex, (tuple, list)) and len(ex) == 2:
            out.append((str(ex[0]), str(ex[1])))
        else:
            raise DataError(f"example {i} must be a dict with 'input'/'output' or an (input, output) pair")
    return out


def encode_examples(
    tokenizer, examples: Sequence[tuple[str, str]], instruction: str | None, max_tokens: int
) -> list[int]:
    """Token ids of the formatted examples, dropping whole trailing examples (with a warning) when they
    would overflow `max_tokens`, as a cut mid-example would show the hypermodel a wrong pair."""
    pieces = ([f"{X_TOKEN} {instruction}"] if instruction else []) + [
        f"{X_TOKEN} {x} {Y_TOKEN} {y}" for x, y in examples
    ]
    ids: list[int] = []
    kept = 0
    for n, piece in enumerate(pieces):
        t = tokenizer(piece if n == 0 else " " + piece, add_special_tokens=False)["input_ids"]
        if len(ids) + len(t) > max_tokens:
            if not ids:  # even the first piece is too long: truncate it rather than return nothing
                ids = t[:max_tokens]
                kept = 1
                log.warning(
                    "The first example/instruction has %d tokens; truncated to %d", len(t), max_tokens
                )
            break
        ids += t
        kept += 1
    dropped = len(pieces) - kept
    if dropped:
        log.warning(
            "Dropped %d of %d examples to fit the hypermodel's %d-token input",
            dropped,
            len(pieces),
            max_tokens,
        )
    return ids
