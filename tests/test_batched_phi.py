"""Per-row phi: mixed batches, zero-effect phi, positions, gradients and generation."""

from __future__ import annotations

import pytest
import torch

from hypertuning import Adapter, HyperModel
from hypertuning.models.attention import PHI_KWARG

TASKS = [
    [{"input": "the cat", "output": "le chat"}],
    [{"input": "two plus two", "output": "four"}, {"input": "one plus one", "output": "two"}],
    [{"input": "great movie", "output": "positive"}, {"input": "bad film", "output": "negative"}],
]
INPUTS = ["the cat sat", "two plus", "great movie, really"]
OUTPUTS = ["le chat", "four", "positive"]


def _boost(adapters):
    for a in adapters:
        for k, v in a.phi.items():
            a.phi[k] = v * 20 if k.endswith("lora_B") else v
    return adapters


@pytest.mark.parametrize("target", ["lora", "prefix"])
def test_mixed_batch_equals_each_row_alone(downstream, target):
    hm = HyperModel.create(downstream, target=target, layers=1)
    adapters = _boost(hm.generate_batch(TASKS))
    together = downstream.loglikelihood(INPUTS, OUTPUTS, adapter=adapters)
    alone = torch.cat(
        [
            downstream.loglikelihood([i], [o], adapter=a)
            for i, o, a in zip(INPUTS, OUTPUTS, adapters, strict=True)
        ]
    )
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-5)
    # and the rows really got different parameters
    swapped = downstream.loglikelihood(INPUTS, OUTPUTS, adapter=adapters[::-1])
    assert not torch.allclose(swapped, together, atol=1e-4)


@pytest.mark.parametrize("target", ["lora", "prefix"])
def test_base_model_rows_in_a_mixed_batch(downstream, target):
    # None in a per-row adapter list means "this row runs on the base model": same result as no adapter
    hm = HyperModel.create(downstream, target=target, layers=1)
    adapters = _boost(hm.generate_batch(TASKS))
    mixed = [adapters[0], None, adapters[2]]
    together = downstream.loglikelihood(INPUTS, OUTPUTS, adapter=mixed)
    base = downstream.loglikelihood(INPUTS, OUTPUTS)
    torch.testing.assert_close(together[1], base[1], atol=1e-5, rtol=0)
    for i in (0, 2):
        alone = downstream.loglikelihood([INPUTS[i]], [OUTPUTS[i]], adapter=adapters[i])
        torch.testing.assert_close(together[i], alone[0], atol=1e-4, rtol=1e-5)
        assert abs(float(together[i] - base[i])) > 1e-3  # the adapted rows did change
    gen = downstream.generate(INPUTS, adapter=mixed, max_new_tokens=6)
    assert gen[1] == downstream.generate([INPUTS[1]], max_new_tokens=6)[0]
    assert gen[0] == downstream.generate([INPUTS[0]], adapter=adapters[0], max_new_tokens=6)[0]
    assert downstream.bind([None, None]) is None


@pytest.mark.parametrize("target", ["lora", "prefix"])
def test_zero_effect_phi_leaves_outputs_unchanged(downstream, target):
    hm = HyperModel.create(downstream, target=target, layers=1)
    a = hm.generate(TASKS[0])
    zero = Adapter(a.target, a.options, a.spec, a.target_obj.zero_phi(1))
    base = downstream.loglikelihood(INPUTS, OUTPUTS)
    torch.testing.assert_close(
        downstream.loglikelihood(INPUTS, OUTPUTS, adapter=zero), base, atol=1e-5, rtol=0
    )
    assert not torch.allclose(
        downstream.loglikelihood(INPUTS, OUTPUTS, adapter=_boost([a])[0]), base, atol=1e-4
    )


def test_prefix_never_shifts_positions(llama):
    seen = []
    hook = llama.model.model.rotary_emb.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(
            (args[1] if len(args) > 1 else kwargs["position_ids"]).clone()
        ),
        with_kwargs=True,
    )
    try:
        a = HyperModel.create(llama, target="prefix", layers=1, prefix_len=7).generate(TASKS[0])
        llama.loglikelihood(["the cat sat on"], ["le chat"], adapter=a)
    finally:
        hook.remove()
    n = len(llama.encode_inputs(["the cat sat on"])[0]) + len(llama.encode_targets(["le chat"])[0])
    assert torch.equal(seen[-1][0], torch.arange(n))


@pytest.mark.parametrize("target", ["lora", "prefix"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_reach_hypermodel_not_downstream(downstream, target, checkpointing):
    hm = HyperModel.create(downstream, target=target, layers=1).train()
    model = downstream.model
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    try:
        phi = hm(*hm.encode(TASKS[:2]))
        active = hm.target.bind(phi)
        ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
        kw = {"decoder_input_ids": ids} if downstream.family.name == "t5" else {}
        out = model(input_ids=ids, labels=ids, **kw, **{PHI_KWARG: active})
        out.loss.backward()
    finally:
        if checkpointing:
            model.activation_checkpointing_disable()
        model.eval()
    missing = [n for n, p in hm.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # tokenizer rows never seen in this batch get no gradient; every other parameter must
    missing = [
        n for n in missing if not n.endswith("embed_tokens.weight") and not n.endswith("shared.weight")
    ]
    assert missing == []
    assert all(p.grad is None for p in model.parameters())
    assert all(not p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("target", ["lora", "prefix"])
def test_checkpointing_gives_same_gradients(llama, target):
    hm = HyperModel.create(llama, target=target, layers=1).train()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    grads, calls = [], []
    attn = llama.model.model.layers[0].self_attn
    for ckpt in (False, True):
        hm.zero_grad()
        count = []
        handle = attn.register_forward_hook(lambda *a, count=count: count.append(1))
        if ckpt:
            llama.model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        llama.model.train()
        try:
            out = llama.model(
                input_ids=ids, labels=ids, **{PHI_KWARG: hm.target.bind(hm(*hm.encode(TASKS[:1])))}
            )
            out.loss.backward()
        finally:
            handle.remove()
            llama.model.activation_checkpointing_disable()
            llama.model.eval()
        grads.append(hm.queries.grad.clone())
        calls.append(len(count))
    assert calls == [1, 2]  # the checkpointed layer really was recomputed in backward, phi and all
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("target", ["lora", "prefix"])
def test_generate_equals_greedy_loop_over_scoring_path(downstream, target):
    hm = HyperModel.create(downstream, target=target, layers=1)
    adapters = _boost(hm.generate_batch(TASKS[:2]))
    inputs = ["the cat", "two plus two is"]
    got = downstream.generate(inputs, adapter=adapters, max_new_tokens=6)
    tok = downstream.tokenizer
    for text, adapter, result in zip(inputs, adapters, got, strict=True):
        ctx = downstream.encode_inputs([text])[0]
        gen: list[int] = []
        phi = adapter.bind()
        for _ in range(6):
            with torch.no_grad():
                if downstream.family.name == "t5":
                    dec = torch.tensor([[downstream.model.config.decoder_start_token_id] + gen])
                    logits = downstream.model(
                        input_ids=torch.tensor([ctx]), decoder_input_ids=dec, **{PHI_KWARG: phi}
                    ).logits
                else:
                    logits = downstream.model(input_ids=torch.tensor([ctx + gen]), **{PHI_KWARG: phi}).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            gen.append(nxt)
        assert result == tok.decode(gen, skip_special_tokens=True)


@pytest.mark.parametrize("target", ["prefix", "lora"])
def test_beam_search_with_per_row_phi_equals_each_row_alone(llama, target):
    """generate() expands each row into its beams (row-major): every beam must keep its own row's phi."""
    torch.manual_seed(0)
    a = HyperModel.create(llama, target=target, layers=1).generate_batch(TASKS[:3])
    for ad in a:  # rows far apart, so that a beam given another row's phi shows
        for k, v in ad.phi.items():
            ad.phi[k] = v + torch.randn_like(v) * (v.abs().mean() + 0.1) * 5
    inputs = ["the cat", "two plus", "great"]
    kw = {"max_new_tokens": 6, "num_beams": 3}
    batched = llama.generate(inputs, adapter=a, **kw)
    alone = [llama.generate([x], adapter=a[i], **kw)[0] for i, x in enumerate(inputs)]
    assert batched == alone
    assert len({tuple(llama.generate(inputs[:1], adapter=a[i], **kw)) for i in range(3)}) > 1  # phi matters


def test_loglikelihood_equals_full_logits(llama):
    # scoring projects only the scored positions onto the vocabulary; check it against the plain recipe
    ctx = llama.encode_inputs(["the cat sat on", "two plus"])
    cont = llama.encode_targets(["the mat", "four and more"])
    got = llama.loglikelihood_ids(ctx, cont, share_context=False)
    for i, (c, t) in enumerate(zip(ctx, cont, strict=True)):
        logits = llama.model(input_ids=torch.tensor([c + t])).logits[0].float().log_softmax(-1)
        want = sum(logits[len(c) - 1 + j, tok] for j, tok in enumerate(t))
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-6)
