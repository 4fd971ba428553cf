"""train.distill: the hypermodel's adapter is trained towards the frozen downstream model reading the same
examples in context (objectives.distillation_loss)."""

from __future__ import annotations

import pytest
import torch

from hypertuning import HypertuningError
from hypertuning.train import train
from hypertuning.train.objectives import OBJECTIVES, TEACHER

from .test_train import metrics, smoke


def _objective(tmp_path, *over, config="mtf_kv"):
    cfg = smoke(config, tmp_path / "run", "eval.phi_probes=0", *over)
    return OBJECTIVES.get(cfg.objective)(cfg)


def _row_alone(ds, ids, target, phi=None):
    """Log-probabilities predicting each target token, the row scored alone (no padding)."""
    x = torch.tensor([ids + target])
    logits = ds(phi, input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float()
    return torch.log_softmax(logits[len(ids) - 1 : len(ids) + len(target) - 1], -1)


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_distillation_loss_is_the_kl_to_the_in_context_model_row_by_row(tmp_path, weight):
    """The batched loss equals (1-w) CE + w KL(in-context || adapted) recomputed row by row, each row alone:
    the teacher reads the episode's examples before the query, and the labelled tokens align."""
    obj = _objective(tmp_path, f"train.distill={weight}")
    items = obj.items(obj.sampler, range(4))
    assert all(len(it.in_context_ids) > len(it.input_ids) for it in items)  # the examples are in the prompt
    batch = obj.collate(items)
    obj.module.train()
    with torch.no_grad():
        loss, n = obj.module(**batch)
        hm, ds = obj.hypermodel, obj.downstream
        phi = hm(batch["hyper_ids"], batch["hyper_mask"])
        want, count = 0.0, 0
        for r, it in enumerate(items):
            row_phi = hm.target.bind({k: v[r : r + 1] for k, v in phi.items()})
            student = _row_alone(ds, it.input_ids, it.target_ids, row_phi)
            teacher = _row_alone(ds, it.in_context_ids, it.target_ids)
            gold = torch.tensor(it.target_ids)
            ce = -student.gather(1, gold[:, None]).sum()
            kl = (teacher.exp() * (teacher - student)).sum()
            want += (1 - weight) * ce + weight * kl
            count += len(gold)
    assert int(n) == count
    torch.testing.assert_close(loss, torch.as_tensor(want), atol=1e-4, rtol=1e-4)
    assert loss > 0


def test_distillation_off_and_validation_are_the_plain_lm_loss(tmp_path):
    plain = _objective(tmp_path / "a")
    dist = _objective(tmp_path / "b", "train.distill=1")
    b_plain, b_dist = plain.batch([0, 1, 2]), dist.batch([0, 1, 2])
    assert not any(k.startswith(TEACHER) for k in b_plain)
    assert {k[len(TEACHER) :] for k in b_dist if k.startswith(TEACHER)} == {
        "input_ids",
        "attention_mask",
        "labels",
    }
    dist.module.eval()  # validation: the LM loss, whatever the weight
    with torch.no_grad():
        a, b = plain.module(**b_plain), dist.module(**b_dist)
    torch.testing.assert_close(a[0], b[0]) and torch.testing.assert_close(a[1], b[1])


def test_distillation_gradients_reach_the_hypermodel_only(tmp_path):
    obj = _objective(tmp_path, "train.distill=1")
    obj.module.train()
    loss, n = obj.module(**obj.batch([0, 1]))
    (loss / n).backward()
    trained = [p for p in obj.module.parameters() if p.requires_grad]
    assert trained and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    assert all(p.grad is None for p in obj.downstream.model.parameters())


def test_distillation_trains_and_its_batches_are_pure(tmp_path):
    """Batches are recomputed, not stored, on resumption: the teacher's must be a pure function too."""
    obj = _objective(tmp_path / "pure", "train.distill=0.5")
    a, b = obj.batch([5, 6]), obj.batch([5, 6])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    list(train(smoke("mtf_kv", tmp_path / "run", "train.distill=0.5", "train.steps=4", "eval.every=2")))
    rows = metrics(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    assert (tmp_path / "run" / "final" / "hypermodel_config.json").exists()


@pytest.mark.parametrize(
    "config,over,match",
    [
        ("mtf_kv", "train.distill=1.5", "between 0 and 1"),
        ("mtf_peft", "train.distill=0.5", "only mtf_hyper distils"),
        ("joint", "train.distill=0.5", "only mtf_hyper distils"),
    ],
)
def test_distillation_refuses_what_it_cannot_do(tmp_path, config, over, match):
    with pytest.raises(HypertuningError, match=match):
        _objective(tmp_path, over, config=config)


def test_labelled_logits_equal_the_full_forward_at_the_labelled_positions(llama):
    """Only the labelled positions go through the LM head (logits_to_keep); they equal the full forward's,
    rows of different lengths and padding included."""
    ctx = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    tgt = [[20, 21], [22, 23, 24], [25]]
    batch = llama.lm_batch(ctx, tgt)
    assert llama._keeps_logits
    with torch.no_grad():
        got, labels = llama.labelled_logits(batch)
        full = llama(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
    keep = batch["labels"][:, 1:] != -100
    assert labels.tolist() == [t for row in tgt for t in row]
    torch.testing.assert_close(got, full[keep].float(), atol=1e-5, rtol=1e-5)
