"""Run configuration: YAML files under `configs/`, `key=value` overrides, and sweeps.

A YAML file may name a `base:` file (relative to itself) whose values it overrides, so the stages of one
scale share their model and data settings, and a `recipe:` (`train/recipes.py`) merged between the two, so
the scales of one recipe share it. Unknown keys are errors with a close-match hint, never ignored.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from .._registry import unknown_message
from ..errors import HypertuningError
from .recipes import recipe


@dataclass
class DownstreamConfig:
    model: str = "tiny-llama"  # hub id, local directory, .gguf file or alias
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    max_input_tokens: int = 384  # the paper's limits (Appendix A)
    max_target_tokens: int = 128
    max_in_context_tokens: int = 1408  # MetaICL-style baseline: hypermodel + downstream budgets


@dataclass
class HyperModelConfig:
    init: str | None = None  # a hypermodel directory to start from (e.g. a caclm run's final/), else new
    target: str = "lora"
    options: dict = field(default_factory=dict)  # target options: rank, alpha, modules, prefix_len...
    layers: int | None = None  # backbone blocks taken from the downstream model (None = all)
    backbone: str | None = None
    max_input_tokens: int = 1024
    readout: str = "heads"  # heads (the paper's) | kv (the downstream model's own keys/values at slots)
    readout_options: dict = field(default_factory=dict)  # kv: slots, lora_rank, lora_modules, separator


@dataclass
class DataConfig:
    collection: str = "bigbench"
    options: dict = field(default_factory=dict)  # collection options (path, max_examples...)
    tasks: list | None = None  # training tasks; None = the collection's training split
    heldout: list | None = None  # validation tasks; None = the collection's default held-out list
    exclude: list = field(default_factory=list)
    k: int = 16
    mixing: str = "proportional"
    temperature: float = 2.0
    shots: str = "sample"
    use_instruction: bool = True
    remap: float = (
        0.0  # share of training episodes (tasks with a fixed label set) whose labels become symbols
    )
    # share of training episodes (tasks with a fixed label set, mustread's included) whose shots are drawn at
    # a random label share, independent of the target's label (data/episodes.py, shots_at_random_share)
    label_share: float = 0.0
    mustread: float = 0.0  # share of training episodes drawn from the `mustread` training families
    mustread_options: dict = field(default_factory=dict)  # the mustread collection's options (train_tasks...)


@dataclass
class CaclmConfig:
    source: str = "bigbench_prose"  # bigbench_prose | files | toy
    files: list = field(default_factory=list)
    text_field: str = "text"  # the JSONL field holding each document
    max_documents: int | None = None
    validation_documents: int = 30  # the corpus' last documents, kept out of training
    segments: dict = field(default_factory=lambda: {"a": 176, "b": 32, "c": 128, "d": 176})


@dataclass
class PeftConfig:
    target: str = "lora"  # lora | prefix (Prefix-Flat) | prefix-mlp
    options: dict = field(default_factory=dict)
    init: str = "random"  # peft_task: random | shared (an mtf_peft run) | hyper (a hypermodel)
    init_from: str | None = None  # the mtf_peft final/ or the hypermodel directory
    task: str | None = None  # peft_task: "collection:task"
    k: int = 16  # examples the hypermodel reads for hyper initialisation
    few_shot_seed: int | None = None  # None = the run seed
    pool_size: int = 64  # the held-out task's training pool; the rest is evaluated
    train_on: str = "pool"  # peft_task: pool (the whole training pool) | shots (only the K examples shown)


@dataclass
class OptimConfig:
    steps: int = 100  # optimizer steps
    batch_size: int = 4  # per process and micro-step
    grad_accum: int = 1
    lr: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes)
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    mixed_precision: str | None = None  # no | bf16 | fp16; None = the accelerate config's choice
    gradient_checkpointing: bool = False
    # mtf_hyper: weight of the KL to the frozen downstream model reading the episode's examples in context
    # (context distillation): 0 = the LM loss alone, 1 = the KL alone
    distill: float = 0.0


@dataclass
class LogConfig:
    every: int = 10
    trackers: list = field(default_factory=list)  # accelerate trackers: tensorboard, wandb...
    project: str = "hypertuning"
    progress: bool = True


@dataclass
class CheckpointConfig:
    every: int = 100  # 0 = only the final artefact
    keep: int = 2


@dataclass
class EvalConfig:
    every: int = 0  # 0 = only at the end
    metric: str = "loss"  # an EVALUATORS name
    batches: int = 4
    # hypermodel objectives: tasks whose phi is generated from two sets of examples at each evaluation, to
    # log eval_phi_same_task / eval_phi_other_task (does the hypermodel read its examples?); 0 turns it off
    phi_probes: int = 4


@dataclass
class RunConfig:
    objective: str
    run_dir: str
    seed: int = 0
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    hypermodel: HyperModelConfig = field(default_factory=HyperModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    caclm: CaclmConfig = field(default_factory=CaclmConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: dict = field(default_factory=dict)  # dotted key -> list of values: one run per combination

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> RunConfig:
        return _build(cls, d, where)


# Keys a resumed run may change without changing its result.
# (Not train.steps: the learning-rate schedule depends on it.)
RESUMABLE_CHANGES = ("run_dir", "log.", "checkpoint.", "eval.every", "eval.phi_probes", "sweep")


def _build(cls, d, where: str):
    if not isinstance(d, dict):
        raise HypertuningError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in known:
            raise HypertuningError(unknown_message(f"key in {where}", key, list(known)))
        sub = _field_class(cls, key)
        kwargs[key] = _build(sub, value or {}, f"{where}.{key}") if sub else _coerce(known[key], value, where)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise HypertuningError(f"{where}: {e}") from None


def _coerce(f, value, where: str):
    """YAML reads 1e-4 (no dot) as a string; numbers are checked and converted here, with a clear error."""
    kind = str(f.type).split(" | ")[0]
    if kind == "list" and isinstance(value, (str, int, float)):
        return [value]  # trackers=tensorboard means [tensorboard]
    if value is None or kind not in ("int", "float", "bool"):
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "float" and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise HypertuningError(f"{where}.{f.name}: expected {kind}, got {value!r}")


def _field_class(cls, key):
    default = {f.name: f for f in fields(cls)}[key]
    if default.default_factory is not MISSING:
        value = default.default_factory()
        return type(value) if is_dataclass(value) else None
    return None


def read_yaml(path: str | Path, seen: tuple = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HypertuningError(f"{path}: no such config file")
    if path.resolve() in seen:
        raise HypertuningError(f"{path}: circular 'base:'")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise HypertuningError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(d, dict):
        raise HypertuningError(f"{path}: a config must be a mapping")
    base, name = d.pop("base", None), d.pop("recipe", None)
    if name:
        try:
            d = deep_merge(recipe(name), d)
        except HypertuningError as e:
            raise HypertuningError(f"{path}: {e}") from None
    if base:
        d = deep_merge(read_yaml(path.parent / base, (*seen, path.resolve())), d)
    return d


def deep_merge(a: dict, b: dict) -> dict:
    """b over a, section by section; `options` and `sweep` mappings are replaced whole (options belong to
    one target or collection, so merging those of two would mix them; `sweep={}` turns a sweep off)."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        merge = isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("options", "sweep")
        out[k] = deep_merge(out[k], v) if merge else v
    return out


def set_dotted(d: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise HypertuningError(f"override {key}: {p} is not a section")
    d[last] = value


def parse_override(item: str) -> tuple[str, object]:
    """'train.lr=1e-4' -> ('train.lr', 1e-4); values are parsed as YAML ('data.tasks=[a, b]' is a list)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise HypertuningError(f"override {item!r}: expected key=value (e.g. train.lr=1e-4)")
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """The YAML file (with its `base:` chain), then each KEY=VALUE override set at exactly its key: a whole
    mapping (options={...}) replaces it, a dotted key (hypermodel.options.alpha=32) changes one entry."""
    d = read_yaml(path)
    for item in overrides:
        set_dotted(d, *parse_override(item))
    for required in ("objective", "run_dir"):
        if required not in d:
            raise HypertuningError(f"{path}: needs '{required}:'")
    return RunConfig.from_dict(d, str(path))


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in ("options",):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, other than those a resume may change.
    A key the saved config lacks (added to the library since it was written) counts as its default, so an
    interrupted run resumes under a newer version as long as it leaves the new option at its default."""
    a, b, default = flatten(old), flatten(new), flatten(_defaults())
    keys = sorted(set(a) | set(b))
    return [
        k
        for k in keys
        if a.get(k, default.get(k)) != b.get(k)
        and not any(k == c or k.startswith(c) for c in RESUMABLE_CHANGES)
    ]


def _defaults() -> dict:
    """Every section's default values, as a resolved config holds them (objective and run_dir have none)."""
    out = {}
    for f in fields(RunConfig):
        if f.default_factory is not MISSING:
            value = f.default_factory()
            out[f.name] = asdict(value) if is_dataclass(value) else value
        elif f.default is not MISSING:
            out[f.name] = f.default
    return out


def expand_sweep(cfg: RunConfig) -> list[tuple[str, RunConfig]]:
    """One (name, config) per combination of `sweep` values, each in its own sub-directory of run_dir;
    [("", cfg)] without a sweep."""
    if not cfg.sweep:
        return [("", cfg)]
    keys = list(cfg.sweep)
    for k in keys:
        if not isinstance(cfg.sweep[k], list) or not cfg.sweep[k]:
            raise HypertuningError(f"sweep.{k}: expected a non-empty list of values")
    out = []
    base = cfg.to_dict()
    base["sweep"] = {}
    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        d = copy.deepcopy(base)
        name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values, strict=True))
        for k, v in zip(keys, values, strict=True):
            set_dotted(d, k, v)
        d["run_dir"] = str(Path(cfg.run_dir) / name)
        out.append((name, RunConfig.from_dict(d, f"sweep {name}")))
    return out
