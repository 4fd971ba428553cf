"""BIG-bench JSON tasks, read from the `bigbench==1.0.0` sdist on PyPI (the offline default collection).

The sdist is fetched once (about 360 MB; installing the package would pull TensorFlow and more, and its
setup cannot even build metadata), and its `bigbench/benchmark_tasks/**/task.json` files plus the BIG-bench
Lite list are extracted into the cache together with an index, in one pass over the archive. Where an index
does not serve that sdist (some mirrors list only 0.0.1, which holds no tasks), a checkout or source archive
of the google/BIG-bench repository has the same layout under `bigbench/`: point `HYPERTUNING_BIGBENCH` (or
`path=`) at it. Programmatic (`task.py`) tasks are not included: they need the bigbench package to run.

Prompts follow `bigbench/api/json_task.py`: `example_input_prefix + input (+ choice_prefix + choices) +
example_output_prefix`, with the task's `task_prefix` as the task instruction.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import tarfile
from pathlib import Path

from ..._io import atomic_dir, cache_dir, fetch_pypi_file, write_json
from ...errors import DataError, HypertuningError
from ..task import Example, Task, cap_indices, metric_name, rng_for
from .base import COLLECTIONS, Collection

log = logging.getLogger(__name__)

SDIST = ("bigbench", "bigbench-1.0.0.tar.gz")
LITE = "bigbench_lite_v1"
LITE_FILE = "bbseqio/bigbench_lite.py"  # below bigbench/
LAYOUT = 2  # of the extracted cache: tasks/NAME/task.json (no examples) + tasks/NAME/examples.jsonl
# Long prose kept for the CACLM hyperpretraining corpus, so out of multi-task training and evaluation.
PROSE_TASKS = ("gem/xsum", "gem/wikilingua_en", "paragraph_segmentation")
# json_task.py defaults when a task does not set its own.
DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
    "few_shot_example_separator": "\n",
}


def bigbench_dir(source: str | os.PathLike | None = None) -> Path:
    """The extracted task files, built the first time from `source`: the sdist (default: fetched from
    PyPI, or `$HYPERTUNING_BIGBENCH`), a tar archive of the google/BIG-bench repository, a checkout
    of it, or a folder this function extracted before. Each source is extracted once into a cache folder
    of its own."""
    source = source or os.environ.get("HYPERTUNING_BIGBENCH") or None
    if source is None:
        out = cache_dir() / "datasets" / f"bigbench-1.0.0-v{LAYOUT}"
        if (out / "index.json").exists():
            return out
        try:
            source = fetch_pypi_file(*SDIST)
        except HypertuningError as e:
            raise DataError(
                f"{e}. Or give BIG-bench another way: set HYPERTUNING_BIGBENCH (or the collection's path=) to "
                "a checkout or source archive of https://github.com/google/BIG-bench"
            ) from None
    source = Path(source)
    if not source.exists():
        raise DataError(f"BIG-bench source not found: {source}")
    if (source / "index.json").is_file():
        return source  # already extracted
    if source.is_dir() and not (source / "bigbench" / "benchmark_tasks").is_dir():
        raise DataError(
            f"{source} is a directory with neither index.json (an extracted cache) nor "
            "bigbench/benchmark_tasks/ (a checkout of the BIG-bench repository): pass the sdist, a source "
            "archive of the repository, an extracted cache or a checkout"
        )
    out = cache_dir() / "datasets" / _cache_name(source)
    if (out / "index.json").exists():
        return out
    return atomic_dir(out, lambda tmp: _extract(source, tmp))


def _cache_name(source: Path) -> str:
    """bigbench-1.0.0-v2 for the sdist (whatever folder it is in), else the source's name and a hash of
    its full path and its contents' sizes and times, so two sources never share an extraction and a
    checkout that changed (a pull, a task added) is extracted again."""
    if source.name == SDIST[1]:
        return f"bigbench-1.0.0-v{LAYOUT}"
    digest = hashlib.sha256(str(source.resolve()).encode())
    if source.is_dir():
        tasks = sorted((source / "bigbench").rglob("*.json")) + [source / "bigbench" / LITE_FILE]
        stats = [(p.relative_to(source).as_posix(), p.stat()) for p in tasks if p.is_file()]
    else:
        stats = [("", source.stat())]
    for name, st in stats:
        digest.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    stem = source.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
    return f"bigbench-{stem}-{digest.hexdigest()[:12]}-v{LAYOUT}"


def _files(source: Path):
    """(path below the `bigbench/` package folder, bytes reader) for each file of an sdist or source
    archive (one top folder) or of a repository checkout."""
    if source.is_dir():
        root = source / "bigbench"
        for path in sorted(root.rglob("*")):
            if path.is_file():
                yield path.relative_to(root).as_posix(), path.read_bytes
        return
    with tarfile.open(source) as tf:
        for m in tf:
            path = "/" + m.name.removeprefix("./")  # an archive with no top folder starts at bigbench/
            if m.isfile() and "/bigbench/" in path:
                yield path.split("/bigbench/", 1)[1], lambda m=m: tf.extractfile(m).read()


def _extract(source: Path, out: Path) -> None:
    from tqdm.auto import tqdm

    index, lite = {}, None
    try:
        for rel, read in tqdm(
            _files(source), desc="Extracting BIG-bench tasks", unit=" files", mininterval=2
        ):
            if rel.startswith("benchmark_tasks/") and rel.endswith("/task.json"):
                name = rel[len("benchmark_tasks/") : -len("/task.json")]
                data = json.loads(read())
                examples = data.pop("examples", None)
                if examples:  # a leaf task (composite tasks' own task.json has none)
                    dest = out / "tasks" / name
                    dest.mkdir(parents=True, exist_ok=True)
                    (dest / "task.json").write_text(json.dumps(data, ensure_ascii=False))
                    with open(dest / "examples.jsonl", "w", encoding="utf-8") as f:
                        f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
                    index[name] = {
                        "examples": len(examples),
                        "metrics": data.get("metrics", []),
                        "multiple_choice": all("target_scores" in e for e in examples),
                    }
            elif rel == LITE_FILE:
                lite = _lite_names(read().decode())
    except (tarfile.TarError, OSError, json.JSONDecodeError) as e:
        if source.parent == cache_dir() / "downloads":
            hint = "delete it to fetch it again"
        elif source.suffix == ".zip":
            hint = "a zip archive is not read: unpack it and give the folder"
        else:
            hint = "give the bigbench sdist, a tar archive or checkout of the BIG-bench repository"
        raise DataError(
            f"{source}: not a readable BIG-bench sdist, tar archive or checkout ({e}); {hint}"
        ) from None
    if not index:
        raise DataError(
            f"{source} holds no bigbench/benchmark_tasks/**/task.json: is it the bigbench sdist, or a checkout "
            "or archive of the BIG-bench repository?"
        )
    write_json(out / "lite.json", lite or [])
    write_json(out / "index.json", dict(sorted(index.items())))


def _lite_names(source: str) -> list[str]:
    """BIGBENCH_LITE_TASK_NAMES["bigbench_lite_v1"] from bigbench_lite.py, read without importing it."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "BIGBENCH_LITE_TASK_NAMES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value)[LITE])
    raise DataError("bigbench_lite.py has no BIGBENCH_LITE_TASK_NAMES")


@COLLECTIONS.register("bigbench")
class BigBench(Collection):
    name = "bigbench"
    reserved = PROSE_TASKS

    def __init__(self, path: str | None = None, max_examples: int | None = 1000, seed: int = 0):
        """`path`: the sdist, a source archive or checkout of the BIG-bench repository, or an extracted
        cache (default: `$HYPERTUNING_BIGBENCH`, else the sdist fetched from PyPI into the cache)."""
        super().__init__(max_examples=max_examples, seed=seed)
        self._path = path
        self._root: Path | None = None
        self._index: dict | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = bigbench_dir(self._path)
        return self._root

    @property
    def index(self) -> dict[str, dict]:
        if self._index is None:
            self._index = json.loads((self.root / "index.json").read_text())
        return self._index

    def task_names(self) -> list[str]:
        return list(self.index)

    def describe(self, name: str) -> dict:
        info = dict(self.index[self.check_name(name)])
        info["metrics"] = [m for m in dict.fromkeys(map(metric_name, info["metrics"])) if m]
        return info

    def default_heldout(self) -> list[str]:
        return json.loads((self.root / "lite.json").read_text())

    def raw_examples(self, name: str) -> list[tuple[int, dict]]:
        """(index in task.json, example) pairs; at most `max_examples`, a deterministic subset found
        without parsing the rest (the image-like tasks hold tens of MB each)."""
        n = self.describe(name)["examples"]
        keep = cap_indices(n, self.max_examples, self.seed, f"{self.name}:{name}")
        keep = None if keep is None else set(keep)
        with open(self.root / "tasks" / name / "examples.jsonl", encoding="utf-8") as f:
            return [(i, json.loads(line)) for i, line in enumerate(f) if keep is None or i in keep]

    def _load(self, name: str, relabel: dict[str, str] | None = None) -> Task:
        path = self.root / "tasks" / name / "task.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        return task_from_json(data, name, str(path), self.raw_examples(name), relabel)

    def relabelled(self, name: str, mapping: dict[str, str]) -> Task:
        """Re-rendered from the JSON with the labels renamed, so the options listed in each prompt are the
        symbols too (in the same shuffled order as the original's); without the instruction (data/remap.py)."""
        task = self._load(self.check_name(name), mapping).capped(self.max_examples, self.seed).deduplicated()
        task.instruction = None
        return task


def task_from_json(
    data: dict, name: str, source: str = "task.json", numbered=None, relabel: dict[str, str] | None = None
) -> Task:
    """One BIG-bench JSON task as a Task, honouring its prompt prefixes, metrics and references.
    `numbered`: (index, example) pairs, default every example of `data`; the index keys the shuffle of
    the choices, so an example reads the same whatever the cap. `relabel`: option -> new name, applied to
    `target_scores` and `target` before the prompt is written (`remap=`)."""
    fmt = {k: data.get(k, v) for k, v in DEFAULTS.items()}
    examples, skipped = [], 0
    for i, raw in numbered if numbered is not None else enumerate(data.get("examples", [])):
        if relabel:
            raw = _relabel_raw(raw, relabel)
        ex = _example(raw, fmt, rng_for(0, "bigbench-choices", name, i))
        if ex is None:
            skipped += 1
        else:
            examples.append(ex)
    if skipped:
        log.info(
            "bigbench:%s: skipped %d example(s) with no input field, an empty target or all choices scored equal",
            name,
            skipped,
        )
    metrics = tuple(dict.fromkeys(m for m in map(metric_name, data.get("metrics", [])) if m))
    stop = tuple(s for s in [data.get("stop_string")] if s)
    return Task(
        name=name,
        examples=tuple(examples),
        collection="bigbench",
        instruction=fmt["task_prefix"].strip() or None,
        metrics=metrics,
        shot_separator=fmt["few_shot_example_separator"],
        stop=stop,
        meta={
            "source": source,
            "description": data.get("description", ""),
            "bigbench_metrics": data.get("metrics", []),
            "preferred_score": data.get("preferred_score"),
            "output_regex": data.get("output_regex"),
            "skipped_examples": skipped,
            # how options are listed in the prompts, for relabelling them (remapped episodes)
            "choice_prefix": fmt["choice_prefix"] if fmt["append_choices_to_input"] else None,
        },
    )


def _relabel_raw(raw: dict, mapping: dict[str, str]) -> dict:
    out = dict(raw)
    if isinstance(raw.get("target_scores"), dict):
        out["target_scores"] = {mapping.get(str(k), k): v for k, v in raw["target_scores"].items()}
    target = raw.get("target")
    if isinstance(target, list):
        out["target"] = [mapping.get(str(t), t) for t in target]
    elif target is not None:
        out["target"] = mapping.get(str(target), target)
    return out


def _example(raw: dict, fmt: dict, rng) -> Example | None:
    text = raw.get("input")
    if not isinstance(text, str):  # an empty input is fine: some tasks put the question in the choices
        return None
    choices, answers = (), ()
    scores = raw.get("target_scores")
    if isinstance(scores, dict) and scores:
        choices = tuple(str(c) for c in scores)
        best = max(scores.values())
        if len(scores) > 1 and min(scores.values()) == best:
            return None  # every option scores the same: nothing to rank (json_task.py rejects these too)
        answers = tuple(i for i, v in enumerate(scores.values()) if v == best)
        if fmt["append_choices_to_input"]:
            shown = list(choices)
            rng.shuffle(shown)  # as json_task.py does, so the answer's position carries no signal
            text = text + fmt["choice_prefix"] + fmt["choice_prefix"].join(shown)
    target = raw.get("target")
    outputs = (
        tuple(str(t) for t in target)
        if isinstance(target, list)
        else ((str(target),) if target is not None else ())
    )
    outputs = tuple(o for o in outputs if o.strip())
    if not outputs and not answers:
        return None
    prompt = (fmt["example_input_prefix"] + text + fmt["example_output_prefix"]).strip()
    return Example(prompt, outputs, choices, answers)
