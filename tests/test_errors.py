"""Bad input gets a specific error, never silent corruption."""

from __future__ import annotations

import json

import pytest

from hypertuning import (
    Adapter,
    CheckpointError,
    DataError,
    DownstreamMismatchError,
    HyperModel,
    HypertuningError,
    load_downstream,
)
from hypertuning.data import read_jsonl


@pytest.fixture(scope="module")
def other(tiny_dirs):
    return load_downstream(str(tiny_dirs["llama_other"]))


def test_adapter_for_another_downstream_is_refused(llama, other, examples):
    adapter = HyperModel.create(llama, target="lora", layers=1).generate(examples)
    with pytest.raises(DownstreamMismatchError, match="fingerprint"):
        other.loglikelihood(["x"], ["y"], adapter=adapter)


def test_hypermodel_for_another_downstream_is_refused(llama, other, tmp_path):
    HyperModel.create(llama, target="prefix", layers=1).save_pretrained(tmp_path)
    HyperModel.from_pretrained(tmp_path, downstream=llama)  # fine
    with pytest.raises(DownstreamMismatchError, match="built for downstream model"):
        HyperModel.from_pretrained(tmp_path, downstream=other)


def test_empty_examples(llama):
    hm = HyperModel.create(llama, target="lora", layers=1)
    with pytest.raises(DataError, match="empty"):
        hm.generate([])
    with pytest.raises(DataError, match="no 'output'"):
        hm.generate([{"input": "a"}])


def test_malformed_jsonl_names_the_line(tmp_path):
    f = tmp_path / "ex.jsonl"
    f.write_text('{"input": "a", "output": "b"}\n\n{"input": "c", "output": \n')
    with pytest.raises(DataError, match=r"ex.jsonl:3: not valid JSON"):
        read_jsonl(f)
    f.write_text('{"input": "a", "output": "b"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"ex.jsonl:2: expected a JSON object"):
        read_jsonl(f)
    f.write_text('{"output": "b"}\n')
    with pytest.raises(DataError, match=r"ex.jsonl:1: missing field\(s\) input"):
        read_jsonl(f, required=("input",))


def test_missing_and_corrupt_files(llama, examples, tmp_path):
    with pytest.raises(CheckpointError, match="no such adapter directory"):
        Adapter.from_pretrained(tmp_path / "nope")
    adapter = HyperModel.create(llama, target="lora", layers=1).generate(examples)
    d = adapter.save_pretrained(tmp_path / "a")
    data = (d / "adapter_model.safetensors").read_bytes()
    (d / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Adapter.from_pretrained(d)
    (d / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights file"):
        Adapter.from_pretrained(d)
    (d / "hypertuning.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt hypertuning adapter metadata"):
        Adapter.from_pretrained(d)

    hm_dir = HyperModel.create(llama, target="lora", layers=1).save_pretrained(tmp_path / "hm")
    w = (hm_dir / "model.safetensors").read_bytes()
    (hm_dir / "model.safetensors").write_bytes(w[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        HyperModel.from_pretrained(hm_dir)
    with pytest.raises(CheckpointError, match="no such hypermodel directory"):
        HyperModel.from_pretrained(tmp_path / "missing")


def test_shape_mismatch_in_adapter_file(llama, examples, tmp_path):
    adapter = HyperModel.create(llama, target="lora", layers=1, rank=4).generate(examples)
    d = adapter.save_pretrained(tmp_path)
    meta = json.loads((d / "hypertuning.json").read_text())
    meta["options"]["rank"] = 8
    (d / "hypertuning.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape"):
        Adapter.from_pretrained(d)


def test_unknown_target_suggests_close_match(llama):
    with pytest.raises(HypertuningError, match="Did you mean 'lora'"):
        HyperModel.create(llama, target="lorra")


def test_bad_lora_module_lists_available(llama):
    with pytest.raises(HypertuningError, match="available"):
        HyperModel.create(llama, target="lora", modules=["gate_proj"])


def test_all_linear_names_every_linear_of_the_attention_block(llama):
    """peft's `all-linear`, scoped to what this target adapts: the attention block's linear layers."""
    from hypertuning.peft import TARGETS

    spec = llama.spec
    assert TARGETS.get("lora")(spec, modules="all-linear").modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(HypertuningError, match="list of names or 'all-linear'"):
        TARGETS.get("lora")(spec, modules="q_proj")  # a bare string is not a list of one


def test_missing_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match="without config.json"):
        load_downstream(str(tmp_path))


def test_overlong_examples_drop_whole_examples(llama, caplog):
    hm = HyperModel.create(llama, target="lora", layers=1, max_input_tokens=40)
    many = [{"input": f"example number {i} with words", "output": "yes"} for i in range(20)]
    ids, _ = hm.encode([many])
    assert ids.shape[1] <= 40
    assert "Dropped" in caplog.text
    x_id = hm.tokenizer.convert_tokens_to_ids("<x>")
    y_id = hm.tokenizer.convert_tokens_to_ids("<y>")
    assert (ids[0] == x_id).sum() == (ids[0] == y_id).sum() > 0  # no example was cut in half
    kept = int((ids[0] == y_id).sum())
    assert f"Dropped {20 - kept} of 20 hyper examples" in caplog.text

    caplog.clear()  # the instruction is not an example: still "of 20", however many pieces were packed
    ids, _ = hm.encode([many], ["Say yes."])
    kept = int((ids[0] == y_id).sum())
    assert (ids[0] == x_id).sum() == kept + 1
    assert f"Dropped {20 - kept} of 20 hyper examples" in caplog.text
    caplog.clear()  # the first example shortened, the rest packed after it: the total still counts it
    ids, _ = hm.encode([[{"input": "word " * 60, "output": "yes"}, *many[:5]]])
    assert "of 6 hyper examples" in caplog.text


def test_a_package_index_without_the_file_says_where_to_put_it(tmp_path, monkeypatch):
    """fetch_pypi_file: an index that lacks the sdist (ours lists only bigbench 0.0.1 today) names what it
    lists and where a hand-downloaded copy goes; a download whose sha256 differs from the index's is refused
    and leaves nothing in the cache."""
    import hashlib
    import io
    import json as _json
    import urllib.error
    import urllib.request

    from hypertuning import _io

    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HYPERTUNING_PYPI_INDEX", "https://index.invalid/simple")
    body = b"not the sdist"
    listing = {
        "files": [
            {"filename": "bigbench-0.0.1.tar.gz", "url": "https://index.invalid/a", "hashes": {}},
            {
                "filename": "bigbench-1.0.0.tar.gz",
                "url": "https://index.invalid/b",
                "hashes": {"sha256": "0" * 64},
            },
        ]
    }

    def urlopen(req, timeout=None):
        url = req if isinstance(req, str) else req.full_url
        if url.endswith("/bigbench/"):
            return io.BytesIO(_json.dumps(listing).encode())
        return io.BytesIO(body)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    target = tmp_path / "cache" / "downloads" / "bigbench-2.0.0.tar.gz"
    with pytest.raises(HypertuningError, match="lists no file bigbench-2.0.0.tar.gz") as e:
        _io.fetch_pypi_file("bigbench", "bigbench-2.0.0.tar.gz")
    assert "bigbench-0.0.1.tar.gz" in str(e.value) and str(target) in str(e.value)
    with pytest.raises(HypertuningError, match="sha256 mismatch"):
        _io.fetch_pypi_file("bigbench", "bigbench-1.0.0.tar.gz")
    assert not (tmp_path / "cache" / "downloads" / "bigbench-1.0.0.tar.gz").exists()
    listing["files"][1]["hashes"]["sha256"] = hashlib.sha256(body).hexdigest()

    def reset(req, timeout=None):  # the index answers, the download does not
        url = req if isinstance(req, str) else req.full_url
        if url.endswith("/bigbench/"):
            return io.BytesIO(_json.dumps(listing).encode())
        raise urllib.error.URLError("connection reset")

    monkeypatch.setattr(urllib.request, "urlopen", reset)
    with pytest.raises(HypertuningError, match="Downloading https://index.invalid/b failed .* Run again"):
        _io.fetch_pypi_file("bigbench", "bigbench-1.0.0.tar.gz")
    assert not list((tmp_path / "cache" / "downloads").iterdir())  # no half file left
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    got = _io.fetch_pypi_file("bigbench", "bigbench-1.0.0.tar.gz")
    assert got.read_bytes() == body
