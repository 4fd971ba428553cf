"""A small client for `hypertune serve` (needs `httpx`, installed with `pip install 'hypertuning[serve]'`).

from hypertuning.client import Client
c = Client("http://127.0.0.1:8000", token=None)
a = c.create_adapter([{"input": "great movie", "output": "positive"}, ...], name="sentiment")
c.score([{"adapter": a["id"], "input": "awful plot", "choices": ["positive", "negative"]}])
c.download_peft(a["id"], "adapters/sentiment")   # a PEFT adapter directory
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from ._io import atomic_dir
from .errors import HypertuningError

DEFAULT_URL = "http://127.0.0.1:8000"


class ServiceError(HypertuningError):
    """The service answered with an error status; `status` is the HTTP code, the message its detail."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class Client:
    """`url` defaults to $HYPERTUNE_URL or http://127.0.0.1:8000 and `token` to $HYPERTUNE_TOKEN. Pass
    `http=` an httpx.Client (e.g. FastAPI's TestClient) to reuse a connection pool or test in-process."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 300, http=None):
        import httpx

        self.url = (url or os.environ.get("HYPERTUNE_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("HYPERTUNE_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http if http is not None else httpx.Client(timeout=timeout)

    def _call(self, method: str, path: str, **kwargs):
        import httpx

        try:
            r = self.http.request(method, self.url + path, headers=self.headers, **kwargs)
        except httpx.HTTPError as e:
            raise ServiceError(0, f"cannot reach {self.url}: {e}") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            if isinstance(detail, list):  # FastAPI's validation errors
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
            raise ServiceError(r.status_code, str(detail))
        return r

    # -- adapters ------------------------------------------------------------------------------------
    def create_adapter(self, examples, instruction: str | None = None, name: str | None = None) -> dict:
        """Examples are dicts with input/output or (input, output) pairs; returns the adapter's metadata."""
        examples = [
            {"input": str(e[0]), "output": str(e[1])} if isinstance(e, (tuple, list)) else dict(e)
            for e in examples
        ]
        body = {"examples": examples, "instruction": instruction, "name": name}
        return self._call("POST", "/v1/adapters", json=body).json()

    def list_adapters(self, limit: int = 1000, offset: int = 0) -> list[dict]:
        return self._call("GET", "/v1/adapters", params={"limit": limit, "offset": offset}).json()["adapters"]

    def get_adapter(self, adapter_id: str) -> dict:
        return self._call("GET", f"/v1/adapters/{adapter_id}").json()

    def delete_adapter(self, adapter_id: str) -> None:
        self._call("DELETE", f"/v1/adapters/{adapter_id}")

    def download_peft(self, adapter_id: str, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save the adapter as a PEFT directory (`peft.PeftModel.from_pretrained` or
        `hypertuning.Adapter.from_pretrained` loads it); `overwrite` replaces an existing one."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise HypertuningError(f"{directory} is a file; give a directory to write")
        if directory.exists() and any(directory.iterdir()) and not overwrite:
            raise HypertuningError(f"{directory} already exists and is not empty")
        data = self._call("GET", f"/v1/adapters/{adapter_id}/peft").content

        def unpack(tmp):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist():
                    name = Path(info.filename).name  # files only; no paths from the archive
                    (Path(tmp) / name).write_bytes(z.read(info))

        return atomic_dir(Path(directory), unpack, replace=overwrite)

    # -- inference -----------------------------------------------------------------------------------
    def score(self, requests: list[dict], normalisation: str = "none") -> list[dict]:
        """Each request: {"adapter": id | None, "input", "choices": [...]} or {..., "output"}; may carry
        "examples" (in-context, no adapter). Returns {"logprobs", "prediction"} or {"logprob"} per row."""
        body = {"requests": requests, "normalisation": normalisation}
        return self._call("POST", "/v1/score", json=body).json()["results"]

    def generate(self, requests: list[dict], max_new_tokens: int | None = None, stop=("\n",)) -> list[str]:
        """Greedy continuations; `max_new_tokens` defaults to the server's (32, or its limit if lower)."""
        body = {"requests": requests, "max_new_tokens": max_new_tokens, "stop": list(stop)}
        return [r["text"] for r in self._call("POST", "/v1/generate", json=body).json()["results"]]

    def health(self) -> dict:
        return self._call("GET", "/health").json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
