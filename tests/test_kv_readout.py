"""The key/value readout (hyper/kv.py): its prefix is the downstream model's own keys/values at the slots."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from hypertuning import HyperModel, HypertuningError
from hypertuning.hyper.kv import KVReadout
from hypertuning.hyper.outer import OuterLoraReadout
from hypertuning.hyper.select import SelectReadout
from hypertuning.models.attention import PHI_KWARG

from .test_peft_equivalence import INPUTS, assert_peft_matches
from .test_train import smoke

OTHER = [("red", "colour"), ("seven", "number"), ("blue", "colour")]


def _kv(ds, slots=4, lora_rank=0, seed=0):
    torch.manual_seed(seed)
    opts = {"slots": slots, "lora_rank": lora_rank}
    return HyperModel.create(ds, "prefix", readout="kv", readout_options=opts)


def _hook_kv(ds):
    """Per layer, the raw k_proj / v_proj outputs of the last forward pass."""
    got, handles = {}, []
    for slot, module in ds.family.attention_modules():
        for name in ("k_proj", "v_proj"):

            def hook(mod, args, out, layer=slot.layer, name=name):
                got[(layer, name)] = out.detach()

            handles.append(getattr(module, name).register_forward_hook(hook))
    return got, handles


def test_prefix_is_the_models_own_keys_and_values_at_the_slots(llama, examples):
    hm = _kv(llama, slots=3)
    ids, mask = hm.encode([examples, OTHER])
    got, handles = _hook_kv(llama)
    try:
        with torch.no_grad():
            phi = hm(ids, mask)["self"]  # [B, L, 2, Hkv, P, D]
    finally:
        for h in handles:
            h.remove()
    cfg, p = llama.model.config, 3
    hkv, d = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    b, t = ids.shape
    positions = torch.arange(p).expand(b, p) - p  # the slots sit at -P..-1
    for layer in range(cfg.num_hidden_layers):
        k = got[(layer, "k_proj")][:, t:].reshape(b, p, hkv, d).transpose(1, 2)
        v = got[(layer, "v_proj")][:, t:].reshape(b, p, hkv, d).transpose(1, 2)
        cos, sin = llama.model.model.rotary_emb(v, positions)
        _, k_rot = apply_rotary_pos_emb(k, k, cos, sin)
        torch.testing.assert_close(phi[:, layer, 0], k_rot, atol=1e-6, rtol=0)
        assert torch.equal(phi[:, layer, 1], v)


def test_slot_positions_continue_into_the_adapted_input(llama):
    """With no examples and slots set to the embeddings of a text S, the prefix is S's keys/values, so
    scoring Q under it equals the plain model reading S then Q: the slots' rotary positions (-P..-1) line
    up with the real tokens' (0..T-1) exactly."""
    s_ids = llama.tokenizer("a short text", add_special_tokens=False)["input_ids"][:4]
    hm = _kv(llama, slots=len(s_ids))
    with torch.no_grad():
        hm.slots.copy_(llama.model.get_input_embeddings().weight[s_ids])
        phi = hm(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long))
    adapter = hm.generate([("x", "y")])  # a real adapter object, its phi replaced
    adapter.phi = phi
    q_ids = llama.tokenizer(INPUTS[1], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([q_ids])
    with torch.no_grad():
        ours = llama.model(input_ids=ids, **{PHI_KWARG: adapter.bind()}).logits[0]
        plain = llama.model(input_ids=torch.tensor([s_ids + q_ids])).logits[0, len(s_ids) :]
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-5)


def test_fresh_readout_reads_its_examples_and_batches_exactly(llama, examples):
    hm = _kv(llama, slots=4, lora_rank=2)
    a, b = hm.generate(examples), hm.generate(OTHER)
    assert (a.phi["self"] - b.phi["self"]).abs().max() > 1e-3  # different examples, different prefix
    batch = hm.generate_batch([examples, OTHER, examples[:1]])
    for alone, row in zip([a, b, hm.generate(examples[:1])], batch, strict=True):
        torch.testing.assert_close(row.phi["self"], alone.phi["self"], atol=1e-6, rtol=0)


def test_readout_lora_changes_the_readout_pass_only_once_trained(llama, examples):
    hm = _kv(llama, slots=2, lora_rank=2)
    before = hm.generate(examples).phi["self"]
    assert torch.equal(before, _kv(llama, slots=2).generate(examples).phi["self"])  # B = 0: plain model
    with torch.no_grad():
        for name, p in hm.lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    assert (hm.generate(examples).phi["self"] - before).abs().max() > 1e-4


def test_gradients_reach_slots_and_readout_lora_only(llama, examples):
    hm = _kv(llama, slots=3, lora_rank=2).train()
    ids, mask = hm.encode([examples, OTHER])
    phi = hm(ids, mask)
    batch = llama.lm_batch(llama.encode_inputs(["the cat", "red"]), llama.encode_targets(["le", "x"]))
    loss, n = llama.lm_loss(batch, hm.target.bind(phi))
    (loss / n).backward()
    assert hm.slots.grad is not None and hm.slots.grad.abs().sum() > 0
    for name, p in hm.lora.named_parameters():
        if "lora_B" in name:  # A's gradient is zero while B is (peft's start)
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in llama.model.parameters())
    hm.zero_grad()


def test_saved_readout_holds_only_what_trains_and_reloads(llama, tiny_dirs, examples, tmp_path):
    hm = _kv(llama, slots=3, lora_rank=2)
    with torch.no_grad():
        for name, p in hm.lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    hm.save_pretrained(tmp_path / "hm")
    keys = set(load_file(tmp_path / "hm" / "model.safetensors"))
    assert keys == {n for n, _ in hm.named_parameters()} and "slots" in keys
    assert not any("embed_tokens" in k or "layers." in k and "lora" not in k for k in keys)
    want = hm.generate(examples).phi["self"]
    for ds in (llama, None):  # without a downstream model it loads the one it was built for
        loaded = HyperModel.from_pretrained(tmp_path / "hm", downstream=ds)
        assert isinstance(loaded, KVReadout)
        torch.testing.assert_close(loaded.generate(examples).phi["self"], want, atol=1e-6, rtol=0)


def test_readout_adapter_loads_in_plain_peft_with_identical_logits(llama, tiny_dirs, examples, tmp_path):
    adapter = _kv(llama, slots=5).generate(examples)
    adapter.save_pretrained(tmp_path / "adapter")
    assert_peft_matches(llama, adapter, tmp_path / "adapter", tiny_dirs["llama"])


def test_readout_refuses_what_it_cannot_do(llama, t5):
    with pytest.raises(HypertuningError, match="generates prefixes"):
        HyperModel.create(llama, "lora", readout="kv")
    with pytest.raises(HypertuningError, match="Unknown kv readout option"):
        HyperModel.create(llama, "prefix", readout="kv", readout_options={"slot": 4})
    with pytest.raises(HypertuningError, match="not target options"):
        HyperModel.create(llama, "prefix", readout="kv", prefix_len=4)
    with pytest.raises(HypertuningError, match="decoder-only"):
        HyperModel.create(t5, "prefix", readout="kv")
    with pytest.raises(HypertuningError, match="Unknown hypermodel readout"):
        HyperModel.create(llama, "prefix", readout="gist")


@pytest.mark.parametrize(
    "config,cls", [("mtf_kv", KVReadout), ("mtf_outer", OuterLoraReadout), ("mtf_select", SelectReadout)]
)
def test_mtf_hyper_trains_the_readouts(tmp_path, config, cls):
    from hypertuning.train import train

    train(smoke(config, tmp_path / "run", "train.steps=6", "eval.every=3", "checkpoint.every=3"))
    hm = HyperModel.from_pretrained(tmp_path / "run" / "final")
    assert isinstance(hm, cls) and hm.config.extra["training"][-1]["steps"] == 6
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    probe = [r for r in rows if "eval_phi_other_task" in r]
    assert probe and probe[0]["eval_phi_other_task"] > 0  # a fresh readout already differs across tasks


# -- the outer-product LoRA readout (hyper/outer.py) ---------------------------------------------------------
def _outer(ds, seed=0, **opts):
    torch.manual_seed(seed)
    return HyperModel.create(ds, "lora", readout="outer", readout_options={"rank": 2, **opts})


def test_outer_readout_lora_differs_between_tasks_and_batches_exactly(llama, examples):
    hm = _outer(llama)
    a, b = hm.generate(examples), hm.generate(OTHER)
    for k in a.phi:
        assert a.phi[k].shape == b.phi[k].shape
    delta = lambda ad: ad.phi["self.q_proj.lora_B"][0, 0] @ ad.phi["self.q_proj.lora_A"][0, 0]  # noqa: E731
    assert (delta(a) - delta(b)).abs().max() > 1e-4 * delta(a).abs().max()  # fresh, already task-specific
    batch = hm.generate_batch([examples, OTHER, examples[:1]])
    for alone, row in zip([a, b, hm.generate(examples[:1])], batch, strict=True):
        for k in alone.phi:
            torch.testing.assert_close(row.phi[k], alone.phi[k], atol=1e-5, rtol=1e-4)


def test_outer_readout_core_is_the_hooked_inputs_outer_product(llama, examples):
    """lora_A = N(sum_t (P x_t)(Q x_t)^T) A with x_t the q_proj inputs on the examples, recomputed here
    from a hook of our own."""
    hm = _outer(llama)
    ids, mask = hm.encode([examples])
    seen = {}
    attn = llama.model.model.layers[1].self_attn
    h = attn.q_proj.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach()))
    try:
        with torch.no_grad():
            phi = hm(ids, mask)
    finally:
        h.remove()
    x = seen["x"][0]  # [T, in]: one task, no padding
    p, q = hm.proj["self__q_proj"][1]
    core = (x @ p.T).T @ (x @ q.T)
    core = core / core.norm()
    want = core @ hm.ab["self__q_proj__A"][1]
    torch.testing.assert_close(phi["self.q_proj.lora_A"][0, 1], want, atol=1e-5, rtol=1e-4)


def test_outer_readout_gradients_and_peft_export(llama, tiny_dirs, examples, tmp_path):
    hm = _outer(llama, gate_init=0.5).train()
    ids, mask = hm.encode([examples, OTHER])
    batch = llama.lm_batch(llama.encode_inputs(["the cat", "red"]), llama.encode_targets(["le", "x"]))
    loss, n = llama.lm_loss(batch, hm.target.bind(hm(ids, mask)))
    (loss / n).backward()
    for name, p in hm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in llama.model.parameters())
    adapter = hm.generate(examples)
    adapter.save_pretrained(tmp_path / "adapter")
    assert_peft_matches(llama, adapter, tmp_path / "adapter", tiny_dirs["llama"])
    hm.save_pretrained(tmp_path / "hm")
    loaded = HyperModel.from_pretrained(tmp_path / "hm", downstream=llama)
    for k, v in loaded.generate(examples).phi.items():
        torch.testing.assert_close(v, adapter.phi[k], atol=1e-6, rtol=0)


def test_outer_readout_refuses_prefix(llama):
    with pytest.raises(HypertuningError, match="generates LoRA"):
        HyperModel.create(llama, "prefix", readout="outer")


def test_kv_readout_is_the_same_under_eager_attention(tiny_dirs, llama, examples):
    from hypertuning import load_downstream

    eager = load_downstream(str(tiny_dirs["llama"]), attn_implementation="eager")
    assert eager.attention_base == "eager"
    for rank in (0, 2):
        a, b = _kv(llama, slots=3, lora_rank=rank), _kv(eager, slots=3, lora_rank=rank)
        b.load_state_dict(a.state_dict())
        if rank:
            with torch.no_grad():
                for (name, p), q in zip(a.lora.named_parameters(), b.lora.parameters(), strict=True):
                    if "lora_B" in name:
                        p.normal_(0, 0.1)
                        q.copy_(p)
        ids, mask = a.encode([examples, OTHER[:1]])
        with torch.no_grad():
            torch.testing.assert_close(b(ids, mask)["self"], a(ids, mask)["self"], atol=1e-5, rtol=1e-5)


def test_kv_encoding_ends_with_the_separator_and_keeps_an_output(llama):
    hm = HyperModel.create(llama, "prefix", readout="kv", readout_options={"slots": 2}, max_input_tokens=12)
    sep = llama.tokenizer("\n", add_special_tokens=False)["input_ids"]
    ids = hm.encode_ids([("the cat sat on the mat and then on the other mat", "le chat")])
    assert ids[-len(sep) :] == sep and len(ids) <= 12
    assert llama.tokenizer.decode(ids).rstrip("\n").endswith("le chat")  # never an input without output


def test_readout_errors_are_specific(llama, examples, tmp_path):
    bad = [
        ({"readout": "kv", "readout_options": {"slots": "4"}}, "must be an integer"),
        ({"readout": "kv", "readout_options": {"slots": 0}}, "slots must be >= 1"),
        ({"readout": "heads", "readout_options": {"slots": 4}}, "belong to another readout"),
        ({"readout": "kv", "max_input_tokens": 1}, "no room"),
    ]
    for kwargs, match in bad:
        with pytest.raises(HypertuningError, match=match):
            HyperModel.create(llama, "prefix", **kwargs)
    with pytest.raises(HypertuningError, match="pass a loaded Downstream"):
        HyperModel.create(None, "prefix", readout="kv")
    hm = _kv(llama, slots=2)
    hm.save_pretrained(tmp_path / "hm")
    with pytest.raises(HypertuningError, match="runs on its downstream model, which is on cpu"):
        HyperModel.from_pretrained(tmp_path / "hm", downstream=llama, device="meta")
    from safetensors.torch import save_file

    save_file({"slots": hm.slots.detach(), "extra": torch.zeros(1)}, tmp_path / "hm" / "model.safetensors")
    from hypertuning import CheckpointError

    with pytest.raises(CheckpointError, match="unexpected \\['extra'\\]"):
        HyperModel.from_pretrained(tmp_path / "hm", downstream=llama)


def test_caclm_refuses_the_downstream_readouts(tmp_path):
    from hypertuning.train import Trainer

    cfg = smoke("caclm", tmp_path / "run", "hypermodel.target=prefix", "hypermodel.readout=kv")
    with pytest.raises(HypertuningError, match="Train it with mtf_hyper directly"):
        Trainer(cfg)
