"""The one training loop, on `accelerate`: devices, DDP/FSDP/DeepSpeed and mixed precision come from the
accelerate configuration (`accelerate launch --config_file ...`), never from code paths of our own.

Exact resumption: every batch is a pure function of its position in the data stream (see objectives.py),
and a checkpoint holds the trained weights (safetensors), optimizer and RNG states (accelerate's
`save_state`), the scheduler and the stream position (JSON). A checkpoint directory is built under a
temporary name and renamed into place, with `trainer_state.json` written last, so a run killed at any
moment leaves either a complete checkpoint or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch

from .._io import atomic_dir, atomic_write, read_json, read_json_lines, write_json
from ..errors import CheckpointError, DownstreamMismatchError, HypertuningError
from .config import RunConfig, config_changes, expand_sweep, flatten
from .objectives import EVALUATORS, OBJECTIVES, Objective

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
CHECKPOINTS, FINAL, METRICS = "checkpoints", "final", "metrics.jsonl"


def make_optimizer(params, t) -> torch.optim.Optimizer:
    kw = dict(lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, **kw)
    if t.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise HypertuningError(
                "train.optimizer=adamw8bit needs bitsandbytes (pip install bitsandbytes; it needs a GPU)"
            ) from None
        return bnb.optim.AdamW8bit(params, **kw)
    raise HypertuningError(f"train.optimizer must be adamw or adamw8bit, got {t.optimizer!r}")


def check_trackers(names: list[str]) -> None:
    """accelerate only warns when a requested tracker is not installed, and the run goes unlogged."""
    import accelerate.utils as au

    for name in names:
        available = getattr(au, f"is_{name}_available", None)
        if available is None:
            raise HypertuningError(f"log.trackers: unknown tracker {name!r} (e.g. tensorboard, wandb)")
        if not available():
            raise HypertuningError(f"log.trackers: {name} is not installed (pip install {name})")


def linear_schedule(optimizer, warmup: int, total: int):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, warmup, max(total, 1))


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def _trainable_signature(module) -> str:
    names = [f"{k}:{tuple(v.shape)}" for k, v in module.state_dict().items()]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


class Trainer:
    """Builds everything a run needs from its config; `fit()` trains, checkpoints and saves the artefact."""

    def __init__(self, cfg: RunConfig, accelerator=None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        OBJECTIVES.get(cfg.objective)  # an unknown name fails here, with the list of objectives
        t = cfg.train
        if min(t.steps, t.batch_size, t.grad_accum, cfg.log.every, cfg.checkpoint.keep) < 1:
            raise HypertuningError(
                "train.steps, train.batch_size, train.grad_accum, log.every and checkpoint.keep must be >= 1"
            )
        if min(cfg.checkpoint.every, cfg.eval.every) < 0:
            raise HypertuningError("checkpoint.every and eval.every must be >= 0 (0 = off)")
        self.cfg, self.run_dir = cfg, Path(cfg.run_dir)
        check_trackers(cfg.log.trackers)
        if accelerator is None:
            # accelerate keeps its precision and accumulation settings in process-wide singletons that
            # refuse a second, different Accelerator; runs in one process (sweeps, notebooks, tests) each
            # start from a clean one. The process group (PartialState) is kept.
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state()
            GradientState._reset_state()
        self.accelerator = accelerator or Accelerator(
            cpu=_cpu_ranks(),
            gradient_accumulation_steps=t.grad_accum,
            mixed_precision=t.mixed_precision,
            log_with=cfg.log.trackers or None,
            project_dir=str(self.run_dir),
        )
        set_seed(cfg.seed)
        # One process per machine builds what is cached (a dequantised GGUF, a tiny model, a dataset's
        # layout) while the others wait, then finds it built; every rank still builds its own objective.
        with self.accelerator.local_main_process_first():
            self.objective: Objective = OBJECTIVES.get(cfg.objective)(cfg)
        obj = self.objective
        if t.gradient_checkpointing:
            obj.gradient_checkpointing()
        acc = self.accelerator
        obj.downstream.model.to(acc.device)  # frozen models are outside the prepared module
        params = [p for p in obj.module.parameters() if p.requires_grad]
        if not params:
            raise HypertuningError(f"{cfg.objective}: nothing to train")
        self.optimizer = make_optimizer(params, t)
        # The scheduler is stepped by us once per optimizer step (not prepared: accelerate would step it
        # once per process), and saved as JSON with the trainer state.
        self.scheduler = linear_schedule(self.optimizer, t.warmup_steps, t.steps)
        self.module, self.optimizer = acc.prepare(obj.module, self.optimizer)
        if acc.process_index > 0:
            # every rank built the same initial parameters from `seed` (and DDP broadcasts rank 0's); from
            # here each rank draws its own dropout masks, from seed + rank. accelerate saves and restores
            # each rank's RNG states with the checkpoint. Rank 0 keeps the single-process stream.
            set_seed(cfg.seed, device_specific=True)
        if acc.num_processes > 1:
            log.info("training on %d processes (%s)", acc.num_processes, acc.distributed_type.value)
        else:
            _warn_if_single_of_many()
        self.step, self.elapsed, self.tokens = 0, 0.0, 0
        self.window = [0.0, 0]  # loss sum and steps since the last log line (saved: resumed logs match too)
        self.signature = _trainable_signature(obj.module)

    # -- state ---------------------------------------------------------------------------------------
    def trainer_state(self) -> dict:
        obj = self.objective
        return {
            "step": self.step,
            "objective": self.cfg.objective,
            "data": obj.data_state(self.next_index()),
            "scheduler": self.scheduler.state_dict(),
            "elapsed_s": self.elapsed,
            "tokens": self.tokens,
            "processes": self.accelerator.num_processes,
            "window": self.window,
            "downstream": obj.downstream.spec.fingerprint,
            "trainable": self.signature,
            "config": self.cfg.to_dict(),
        }

    def next_index(self) -> int:
        t = self.cfg.train
        return self.step * t.grad_accum * self.accelerator.num_processes * t.batch_size

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        root = self.run_dir / CHECKPOINTS
        final = root / f"step-{self.step:08d}"
        tmp = root / f".tmp-step-{self.step:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()  # every rank writes its own RNG state into tmp before it is renamed
        if acc.is_main_process:
            write_json(tmp / STATE_FILE, self.trainer_state())  # last: marks the checkpoint complete
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in checkpoints(self.run_dir)[: -self.cfg.checkpoint.keep]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        state = read_json(path / STATE_FILE, "trainer state")
        try:
            step, data, sched = int(state["step"]), state["data"], state["scheduler"]
            saved_cfg, objective = state["config"], state["objective"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path / STATE_FILE}: corrupt trainer state (missing {e})") from None
        if objective != self.cfg.objective:
            raise CheckpointError(
                f"{path} is a {objective} checkpoint; this run's objective is {self.cfg.objective}"
            )
        if state.get("downstream") != self.objective.downstream.spec.fingerprint:
            raise DownstreamMismatchError(
                f"{path} was trained with downstream fingerprint {state.get('downstream')}; "
                f"{self.cfg.downstream.model!r} has {self.objective.downstream.spec.fingerprint}"
            )
        if state.get("trainable") != self.signature:
            raise CheckpointError(f"{path} holds parameters of other names or shapes than this run's model")
        procs = state.get("processes", 1)
        if procs != self.accelerator.num_processes:
            raise CheckpointError(
                f"{path} was written by {procs} process(es), this run has {self.accelerator.num_processes}: "
                "the global batch, the data order and the per-rank RNG streams would change. Resume it with "
                f"`torchrun --nproc_per_node {procs} -m hypertuning.cli train CONFIG --resume` (1: without "
                "torchrun). Checkpoints are not converted between process counts; to go on with another, start "
                "a new run_dir from the weights in this checkpoint's model.safetensors."
            )
        changed = config_changes(saved_cfg, self.cfg.to_dict())
        if changed:
            raise CheckpointError(
                f"{path} was written by a run with a different config ({', '.join(changed)}); resuming it "
                "with these settings would not reproduce that run. Start a new run_dir instead."
            )
        position = self.objective.check_data_state(data)
        try:
            self.accelerator.load_state(str(path))
        except Exception as e:  # safetensors, torch.load and shape errors all mean the same to a user
            raise CheckpointError(
                f"{path}: corrupt or incomplete checkpoint ({type(e).__name__}: {e})"
            ) from e
        self.scheduler.load_state_dict(sched)
        self.step, self.elapsed, self.tokens = (
            step,
            float(state.get("elapsed_s", 0)),
            int(state.get("tokens", 0)),
        )
        self.window = list(state.get("window", [0.0, 0]))
        if position != self.next_index():
            raise CheckpointError(f"{path}: data position {position} does not match step {step}")

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Path:
        from tqdm.auto import tqdm

        cfg, t, acc = self.cfg, self.cfg.train, self.accelerator
        existing = checkpoints(self.run_dir)
        final = self.run_dir / FINAL
        if resume and final.exists():
            log.info("%s is already finished", self.run_dir)
            return final
        if resume and existing:
            self.load_checkpoint(existing[-1])
            log.info("Resumed %s at step %d", existing[-1], self.step)
        elif existing or final.exists():
            raise HypertuningError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or choose another run_dir"
            )
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "config.json", cfg.to_dict())
            self._trim_metrics()
        if cfg.log.trackers:
            acc.init_trackers(cfg.log.project, config=_scalars(cfg.to_dict()))
        validation = self.objective.validation(acc.num_processes)
        evaluate = EVALUATORS.get(cfg.eval.metric)
        bar = tqdm(
            total=t.steps,
            initial=self.step,
            desc=cfg.objective,
            disable=not (acc.is_main_process and cfg.log.progress),
            dynamic_ncols=True,
        )

        # the diagnostics run the unwrapped hypermodel, whose parameters FSDP and DeepSpeed shard
        from accelerate.utils import DistributedType

        shards = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
        sharded = acc.distributed_type in shards

        def evaluation() -> None:
            rec = evaluate(self.objective, self.module, validation, acc.device, acc)
            extra = {}
            probes = cfg.eval.phi_probes and self.objective.has_diagnostics
            if probes and sharded:
                # the probes read the hypermodel outside the wrapped forward: gather it (collective, every
                # rank), then probe an unsharded copy on the main process, which alone logs
                state = acc.get_state_dict(self.module)
                if acc.is_main_process:
                    with self.objective.unsharded(state):
                        extra = self.objective.diagnostics(acc.device)
            elif probes and acc.is_main_process:
                extra = self.objective.diagnostics(acc.device)
            self._log({"step": self.step, **rec, **extra})

        if cfg.eval.every and self.step == 0 and validation:  # the starting point of every curve
            evaluation()
        self.module.train()
        window_t0, window_tok = time.perf_counter(), 0
        while self.step < t.steps:
            t0 = time.perf_counter()
            step_loss, step_tok = 0.0, 0
            lr_used = self.optimizer.param_groups[0]["lr"]  # what this step's updates use
            for micro in range(t.grad_accum):
                base = (
                    self.next_index() + micro * acc.num_processes * t.batch_size
                ) + acc.process_index * t.batch_size
                batch = {
                    k: v.to(acc.device)
                    for k, v in self.objective.batch(list(range(base, base + t.batch_size))).items()
                }
                step_tok += sum(int(v.sum()) for k, v in batch.items() if k.endswith("mask"))
                with acc.accumulate(self.module):
                    loss_sum, n = self.module(**batch)
                    if self.objective.downstream.family.name == "t5":
                        step_tok += int(n)  # T5's decoder tokens are not in attention_mask
                    # A token mean over the global batch: the label-token count is summed over the ranks,
                    # and DDP's gradient average is undone by the factor num_processes, so N processes x
                    # batch B give the gradient (and the logged loss) of 1 process x batch N*B even when the
                    # ranks' token counts differ. One process: loss_sum / n, as before.
                    if acc.num_processes > 1:
                        n_all = acc.reduce(n.detach().clone().to(acc.device), "sum")
                        loss = loss_sum * acc.num_processes / n_all.clamp(min=1)
                    else:
                        loss = loss_sum / n.clamp(min=1)
                    acc.backward(loss)
                    grad_norm = None
                    if acc.sync_gradients and t.max_grad_norm:
                        grad_norm = acc.clip_grad_norm_(self.module.parameters(), t.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                step_loss += float(loss.detach()) / t.grad_accum
            self.scheduler.step()
            self.step += 1
            step_loss = float(acc.reduce(torch.tensor(step_loss, device=acc.device), "mean"))
            step_tok = int(acc.reduce(torch.tensor(step_tok, device=acc.device), "sum"))
            if not math.isfinite(step_loss):
                raise HypertuningError(
                    f"loss is {step_loss} at step {self.step}; lower train.lr or check the data"
                )
            self.elapsed += time.perf_counter() - t0
            self.tokens += step_tok
            self.window = [self.window[0] + step_loss, self.window[1] + 1]
            window_tok += step_tok
            if self.step % cfg.log.every == 0 or self.step == t.steps:
                dt = time.perf_counter() - window_t0
                rec = {
                    "step": self.step,
                    "loss": self.window[0] / self.window[1],
                    "lr": lr_used,
                    "grad_norm": None if grad_norm is None else float(grad_norm),
                    "tokens": self.tokens,
                    "tokens_per_s": window_tok / max(dt, 1e-9),
                    "elapsed_s": self.elapsed,
                }
                self._log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
                self.window, window_tok, window_t0 = [0.0, 0], 0, time.perf_counter()
            bar.update(1)
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < t.steps and validation:
                evaluation()
            if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and self.step < t.steps:
                self.save_checkpoint()
        bar.close()
        if validation:
            evaluation()
        if sharded:
            # FSDP and ZeRO-3 hold each parameter in shards across the ranks: gather the full state dict
            # (accelerate's call, collective: every rank takes part) into an unsharded module on the main
            # process, so the final artefact is what an unsharded run saves
            state = acc.get_state_dict(self.module)
            if acc.is_main_process:
                self.objective.adopt_full_state(state)
        if acc.is_main_process:
            atomic_dir(final, lambda tmp: self.objective.save_final(tmp, self.step))
            write_json(self.run_dir / "summary.json", self.summary())
        acc.wait_for_everyone()
        if acc.num_processes > 1:
            # DDP's reducer holds the process group: free it while every rank is still here, then tear the
            # group down together. Left to the garbage collector after end_training(), a gloo group could be
            # finalised on one rank after its peer had exited, and wait on it (pytorch/pytorch#75097; seen
            # once here, a rank stuck in teardown after the run was saved)
            self.module = acc.unwrap_model(self.module)
            acc.free_memory()
            acc.wait_for_everyone()
        acc.end_training()
        return final

    def summary(self) -> dict:
        recs = self.read_metrics()
        losses = [r["loss"] for r in recs if "loss" in r]
        evals = [r for r in recs if "eval_loss" in r]
        return {
            "objective": self.cfg.objective,
            "steps": self.step,
            "elapsed_s": self.elapsed,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens / max(self.elapsed, 1e-9),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "eval": evals[-1] if evals else None,
            "final": str(self.run_dir / FINAL),
            "processes": self.accelerator.num_processes,
            "distributed_type": self.accelerator.distributed_type.value,
        }

    # -- metrics -------------------------------------------------------------------------------------
    def _log(self, rec: dict) -> None:
        acc = self.accelerator
        if not acc.is_main_process:
            return
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.cfg.log.trackers:
            acc.log({k: v for k, v in rec.items() if k != "step" and v is not None}, step=rec["step"])

    def read_metrics(self) -> list[dict]:
        # a line cut short by a kill is skipped: it is rewritten after the resume
        return read_json_lines(self.run_dir / METRICS)

    def _trim_metrics(self) -> None:
        """On resume, drop records written after the checkpoint (they will be written again); all of them
        when there was no checkpoint to resume (the run starts again at step 0 and logs step 0 again)."""
        recs = [r for r in self.read_metrics() if r.get("step", 0) <= self.step] if self.step else []
        write_json_lines(self.run_dir / METRICS, recs)


def _cpu_ranks() -> bool:
    """Several ranks (torchrun) on a machine without an accelerator: accelerate forms the gloo process
    group (MULTI_CPU) only when told `cpu=True`; otherwise every rank silently trains alone."""
    import os

    world = os.environ.get("WORLD_SIZE", "1")
    has_accelerator = (
        torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    )
    return world.isdigit() and int(world) > 1 and not has_accelerator


def _warn_if_single_of_many() -> None:
    """`accelerate launch --cpu --num_processes N` (and a MULTI_CPU accelerate config) can start ONE
    process that knows nothing of the others: say so, instead of training N times slower without notice."""
    import os

    env = os.environ
    world = env.get("WORLD_SIZE", "")
    # accelerate's simple launcher sets MASTER_ADDR only when it was asked for several processes, and
    # never WORLD_SIZE: that pair is the trap's signature
    trap = "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env and not world
    if trap or (world.isdigit() and int(world) > 1):
        log.warning(
            "the launcher asked for %s processes but this run sees 1 (DistributedType.NO): on CPU, "
            "`accelerate launch --cpu --num_processes N` starts a single process; use `torchrun "
            "--nproc_per_node N -m hypertuning.cli train CONFIG` (README, 'Many GPUs')",
            world or "several",
        )


def write_json_lines(path: Path, records: list[dict]) -> None:
    atomic_write(path, lambda p: Path(p).write_text("".join(json.dumps(r) + "\n" for r in records)))


def _scalars(d: dict) -> dict:
    return {k: v for k, v in flatten(d).items() if isinstance(v, (int, float, str, bool))}


def train(cfg: RunConfig, resume: bool = False) -> list[Path]:
    """Run `cfg` (every combination of its sweep, one after another); returns the final artefacts.
    With a sweep, finished runs are skipped on --resume and a `sweep.json` summary is written."""
    runs = expand_sweep(cfg)
    out, rows = [], []
    for name, run in runs:
        final = Path(run.run_dir) / FINAL
        if not (name and resume and final.exists()):
            Trainer(run).fit(resume=resume)
        out.append(final)
        summary = Path(run.run_dir) / "summary.json"
        rows.append({"run": name, **(read_json(summary, "run summary") if summary.exists() else {})})
    if cfg.sweep:
        write_json(Path(cfg.run_dir) / "sweep.json", {"sweep": cfg.sweep, "runs": rows})
    return out
