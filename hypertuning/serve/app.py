"""The HTTP service (FastAPI): examples in, a stored adapter out; scores and generations for many adapters
in one batch. `hypertune serve` runs it with uvicorn; `create_app` builds it for tests or other servers."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from ..data.task import Example, Record
from ..errors import CheckpointError, DataError, HypertuningError
from .engine import Engine, Limits, Row
from .metrics import Metrics
from .store import AdapterMismatch, AdapterNotFound, check_id


# -- request and response bodies ----------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class ExampleIn(_Body):
    input: str
    output: str


class AdapterCreate(_Body):
    examples: list[ExampleIn]
    instruction: str | None = None
    name: str | None = Field(None, max_length=200)


class AdapterInfo(BaseModel):
    id: str
    name: str | None
    created: float = Field(description="Unix time")
    bytes: int = Field(description="size of phi")
    target: str
    hypermodel: str = Field(description="fingerprint of the hypermodel that generated it")
    downstream: str = Field(description="fingerprint of the downstream model it is for")
    downstream_checkpoint: str
    examples: int
    examples_used: int = Field(description="examples that fit the hypermodel's input budget")
    instruction: str | None
    compatible: bool = Field(description="usable by this server (same hypermodel and downstream)")


class RowIn(_Body):
    adapter: str | None = Field(None, description="adapter id; null for the base model")
    input: str
    examples: list[ExampleIn] | None = Field(None, description="in-context examples (no adapter)")
    instruction: str | None = None
    choices: list[str] | None = Field(None, description="/v1/score: options to rank")
    output: str | None = Field(None, description="/v1/score: one output to score")


class ScoreRequest(_Body):
    requests: list[RowIn]
    normalisation: Literal["none", "token", "char"] = "none"


class GenerateRequest(_Body):
    requests: list[RowIn]
    max_new_tokens: int | None = Field(None, description="default: 32, or the server's limit if lower")
    stop: list[str] = Field(default_factory=lambda: ["\n"])


_BEARER = HTTPBearer(auto_error=False)  # module level: FastAPI resolves the string annotations here


class _BodyLimit:
    """Refuse request bodies over the limit with 413 before anything parses them (pure ASGI, so the
    limit holds for chunked bodies without a Content-Length too). Starlette's RequestBodyLimitMiddleware
    answers a bare "Content Too Large" and only recent FastAPI versions have it; ours names the limit."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send, int(declared))
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._reject(send, len(body))
        problem = _unreadable_json(body) if _is_json(scope) else None
        if problem:  # FastAPI would say only "There was an error parsing the body"
            return await self._send(send, 400, problem)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _reject(self, send, size: int):
        detail = (
            f"Request body of {size} bytes is over this server's limit of {self.limit} (--max-request-bytes)"
        )
        await self._send(send, 413, detail)

    @staticmethod
    async def _send(send, status: int, detail: str):
        payload = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _is_json(scope) -> bool:
    return dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip() == b"application/json"


def _unreadable_json(body: bytes) -> str | None:
    """Why a JSON body cannot be read at all (not UTF-8, nested past Python's recursion limit), or None;
    ordinary syntax errors are left to FastAPI, which names their position."""
    if not body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"Request body is not UTF-8 text (byte {e.start}: {body[e.start : e.start + 1]!r})"
    try:
        json.loads(text)
    except RecursionError:
        return "Request body is JSON nested too deeply to read"
    except ValueError:
        return None
    return None


def _invalid(message: str):
    raise HTTPException(422, message)


def create_app(engine: Engine, limits: Limits | None = None, token: str | None = None) -> FastAPI:
    limits = limits or Limits()
    metrics: Metrics = engine.metrics

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), token.encode()
        ):
            raise HTTPException(401, "Missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    # With a token, the schema needs it too and the browser pages are off (a browser cannot send it)
    closed = {"docs_url": None, "redoc_url": None, "openapi_url": None} if token is not None else {}
    app = FastAPI(
        title="hypertuning",
        summary="Few-shot examples in, a PEFT adapter out; many adapters served from one base model.",
        version=_version(),
        lifespan=_lifespan(engine),
        **closed,
    )
    if token is not None:

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorised)])
        def openapi_schema() -> dict:
            return app.openapi()

    app.add_middleware(_BodyLimit, limit=limits.max_request_bytes)

    @app.middleware("http")
    async def count(request: Request, call_next):
        start, status = time.perf_counter(), 500  # an exception escaping the app is a 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            path = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.request(request.method, path, status, time.perf_counter() - start)

    for exc, status in ((AdapterNotFound, 404), (AdapterMismatch, 409), (CheckpointError, 500)):
        app.add_exception_handler(exc, _handler(status))
    app.add_exception_handler(HypertuningError, _handler(422))

    def text(value: str | None, what: str) -> None:
        if value is not None and len(value) > limits.max_text_chars:
            _invalid(
                f"{what} has {len(value)} characters; the limit is {limits.max_text_chars} (--max-text-chars)"
            )

    def examples_ok(examples: list[ExampleIn], what: str) -> list[dict]:
        if not examples:
            _invalid(f"{what} is empty: give at least one {{input, output}} example")
        if len(examples) > limits.max_examples:
            _invalid(
                f"{what} has {len(examples)} examples; the limit is {limits.max_examples} (--max-examples)"
            )
        for i, ex in enumerate(examples):
            text(ex.input, f"{what}[{i}].input")
            text(ex.output, f"{what}[{i}].output")
            record(ex.model_dump(), f"{what}[{i}]", Example.from_dict)
        return [ex.model_dump() for ex in examples]

    def record(row: dict, where: str, parse=Record.parse):
        """The checks every reader shares (data.task.Record): blank outputs and choices, above all."""
        try:
            return parse(row, where)
        except DataError as e:
            _invalid(str(e))

    def rows_ok(rows: list[RowIn], scoring: bool) -> list[Row]:
        if not rows:
            _invalid("requests is empty: give at least one row")
        if len(rows) > limits.max_rows:
            _invalid(f"requests has {len(rows)} rows; the limit is {limits.max_rows} (--max-rows)")
        out = []
        for i, r in enumerate(rows):
            where = f"requests[{i}]"
            text(r.input, f"{where}.input")
            text(r.instruction, f"{where}.instruction")
            if r.adapter is not None and r.examples is not None:
                _invalid(f"{where}: give an adapter or in-context examples, not both")
            examples = examples_ok(r.examples, f"{where}.examples") if r.examples is not None else None
            if scoring:
                if (r.choices is None) == (r.output is None):
                    _invalid(f"{where}: give either choices (to rank) or output (to score)")
                choices = r.choices if r.choices is not None else [r.output]
                if not choices:
                    _invalid(f"{where}.choices is empty")
                key = "choices" if r.choices is not None else "output"
                record({"input": r.input, key: getattr(r, key)}, where)
                if len(choices) > limits.max_choices:
                    _invalid(
                        f"{where}.choices has {len(choices)} options; the limit is {limits.max_choices} "
                        "(--max-choices)"
                    )
                for j, c in enumerate(choices):
                    text(c, f"{where}.choices[{j}]" if r.choices is not None else f"{where}.output")
                try:  # here, so that a bad row fails its own request and not the batch it would join
                    choice_ids = engine.downstream.encode_targets(choices)
                except HypertuningError as e:
                    _invalid(f"{where}: {e}")
            elif r.choices is not None or r.output is not None:
                _invalid(f"{where}: choices and output are for /v1/score")
            adapter = None
            if r.adapter is not None:
                adapter = engine.store.get(_id(r.adapter, f"{where}.adapter: "))
            context, truncated = engine.encode(r.input, examples, r.instruction)
            if scoring:
                out.append(Row(context, adapter, choices, truncated, choice_ids))
            else:
                out.append(Row(context, adapter, None, truncated))
        return out

    api = [Depends(authorised)]

    @app.get("/health", tags=["service"])
    def health() -> dict:
        """Liveness, and which models this server runs (no token needed)."""
        hm = engine.hypermodel
        return {
            "status": "ok",
            "hypermodel": engine.hypermodel_id,
            "target": hm.config.target,
            "downstream": engine.downstream.name,
            "downstream_fingerprint": engine.downstream.spec.fingerprint,
            "device": str(engine.downstream.device),
        }

    @app.get("/metrics", tags=["service"], dependencies=api)
    def prometheus() -> Response:
        """Prometheus text format: requests, latency, batch sizes, stored adapters, phi cache hits."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/adapters", status_code=201, tags=["adapters"], dependencies=api)
    async def create_adapter(body: AdapterCreate) -> AdapterInfo:
        """Generate an adapter from few-shot examples in one hypermodel forward pass (batched with other
        creations arriving together) and store it."""
        examples = examples_ok(body.examples, "examples")
        text(body.instruction, "instruction")
        adapter, used = await asyncio.wrap_future(engine.submit_create(examples, body.instruction))
        info = await run_in_threadpool(
            engine.store.put, adapter, body.name, len(examples), used, body.instruction
        )
        metrics.adapters_created.inc()
        return AdapterInfo(**info)

    @app.get("/v1/adapters", tags=["adapters"], dependencies=api)
    def list_adapters(limit: int = 1000, offset: int = 0) -> dict:
        """Stored adapters, oldest first (`compatible` is false for those another hypermodel generated)."""
        if not 1 <= limit <= 10000 or offset < 0:
            _invalid("limit must be 1-10000 and offset >= 0")
        return {"adapters": engine.store.list(limit, offset), "total": engine.store.count()}

    @app.get("/v1/adapters/{adapter_id}", tags=["adapters"], dependencies=api)
    def get_adapter(adapter_id: str) -> AdapterInfo:
        return AdapterInfo(**engine.store.info(_id(adapter_id)))

    @app.get(
        "/v1/adapters/{adapter_id}/peft",
        tags=["adapters"],
        dependencies=api,
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}}},
    )
    def download_peft(adapter_id: str) -> Response:
        """The adapter as a zip of its PEFT directory (`peft.PeftModel.from_pretrained` loads it)."""
        data = engine.store.peft_zip(_id(adapter_id))
        headers = {"Content-Disposition": f'attachment; filename="{adapter_id}.zip"'}
        return Response(data, media_type="application/zip", headers=headers)

    @app.delete("/v1/adapters/{adapter_id}", tags=["adapters"], dependencies=api)
    def delete_adapter(adapter_id: str) -> dict:
        engine.store.delete(_id(adapter_id))
        return {"id": adapter_id, "deleted": True}

    @app.post("/v1/score", tags=["inference"], dependencies=api)
    async def score(body: ScoreRequest) -> dict:
        """Log-likelihood of each row's choices (or output) under its adapter, the base model (adapter
        null) or an in-context prompt (examples); rows of different adapters share forward passes."""
        rows = await run_in_threadpool(rows_ok, body.requests, True)
        lps = await asyncio.gather(*map(asyncio.wrap_future, engine.submit_score(rows, body.normalisation)))
        results = []
        for r, lp in zip(body.requests, lps, strict=True):
            if r.choices is not None:
                results.append({"logprobs": lp, "prediction": max(range(len(lp)), key=lp.__getitem__)})
            else:
                results.append({"logprob": lp[0]})
        for res, row in zip(results, rows, strict=True):
            res["truncated"] = row.truncated
        return {"results": results}

    @app.post("/v1/generate", tags=["inference"], dependencies=api)
    async def generate(body: GenerateRequest) -> dict:
        """Greedy continuation of each row under its adapter, the base model or an in-context prompt,
        stopping at `stop` strings or `max_new_tokens`."""
        max_new_tokens = body.max_new_tokens
        if max_new_tokens is None:
            max_new_tokens = min(32, limits.max_new_tokens)
        if not 1 <= max_new_tokens <= limits.max_new_tokens:
            _invalid(f"max_new_tokens must be 1-{limits.max_new_tokens} (--max-new-tokens)")
        if len(body.stop) > limits.max_stop_strings:
            _invalid(
                f"stop has {len(body.stop)} strings; the limit is {limits.max_stop_strings} (--max-stop-strings)"
            )
        for j, s in enumerate(body.stop):
            if not 1 <= len(s) <= limits.max_stop_chars:
                _invalid(f"stop[{j}] must have 1-{limits.max_stop_chars} characters (--max-stop-chars)")
        rows = await run_in_threadpool(rows_ok, body.requests, False)
        futures = engine.submit_generate(rows, max_new_tokens, tuple(body.stop))
        texts = await asyncio.gather(*map(asyncio.wrap_future, futures))
        return {"results": [{"text": t, "truncated": r.truncated} for t, r in zip(texts, rows, strict=True)]}

    return app


def _id(adapter_id: str, where: str = "") -> str:
    try:
        return check_id(adapter_id)
    except HypertuningError as e:
        raise HTTPException(422, f"{where}{e}") from None


def _handler(status: int):
    async def handle(request: Request, exc: Exception):
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handle


def _lifespan(engine: Engine):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        engine.batcher.start()
        yield
        engine.batcher.stop()

    return lifespan


def _version() -> str:
    from .. import __version__

    return __version__
