"""`hypertune report RUN_DIRS...`: one table from several evaluations, and the paper's figures as PNGs.

Directories are recognised by their files (searched recursively, so a sweep's directory counts as its runs):
- an evaluation (`results.json` + `records.jsonl`): its methods become rows of the joined table;
- a training run (`config.json` + `metrics.jsonl`): its loss curves; `peft_task` runs logged with
  `eval.metric=score` also give the held-out score against PEFT training steps per initialisation (Figure 5).
Figure 4 (held-out average against hyperpretraining steps) comes from evaluated hypermodels, whose files
record how many CACLM steps preceded their multi-task fine-tuning.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .._io import read_json, read_json_lines
from ..errors import HypertuningError
from .runner import AVG, RECORDS, RESULTS, Results, format_table, to_csv


def find_runs(dirs) -> tuple[list[Path], list[Path]]:
    """(evaluation directories, training run directories) under `dirs`."""
    evals, trains = [], []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise HypertuningError(f"{d}: no such directory")
        found = False
        for f in sorted(d.rglob(RESULTS)):
            if f.is_file() and (f.parent / RECORDS).is_file() and f.parent not in evals:
                evals.append(f.parent)
                found = True
        for f in sorted(d.rglob("metrics.jsonl")):
            if f.is_file() and (f.parent / "config.json").is_file() and f.parent not in trains:
                trains.append(f.parent)
                found = True
        if not found:
            raise HypertuningError(f"{d}: holds neither an evaluation (results.json) nor a training run")
    return evals, trains


def caclm_steps(info: dict) -> int | None:
    """Hyperpretraining steps behind an evaluated hypermodel (None for other methods)."""
    if info.get("kind") != "hyper":
        return None
    return sum(e.get("steps", 0) for e in info.get("training") or [] if e.get("objective") == "caclm")


def joined_table(evals: list[Path]):
    """Rows of every evaluation, labels made unique by their directory where two clash."""
    records, methods, tasks, infos = [], [], [], {}
    labels = [m["label"] for d in evals for m in read_json(d / RESULTS, "evaluation results")["methods"]]
    for d in evals:
        res = read_json(d / RESULTS, "evaluation results")
        rename = {}
        for m in res["methods"]:
            label = m["label"] if labels.count(m["label"]) == 1 else f"{d.name}/{m['label']}"
            rename[m["label"]] = label
            methods.append(label)
            infos[label] = m
        for r in read_json_lines(d / RECORDS):
            if r["method"] in rename:
                records.append({**r, "method": rename[r["method"]]})
                tasks.append(r["task"])
    return Results(records, methods, list(dict.fromkeys(tasks))), infos


def report(dirs, out: str | Path | None = None) -> str:
    """The joined table (returned as text); with `out`, also its CSV and the figures as PNG files."""
    evals, trains = find_runs(dirs)
    text = []
    if evals:
        results, infos = joined_table(evals)
        columns, rows, spread = results.table()
        text.append(format_table(columns, rows, spread))
        left_out = results.incomplete()
        if left_out:
            text.append(f"left out (not scored by every method): {', '.join(left_out)}")
    if out is None:
        return "\n".join(text)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if evals:
        (out / "table.csv").write_text(to_csv(columns, rows, spread))
        written.append(out / "table.csv")
        points = [(caclm_steps(infos[m]), rows[m][AVG], infos[m].get("target", "?")) for m in rows]
        points = [p for p in points if p[0] is not None]
        if points:
            written.append(_plot_hyperpretraining(points, out / "fig4_hyperpretraining.png"))
    runs = [
        (d, read_json(d / "config.json", "run config"), read_json_lines(d / "metrics.jsonl")) for d in trains
    ]
    if runs:
        written.append(_plot_losses(runs, out / "loss_curves.png"))
        curves = _peft_curves(runs)
        if curves:
            written.append(_plot_peft(curves, out / "fig5_peft_init.png"))
    text.append("\nwrote " + ", ".join(str(p) for p in written))
    return "\n".join(text)


def _peft_curves(runs) -> dict[str, list[tuple[int, float]]]:
    """peft_task runs' held-out score by step, averaged over runs (tasks, seeds) per initialisation."""
    by_init: dict[str, dict[int, list[float]]] = {}
    for _, cfg, metrics in runs:
        if cfg.get("objective") != "peft_task":
            continue
        label = f"{cfg['peft']['target']} ({cfg['peft']['init']})"
        for r in metrics:
            if "eval_score" in r:
                by_init.setdefault(label, {}).setdefault(r["step"], []).append(r["eval_score"])
    return {k: sorted((s, statistics.fmean(v)) for s, v in d.items()) for k, d in by_init.items()}


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _plot_hyperpretraining(points, path: Path) -> Path:
    series = {
        f"Hyper-{target}": sorted((x, y) for x, y, t in points if t == target)
        for target in sorted({p[2] for p in points})
    }
    return _line_plot(
        series,
        "hyperpretraining steps",
        "held-out average score",
        "Figure 4: effect of hyperpretraining",
        path,
    )


def _plot_peft(curves, path: Path) -> Path:
    return _line_plot(
        dict(sorted(curves.items())),
        "PEFT training steps",
        "held-out score",
        "Figure 5: PEFT by initialisation",
        path,
    )


def _line_plot(series: dict[str, list], xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """One labelled line per series of (x, y) points."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, pts in series.items():
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_losses(runs, path: Path) -> Path:
    plt = _figure()
    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    for d, cfg, metrics in runs:
        label = f"{cfg.get('objective')} {d.name}"
        tr = [(r["step"], r["loss"]) for r in metrics if "loss" in r]
        va = [(r["step"], r["eval_loss"]) for r in metrics if "eval_loss" in r]
        if tr:
            train_ax.plot(*zip(*tr, strict=True), label=label)
        if va:
            val_ax.plot(*zip(*va, strict=True), marker=".", label=label)
    for ax, name in ((train_ax, "training loss"), (val_ax, "validation loss")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if ax.get_legend_handles_labels()[0]:  # a run without validation has nothing to label here
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
