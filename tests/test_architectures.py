"""The architecture matrix: one tiny random checkpoint of each decoder-only architecture (built here, nothing
fetched) through LoRA and prefix adapters, mixed batches, plain-peft export, generation, gradients, a smoke
`mtf_hyper` run and the command line. `benchmarks/architectures.py` renders README's table from this file's
outcomes (HYPERTUNING_ARCH_TABLE names the JSON file they are written to)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hypertuning import HyperModel, HypertuningError, load_downstream
from hypertuning.models.attention import PHI_KWARG
from hypertuning.models.tiny import ARCHITECTURES, save_tiny

ARCHS = list(ARCHITECTURES)
TARGETS = ["lora", "prefix"]
EXAMPLES = [{"input": "the cat", "output": "le chat"}, {"input": "two plus two", "output": "four"}]
OTHER = [{"input": "great movie", "output": "positive"}, {"input": "bad film", "output": "negative"}]
INPUTS = ["the cat sat", "two plus two is four and more", "great movie, really"]
OUTPUTS = ["le chat", "four", "positive"]

# A fresh interpreter that never imports hypertuning: transformers + peft alone read each saved adapter.
PEFT_CHILD = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
jobs, inputs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = []
for adapter_dir, model_dir in jobs:
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    with torch.no_grad():
        for text in inputs:
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
            rows.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].tolist())
    out.append(rows)
assert "hypertuning" not in sys.modules
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    return {arch: save_tiny(arch, root / arch) for arch in ARCHS}


_LOADED: dict = {}


@pytest.fixture(scope="module")
def models(checkpoints):
    def get(arch):
        if arch not in _LOADED:
            _LOADED[arch] = load_downstream(str(checkpoints[arch]))
        return _LOADED[arch]

    yield get
    _LOADED.clear()


def _perturb(adapter, scale=0.5):
    # fresh LoRA is gated near zero; make every parameter matter, so a wrong path shows in the logits
    g = torch.Generator().manual_seed(0)
    for k, v in adapter.phi.items():
        floor = 0.5 if k.endswith("lora_B") else 1e-3  # B starts near zero: give it a real size
        boost = 4.0 if k == "self" else 1.0  # larger prefix keys and values: attention to them shows
        adapter.phi[k] = boost * (v + scale * torch.randn(v.shape, generator=g) * (v.std() + floor))
    return adapter


def _adapters(ds, target):
    hm = HyperModel.create(ds, target=target, layers=1, **({"prefix_len": 3} if target == "prefix" else {}))
    return [_perturb(a) for a in hm.generate_batch([EXAMPLES, OTHER])]


def _logits(ds, adapter, text):
    ids = torch.tensor([ds.tokenizer(text, add_special_tokens=False)["input_ids"]])
    kw = {PHI_KWARG: adapter.bind()} if adapter is not None else {}
    with torch.no_grad():
        return ds.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits[0]


@pytest.fixture(scope="module")
def peft_logits(models, checkpoints, tmp_path_factory):
    """Every (architecture, target) adapter saved in the PEFT format, and the logits plain peft gives for
    it, from one child process (one interpreter start for the whole matrix)."""
    root = tmp_path_factory.mktemp("adapters")
    jobs, adapters = [], {}
    for arch in ARCHS:
        for target in TARGETS:
            a = _adapters(models(arch), target)[0]
            a.save_pretrained(root / f"{arch}-{target}")
            jobs.append([str(root / f"{arch}-{target}"), str(checkpoints[arch])])
            adapters[arch, target] = a
    proc = subprocess.run(
        [sys.executable, "-c", PEFT_CHILD, json.dumps(jobs), json.dumps(INPUTS)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    return {key: (adapters[key], rows) for key, rows in zip(adapters, theirs, strict=True)}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("arch", ARCHS)
def test_peft_export_gives_our_logits(arch, target, models, peft_logits):
    ds = models(arch)
    adapter, theirs = peft_logits[arch, target]
    for text, ref in zip(INPUTS, theirs, strict=True):
        ref = torch.tensor(ref)
        assert (_logits(ds, adapter, text) - ref).abs().max().item() <= 1e-4
        assert (ref - _logits(ds, None, text)).abs().max().item() > 1e-3  # the adapter does something


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_rows_equal_rows_alone(arch, target, models):
    ds = models(arch)
    a, b = _adapters(ds, target)
    mixed = [a, None, b]
    together = ds.loglikelihood(INPUTS, OUTPUTS, adapter=mixed)
    base = ds.loglikelihood(INPUTS, OUTPUTS)
    torch.testing.assert_close(together[1], base[1], atol=1e-5, rtol=0)
    for i, adapter in ((0, a), (2, b)):
        alone = ds.loglikelihood([INPUTS[i]], [OUTPUTS[i]], adapter=adapter)
        torch.testing.assert_close(together[i], alone[0], atol=1e-4, rtol=1e-5)
        assert abs(float(together[i] - base[i])) > 1e-3
    # the shared-context path (one pass over a long context, its cache repeated) agrees with plain rows
    ctx = ds.encode_inputs([" ".join(INPUTS * 3)])
    opts = ds.encode_targets(OUTPUTS)
    shared = ds.loglikelihood_ids(ctx * 3, opts, a, share_context=True)
    plain = ds.loglikelihood_ids(ctx * 3, opts, a, share_context=False)
    torch.testing.assert_close(shared, plain, atol=1e-4, rtol=1e-5)


def _greedy(ds, text, adapter, n):
    ids, out = ds.encode_inputs([text])[0], []
    phi = ds.bind(adapter)
    for _ in range(n):
        with torch.no_grad():
            logits = ds(phi, input_ids=torch.tensor([ids + out])).logits[0, -1]
        token = int(logits.argmax())
        if token == ds.tokenizer.eos_token_id:
            break
        out.append(token)
    return ds.tokenizer.decode(out, skip_special_tokens=True)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("arch", ARCHS)
def test_generate_equals_greedy_loop(arch, target, models):
    ds = models(arch)
    a, b = _adapters(ds, target)
    mixed = [a, None, b]  # left-padded rows of different lengths, one on the base model
    got = ds.generate(INPUTS, adapter=mixed, max_new_tokens=5)
    assert got == [_greedy(ds, t, x, 5) for t, x in zip(INPUTS, mixed, strict=True)]


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_the_hypermodel_only(arch, models):
    ds = models(arch)
    for target in TARGETS:
        hm = HyperModel.create(ds, target=target, layers=1).train()
        phi = hm(*hm.encode([EXAMPLES, OTHER]))
        batch = ds.lm_batch(ds.encode_inputs(INPUTS[:2]), ds.encode_targets(OUTPUTS[:2]))
        loss, n = ds.lm_loss(batch, hm.target.bind(phi))
        (loss / n).backward()
        missing = [
            name
            for name, p in hm.named_parameters()
            if (p.grad is None or p.grad.abs().sum() == 0) and "embed" not in name and "wte" not in name
        ]
        assert missing == [], (target, missing)
        assert all(p.grad is None and not p.requires_grad for p in ds.model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_smoke_mtf_hyper_run(arch, checkpoints, tmp_path):
    from pathlib import Path

    from hypertuning.train import load_config, train

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke" / "mtf_hyper.yaml"
    overrides = [f"run_dir={tmp_path}", "sweep={}", f"downstream.model={checkpoints[arch]}"]
    overrides += ["train.steps=2", "train.warmup_steps=0", "eval.every=2", "checkpoint.every=2"]
    train(load_config(smoke, overrides))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2
    hm = HyperModel.from_pretrained(tmp_path / "final", load_downstream(str(checkpoints[arch])))
    assert hm.spec.model_type == arch


@pytest.mark.parametrize("arch", ARCHS)
def test_cli_new_adapt_score(arch, checkpoints, tmp_path, capsys):
    from hypertuning.cli import main

    (tmp_path / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    (tmp_path / "rows.jsonl").write_text(
        "".join(json.dumps({"input": i, "output": o}) + "\n" for i, o in zip(INPUTS, OUTPUTS, strict=True))
    )
    hm, ad = tmp_path / "hm", tmp_path / "adapter"
    assert main(["new", "--downstream", str(checkpoints[arch]), "--layers", "1", "--out", str(hm)]) == 0
    examples = str(tmp_path / "examples.jsonl")
    assert main(["adapt", "--hypermodel", str(hm), "--examples", examples, "--out", str(ad)]) == 0
    assert (ad / "adapter_config.json").exists()
    capsys.readouterr()
    assert main(["score", "--adapter", str(ad), "--inputs", str(tmp_path / "rows.jsonl")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["output"] for x in lines] == OUTPUTS and all(x["logprob"] < 0 for x in lines)


@pytest.mark.parametrize("arch", ARCHS)
def test_readouts_of_the_downstream_model(arch, models):
    """The kv (prefix) and outer (LoRA) readouts run on the downstream model itself: on every architecture
    a fresh one gives different phi for different examples; GPT-2's absolute positions refuse kv clearly."""
    ds = models(arch)
    for readout, target in (("kv", "prefix"), ("outer", "lora")):
        if readout == "kv" and arch == "gpt2":
            with pytest.raises(HypertuningError, match="absolute positions"):
                HyperModel.create(ds, target=target, readout=readout)
            continue
        hm = HyperModel.create(ds, target=target, readout=readout)
        a, b = hm.generate(EXAMPLES), hm.generate(OTHER)
        assert max((a.phi[k] - b.phi[k]).abs().max().item() for k in a.phi) > 1e-3
        assert torch.isfinite(ds.loglikelihood(INPUTS, OUTPUTS, adapter=a)).all()


def test_models_without_the_attention_interface_fail_at_load(tmp_path):
    """Mamba computes no attention; a hybrid (LFM2: convolution and attention layers) has layers without it.
    Both stop at load with what is missing, not halfway through training."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from hypertuning.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    cases = {
        "mamba": ({"hidden_size": 32, "num_hidden_layers": 2, "state_size": 4}, "attention interface"),
        "lfm2": (
            {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "layer_types": ["conv", "full_attention"],
            },
            r"decoder layers \[0\] compute no attention",
        ),
    }
    for model_type, (sizes, message) in cases.items():
        cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), pad_token_id=tok.pad_token_id, **sizes)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / model_type)
        tok.save_pretrained(tmp_path / model_type)
        with pytest.raises(HypertuningError, match=message):
            load_downstream(str(tmp_path / model_type))


def test_readme_table_lists_the_tested_architectures():
    """README's table is generated (benchmarks/architectures.py); it must at least name every architecture
    the matrix tests, and nothing marked failing."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("<!-- architectures:start -->")[1].split("<!-- architectures:end -->")[0]
    rows = [
        line.split("|")[1].strip().strip("`") for line in table.splitlines()[2:] if line.startswith("| `")
    ]
    assert rows == ARCHS
    assert "FAILS" not in table and "not tested" not in table


def test_absolute_positions_past_the_end_under_a_prefix_say_so(models):
    """GPT-2 with a prefix of P: real tokens move P positions on (as peft's cache moves them), so an input
    that fits the model alone can run off its position embedding; that is a clear error, not an IndexError."""
    ds = models("gpt2")
    adapter = _adapters(ds, "prefix")[0]  # prefix_len 3
    n = ds.context_length
    phi = {PHI_KWARG: adapter.bind()}
    ids = torch.full((1, n - 3), 5)
    with torch.no_grad():
        ds.model(input_ids=ids, attention_mask=torch.ones_like(ids), **phi)  # fits
        ids = torch.full((1, n - 2), 5)
        with pytest.raises(HypertuningError, match=f"within {n - 3} tokens"):
            ds.model(input_ids=ids, attention_mask=torch.ones_like(ids), **phi)


def test_prefix_keys_rotate_into_peft_without_yarn_attention_scaling(tmp_path):
    """YaRN folds an attention scaling (about 1.14 here) into cos and sin; moving cached prefix keys to
    peft's positions must be a pure rotation: norms kept, and back again gives the keys."""
    from transformers import LlamaForCausalLM

    from hypertuning.models.loading import save_checkpoint
    from hypertuning.models.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = tiny_model("llama", tok).config
    cfg.rope_parameters = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 128,
    }
    ds = load_downstream(str(save_checkpoint(LlamaForCausalLM(cfg), tok, tmp_path / "yarn")))
    ks = ds.spec.kinds["self"]
    keys = torch.randn(ks.num_layers, ks.kv_heads, 5, ks.head_dim)
    family = type(ds.family)
    out = family.prefix_keys_to_peft(ds.spec, keys, 5)
    assert not torch.allclose(out, keys)
    torch.testing.assert_close(out.norm(dim=-1), keys.norm(dim=-1))
    torch.testing.assert_close(family.prefix_keys_from_peft(ds.spec, out, 5), keys)
