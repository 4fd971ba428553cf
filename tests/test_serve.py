"""The adapter service on the tiny Llama: batching across adapters, the store, limits, auth, client and CLI."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hypertuning import Adapter, HyperModel, HypertuningError  # noqa: E402
from hypertuning.client import Client, ServiceError  # noqa: E402
from hypertuning.serve import AdapterNotFound, AdapterStore, Limits, create_app, open_engine  # noqa: E402

TASKS = [
    [{"input": "the cat", "output": "le chat"}, {"input": "the dog", "output": "le chien"}],
    [{"input": "two plus two", "output": "four"}, {"input": "one plus one", "output": "two"}],
    [{"input": "great movie", "output": "positive"}, {"input": "bad film", "output": "negative"}],
]
ROWS = [
    {"input": "the bird", "choices": ["le oiseau", "four", "positive"]},
    {"input": "three plus one", "choices": ["four", "negative"]},
    {"input": "loved it", "choices": ["positive", "negative"]},
    {"input": "a base-model row", "choices": ["yes", "no", "maybe"]},
]


@pytest.fixture(scope="module")
def hypermodels(llama):
    torch.manual_seed(0)
    # gate_init near 1 so that a fresh hypermodel's adapters change the outputs clearly
    return {t: HyperModel.create(llama, target=t, layers=1, gate_init=0.9) for t in ("lora",)} | {
        "prefix": HyperModel.create(llama, target="prefix", layers=1, prefix_len=4)
    }


@pytest.fixture
def serve(tmp_path, llama, hypermodels):
    """serve(target=..., **options) -> (TestClient, Engine); every client is closed at the end."""
    opened = []

    def make(target="lora", store=None, limits=None, token=None, wait_ms=5.0, hypermodel=None, **kw):
        hm = hypermodel or hypermodels[target]
        engine = open_engine(hm, llama, store=store or tmp_path / "store", wait_ms=wait_ms, **kw)
        client = TestClient(create_app(engine, limits, token=token))
        client.__enter__()
        opened.append(client)
        return client, engine

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def _create(client, examples, **kw) -> str:
    r = client.post("/v1/adapters", json={"examples": examples, **kw})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _spy_batches(engine) -> list:
    seen = []
    run = engine.batcher.run

    def spy(group, payloads):
        seen.append((group[0], len(payloads)))
        return run(group, payloads)

    engine.batcher.run = spy
    return seen


@pytest.mark.parametrize("target", ["lora", "prefix"])
def test_mixed_batch_equals_separate_calls(serve, llama, target, tmp_path):
    client, engine = serve(target)
    ids = [_create(client, t) for t in TASKS]
    rows = [dict(r, adapter=a) for r, a in zip(ROWS, [*ids, None], strict=True)]
    seen = _spy_batches(engine)
    together = client.post("/v1/score", json={"requests": rows}).json()["results"]
    assert seen == [("score", 4)]  # one batch, every row with its own adapter (or none)
    alone = [client.post("/v1/score", json={"requests": [r]}).json()["results"][0] for r in rows]
    for t, a in zip(together, alone, strict=True):
        torch.testing.assert_close(t["logprobs"], a["logprobs"], atol=1e-4, rtol=1e-5)
        assert t["prediction"] == a["prediction"]
    # adapters really apply: each adapted row differs from the same row on the base model
    base = client.post("/v1/score", json={"requests": [dict(r, adapter=None) for r in rows[:3]]}).json()
    for t, b in zip(together[:3], base["results"], strict=True):
        assert max(abs(x - y) for x, y in zip(t["logprobs"], b["logprobs"], strict=True)) > 1e-3
    # and the stored adapter, downloaded as a PEFT directory, gives the same scores through the Python API
    Client(str(client.base_url), http=client).download_peft(ids[0], tmp_path / "a0")
    adapter = Adapter.from_pretrained(tmp_path / "a0")
    direct = llama.loglikelihood([ROWS[0]["input"]] * 3, ROWS[0]["choices"], adapter=adapter)
    torch.testing.assert_close(direct.tolist(), together[0]["logprobs"], atol=1e-4, rtol=1e-5)

    gen_rows = [{"adapter": a, "input": r["input"]} for r, a in zip(ROWS, [*ids, None], strict=True)]
    body = {"max_new_tokens": 6, "stop": []}
    seen.clear()
    together = client.post("/v1/generate", json={"requests": gen_rows, **body}).json()["results"]
    assert seen == [("generate", 4)]
    for row, t in zip(gen_rows, together, strict=True):
        alone = client.post("/v1/generate", json={"requests": [row], **body}).json()["results"][0]
        assert t["text"] == alone["text"]


def test_concurrent_requests_share_a_batch(serve):
    client, engine = serve(wait_ms=300)  # a wide window, so two requests from two threads meet in it
    ids = [_create(client, t) for t in TASKS[:2]]
    seen = _spy_batches(engine)
    barrier = threading.Barrier(2)

    def call(i):
        barrier.wait()
        row = dict(ROWS[i], adapter=ids[i])
        return client.post("/v1/score", json={"requests": [row]}).status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(call, range(2))) == [200, 200]
    assert seen == [("score", 2)]


def test_a_bad_row_fails_only_its_own_request():
    from hypertuning.serve.batcher import Batcher

    calls = []

    def run(group, payloads):
        calls.append(list(payloads))
        if "bad" in payloads:
            raise ValueError("bad row")
        return [p.upper() for p in payloads]

    b = Batcher(run, max_batch=8, wait_ms=200)
    futures = b.submit(("x",), ["a", "bad", "c"])
    try:
        assert futures[0].result(10) == "A" and futures[2].result(10) == "C"
        with pytest.raises(ValueError, match="bad row"):
            futures[1].result(10)
        assert calls[0] == ["a", "bad", "c"]  # tried together first, then one by one
    finally:
        b.stop()


def test_fifty_concurrent_creations_lose_none(serve):
    client, engine = serve(max_batch=16)
    seen = _spy_batches(engine)

    def create(i):
        r = client.post("/v1/adapters", json={"examples": TASKS[i % 3], "name": f"task-{i}"})
        return r.status_code, r.json().get("id")

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(create, range(50)))
    assert [s for s, _ in results] == [201] * 50
    ids = {i for _, i in results}
    assert len(ids) == 50
    listed = client.get("/v1/adapters").json()
    assert listed["total"] == 50 and {a["id"] for a in listed["adapters"]} == ids
    assert sorted(a["name"] for a in listed["adapters"]) == sorted(f"task-{i}" for i in range(50))
    assert max(n for _, n in seen) > 1  # creations arriving together shared hypermodel passes
    assert len(list((engine.store.dir).iterdir())) == 50


def test_restart_keeps_adapters(serve, tmp_path, llama, hypermodels):
    client, engine = serve()
    ids = [_create(client, t, name=f"t{i}") for i, t in enumerate(TASKS)]
    rows = [dict(r, adapter=a) for r, a in zip(ROWS, ids, strict=False)]
    before = client.post("/v1/score", json={"requests": rows}).json()
    client.__exit__(None, None, None)
    # a new process: a fresh engine over the same directory, nothing in its phi cache
    client2, engine2 = serve()
    assert engine2.store.count() == 3 and engine2.store.hits == 0
    listed = client2.get("/v1/adapters").json()["adapters"]
    assert [a["id"] for a in listed] == ids and [a["name"] for a in listed] == ["t0", "t1", "t2"]
    assert client2.post("/v1/score", json={"requests": rows}).json() == before
    assert engine2.store.misses == 3
    assert client2.delete(f"/v1/adapters/{ids[0]}").status_code == 200
    assert client2.get(f"/v1/adapters/{ids[0]}").status_code == 404
    assert not (engine2.store.dir / ids[0]).exists()


def test_score_tokenises_each_rows_options_once(serve, monkeypatch):
    client, engine = serve()
    calls, real = [], engine.downstream.encode_targets
    monkeypatch.setattr(
        engine.downstream, "encode_targets", lambda texts, **kw: (calls.append(texts), real(texts, **kw))[1]
    )
    results = client.post("/v1/score", json={"requests": ROWS[:2]}).json()["results"]
    assert calls == [ROWS[0]["choices"], ROWS[1]["choices"]]  # when the request is checked, not again
    monkeypatch.undo()
    assert [r["logprobs"] for r in results] == [
        r["logprobs"] for r in client.post("/v1/score", json={"requests": ROWS[:2]}).json()["results"]
    ]


def test_servers_sharing_a_store_see_each_others_deletes(serve):
    client, engine = serve()
    keep, gone = _create(client, TASKS[0]), _create(client, TASKS[1])
    store = engine.store
    other = AdapterStore(store.root, store.hypermodel, store.downstream)  # a second server's store
    for adapter_id in (keep, gone):
        other.get(adapter_id)  # now in its cache
    assert (other.misses, other.hits) == (2, 0)
    assert client.delete(f"/v1/adapters/{gone}").status_code == 200  # through the first server
    with pytest.raises(AdapterNotFound):
        other.get(gone)  # not served from the stale cache
    other.get(keep)
    assert other.hits == 1 and other.misses == 2  # the adapter still indexed stays cached
    other.close()


def test_the_phi_cache_holds_at_most_cache_bytes(serve, llama):
    """Select-readout adapters are as long as their examples; a byte bound evicts the least recently used
    until the rest fit, and keeps the newest even when it alone is over."""
    hm = HyperModel.create(llama, "prefix", readout="select", readout_options={"slots": 200})
    client, engine = serve(hypermodel=hm)
    ids = [_create(client, t) for t in TASKS]
    store = engine.store
    sizes = [store.get(i).nbytes for i in ids]
    assert len(set(sizes)) == 3  # compact adapters: each its own size
    bound = sizes[1] + sizes[2]
    small = AdapterStore(store.root, store.hypermodel, store.downstream, cache_bytes=bound)
    for i in ids:
        small.get(i)
    assert list(small._cache) == ids[1:] and small.cached_bytes <= bound  # the first one went
    small.get(ids[1])  # now the most recent, so ids[2] goes first when ids[0] comes back
    small.get(ids[0])
    assert list(small._cache) == ([ids[1], ids[0]] if sizes[0] + sizes[1] <= bound else [ids[0]])
    assert small.hits == 1 and small.misses == 4
    tiny = AdapterStore(store.root, store.hypermodel, store.downstream, cache_bytes=1)
    tiny.get(ids[0])
    assert list(tiny._cache) == [ids[0]]  # over the bound alone, still kept while it is the newest
    tiny.get(ids[1])
    assert list(tiny._cache) == [ids[1]]
    with pytest.raises(HypertuningError, match="cache_bytes must be >= 0"):
        AdapterStore(store.root, store.hypermodel, store.downstream, cache_bytes=-1)
    for s in (small, tiny):
        s.close()


def test_crash_mid_write_leaves_no_half_adapter(serve, tmp_path, monkeypatch):
    client, engine = serve()
    keep = _create(client, TASKS[0])

    def crash(self, directory):
        (directory / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Adapter, "save_pretrained", crash)
    with pytest.raises(OSError):
        client.post("/v1/adapters", json={"examples": TASKS[1]})
    monkeypatch.undo()
    assert [p.name for p in engine.store.dir.iterdir()] == [keep]
    # a crash after the files but before the index row; and a row whose files were removed by hand
    (engine.store.dir / "ad-orphan").mkdir()
    (engine.store.dir / "ad-orphan" / "hypertuning.json").write_text("{}")
    other = _create(client, TASKS[2])
    for f in (engine.store.dir / other).iterdir():
        f.unlink()
    (engine.store.dir / other).rmdir()
    young = AdapterStore(engine.store.root, engine.store.hypermodel, engine.store.downstream)
    assert (young.dir / "ad-orphan").is_dir()  # could be another server's write in progress: kept
    store = AdapterStore(engine.store.root, engine.store.hypermodel, engine.store.downstream, recover_after=0)
    assert [a["id"] for a in store.list()] == [keep]
    assert [p.name for p in store.dir.iterdir()] == [keep]


def test_adapter_files_reach_the_disk_before_the_index_row(serve, monkeypatch):
    """After a power loss an index row must never point at files that were still in the page cache."""
    import sqlite3

    from hypertuning import _io

    client, engine = serve()
    synced, inserted_after = [], []
    real_fsync, real_connect = _io._fsync, sqlite3.connect
    monkeypatch.setattr(_io, "_fsync", lambda p: (synced.append(str(p)), real_fsync(p)))

    class Spy(sqlite3.Connection):
        def execute(self, sql, *args):
            if sql.lstrip().upper().startswith("INSERT"):
                inserted_after.append(len(synced))
            return super().execute(sql, *args)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: real_connect(*a, factory=Spy, **kw))
    adapter_id = _create(client, TASKS[0])
    final = engine.store.dir / adapter_id
    files = sorted(final.iterdir())
    assert files and inserted_after == [len(synced)]  # every fsync happened before the one INSERT
    names = {p.rsplit("/", 1)[-1] for p in synced}
    assert {f.name for f in files} <= names  # each file, inside the temporary directory
    assert str(engine.store.dir) in synced  # and the directory holding the rename


def test_adapters_from_another_hypermodel_are_refused(serve, llama, tmp_path, tiny_dirs):
    client, _ = serve()
    foreign = _create(client, TASKS[0])
    other = HyperModel.create(llama, target="lora", layers=1, rank=4)
    client2, _ = serve(hypermodel=other)
    info = client2.get(f"/v1/adapters/{foreign}").json()
    assert info["compatible"] is False
    r = client2.post("/v1/score", json={"requests": [dict(ROWS[0], adapter=foreign)]})
    assert r.status_code == 409
    assert "was generated by hypermodel" in r.json()["detail"] and "Generate it again" in r.json()["detail"]
    # the engine refuses a downstream model the hypermodel was not built for
    from hypertuning import DownstreamMismatchError, load_downstream

    with pytest.raises(DownstreamMismatchError):
        open_engine(other, load_downstream(str(tiny_dirs["llama_other"])), store=tmp_path / "s")


LIMITS = Limits(
    max_request_bytes=4000, max_examples=3, max_text_chars=100, max_rows=4, max_choices=3, max_new_tokens=8
)
EX = {"input": "a", "output": "b"}


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("/v1/adapters", {"examples": [EX] * 2, "name": "x" * 5000}, 413, "over this server's limit of 4000"),
        ("/v1/adapters", {"examples": []}, 422, "examples is empty"),
        ("/v1/adapters", {"examples": [EX] * 4}, 422, "4 examples; the limit is 3 (--max-examples)"),
        (
            "/v1/adapters",
            {"examples": [{"input": "a" * 101, "output": "b"}]},
            422,
            "examples[0].input has 101",
        ),
        ("/v1/adapters", {"examples": [EX], "instruction": "i" * 101}, 422, "instruction has 101 characters"),
        ("/v1/adapters", {"examples": [EX], "colour": "red"}, 422, "colour"),
        ("/v1/score", {"requests": []}, 422, "requests is empty"),
        ("/v1/score", {"requests": [{"input": "x", "output": "y"}] * 5}, 422, "5 rows; the limit is 4"),
        (
            "/v1/score",
            {"requests": [{"input": "x", "choices": list("abcd")}]},
            422,
            "4 options; the limit is 3",
        ),
        ("/v1/score", {"requests": [{"input": "x"}]}, 422, "either choices (to rank) or output"),
        ("/v1/score", {"requests": [{"input": "x", "choices": []}]}, 422, "choices is empty"),
        # the shared record checks (data.task.Record), as for files
        ("/v1/score", {"requests": [{"input": "x", "output": ""}]}, 422, "requests[0]: 'output' is blank"),
        ("/v1/score", {"requests": [{"input": "x", "choices": ["a", " "]}]}, 422, "'choices'[1] is blank"),
        (
            "/v1/adapters",
            {"examples": [EX, {"input": "a", "output": ""}]},
            422,
            "examples[1]: 'output' is blank",
        ),
        (
            "/v1/score",
            {"requests": [{"input": "x", "output": "y", "adapter": "../x"}]},
            422,
            "Invalid adapter id",
        ),
        ("/v1/score", {"requests": [{"input": "x", "output": "y", "adapter": "ad-none"}]}, 404, "No adapter"),
        (
            "/v1/score",
            {"requests": [{"input": "x", "output": "y", "adapter": "ad-1", "examples": [EX]}]},
            422,
            "an adapter or in-context examples, not both",
        ),
        (
            "/v1/generate",
            {"requests": [{"input": "x"}], "max_new_tokens": 9},
            422,
            "max_new_tokens must be 1-8",
        ),
        ("/v1/generate", {"requests": [{"input": "x", "choices": ["a"]}]}, 422, "are for /v1/score"),
        (
            "/v1/generate",
            {"requests": [{"input": "x", "examples": [EX] * 4}]},
            422,
            "requests[0].examples has 4 examples",
        ),
    ],
)
def test_limits_give_status_and_message(serve, path, body, status, message):
    client, _ = serve(limits=LIMITS)
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in json.dumps(r.json()["detail"])


def test_body_limit_without_content_length(serve):
    client, _ = serve(limits=LIMITS)

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/v1/adapters", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit of 4000" in r.json()["detail"]


def test_adapter_ids_in_paths_are_validated(serve):
    client, _ = serve()
    for bad in ("a.b", "x" * 65, "a%20b", "..."):
        r = client.get(f"/v1/adapters/{bad}")
        assert r.status_code == 422 and "Invalid adapter id" in r.json()["detail"], bad
    for bad in ("a%2Fb", ".."):  # a path separator or ".." never reaches the store
        assert client.get(f"/v1/adapters/{bad}").status_code == 404
    assert client.delete("/v1/adapters/a.b").status_code == 422
    assert client.get("/v1/adapters/ad-ok_1").status_code == 404


def test_delete_while_cached_and_generation_options(serve):
    client, engine = serve(limits=Limits(max_new_tokens=8))
    a = _create(client, TASKS[0])
    row = dict(ROWS[0], adapter=a)
    assert client.post("/v1/score", json={"requests": [row]}).status_code == 200  # phi now cached
    assert client.delete(f"/v1/adapters/{a}").status_code == 200
    r = client.post("/v1/score", json={"requests": [row]})
    assert r.status_code == 404 and a in r.json()["detail"]
    # max_new_tokens defaults to the server's limit when that is under 32; stop strings cut the text
    free = client.post("/v1/generate", json={"requests": [{"input": "the cat"}], "stop": []})
    assert free.status_code == 200
    text = free.json()["results"][0]["text"]
    assert 0 < len(engine.downstream.tokenizer(text)["input_ids"]) <= 8
    cut = client.post("/v1/generate", json={"requests": [{"input": "the cat"}], "stop": [text[1]]}).json()
    assert cut["results"][0]["text"] == text[: text.index(text[1])]
    for stop, message in (([""], "stop[0] must have 1-64"), (["a"] * 9, "the limit is 8")):
        r = client.post("/v1/generate", json={"requests": [{"input": "x"}], "stop": stop})
        assert r.status_code == 422 and message in r.json()["detail"]


def test_cancelled_rows_cost_nothing_and_do_not_stop_the_worker():
    from hypertuning.serve.batcher import Batcher

    calls = []
    b = Batcher(lambda g, p: calls.append(list(p)) or [x * 2 for x in p], max_batch=8, wait_ms=300)
    try:
        f1, f2 = b.submit(("x",), [1, 2])
        assert f1.cancel()  # the caller went away while the batch was gathering
        assert f2.result(10) == 4 and calls == [[2]]
        assert b.submit(("x",), [5])[0].result(10) == 10  # the worker lives on
    finally:
        b.stop()


def test_the_cli_works_without_the_serve_extra(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('fastapi', 'uvicorn', 'httpx', 'prometheus_client'): sys.modules[m] = None\n"
        "from hypertuning.cli import main\n"
        "sys.exit(main(['serve', '--hypermodel', 'nowhere']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install 'hypertuning[serve]'" in r.stderr, r.stderr


def test_bearer_token(serve):
    client, _ = serve(token="s3cret")
    assert client.get("/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = client.get("/v1/adapters", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/metrics").status_code == 401
    # the schema needs the token too; the browser pages (which cannot send it) are off
    assert client.get("/openapi.json").status_code == 401
    schema = client.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
    assert "/v1/score" in schema["paths"] and "/openapi.json" not in schema["paths"]
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    ok = client.get("/v1/adapters", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    with pytest.raises(ServiceError, match="401"):
        Client(str(client.base_url), http=client).list_adapters()
    assert Client(str(client.base_url), token="s3cret", http=client).list_adapters() == []


def test_in_context_rows_and_metrics(serve, llama):
    client, _ = serve()
    row = {"input": "the bird", "examples": TASKS[0], "choices": ["le oiseau", "four"]}
    got = client.post("/v1/score", json={"requests": [row]}).json()["results"][0]
    ids = llama.encode_in_context([(e["input"], e["output"]) for e in TASKS[0]], None, "the bird")
    from hypertuning.eval.scoring import option_logprobs

    want = option_logprobs(llama, [ids], [row["choices"]])[0]
    torch.testing.assert_close(got["logprobs"], want, atol=1e-5, rtol=1e-5)
    text = client.get("/metrics").text
    assert 'hypertuning_requests_total{method="POST",route="/v1/score",status="200"} 1.0' in text
    assert 'hypertuning_batch_rows_count{op="score"} 1.0' in text
    assert "hypertuning_adapters_stored 0.0" in text
    openapi = client.get("/openapi.json").json()
    assert {"/v1/adapters", "/v1/score", "/v1/generate", "/health", "/metrics"} <= set(openapi["paths"])


def test_client_and_cli_against_a_live_server(tmp_path, llama, hypermodels, capsys):
    import uvicorn

    from hypertuning.cli import main

    engine = open_engine(hypermodels["lora"], llama, store=tmp_path / "store")
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine, token="tok"), host="127.0.0.1", port=0, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        examples = tmp_path / "ex.jsonl"
        examples.write_text("".join(json.dumps(e) + "\n" for e in TASKS[2]))
        common = ["--url", url, "--token", "tok"]
        assert main(["adapters", "create", "--examples", str(examples), "--name", "sentiment", *common]) == 0
        created = json.loads(capsys.readouterr().out)
        assert created["name"] == "sentiment" and created["examples"] == 2
        assert main(["adapters", "list", *common]) == 0
        assert created["id"] in capsys.readouterr().out
        inputs = tmp_path / "in.jsonl"
        inputs.write_text(json.dumps({"input": "loved it", "choices": ["positive", "negative"]}) + "\n")
        assert main(["adapters", "score", "--inputs", str(inputs), "--adapter", created["id"], *common]) == 0
        scored = json.loads(capsys.readouterr().out)
        assert len(scored["logprobs"]) == 2
        bad = tmp_path / "bad.jsonl"  # the shared record checks, before any request
        bad.write_text(json.dumps({"input": "x", "choices": "yes"}) + "\n")
        assert main(["adapters", "score", "--inputs", str(bad), "--adapter", created["id"], *common]) == 2
        assert f"{bad}:1: 'choices' must be a list of strings" in capsys.readouterr().err
        assert main(["adapters", "download", created["id"], "--out", str(tmp_path / "peft"), *common]) == 0
        assert (tmp_path / "peft" / "adapter_config.json").is_file()
        assert main(["adapters", "delete", created["id"], *common]) == 0
        capsys.readouterr()
        assert main(["adapters", "show", created["id"], *common]) == 2
        assert "404" in capsys.readouterr().err
        assert main(["adapters", "list", "--url", url]) == 2  # no token
        assert "401" in capsys.readouterr().err
        import socket  # a chunked body with broken framing: 400 from the HTTP layer, the server goes on

        head = b"POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head + b"3\r\nabcdef\r\n0\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 400")
        assert main(["adapters", "list", *common]) == 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_unreadable_json_bodies_get_a_specific_400(serve):
    client, _ = serve()
    json_type = {"content-type": "application/json"}
    r = client.post("/v1/score", content=b'{"requests": [{"input": "\xff"}]}', headers=json_type)
    assert r.status_code == 400 and "not UTF-8 text (byte 25" in r.json()["detail"], r.text
    deep = b"[" * 100_000 + b"]" * 100_000
    r = client.post("/v1/score", content=deep, headers=json_type)
    assert r.status_code == 400 and "nested too deeply" in r.json()["detail"], r.text
    r = client.post("/v1/score", content=b'{"requests": [}', headers=json_type)
    assert r.status_code == 422  # a plain syntax error: FastAPI's own message, with its position
