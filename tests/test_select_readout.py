"""The key/value selection readout (hyper/select.py): its prefix is the downstream model's own keys/values
where each example ends; with every position kept it is in-context learning, exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from hypertuning import HyperModel, HypertuningError
from hypertuning.hyper.select import SelectReadout, select_positions
from hypertuning.models.attention import PHI_KWARG

from .test_peft_equivalence import INPUTS, assert_peft_matches

OTHER = [("red", "colour"), ("seven", "number"), ("blue", "colour")]


def _select(ds, **opts):
    return HyperModel.create(ds, "prefix", readout="select", readout_options=opts)


def _logits(ds, ids, adapter=None):
    kw = {PHI_KWARG: adapter.bind()} if adapter is not None else {}
    with torch.no_grad():
        return ds.model(input_ids=torch.tensor([ids]), **kw).logits[0]


def test_every_position_kept_is_in_context_learning_exactly(llama, examples):
    """slots = the examples' token count: the adapted model reading Q equals the plain model reading the
    examples then Q, at Q's positions (keys, values and rotary positions all right)."""
    hm = _select(llama, slots=4)
    ids = hm.encode_ids(examples)
    hm = _select(llama, slots=len(ids))
    adapter = hm.generate(examples)
    for text in INPUTS:
        q = llama.tokenizer(text, add_special_tokens=False)["input_ids"]
        plain = _logits(llama, ids + q)[len(ids) :]
        torch.testing.assert_close(_logits(llama, q, adapter), plain, atol=1e-5, rtol=1e-5)


def test_fewer_positions_equal_in_context_with_the_rest_masked(llama, examples):
    """A subset of positions: the plain model reading examples then Q, with Q allowed to see only the kept
    example positions (a 4D mask), gives the same logits; the kept keys were computed with every example
    token in view."""
    hm = _select(llama, slots=7, keep=1)
    ids = hm.encode_ids(examples)
    kept = select_positions(ids, hm._sep_ids, 1, 7)
    adapter = hm.generate(examples)
    q = llama.tokenizer(INPUTS[1], add_special_tokens=False)["input_ids"]
    n, t = len(ids), len(ids) + len(q)
    allowed = torch.ones(t, t).tril().bool()
    hidden = [j for j in range(n) if j not in kept]
    allowed[n:, hidden] = False  # Q sees only the kept example positions
    mask = torch.zeros(1, 1, t, t).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with torch.no_grad():
        plain = llama.model(input_ids=torch.tensor([ids + q]), attention_mask=mask).logits[0, n:]
    torch.testing.assert_close(_logits(llama, q, adapter), plain, atol=1e-5, rtol=1e-5)


def test_selection_keeps_each_examples_end_then_the_latest():
    sep = [9]
    ids = [1, 2, 3, 9, 4, 5, 6, 9, 7, 8, 9]  # three examples, each ending before a separator
    assert select_positions(ids, sep, 1, 6) == [2, 3, 6, 7, 9, 10]  # output tokens and separators
    assert select_positions(ids, sep, 1, 4) == [6, 7, 9, 10]  # too many: the last examples win
    assert select_positions(ids, sep, 1, 8) == [2, 3, 5, 6, 7, 8, 9, 10]  # too few: the latest others
    assert select_positions(ids, sep, 0, 3) == [3, 7, 10]  # keep=0: the separators alone
    assert select_positions(ids, sep, 1, 20) == list(range(11))  # shorter than P: all of it


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 5), max_size=40),
    st.integers(0, 4),
    st.integers(1, 50),
)
def test_selection_is_ascending_distinct_and_sized(ids, keep, slots):
    got = select_positions(ids, [0], keep, slots)
    assert got == sorted(set(got)) and len(got) == min(slots, len(ids))
    assert all(0 <= j < len(ids) for j in got)


def test_short_examples_mark_spare_columns_and_generate_leaves_them_out(llama, examples):
    """The readout's batch output pads each row to P with masked columns; each task's adapter from
    `generate` holds its real columns only, and equals its row of a batch."""
    hm = _select(llama, slots=40, keep=2)
    short = [("a", "b")]
    n = len(hm.encode_ids(short))
    with torch.no_grad():
        phi = hm(*hm.encode([short, examples]))
    assert phi["self.mask"][0].tolist() == [1.0] * n + [0.0] * (40 - n)
    assert phi["self"][0, ..., n:, :].abs().max() == 0 and phi["self"][0, ..., :n, :].abs().max() > 0
    a = hm.generate(short)
    assert set(a.phi) == {"self"} and a.phi["self"].shape[-2] == n  # every column left is real
    torch.testing.assert_close(a.phi["self"], phi["self"][:1, ..., :n, :], atol=1e-6, rtol=0)
    assert a.nbytes * 40 == phi["self"][:1].nbytes * n  # n columns stored, not 40
    batch = hm.generate_batch([examples, OTHER, short])
    for ex, row in zip([examples, OTHER, short], batch, strict=True):
        alone = hm.generate(ex)
        assert row.phi.keys() == alone.phi.keys()
        torch.testing.assert_close(row.phi["self"], alone.phi["self"], atol=1e-6, rtol=0)


def test_more_slots_than_positions_is_in_context_learning_exactly(llama, examples):
    """P above the examples' token count: every position is kept and the spare columns are masked, so the
    adapted model is the plain model reading the examples in context (unmasked, the spare zero columns took
    attention mass: 16-21 points on must-read tasks)."""
    hm = _select(llama, slots=4)
    ids = hm.encode_ids(examples)
    adapter = _select(llama, slots=len(ids) + 9).generate(examples)
    for text in INPUTS:
        q = llama.tokenizer(text, add_special_tokens=False)["input_ids"]
        plain = _logits(llama, ids + q)[len(ids) :]
        torch.testing.assert_close(_logits(llama, q, adapter), plain, atol=1e-5, rtol=1e-5)


def test_masked_adapter_in_a_mixed_batch_equals_each_row_alone(llama, examples):
    """A select adapter (its real columns only), a longer plain prefix (no mask: every column real) and the
    base model, in one batch that pads the shorter prefix with masked columns: each row's logits are those
    it has alone."""
    from hypertuning import Adapter

    sel = _select(llama, slots=12, keep=1).generate([("a", "b")])
    assert sel.phi["self"].shape[-2] < 12  # generate left its spare columns out: a batch pads it again
    torch.manual_seed(0)
    longer = torch.randn(*sel.phi["self"].shape[:-2], 12, sel.phi["self"].shape[-1])
    plain = Adapter(sel.target, sel.options, sel.spec, {"self": longer}, {})
    q = llama.tokenizer(INPUTS[1], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([q] * 3)
    with torch.no_grad():
        mixed = llama.model(input_ids=ids, **{PHI_KWARG: llama.bind([sel, plain, None])}).logits
    for i, a in enumerate([sel, plain, None]):
        torch.testing.assert_close(mixed[i], _logits(llama, q, a), atol=1e-5, rtol=1e-5)


def test_fresh_readout_reads_its_examples(llama, examples):
    hm = _select(llama, slots=6)
    a, b = hm.generate(examples), hm.generate(OTHER)
    assert (a.phi["self"] - b.phi["self"]).abs().max() > 1e-3
    flipped = [(x, y) for (x, _), (_, y) in zip(examples, examples[::-1], strict=True)]
    assert (hm.generate(flipped).phi["self"] - a.phi["self"]).abs().max() > 1e-3  # labels moved


def test_readout_lora_gets_the_gradient_and_nothing_frozen_does(llama, examples):
    hm = _select(llama, slots=6, lora_rank=2).train()
    plain = _select(llama, slots=6).generate(examples).phi["self"]
    assert torch.equal(hm.generate(examples).phi["self"], plain)  # B = 0: the plain model
    hm.train()
    ids, mask = hm.encode([examples, OTHER])
    batch = llama.lm_batch(llama.encode_inputs(["the cat", "red"]), llama.encode_targets(["le", "x"]))
    loss, n = llama.lm_loss(batch, hm.target.bind(hm(ids, mask)))
    (loss / n).backward()
    for name, p in hm.lora.named_parameters():
        if "lora_B" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in llama.model.parameters())
    hm.zero_grad()


def test_saved_readout_holds_only_what_trains_and_reloads(llama, examples, tmp_path):
    fresh = _select(llama, slots=6, keep=2)
    fresh.save_pretrained(tmp_path / "fresh")
    assert set(load_file(tmp_path / "fresh" / "model.safetensors")) == set()  # nothing trains
    with_lora = _select(llama, slots=6, lora_rank=2)
    with torch.no_grad():
        for name, p in with_lora.lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    with_lora.save_pretrained(tmp_path / "lora")
    assert set(load_file(tmp_path / "lora" / "model.safetensors")) == {
        n for n, _ in with_lora.named_parameters()
    }
    for hm, d in ((fresh, "fresh"), (with_lora, "lora")):
        loaded = HyperModel.from_pretrained(tmp_path / d, downstream=llama)
        assert isinstance(loaded, SelectReadout) and loaded.opts["keep"] == hm.opts["keep"]
        torch.testing.assert_close(
            loaded.generate(examples).phi["self"], hm.generate(examples).phi["self"], atol=1e-6, rtol=0
        )


@pytest.mark.parametrize("spare", [0, 9])
def test_adapter_loads_in_plain_peft_with_identical_logits(llama, tiny_dirs, examples, tmp_path, spare):
    """spare > 0: P is above the examples' token count; the peft file holds the real columns only (peft
    attends to every virtual token), and our own loader puts them back in place with their mask."""
    import json

    from hypertuning import Adapter

    n = len(_select(llama, slots=4).encode_ids(examples))
    slots = 5 if not spare else n + spare
    adapter = _select(llama, slots=slots).generate(examples)
    adapter.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["num_virtual_tokens"] == min(slots, n)
    assert_peft_matches(llama, adapter, tmp_path / "adapter", tiny_dirs["llama"])
    loaded = Adapter.from_pretrained(tmp_path / "adapter")
    assert loaded.phi.keys() == adapter.phi.keys()
    for k, v in adapter.phi.items():
        torch.testing.assert_close(loaded.phi[k], v, atol=1e-5, rtol=1e-5)


def test_select_errors_are_specific(llama, t5):
    for opts, match in [
        ({"slots": "4"}, "must be an integer"),
        ({"slots": 0}, "slots must be >= 1"),
        ({"keep": -1}, "keep and lora_rank >= 0"),
        ({"slot": 4}, "Unknown select readout option"),
    ]:
        with pytest.raises(HypertuningError, match=match):
            _select(llama, **opts)
    with pytest.raises(HypertuningError, match="generates prefixes"):
        HyperModel.create(llama, "lora", readout="select")
    with pytest.raises(HypertuningError, match="decoder-only"):
        HyperModel.create(t5, "prefix", readout="select")


def test_cli_new_select(tiny_dirs, tmp_path, capsys):
    from hypertuning.cli import main

    main(
        ["new", "--downstream", str(tiny_dirs["llama"]), "--target", "prefix", "--readout", "select"]
        + ["--slots", "5", "--keep", "1", "--out", str(tmp_path / "hm")]
    )
    hm = HyperModel.from_pretrained(tmp_path / "hm")
    assert isinstance(hm, SelectReadout) and (hm.target.prefix_len, hm.opts["keep"]) == (5, 1)
    bad = ["new", "--downstream", str(tiny_dirs["llama"]), "--keep", "1", "--out", str(tmp_path / "x")]
    assert main(bad) == 2 and "--keep belongs to --readout select" in capsys.readouterr().err


def test_hyper_initialised_prefix_starts_at_the_generated_adapter(llama, tiny_dirs, tmp_path):
    """Ordinary prefix tuning started from a select readout (peft.init=hyper) attends to every column it
    has, so it must have the generated adapter's real columns only: its step-0 logits are the adapter's.
    (With the readout's P columns, the spare zero ones took attention mass.)"""
    from pathlib import Path

    from hypertuning.train.config import load_config
    from hypertuning.train.objectives.peft import PeftTask

    hm = HyperModel.create(llama, "prefix", readout="select", readout_options={"slots": 400})
    hm.save_pretrained(tmp_path / "hyper")
    root = Path(__file__).resolve().parents[1]
    over = [
        f"run_dir={tmp_path / 'run'}",
        "sweep={}",
        "peft.target=prefix",
        "peft.init=hyper",
        f"peft.init_from={tmp_path / 'hyper'}",
        f"downstream.model={tiny_dirs['llama']}",
    ]
    obj = PeftTask(load_config(root / "configs/smoke/peft_task.yaml", over))
    adapter = hm.generate([(e.input, e.target) for e in obj.shots], obj.task.instruction)
    assert 0 < adapter.phi["self"].shape[-2] < 400
    q = llama.tokenizer(INPUTS[1], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        started = obj.module.target.bind(obj.module.params())
        got = obj.downstream.model(input_ids=torch.tensor([q]), **{PHI_KWARG: started}).logits[0]
    torch.testing.assert_close(got, _logits(llama, q, adapter), atol=1e-5, rtol=1e-5)


def test_an_adapter_saved_padded_to_p_loads_compact_and_equal(llama, examples, tmp_path):
    """Adapters saved before compaction hold P columns' mask beside the real columns of their peft file:
    they load as the compact adapter, with the same logits."""
    from hypertuning import Adapter

    hm = _select(llama, slots=60)
    with torch.no_grad():
        whole = {k: v.detach() for k, v in hm(*hm.encode([examples])).items()}  # P columns and the mask
    padded = Adapter("prefix", hm.target.options, llama.spec, whole, {})
    assert whole["self.mask"].sum() < 60
    padded.save_pretrained(tmp_path / "old")
    loaded = Adapter.from_pretrained(tmp_path / "old")
    compact = hm.generate(examples)
    assert loaded.phi.keys() == compact.phi.keys() == {"self"}
    torch.testing.assert_close(loaded.phi["self"], compact.phi["self"], atol=1e-6, rtol=0)
    q = llama.tokenizer(INPUTS[0], add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(_logits(llama, q, loaded), _logits(llama, q, padded), atol=1e-5, rtol=1e-5)


def test_prefixes_of_different_lengths_share_no_batch_under_absolute_positions():
    """GPT-2 reads the real tokens at positions after the prefix, so padding one row's prefix would move
    them: refused, where rotary models pad exactly."""
    from hypertuning import Adapter, load_downstream

    gpt2 = load_downstream("tiny-gpt2")
    t = HyperModel.create(gpt2, "prefix", prefix_len=4).target
    ks = gpt2.spec.kinds["self"]

    def prefix(p):
        return Adapter(
            "prefix",
            t.options,
            gpt2.spec,
            {"self": torch.randn(1, ks.num_layers, 2, ks.kv_heads, p, ks.head_dim)},
            {},
        )

    assert Adapter.stack([prefix(4), prefix(4)]).phi["self"].shape[-2] == 4
    with pytest.raises(HypertuningError, match=r"different lengths \(\[2, 4\] columns\).*absolute positions"):
        Adapter.stack([prefix(4), prefix(2)])
