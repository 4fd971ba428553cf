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
from .dependence import FIGURES, MODES, chance, dependence, wanted
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
    # example-dependence figures (eval/dependence.py) for methods that read examples: auto = on
    # must-read tasks (mustread, remap=), all, off
    dependence: str = "auto"
    # which examples are shown: sample (K from the task's pool, per seed) | demonstrations (the task's
    # fixed ones, S-NI's Def+2Pos; the same for every seed)
    shots: str = "sample"

    def __post_init__(self):
        if self.dependence not in MODES:
            raise HypertuningError(f"dependence must be one of {', '.join(MODES)}; got {self.dependence!r}")
        if self.normalisation not in NORMALISATIONS:
            raise HypertuningError(
                f"normalisation must be one of {', '.join(NORMALISATIONS)}; got {self.normalisation!r}"
            )
        if self.shots not in ("sample", "demonstrations"):
            raise HypertuningError(f"shots must be 'sample' or 'demonstrations'; got {self.shots!r}")
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
    skipped: dict[str, str] | None = None,
) -> Results:
    """Score every method on every task at every seed; with `out_dir`, results are written there and an
    earlier, interrupted evaluation into the same directory is continued. `skipped`: tasks left out before
    evaluation (task id -> why), reported with the ones skipped here."""
    out = Path(out_dir) if out_dir is not None else None
    records = _resume(out, methods, settings) if out is not None else []
    done = {(r["method"], r["task"], r["seed"]) for r in records}
    skipped = dict(skipped or {})

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
                shots, evaluation = heldout_shots(
                    task, settings.k, seed, settings.pool_size, up_to=True, shots=settings.shots
                )
            except DataError as e:
                skipped[task.id] = str(e)
                bar.update(len(mine))
                continue
            examples = evaluation.capped(settings.max_examples, seed=0).examples
            for m in mine:
                bar.set_postfix_str(f"{m.label} {task.name}", refresh=False)

                def predict(shown_task, shown, evaluated, m=m, task=task):
                    a = m.adapt(shown_task, shown, evaluated)
                    return _score(a, task, evaluated, settings)

                adaptation = m.adapt(task, shots, examples)
                start = time.perf_counter()
                result = _score(adaptation, task, examples, settings, full=True)
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
                    "chance": chance(examples),
                    **dict.fromkeys(FIGURES),
                    "predictions": result.predictions,
                }
                if m.uses_shots and wanted(task, settings.dependence):
                    bar.set_postfix_str(f"{m.label} {task.name} (dependence)", refresh=False)
                    rec.update(
                        dependence(
                            predict,
                            task,
                            shots,
                            examples,
                            result.predictions,
                            seed,
                            tasks,
                            settings.k,
                            settings.pool_size,
                        )
                    )
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


def _score(adaptation, task: Task, examples, settings: EvalSettings, full: bool = False):
    result = score_task(
        adaptation.downstream,
        task,
        examples,
        adaptation.contexts,
        adaptation.adapter,
        settings.normalisation,
        settings.batch_size,
    )
    return result if full else result.predictions


def _resume(out: Path, methods: Sequence[Method], settings: EvalSettings) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    mine = settings.fingerprint()
    if (out / SETTINGS).is_file():
        saved = read_json(out / SETTINGS, "evaluation settings")
        saved.setdefault("dependence", "auto")  # saved before it existed: no must-read task did either
        saved.setdefault("shots", "sample")  # saved before it existed
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

    def _by_column(self, values: dict[str, list[float]], columns: list[str]) -> dict[str, float | None]:
        row = {c: statistics.fmean(values[c]) if values.get(c) else None for c in columns}
        have = [v for v in row.values() if v is not None]
        row[AVG] = statistics.fmean(have) if have else None
        return row

    def chance(self, group: bool = True) -> dict[str, float | None]:
        """Per column, the accuracy (%) of a uniform guess over each item's options (None: generative);
        AVG when every column has one."""
        columns = self.table(group)[0]
        per_task = {r["task"]: r.get("chance") for r in self.records}
        values: dict[str, list[float]] = {}
        for t, c in per_task.items():
            if c is not None:
                values.setdefault(column_of(t, group), []).append(c)
        row = self._by_column(values, columns)
        if any(row[c] is None for c in columns):  # an AVG over some columns only would mislead
            row[AVG] = None
        return row

    def figure_table(self, figure: str, group: bool = True) -> dict[str, dict[str, float | None]]:
        """{method: {column: mean (%) of one dependence figure over tasks and seeds, AVG}} for the methods
        that have it (see eval/dependence.py)."""
        columns = self.table(group)[0]
        rows = {}
        for m in self.methods:
            per_task: dict[str, list[float]] = {}
            for r in self.records:
                if r["method"] == m and r.get(figure) is not None:
                    per_task.setdefault(r["task"], []).append(100 * r[figure])
            if not per_task:
                continue
            values: dict[str, list[float]] = {}
            for t, v in per_task.items():
                values.setdefault(column_of(t, group), []).append(statistics.fmean(v))
            rows[m] = self._by_column(values, columns)
        return rows

    def dependence(self, group: bool = True) -> dict[str, dict]:
        return {f: self.figure_table(f, group) for f in FIGURES}

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
                "chance": self.chance(),
                "dependence": self.dependence(),
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


def _cell(v) -> str:
    return "-" if v is None or v != v else f"{v:.1f}"


def format_results(results: Results, group: bool = True, per_block: int = 8, width: int = 9) -> str:
    """The score table with a chance row, then the example-dependence figures of the methods that read
    examples (each a table of the same shape), as `hypertune eval` prints them."""
    columns, rows, spread = results.table(group)
    chance_row = results.chance(group)
    shown = dict(rows)
    if any(v is not None for v in chance_row.values()):
        shown["(chance)"] = chance_row
    parts = [format_table(columns, shown, spread, per_block, width)]
    titles = {
        "changed_with_other_examples": "answers changed (%) with K other examples of the task (seed + 1)",
        "changed_with_other_task": "answers changed (%) with another task's examples",
        "follows_label_permutation": "answers that follow a permutation of the examples' labels (%; "
        "1/N labels for a method that ignores them, 100 for one that reads the mapping)",
    }
    for figure, table in results.dependence(group).items():
        if table:
            parts += ["", f"-- {titles[figure]}", format_table(columns, table, None, per_block, width)]
    return "\n".join(parts)


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
            cells = [_cell(row.get(c)) for c in block]
            if last:
                cells.append(_cell(row.get(AVG)) + (f"±{spread[m]:.1f}" if spread.get(m) else ""))
            lines.append(f"{m:<{label_w}}" + "".join(f" {c:>{width}}" for c in cells))
        if not last:
            lines.append("")
    return "\n".join(lines)
