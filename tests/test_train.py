"""The training loop on the shipped `smoke` configs (tiny random Llama, synthetic toy tasks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hypertuning import Adapter, CheckpointError, DownstreamMismatchError, HyperModel, HypertuningError
from hypertuning.hyper.diagnostics import flat_phi, phi_spread, relative_distance
from hypertuning.models.downstream import load_downstream
from hypertuning.train import Trainer, load_config, train
from hypertuning.train.config import expand_sweep, parse_override

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke"
OBJECTIVES = ["caclm", "mtf_hyper", "joint", "mtf_full", "mtf_fewshot", "mtf_peft", "peft_task"]


def smoke(name: str, run_dir: Path, *overrides: str):
    return load_config(SMOKE / f"{name}.yaml", [f"run_dir={run_dir}", "sweep={}", *overrides])


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def evals(run_dir: Path) -> list[float]:
    return [r["eval_loss"] for r in metrics(run_dir) if "eval_loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every objective's smoke run (20 steps), trained once for the tests below."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in OBJECTIVES:
        extra = ["train.steps=20"]
        if name == "peft_task":
            extra += ["peft.init=shared", f"peft.init_from={out['mtf_peft'] / 'final'}"]
        train(smoke(name, root / name, *extra))
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", OBJECTIVES)
def test_smoke_run_decreases_validation_loss(runs, name):
    losses = evals(runs[name])
    assert len(losses) >= 2 and metrics(runs[name])[0]["step"] == 0  # the curve starts before training
    assert losses[-1] < losses[0] - 1e-3, losses
    summary = json.loads((runs[name] / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["tokens_per_s"] > 0


def _downstream_state():
    return {k: v.clone() for k, v in load_downstream("tiny-llama").model.state_dict().items()}


def test_frozen_downstream_unchanged_and_joint_changes_it(runs):
    base = _downstream_state()
    for name in ("caclm", "mtf_hyper"):
        hm = HyperModel.from_pretrained(runs[name] / "final", load_downstream("tiny-llama"))
        assert hm.config.extra["training"][-1]["objective"] == name
    # joint: the fine-tuned downstream model is saved beside the hypermodel, which is bound to it
    tuned = load_downstream(str(runs["joint"] / "final" / "downstream"))
    hm = HyperModel.from_pretrained(runs["joint"] / "final", tuned)  # compatible with its own downstream
    assert Path(hm.spec.checkpoint) == (runs["joint"] / "final" / "downstream").resolve()
    with pytest.raises(DownstreamMismatchError):
        HyperModel.from_pretrained(runs["joint"] / "final", load_downstream("tiny-llama"))
    changed = [k for k, v in tuned.model.state_dict().items() if not torch.equal(v, base[k])]
    assert len(changed) > len(base) // 2
    full = load_downstream(str(runs["mtf_full"] / "final")).model.state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in full.items())


@pytest.mark.parametrize("name", ["caclm", "mtf_hyper", "joint"])
def test_gradients_reach_hypermodel_not_frozen_downstream(tmp_path, name):
    trainer = Trainer(smoke(name, tmp_path / name, "train.warmup_steps=0"))
    obj = trainer.objective
    before = {k: v.clone() for k, v in obj.downstream.model.state_dict().items()}
    loss, n = trainer.module(**obj.batch(list(range(4))))
    (loss / n).backward()
    for pname, p in obj.hypermodel.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    ds_grads = [p.grad is not None for p in obj.downstream.model.parameters()]
    assert all(ds_grads) if name == "joint" else not any(ds_grads)
    trainer.optimizer.step()
    same = all(torch.equal(v, before[k]) for k, v in obj.downstream.model.state_dict().items())
    assert same is (name != "joint")


def test_phi_spread_distances():
    rows = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.0, 1.0]])
    out = phi_spread(rows, ["a", "a", "b", "b"])
    d01 = 0.1 / ((1 + (1.01**0.5)) / 2)
    assert out["phi_same_task"] == pytest.approx((d01 + 0.0) / 2)  # median of the two same-task pairs
    others = sorted([2**0.5, 2**0.5, ((1 + 0.81) ** 0.5) / ((1 + 1.01**0.5) / 2)] * 2)
    assert out["phi_other_task"] == pytest.approx((others[1] + others[2]) / 2)
    assert phi_spread(rows[:2], ["a", "b"]).keys() == {"phi_other_task"}  # no same-task pair
    assert relative_distance(torch.zeros(3), torch.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="2 rows of phi but 3 groups"):
        phi_spread(rows[:2], ["a", "b", "c"])
    phi = {"b": torch.ones(2, 3, 2), "a": torch.zeros(2, 1)}  # flattened per row, in name order
    assert flat_phi(phi).tolist() == [[0.0] + [1.0] * 6] * 2
    assert flat_phi({"a": torch.zeros(1), "b": torch.ones(2)}, batched=False).tolist() == [[0, 1, 1]]


@pytest.mark.parametrize("name", ["mtf_hyper", "joint"])
def test_hypermodel_runs_log_how_far_phi_moves_with_the_examples(runs, name):
    recs = [r for r in metrics(runs[name]) if "eval_loss" in r]
    assert len(recs) == 3  # steps 0, 10, 20: every evaluation
    assert all(0 < r["eval_phi_same_task"] < 2 and 0 < r["eval_phi_other_task"] < 2 for r in recs), recs
    assert not any("eval_phi_same_task" in r for r in metrics(runs["mtf_peft"]))  # no hypermodel there


def test_sharded_runs_probe_and_save_a_gathered_unsharded_copy(tmp_path, monkeypatch):
    """Under FSDP/ZeRO-3 the phi probes and the final save read the hypermodel outside the wrapped
    forward: they get an unsharded copy rebuilt from the gathered state (accelerate's get_state_dict, faked
    here as the full state it returns), and log and save what an unsharded run does."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    over = [
        "train.steps=2",
        "checkpoint.every=0",
        "train.max_grad_norm=0",
        "eval.every=1",
    ]  # FSDP clips its own way
    Trainer(smoke("mtf_hyper", tmp_path / "plain", *over)).fit()
    trainer = Trainer(smoke("mtf_hyper", tmp_path / "sharded", *over))
    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    gathered = []

    def get_state_dict(self, model, unwrap=True):  # what accelerate gathers under FSDP: the full state
        gathered.append({k: v.clone() for k, v in self.unwrap_model(model).state_dict().items()})
        return gathered[-1]

    monkeypatch.setattr(Accelerator, "get_state_dict", get_state_dict)
    trainer.fit()
    assert len(gathered) == 4  # three evaluations' probes and the final save
    assert trainer.objective.module is not trainer.module  # saved from the rebuilt copy

    def probes(run):
        return [
            (r["step"], r["eval_phi_same_task"], r["eval_phi_other_task"])
            for r in metrics(run)
            if "eval_loss" in r
        ]

    assert probes(tmp_path / "sharded") == probes(tmp_path / "plain")
    assert [r.get("loss") for r in metrics(tmp_path / "sharded")] == [
        r.get("loss") for r in metrics(tmp_path / "plain")
    ]
    a = load_file(tmp_path / "plain" / "final" / "model.safetensors")
    b = load_file(tmp_path / "sharded" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_logged_phi_spread_is_the_final_hypermodels(runs, tmp_path):
    last = [r for r in metrics(runs["mtf_hyper"]) if "eval_loss" in r][-1]
    # a new run of the same config builds the same probes; given the trained weights it logs the same
    obj = Trainer(smoke("mtf_hyper", tmp_path / "again", "train.steps=20")).objective
    fresh = obj.diagnostics("cpu")
    trained = HyperModel.from_pretrained(runs["mtf_hyper"] / "final", obj.downstream)
    obj.hypermodel.load_state_dict(trained.state_dict())
    again = obj.diagnostics("cpu")
    assert again["eval_phi_same_task"] == pytest.approx(last["eval_phi_same_task"], rel=1e-5)
    assert again["eval_phi_other_task"] == pytest.approx(last["eval_phi_other_task"], rel=1e-5)
    assert fresh["eval_phi_other_task"] != pytest.approx(again["eval_phi_other_task"], rel=1e-3)
    assert obj.hypermodel.training  # diagnostics leave the training mode as they found it
    off = Trainer(smoke("mtf_hyper", tmp_path / "off", "eval.phi_probes=0")).objective
    assert off.diagnostics("cpu") == {}


@pytest.mark.parametrize("target", ["lora", "prefix", "prefix-mlp"])
def test_peft_task_hyper_init_starts_from_generated_parameters(tmp_path, target):
    opts = "{rank: 4}" if target == "lora" else "{prefix_len: 3}"
    hyper = tmp_path / "hyper"
    over = [f"hypermodel.target={target}", f"hypermodel.options={opts}", "train.steps=2", "eval.every=0"]
    train(smoke("mtf_hyper", hyper, *over))
    trainer = Trainer(
        smoke(
            "peft_task",
            tmp_path / "p",
            "peft.init=hyper",
            f"peft.init_from={hyper / 'final'}",
            f"peft.target={target}",
            "train.steps=2",
        )
    )
    obj = trainer.objective
    hm = HyperModel.from_pretrained(hyper / "final", obj.downstream)
    want = hm.generate([(e.input, e.target) for e in obj.shots]).phi
    got = obj.module.params()
    assert set(got) == set(want)
    for k in want:  # Prefix-MLP: same embeddings through the hypermodel's own MLP give the same prefixes
        assert torch.allclose(got[k], want[k], atol=1e-6), k
    # the shots come from the task's training pool and are never evaluated on
    assert not {e.input for e in obj.shots} & {e.input for e in obj.eval_examples}


def test_peft_task_can_train_on_the_shots_only(tmp_path):
    pool = Trainer(smoke("peft_task", tmp_path / "a", "peft.init=random", "peft.k=4")).objective
    shots = Trainer(
        smoke("peft_task", tmp_path / "b", "peft.init=random", "peft.k=4", "peft.train_on=shots")
    ).objective
    assert [e.input for e in shots.shots] == [e.input for e in pool.shots]  # the same K either way
    assert len(shots.train_examples) == 4 < len(pool.train_examples)
    seen = shots.downstream.tokenizer.batch_decode(shots.batch(list(range(12)))["input_ids"])
    assert all(any(e.input in s for e in shots.shots) for s in seen)
    assert shots.stream_fingerprint != pool.stream_fingerprint  # resuming one run as the other is refused
    with pytest.raises(HypertuningError, match="train_on"):
        Trainer(smoke("peft_task", tmp_path / "c", "peft.train_on=all"))


def test_peft_task_shared_init_starts_from_mtf_peft(runs, tmp_path):
    src = runs["mtf_peft"] / "final"
    cfg = smoke("peft_task", tmp_path / "s", "peft.init=shared", f"peft.init_from={src}", "train.steps=2")
    state = Trainer(cfg).objective.module.params.state_dict()
    saved = load_file(src / "trainable.safetensors")
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    with pytest.raises(CheckpointError, match="holds a lora adapter, not prefix"):
        Trainer(
            smoke(
                "peft_task", tmp_path / "t", "peft.init=shared", f"peft.init_from={src}", "peft.target=prefix"
            )
        )
    with pytest.raises(HypertuningError, match="needs peft.init_from"):
        Trainer(smoke("peft_task", tmp_path / "u", "peft.init=hyper"))


def test_peft_task_outputs_a_peft_adapter(runs):
    adapter = Adapter.from_pretrained(runs["peft_task"] / "final")
    assert adapter.target == "lora" and adapter.meta["training"][-1]["objective"] == "peft_task"
    assert (runs["peft_task"] / "final" / "adapter_model.safetensors").is_file()


def test_sweep_runs_each_combination(tmp_path):
    cfg = load_config(
        SMOKE / "peft_task.yaml",
        [f"run_dir={tmp_path}", "train.steps=2", "eval.every=0", "sweep={train.lr: [1e-3, 1e-4], seed: [0]}"],
    )
    assert len(expand_sweep(load_config(SMOKE / "peft_task.yaml"))) == 9  # the paper's 3 lr x 3 seeds
    finals = train(cfg)
    names = ["lr=1e-3,seed=0", "lr=1e-4,seed=0"]  # as the user wrote the values
    assert [f.parent.name for f in finals] == names
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["run"] for r in summary["runs"]] == names and all(r["steps"] == 2 for r in summary["runs"])
    assert json.loads((finals[1].parent / "config.json").read_text())["train"]["lr"] == 1e-4
    assert train(cfg, resume=True) == finals  # finished runs are skipped


# -- resumption -------------------------------------------------------------------------------------------
def test_resume_without_a_checkpoint_logs_step_0_once(tmp_path):
    run = tmp_path / "r"
    run.mkdir()  # what a run killed before its first checkpoint leaves: its step-0 evaluation
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval_loss": 9.0}) + "\n")
    Trainer(smoke("mtf_peft", run, "train.steps=2", "eval.every=1")).fit(resume=True)
    recs = [r for r in metrics(run) if "eval_loss" in r]
    assert [r["step"] for r in recs] == [0, 1, 2] and recs[0]["eval_loss"] != 9.0


def _cli(run_dir: Path, *extra: str) -> list[str]:
    # T5 (dropout 0.1 in both models) so that restoring the RNG state matters; accumulation and
    # evaluation on, as in real runs
    args = [f"run_dir={run_dir}", "train.steps=150", "checkpoint.every=10", "log.every=25", "eval.every=25"]
    args += ["downstream.model=tiny-t5", "train.grad_accum=2"]
    return [sys.executable, "-m", "hypertuning.cli", "train", str(SMOKE / "mtf_hyper.yaml"), *args, *extra]


def _final_weights(run_dir: Path) -> dict:
    return load_file(run_dir / "final" / "model.safetensors")


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cli(ref), check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list((run / "checkpoints").glob("step-*/trainer_state.json")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (run / "final").exists():
        pytest.skip("the run finished before it could be killed (machine too fast for 150 steps)")
    assert list((run / "checkpoints").glob("step-*"))
    subprocess.run(_cli(run, "--resume"), check=True, env=env, capture_output=True)
    a, b = _final_weights(ref), _final_weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    # the resumed run logs the same losses (and validation losses) at the same steps, none duplicated
    def curve(d):
        return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in metrics(d)]

    assert curve(run) == curve(ref)


def _finished(tmp_path, name="mtf_hyper", *extra):
    run = tmp_path / name
    cfg = smoke(name, run, "train.steps=10", "checkpoint.every=5", "checkpoint.keep=3", *extra)
    Trainer(cfg).fit()
    return run, cfg


def test_existing_run_dir_needs_resume(tmp_path):
    run, cfg = _finished(tmp_path)
    with pytest.raises(HypertuningError, match="--resume"):
        Trainer(cfg).fit()
    assert Trainer(cfg).fit(resume=True) == run / "final"  # already finished: nothing to do


def _restart_from(run: Path, step: int):
    """Remove the final artefact and the checkpoints after `step`, as if the run died there."""
    import shutil

    shutil.rmtree(run / "final")
    for p in (run / "checkpoints").iterdir():
        if int(p.name.split("-")[1]) > step:
            shutil.rmtree(p)


def test_corrupt_checkpoint_gives_specific_error(tmp_path):
    run, cfg = _finished(tmp_path)
    _restart_from(run, 5)
    weights = run / "checkpoints" / "step-00000005" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="step-00000005.*corrupt"):
        Trainer(cfg).fit(resume=True)
    (run / "checkpoints" / "step-00000005" / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="trainer_state.json"):
        Trainer(cfg).fit(resume=True)


def test_mismatched_checkpoint_gives_specific_error(tmp_path, tiny_dirs):
    run, cfg = _finished(tmp_path)
    _restart_from(run, 5)
    with pytest.raises(CheckpointError, match="train.lr"):
        Trainer(smoke("mtf_hyper", run, "train.steps=10", "train.lr=0.5")).fit(resume=True)
    with pytest.raises(DownstreamMismatchError, match="fingerprint"):
        Trainer(
            smoke("mtf_hyper", run, "train.steps=10", f"downstream.model={tiny_dirs['llama_other']}")
        ).fit(resume=True)
    with pytest.raises(CheckpointError, match="is a mtf_hyper checkpoint"):
        Trainer(smoke("mtf_hyper", run, "train.steps=10", "objective=caclm")).fit(resume=True)
    with pytest.raises(CheckpointError, match="train.steps"):  # it changes the learning-rate schedule
        Trainer(smoke("mtf_hyper", run, "train.steps=12")).fit(resume=True)
    # other logging is allowed: it does not change the run
    Trainer(smoke("mtf_hyper", run, "train.steps=10", "log.every=1")).fit(resume=True)
    assert [r["step"] for r in metrics(run) if "loss" in r][-5:] == [6, 7, 8, 9, 10]


def test_bf16_checkpointing_and_accumulation_run(tmp_path):
    run = tmp_path / "bf16"
    extra = ["train.steps=4", "train.mixed_precision=bf16", "train.gradient_checkpointing=true"]
    Trainer(smoke("mtf_hyper", run, *extra, "train.grad_accum=2", "eval.every=0")).fit()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["last_loss"] == pytest.approx(summary["first_loss"], abs=1.0)
    HyperModel.from_pretrained(run / "final")


@pytest.mark.parametrize("name", ["mtf_hyper", "joint"])
def test_gradient_checkpointing_recomputes_both_models(tmp_path, name):
    trainer = Trainer(smoke(name, tmp_path / name, "train.gradient_checkpointing=true"))
    obj = trainer.objective
    # train() first: from transformers 5.25 (with `kernels`, now a dependency) a mode change re-kernelizes
    # the model, which resets every instance's `forward` and would undo the counters below
    trainer.module.train()
    calls = {"downstream": 0, "hypermodel": 0}
    mlps = {
        "downstream": obj.downstream.model.model.layers[0].mlp,
        "hypermodel": obj.hypermodel.backbone.model.layers[0].mlp,
    }
    for key, mlp in mlps.items():  # module hooks do not fire in a recompute; count the function instead
        act = mlp.act_fn.forward

        def counted(x, key=key, act=act):
            calls[key] += 1
            return act(x)

        mlp.act_fn.forward = counted
    loss, n = trainer.module(**obj.batch(list(range(4))))
    assert calls == {"downstream": 1, "hypermodel": 1}
    (loss / n).backward()
    assert calls == {"downstream": 2, "hypermodel": 2}  # each layer ran again during backward


def test_t5_objectives_learn(tmp_path):
    for name in ("caclm", "mtf_hyper", "mtf_peft"):
        run = tmp_path / name
        train(smoke(name, run, "downstream.model=tiny-t5", "train.steps=15"))
        losses = evals(run)
        assert losses[-1] < losses[0] - 1e-3, (name, losses)


# -- configs ----------------------------------------------------------------------------------------------
def test_config_overrides_and_errors(tmp_path):
    cfg = smoke("mtf_hyper", tmp_path, "train.lr=1e-4", "data.k=2", "hypermodel.options={prefix_len: 2}")
    assert cfg.train.lr == 1e-4 and cfg.data.k == 2
    assert cfg.hypermodel.options == {"prefix_len": 2}  # options are replaced whole, not merged
    assert cfg.downstream.model == "tiny-llama"  # from base.yaml
    with pytest.raises(HypertuningError, match="Did you mean 'steps'"):
        smoke("mtf_hyper", tmp_path, "train.step=3")
    with pytest.raises(HypertuningError, match="train.lr: expected float"):
        smoke("mtf_hyper", tmp_path, "train.lr=fast")
    with pytest.raises(HypertuningError, match="key=value"):
        parse_override("train.lr")
    one = smoke("mtf_hyper", tmp_path, "hypermodel.options.alpha=8", "log.trackers=tensorboard")
    assert one.hypermodel.options == {"rank": 4, "alpha": 8}  # a dotted key changes one entry
    assert one.log.trackers == ["tensorboard"]
    with pytest.raises(HypertuningError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: [unclosed\n")
    with pytest.raises(HypertuningError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(HypertuningError, match="Unknown lora option"):
        Trainer(smoke("mtf_hyper", tmp_path / "x", "hypermodel.options={rnak: 4}"))
    with pytest.raises(HypertuningError, match="log.trackers"):
        Trainer(smoke("mtf_hyper", tmp_path / "z", "log.trackers=[tensorbored]"))
    with pytest.raises(HypertuningError, match="training objective"):
        Trainer(smoke("mtf_hyper", tmp_path / "y", "objective=mtf_hyperr"))


def test_a_recipe_sits_between_base_and_file(tmp_path):
    """`recipe: NAME` is merged over the `base:` file and under the file's own values; an unknown name is
    an error naming the file."""
    from hypertuning.train.recipes import RECIPES

    (tmp_path / "base.yaml").write_text("run_dir: r\ndata: {k: 8, collection: toy}\ntrain: {lr: 0.5}\n")
    (tmp_path / "run.yaml").write_text(
        "base: base.yaml\nrecipe: reading\nhypermodel: {readout_options: {slots: 7}}\ntrain: {lr: 0.25}\n"
    )
    cfg = load_config(tmp_path / "run.yaml")
    reading = RECIPES["reading"]
    assert cfg.data.k == reading["data"]["k"] != 8  # the recipe over the base
    assert cfg.data.collection == "toy" and cfg.train.lr == 0.25  # the base's other keys; the file over all
    assert cfg.hypermodel.readout_options == {**reading["hypermodel"]["readout_options"], "slots": 7}
    assert cfg.objective == reading["objective"] and cfg.hypermodel.readout == "select"
    (tmp_path / "typo.yaml").write_text("base: base.yaml\nrecipe: readin\n")
    with pytest.raises(HypertuningError, match="typo.yaml: Unknown recipe 'readin'. Did you mean 'reading'"):
        load_config(tmp_path / "typo.yaml")


def test_shipped_configs_parse():
    for path in sorted((ROOT / "configs").glob("*/*.yaml")):
        if path.name != "base.yaml" and path.parent.name != "accelerate":  # launch configs: test_distributed
            cfg = load_config(path)
            assert cfg.objective in OBJECTIVES, path


def test_peft_task_score_under_sharding_reads_a_gathered_copy(tmp_path, monkeypatch):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    over = ["sweep={}", "train.steps=2", "eval.every=1", "eval.metric=score", "train.max_grad_norm=0"]
    Trainer(smoke("peft_task", tmp_path / "plain", *over)).fit()
    trainer = Trainer(smoke("peft_task", tmp_path / "sharded", *over))
    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    calls = []

    def get_state_dict(self, model, unwrap=True):
        calls.append(1)
        return {k: v.clone() for k, v in self.unwrap_model(model).state_dict().items()}

    monkeypatch.setattr(Accelerator, "get_state_dict", get_state_dict)
    trainer.fit()
    assert len(calls) == 4  # three evaluations and the final save

    def scores(run):
        return [(r["step"], r["eval_score"]) for r in metrics(run) if "eval_score" in r]

    assert scores(tmp_path / "sharded") == scores(tmp_path / "plain") and len(scores(tmp_path / "plain")) == 3


def test_logged_lr_is_the_one_the_step_used(tmp_path):
    # linear warmup over 3 steps from 0: the update of step 1 uses lr 0, step 2 uses lr/3 (it logged the
    # next step's rate before)
    Trainer(smoke("mtf_hyper", tmp_path, "train.steps=6", "log.every=1", "eval.every=0")).fit()
    lr = load_config(SMOKE / "mtf_hyper.yaml").train.lr
    logged = [r["lr"] for r in metrics(tmp_path) if "lr" in r]
    expected = [lr * s / 3 if s < 3 else lr * (6 - s) / 3 for s in range(6)]
    assert logged == pytest.approx(expected)


def test_a_run_saved_before_an_option_existed_resumes_at_its_default():
    """A checkpoint's config.json written before `data.label_share` existed lacks the key: resuming with
    the option at its default is the same run, with the option set it is not."""
    import copy

    from hypertuning.train.config import RunConfig, config_changes

    new = RunConfig.from_dict({"objective": "mtf_hyper", "run_dir": "r"}).to_dict()
    old = copy.deepcopy(new)
    del old["data"]["label_share"]
    assert config_changes(old, new) == []
    new["data"]["label_share"] = 0.5
    assert config_changes(old, new) == ["data.label_share"]
    new["data"]["label_share"], new["data"]["k"] = 0.0, 4  # a key both have still counts
    assert config_changes(old, new) == ["data.k"]
