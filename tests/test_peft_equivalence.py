"""Generated adapters saved in the PEFT format and loaded by peft alone give our batched path's logits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hypertuning import HyperModel
from hypertuning.models.attention import PHI_KWARG

INPUTS = ["the cat sat", "two plus two is four and more"]

# Runs in a fresh interpreter that never imports hypertuning: only transformers + peft read our files.
PEFT_CHILD = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
from peft import PeftModel
adapter_dir, model_dir, seq2seq, inputs = sys.argv[1], sys.argv[2], sys.argv[3] == "1", json.loads(sys.argv[4])
assert "hypertuning" not in sys.modules
cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
base = cls.from_pretrained(model_dir, dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter_dir).eval()
tok = AutoTokenizer.from_pretrained(model_dir)
out = []
with torch.no_grad():
    for text in inputs:
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        kw = {"decoder_input_ids": ids} if seq2seq else {}
        out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits[0].tolist())
assert "hypertuning" not in sys.modules
print(json.dumps(out))
"""


def _ours(ds, adapter, text):
    ids = torch.tensor([ds.tokenizer(text, add_special_tokens=False)["input_ids"]])
    kw = {"decoder_input_ids": ids} if ds.family.name == "t5" else {}
    if adapter is not None:
        kw[PHI_KWARG] = adapter.bind()
    with torch.no_grad():
        return ds.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits[0]


def _perturb(adapter, scale=0.5):
    # A fresh hypermodel's LoRA is gated near zero; make the effect large enough that a wrong path shows.
    g = torch.Generator().manual_seed(0)
    for k, v in adapter.phi.items():
        adapter.phi[k] = v + scale * torch.randn(v.shape, generator=g) * (v.std() + 1e-3)
    return adapter


@pytest.mark.parametrize(
    "name,target", [("llama", "lora"), ("llama", "prefix"), ("llama", "prefix-mlp"), ("t5", "lora")]
)
def test_peft_loads_our_adapter_with_identical_logits(name, target, tiny_dirs, request, examples, tmp_path):
    ds = request.getfixturevalue(name)
    hm = HyperModel.create(ds, target=target, layers=1, **({"prefix_len": 5} if "prefix" in target else {}))
    adapter = _perturb(hm.generate(examples))
    adapter.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_dirs[name])
    assert_peft_matches(ds, adapter, tmp_path / "adapter", tiny_dirs[name])


def assert_peft_matches(ds, adapter, adapter_dir, model_dir) -> None:
    """Plain peft, in a process without hypertuning, loads the saved `adapter_dir` with our logits, and
    the adapter really changes them (otherwise the comparison would prove nothing)."""
    seq2seq = ds.family.name == "t5"
    proc = subprocess.run(
        [sys.executable, "-c", PEFT_CHILD, str(adapter_dir), str(model_dir), str(int(seq2seq))]
        + [json.dumps(INPUTS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    for text, ref in zip(INPUTS, theirs, strict=True):
        ref = torch.tensor(ref)
        assert (_ours(ds, adapter, text) - ref).abs().max().item() <= 1e-4
        assert (ref - _ours(ds, None, text)).abs().max().item() > 1e-3


@pytest.mark.parametrize("target", ["lora", "prefix", "prefix-mlp"])
def test_adapter_round_trip(downstream, target, examples, tmp_path):
    hm = HyperModel.create(downstream, target=target, layers=1)
    adapter = hm.generate(examples)
    adapter.save_pretrained(tmp_path)
    loaded = type(adapter).from_pretrained(tmp_path)
    assert loaded.target == adapter.target and loaded.spec.fingerprint == adapter.spec.fingerprint
    for k, v in adapter.phi.items():
        torch.testing.assert_close(loaded.phi[k], v, atol=1e-5, rtol=1e-5)


def test_t5_prefix_uses_own_format_and_says_why(t5, examples, tmp_path):
    adapter = HyperModel.create(t5, target="prefix", layers=1).generate(examples)
    adapter.save_pretrained(tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    assert (tmp_path / "hypertuning_phi.safetensors").exists()


# -- plain PEFT adapters made elsewhere (no hypertuning.json) ------------------------------------------------
def _plain_peft(model_dir, config, out, seed=0):
    """A PEFT adapter as a user's own peft training would save it: random non-zero weights."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.3)
    model.save_pretrained(out)
    return model.eval()


@pytest.mark.parametrize("kind", ["lora", "rslora", "prefix"])
@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # peft's own prefix call
def test_plain_peft_adapter_is_scored_with_peft_logits(kind, tiny_dirs, llama, tmp_path, capsys):
    from peft import LoraConfig, PrefixTuningConfig

    from hypertuning import Adapter
    from hypertuning.cli import main

    config = {
        "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        "rslora": LoraConfig(r=4, lora_alpha=8, target_modules=["k_proj"], use_rslora=True),
        "prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    }[kind]
    peft_model = _plain_peft(tiny_dirs["llama"], config, tmp_path / "ad")
    assert not (tmp_path / "ad" / "hypertuning.json").exists()
    adapter = Adapter.from_pretrained(tmp_path / "ad", downstream=llama)
    assert adapter.meta["source"] == "peft"
    for text in INPUTS:
        ids = torch.tensor([llama.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            ref = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        assert (_ours(llama, adapter, text) - ref).abs().max().item() <= 1e-4
        assert (_ours(llama, None, text) - ref).abs().max().item() > 1e-3
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"input": INPUTS[0], "choices": ["a", "b"]}) + "\n")
    assert main(["score", "--adapter", str(tmp_path / "ad"), "--inputs", str(inputs)]) == 0
    want = llama.loglikelihood([INPUTS[0]] * 2, ["a", "b"], adapter=adapter).tolist()
    assert json.loads(capsys.readouterr().out)["choice_logprobs"] == pytest.approx(want, abs=1e-5)


def test_plain_peft_adapter_that_does_not_fit_says_why(tiny_dirs, llama, tmp_path):
    from peft import IA3Config, LoraConfig
    from safetensors.torch import load_file, save_file

    from hypertuning import Adapter, CheckpointError

    _plain_peft(tiny_dirs["llama"], LoraConfig(r=2, target_modules=["gate_proj"]), tmp_path / "mlp")
    with pytest.raises(CheckpointError, match=r"adapter_config.json: does not fit .*gate_proj"):
        Adapter.from_pretrained(tmp_path / "mlp", downstream=llama)
    _plain_peft(tiny_dirs["llama"], LoraConfig(r=2, target_modules=["q_proj"], use_dora=True), tmp_path / "d")
    with pytest.raises(CheckpointError, match="LoRA options we do not apply: {'use_dora': True}"):
        Adapter.from_pretrained(tmp_path / "d", downstream=llama)
    _plain_peft(
        tiny_dirs["llama"], IA3Config(target_modules=["k_proj"], feedforward_modules=[]), tmp_path / "ia3"
    )
    with pytest.raises(CheckpointError, match="peft_type 'IA3' is not supported"):
        Adapter.from_pretrained(tmp_path / "ia3", downstream=llama)
    # weights of another model's size (here: one layer's A cut to the wrong width)
    _plain_peft(tiny_dirs["llama"], LoraConfig(r=2, target_modules=["q_proj"]), tmp_path / "w")
    f = tmp_path / "w" / "adapter_model.safetensors"
    state = load_file(f)
    key = next(k for k in state if "lora_A" in k)
    state[key] = state[key][:, :-1].contiguous()
    save_file(state, f)
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors: does not fit"):
        Adapter.from_pretrained(tmp_path / "w", downstream=llama)


def test_adapter_saved_before_the_generic_family_still_loads(llama, examples, tmp_path):
    """Adapters and hypermodels saved when the decoder family was "llama" (and specs recorded no module
    paths, rotary class or default LoRA modules) load and export exactly as before."""
    from hypertuning import Adapter

    adapter = _perturb(HyperModel.create(llama, target="prefix", layers=1, prefix_len=4).generate(examples))
    adapter.save_pretrained(tmp_path / "new")
    meta = json.loads((tmp_path / "new" / "hypertuning.json").read_text())
    meta["downstream"]["family"] = "llama"
    for field in ("path", "default_lora", "fan_in_fan_out", "rotary", "positions"):
        del meta["downstream"]["kinds"]["self"][field]
    (tmp_path / "new" / "hypertuning.json").write_text(json.dumps(meta))
    old = Adapter.from_pretrained(tmp_path / "new")
    torch.testing.assert_close(old.phi["self"], adapter.phi["self"], atol=1e-6, rtol=0)
    assert old.spec.kinds["self"].path == "model.layers.{}.self_attn"
    assert old.target_obj.spec.kinds["self"].rotary.endswith("LlamaRotaryEmbedding")
    from hypertuning.peft import TARGETS

    assert TARGETS.get("lora")(old.spec).modules == ["q_proj", "v_proj"]
