"""JSONL files: one JSON object per line; errors name the file and line."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from .task import Example, Record


def read_jsonl(path: str | Path, required: tuple[str, ...] = (), with_lines: bool = False) -> list:
    """The rows of a JSONL file (dicts), or (line number, row) pairs with `with_lines`. Never modifies it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a JSONL file (one JSON object per line)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in _lines(f, path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path}:{n}: missing field(s) {', '.join(missing)}")
            rows.append((n, row) if with_lines else row)
    return rows


def _lines(f, path):
    """(line number, line) pairs; a file that is not UTF-8 is reported with the line it failed at."""
    n = 0
    try:
        for n, line in enumerate(f, start=1):  # noqa: B007
            yield n, line
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{n + 1}: not UTF-8 text ({e.reason})") from None


def read_json_file(path: str | Path, what: str = "JSON file"):
    """A whole JSON file, with errors that name it (never modifies it)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None


def read_examples(path: str | Path) -> list[Example]:
    """Few-shot examples (`Example.from_dict` records), each checked; errors say FILE:LINE."""
    rows = [Example.from_dict(r, f"{path}:{n}") for n, r in read_jsonl(path, with_lines=True)]
    if not rows:
        raise DataError(f"{path}: holds no examples")
    return rows


def read_records(path: str | Path, purpose: str) -> list[Record]:
    """Inputs to score (`purpose="score"`: each needs `output` or `choices`) or to generate from
    (`"generate"`: only `input`), each checked (see `Record`); errors say FILE:LINE."""
    rows = []
    for n, row in read_jsonl(path, with_lines=True):
        r = Record.parse(row, f"{path}:{n}")
        if purpose == "score" and not (r.outputs or r.choices):
            raise DataError(f"{path}:{n}: needs 'output' or 'choices' to score")
        rows.append(r)
    if not rows:
        raise DataError(f"{path}: holds no records")
    return rows
