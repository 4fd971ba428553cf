"""`hypertune eval`: methods x held-out tasks x few-shot seeds, written as they finish and resumable.

For each task and seed, `heldout_shots` picks the K examples every method sees (up to K when the task's
few-shot pool is smaller) and the evaluation examples (the same for every seed, capped to
`max_examples` by a deterministic subset). Methods that read no examples are evaluated once, at the first
seed. Each result is one line of `records.jsonl`, appended as soon as it exists, so an interrupted
evaluation continues where it stopped; `results.json` and `results.csv` hold the table.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .._io import atomic_write, read_json, read_json_lines, write_json
from ..data.episodes import heldout_shots
from ..data.task import Task
from ..errors import DataError, HypertuningError
from .methods import Method, shots_hash
from .scoring import NORMALISATIONS, score_task

RECORDS, SETTINGS, RESULTS, CSV = "records.jsonl", "eval_config.json", "results.json", "results.csv"
AVG = "AVG"


@dataclass
class EvalSettings:
    k: int = 16  # examples shown to in-context and hypertuned methods (fewer when a task has fewer)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # few-shot seeds: which K examples
    max_examples: int | None = 100  # evaluation examples per task (deterministic subset); None = all
    pool_size: int = 64  # each task's few-shot pool; the rest is evaluated
    normalisation: str = "none"  # option log-likelihood normalisation: none | token | char
    batch_size: int = 8

    def __post_init__(self):
        if self.normalisation not in NORMALISATIONS:
            raise HypertuningError(
                f"normalisation must be one of {', '.join(NORMALISATIONS)}; got {self.normalisation!r}"
            )
        if self.k < 0 or not self.seeds:
            raise HypertuningError("k must be >= 0 and at least one seed is needed")

    # what a stored record depends on; a resumed evaluation must match it
    def fingerprint(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("seeds", "batch_size")}


def evaluate(
    methods: Sequence[Method],
    tasks: Sequence[Task],
    settings: EvalSettings,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> Results:
    """Score every method on every task at every seed; with `out_dir`, results are written there and an
    earlier, interrupted evaluation into the same directory is continued."""
    out = Path(out_dir) if out_dir is not None else None
    records = _resume(out, methods, settings) if out is not None else []
    done = {(r["method"], r["task"], r["seed"]) for r in records}
    skipped: dict[str, str] = {}

    def pending(task: Task, seed: int) -> list[Method]:
        # methods that read no examples are scored at the first seed only
        return [
            m
            for m in methods
            if (m.uses_shots or seed == settings.seeds[0]) and (m.label, task.id, seed) not in done
        ]

    total = sum(len(pending(t, s)) for t in tasks for s in settings.seeds)
    bar = tqdm(total=total, desc="eval", unit="result", disable=not progress)
    for task in tasks:
        for seed in settings.seeds:
            mine = pending(task, seed)
            if not mine:
                continue
            try:
                shots, evaluation = heldout_shots(task, settings.k, seed, settings.pool_size, up_to=True)
            except DataError as e:
                skipped[task.id] = str(e)
                bar.update(len(mine))
                continue
            examples = evaluation.capped(settings.max_examples, seed=0).examples
            for m in mine:
                bar.set_postfix_str(f"{m.label} {task.name}", refresh=False)
                adaptation = m.adapt(task, shots, examples)
                start = time.perf_counter()
                result = score_task(
                    adaptation.downstream,
                    task,
                    examples,
                    adaptation.contexts,
                    adaptation.adapter,
                    settings.normalisation,
                    settings.batch_size,
                )
                rec = {
                    "method": m.label,
                    "path": m.path,
                    "task": task.id,
                    "seed": seed,
                    "k": len(shots) if m.uses_shots else 0,
                    "shots": shots_hash(shots, task.instruction) if m.uses_shots else None,
                    "examples": len(examples),
                    "metric": next(iter(result.metrics)),
                    "score": result.score,
                    "metrics": result.metrics,
                    "adapt_seconds": adaptation.seconds,
                    "eval_seconds": time.perf_counter() - start,
                    "truncation": adaptation.stats,
                }
                records.append(rec)
                if out is not None:
                    with open(out / RECORDS, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                bar.update(1)
    bar.close()
    results = Results(records, [m.label for m in methods], [t.id for t in tasks], skipped)
    if out is not None:
        results.save(out, settings, methods)
    return results


def _resume(out: Path, methods: Sequence[Method], settings: EvalSettings) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    mine = settings.fingerprint()
    if (out / SETTINGS).is_file():
        saved = read_json(out / SETTINGS, "evaluation settings")
        changed = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if changed:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise HypertuningError(
                f"{out} holds results evaluated with other settings ({what}); use another --out directory"
            )
    else:
        write_json(out / SETTINGS, mine)
    records = read_json_lines(out / RECORDS)
    paths = {m.label: m.path for m in methods}
    for r in records:
        if r["method"] in paths and r.get("path") != paths[r["method"]]:
            raise HypertuningError(
                f"{out}: method {r['method']!r} was evaluated from {r.get('path')!r}, not "
                f"{paths[r['method']]!r}; give it another label (LABEL:KIND=PATH) or use another --out"
            )
    # rewritten whole: drops a line a kill cut short, so new records start on a line of their own
    atomic_write(out / RECORDS, lambda p: Path(p).write_text("".join(json.dumps(r) + "\n" for r in records)))
    keep = {m.label for m in methods}
    return [r for r in records if r["method"] in keep]


def column_of(task_id: str, group: bool) -> str:
    """The table column of a task: BIG-bench subtasks ("parent/sub") are averaged into their parent, as
    BIG-bench reports a task's score."""
    name = task_id.split(":", 1)[-1]
    return name.split("/", 1)[0] if group else name


class Results:
    """Per-record scores, and the paper-shaped table: rows = methods, columns = tasks + AVG."""

    def __init__(
        self, records: list[dict], methods: list[str], tasks: list[str], skipped: dict | None = None
    ):
        self.records, self.methods, self.tasks = records, methods, tasks
        self.skipped = skipped or {}

    def _scores(self) -> dict[tuple[str, str], dict[int, float]]:
        out: dict[tuple[str, str], dict[int, float]] = {}
        for r in self.records:
            out.setdefault((r["method"], r["task"]), {})[r["seed"]] = r["score"]
        return out

    def table(self, group: bool = True) -> tuple[list[str], dict[str, dict[str, float]], dict[str, float]]:
        """(columns, {method: {column: mean over seeds, AVG: ...}}, {method: std of AVG over seeds}).

        A method evaluated at one seed only (it reads no examples) counts at every seed. Only tasks every
        method has a result for enter the table, so the averages compare like with like.
        """
        scores = self._scores()
        seeds = sorted({r["seed"] for r in self.records})
        tasks = [t for t in self.tasks if all((m, t) in scores for m in self.methods)]
        columns = list(dict.fromkeys(column_of(t, group) for t in tasks))
        rows, spread = {}, {}
        for m in self.methods:
            per_seed: dict[int, dict[str, list[float]]] = {}
            for t in tasks:
                s = scores[(m, t)]
                for seed in seeds:
                    value = s.get(seed, next(iter(s.values())))
                    per_seed.setdefault(seed, {}).setdefault(column_of(t, group), []).append(value)
            col_by_seed = {
                seed: {c: statistics.fmean(v) for c, v in cols.items()} for seed, cols in per_seed.items()
            }
            row = {c: statistics.fmean(col_by_seed[s][c] for s in seeds) for c in columns}
            avgs = [statistics.fmean(col_by_seed[s].values()) for s in seeds] if columns else []
            row[AVG] = statistics.fmean(avgs) if avgs else float("nan")
            rows[m] = row
            spread[m] = statistics.pstdev(avgs) if len(avgs) > 1 else 0.0
        return columns, rows, spread

    def incomplete(self) -> list[str]:
        """Tasks left out of the table because some method has no result for them."""
        have = self._scores()
        return [t for t in self.tasks if not all((m, t) in have for m in self.methods)]

    def median(self, key: str) -> dict[str, float]:
        """Per method, the median of a per-task record field (`adapt_seconds`, `eval_seconds`)."""
        out = {}
        for m in self.methods:
            values = [r[key] for r in self.records if r["method"] == m]
            out[m] = statistics.median(values) if values else 0.0
        return out

    def save(self, out: Path, settings: EvalSettings, methods: Sequence[Method]) -> None:
        columns, rows, spread = self.table()
        write_json(
            out / RESULTS,
            {
                "settings": asdict(settings),
                "methods": [m.info() for m in methods],
                "columns": columns,
                "table": rows,
                "avg_std": spread,
                "adapt_seconds": self.median("adapt_seconds"),
                "skipped": self.skipped,
            },
        )
        atomic_write(out / CSV, lambda p: Path(p).write_text(to_csv(columns, rows, spread)))


def to_csv(columns: list[str], rows: dict, spread: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", *columns, AVG, "AVG_std"])
    for m, row in rows.items():
        w.writerow([m, *(f"{row[c]:.2f}" for c in [*columns, AVG]), f"{spread.get(m, 0.0):.2f}"])
    return buf.getvalue()


def format_table(
    columns: list[str], rows: dict, spread: dict | None = None, per_block: int = 8, width: int = 9
) -> str:
    """The paper's table shape (methods down, tasks across, AVG last); many tasks wrap into blocks."""
    spread = spread or {}
    label_w = max([len(m) for m in rows] + [6])
    blocks = [columns[i : i + per_block] for i in range(0, len(columns), per_block)] or [[]]
    lines = []
    for n, block in enumerate(blocks):
        last = n == len(blocks) - 1
        heads = [c if len(c) <= width else c[: width - 1] + "~" for c in block] + ([AVG] if last else [])
        lines.append(" " * label_w + "".join(f" {h:>{width}}" for h in heads))
        for m, row in rows.items():
            cells = [f"{row[c]:.1f}" for c in block]
            if last:
                cells.append(f"{row[AVG]:.1f}" + (f"±{spread[m]:.1f}" if spread.get(m) else ""))
            lines.append(f"{m:<{label_w}}" + "".join(f" {c:>{width}}" for c in cells))
        if not last:
            lines.append("")
    return "\n".join(lines)
